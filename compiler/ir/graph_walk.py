"""Facts about graph ops that lowering (from_graph.py) and control-flow lowering share."""
from __future__ import annotations

from . import deferred

ASSIGN_KINDS = ("assign", "assign_add", "assign_sub")


class LoweringError(ValueError):
    """The requested fetches cannot be computed (unfed placeholder, bad fetch, ...)."""


def needed_ops(fetch_ops, fed):
    """Backward closure over data and control edges, not entering fed tensors' producers."""
    seen, stack = set(), list(fetch_ops)
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs if t not in fed)
        stack.extend(t.op for t in deferred.attr_tensors(op.attrs) if t not in fed)
        stack.extend(op.control_inputs)
    return sorted(seen, key=lambda o: o.id)


def var_name(tensor):
    """The variable ``tensor`` reads (a variable op's output, or a body graph's capture of one), or None."""
    while tensor in getattr(tensor.graph, "capture_source", {}):
        tensor = tensor.graph.capture_source[tensor]
    return tensor.op.name if tensor.op.type == "variable" else None

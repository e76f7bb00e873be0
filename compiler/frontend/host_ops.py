"""Host ops: graph ops whose value the session computes in Python after a run, from the
numeric values the run fetched (``tf.summary.*``: serialized ``Summary`` protos).

Kiln's IR has no string dtype, so a host op never reaches lowering.  Its output tensor has
the frontend-only dtype :data:`string` (a scalar, like TF's summary tensors).  When
``Session.run`` fetches host tensors (or runs host ops as targets), :class:`HostFetches`

1. replaces them by their numeric inputs (through nested host ops such as ``merge``), which
   join the run's other fetches: one run computes everything, as in TF;
2. adds the host ops' control inputs to the run's targets;
3. after the run, evaluates the host ops in creation order from the fetched values
   (an evaluator is registered per op kind with :func:`register`).

A numeric op that consumes a host tensor cannot be lowered (``from_graph`` says so).
"""
from __future__ import annotations

from ..ir.types import DType, TensorType
from . import errors

string = DType("string", "str", "object")  # host-only: never an IR dtype
_EVALUATORS: dict = {}  # op kind -> fn(op, input values) -> value


def register(kind: str, evaluate) -> None:
    """Make ``kind`` a host op kind computed by ``evaluate(op, input values)``."""
    _EVALUATORS[kind] = evaluate


def is_host_op(op) -> bool:
    return op.type in _EVALUATORS


def create(graph, kind, inputs, attrs, name):
    """Add a host op named exactly ``name`` with a scalar string output; its tensor."""
    ttype = TensorType(string, ())
    return graph.create_op(kind, inputs, attrs, name, ttype=ttype, exact_name=True).outputs[0]


class HostFetches:
    """Splits one run's fetch tensors and target ops into what the device run computes and
    the host ops evaluated afterwards (module doc)."""

    def __init__(self, tensors, targets):
        self.tensors = list(tensors)
        host_roots = [t.op for t in self.tensors if is_host_op(t.op)] + [op for op in targets if is_host_op(op)]
        self.host_ops = _closure(host_roots)
        leaves = [t for op in self.host_ops for t in op.inputs if not is_host_op(t.op)]
        controls = [c for op in self.host_ops for c in op.control_inputs]
        self.device_tensors = list(dict.fromkeys([t for t in self.tensors if not is_host_op(t.op)] + leaves))
        self.device_targets = list(dict.fromkeys([op for op in targets if not is_host_op(op)] + controls))

    def check_feeds(self, feeds) -> None:
        """A host tensor cannot be fed (it has no numeric value for the run to use)."""
        for t in feeds:
            if is_host_op(t.op):
                raise TypeError(f"Cannot feed {t.name}: it is a {t.op.type} that Kiln computes on "
                                "the host from its inputs; feed those instead")

    def values(self, device_values: dict) -> list:
        """The values of ``tensors`` (in order), given ``{device tensor: value}``."""
        values = dict(device_values)
        for op in self.host_ops:
            try:
                values[op.outputs[0]] = _EVALUATORS[op.type](op, [values[t] for t in op.inputs])
            except errors.OpError:
                raise
            except ValueError as err:
                raise errors.InvalidArgumentError(None, op, f"{err} (node {op.name})") from err
        return [values[t] for t in self.tensors]


def _closure(roots) -> list:
    """The host ops among ``roots`` and their host-op inputs, in creation order."""
    seen, stack = set(), list(roots)
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(t.op for t in op.inputs if is_host_op(t.op))
    return sorted(seen, key=lambda o: o.id)

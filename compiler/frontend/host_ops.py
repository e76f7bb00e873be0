"""Host ops: graph ops whose value or effect the Session computes in Python around a run.

Two kinds, one on each side of the device run:

* **Feeders** run *before* it.  A ``tf.data`` iterator's ``get_next()`` tensors are
  placeholders that the Session fills like feeds, from a pipeline running on the host; its
  initializer is a ``no_op`` whose effect (starting a fresh pass over a dataset) happens on
  the host.  :func:`register_feeder` puts a handler on such an op
  (``Operation.host_handler``); ``Session.run`` asks :func:`handlers_for` which handlers a
  run's fetches and targets reach, plans the run with the tensors they feed as feeds, and
  then calls them (in ``order``: initializers before ``get_next``).  A handler has
  ``order`` (int), ``feeds`` (the tensors it feeds; none for initializers) and
  ``run(session, feeds) -> {Tensor: value}``.  A weak set of graphs lets runs of graphs
  without feeders skip the search.
* **Evaluators** run *after* it, from the numeric values the run fetched
  (``tf.summary.*``: serialized ``Summary`` protos).  Kiln's IR has no string dtype, so
  such an op never reaches lowering: its output has the frontend-only dtype
  :data:`string` (a scalar, like TF's summary tensors).  When ``Session.run`` fetches host
  tensors (or runs host ops as targets), :class:`HostFetches` (1) replaces them by their
  numeric inputs (through nested host ops such as ``merge``), which join the run's other
  fetches, so one run computes everything, as in TF; (2) adds the host ops' control inputs
  to the run's targets; (3) after the run, evaluates the host ops in creation order
  (an evaluator is registered per op kind with :func:`register_evaluator`).  A numeric op
  that consumes a host tensor cannot be lowered (``from_graph`` says so).
"""
from __future__ import annotations

import weakref

from ..ir.from_graph import needed_ops
from ..ir.types import DType, TensorType
from . import errors

# ----------------------------------------------------------------------------- feeders
_GRAPHS: "weakref.WeakSet" = weakref.WeakSet()  # graphs holding at least one feeder


def register_feeder(op, handler) -> None:
    """Make ``op`` a host op run by ``handler`` before any Session.run that needs it."""
    op.host_handler = handler
    _GRAPHS.add(op.graph)


def has_host_ops(graph) -> bool:
    """Whether any op of ``graph`` is a feeder."""
    return graph in _GRAPHS


def handlers_for(graph, tensors, targets, fed) -> list:
    """The handlers of the feeders that ``tensors`` and ``targets`` need (fed tensors cut
    the walk: a fed ``get_next`` tensor is not pulled), each once, in run order."""
    if not has_host_ops(graph):
        return []
    roots = [t.op for t in tensors if t not in fed] + list(targets)
    found = []
    for op in needed_ops(roots, fed):
        handler = op.host_handler
        if handler is not None and handler not in found:
            found.append(handler)
    return sorted(found, key=lambda h: h.order)


# ----------------------------------------------------------------------------- evaluators
string = DType("string", "str", "object")  # host-only: never an IR dtype
_EVALUATORS: dict = {}  # op kind -> fn(op, input values) -> value


def register_evaluator(kind: str, evaluate) -> None:
    """Make ``kind`` a host op kind computed after the run by ``evaluate(op, input values)``."""
    _EVALUATORS[kind] = evaluate


def is_host_op(op) -> bool:
    return op.type in _EVALUATORS


def create(graph, kind, inputs, attrs, name):
    """Add an evaluated host op named exactly ``name`` with a scalar string output; its tensor."""
    ttype = TensorType(string, ())
    return graph.create_op(kind, inputs, attrs, name, ttype=ttype, exact_name=True).outputs[0]


class HostFetches:
    """Splits one run's fetch tensors and target ops into what the device run computes and
    the evaluated host ops computed afterwards (module doc)."""

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
    """The evaluated host ops among ``roots`` and their host-op inputs, in creation order."""
    seen, stack = set(), list(roots)
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(t.op for t in op.inputs if is_host_op(t.op))
    return sorted(seen, key=lambda o: o.id)

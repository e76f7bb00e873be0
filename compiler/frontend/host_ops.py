"""Host ops: graph ops whose effect or value the Session computes in Python around a run.

A ``tf.data`` iterator's ``get_next()`` tensors are placeholders that the Session fills
like feeds, from a pipeline running on the host; its initializer is a ``no_op`` whose
effect (starting a fresh pass over a dataset) happens on the host.  Such an op is
registered here with a handler; ``Session.run`` asks :func:`handlers_for` which handlers
a run's fetches and targets reach, plans the run with the tensors they feed as feeds,
and then calls them (in ``order``: initializers before ``get_next``).  A handler is an
object with ``order`` (int), ``feeds`` (the tensors it feeds; none for initializers) and
``run(session, feeds) -> {Tensor: value}`` (their values for this run).

The handler is kept on the op (``Operation.host_handler``), so it lives as long as the
graph; a weak set of graphs lets runs of graphs without host ops skip the search.
"""
from __future__ import annotations

import weakref

from ..ir.from_graph import needed_ops

_GRAPHS: "weakref.WeakSet" = weakref.WeakSet()  # graphs holding at least one host op


def register(op, handler) -> None:
    """Make ``op`` a host op run by ``handler`` whenever a Session.run needs it."""
    op.host_handler = handler
    _GRAPHS.add(op.graph)


def has_host_ops(graph) -> bool:
    """Whether any op of ``graph`` is a host op."""
    return graph in _GRAPHS


def handlers_for(graph, tensors, targets, fed) -> list:
    """The handlers of the host ops that ``tensors`` and ``targets`` need (fed tensors
    cut the walk: a fed ``get_next`` tensor is not pulled), each once, in run order."""
    if not has_host_ops(graph):
        return []
    roots = [t.op for t in tensors if t not in fed] + list(targets)
    found = []
    for op in needed_ops(roots, fed):
        handler = op.host_handler
        if handler is not None and handler not in found:
            found.append(handler)
    return sorted(found, key=lambda h: h.order)

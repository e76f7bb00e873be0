"""Collective graph ops (allreduce, allgather, broadcast across MPI ranks) and how a
Session run that reaches them is split around them.

A collective op's value is computed on the host by ``runtime.collective`` from its input's
value on every rank, so a run that needs one is run in two phases, each a compiled (or
interpreted) step of its own:

1. the **inputs** of the collectives it reaches, plus every fetched tensor that does not
   depend on a collective (e.g. the loss), with no targets (no state changes);
2. the collectives on the host (one call each: ``DistributedOptimizer`` makes one fused
   buffer per step, reduced in place, no copy), then the original fetches and targets with
   the collectives' outputs and the phase-1 fetches fed (fed tensors cut the walk, so the
   forward and backward passes are not run again: phase 2 is the optimizer update).

``kiln compile`` splits an artifact's ``train`` entry the same way (:func:`split_entry`):
``train_grads`` (phase 1) and ``train_apply`` (phase 2), run by ``kiln train`` with the
allreduce between them.  A collective nested in another's input is handled by recursion.
"""
from __future__ import annotations

import weakref

import numpy as np

from ..ir.graph_walk import needed_ops
from ..ir.types import TensorType
from .graph import get_default_graph

KINDS = ("hvd_allreduce", "hvd_allgather", "hvd_broadcast")
_GRAPHS: "weakref.WeakSet" = weakref.WeakSet()  # graphs holding a collective op


def collective_op(kind, tensor, attrs, name):
    """Add a collective op of ``kind`` on ``tensor``; its output (same dtype; allgather's
    first dim unknown)."""
    graph = get_default_graph()
    shape = tensor.type.shape
    if kind == "hvd_allgather" and shape is not None:
        if not shape:
            raise ValueError(f"allgather '{name}': {tensor.name} is a scalar; it needs at least one dimension")
        shape = (None,) + tuple(shape[1:])
    op = graph.create_op(kind, [tensor], attrs, name, ttype=TensorType(tensor.dtype, shape))
    _GRAPHS.add(graph)
    return op.outputs[0]


def has_collectives(graph) -> bool:
    """Whether ``graph`` holds a collective op (runs of other graphs skip the search)."""
    return graph in _GRAPHS


def reached(graph, tensors, targets, fed) -> list:
    """The collective ops a run of ``tensors``/``targets`` needs (``fed`` cuts the walk)."""
    if graph not in _GRAPHS:
        return []
    roots = [t.op for t in tensors if t not in fed] + list(targets)
    return [op for op in needed_ops(roots, fed) if op.type in KINDS]


def depends_on(tensor, ops, fed) -> bool:
    """Whether ``tensor`` needs one of the collective ``ops`` (``fed`` cuts the walk)."""
    return tensor not in fed and any(o in ops for o in needed_ops([tensor.op], fed))


def perform(op, value, comm):
    """The host value of collective ``op`` given its input's ``value`` on this rank."""
    if op.type == "hvd_allreduce":
        buf = np.require(value, requirements=["C", "W"])
        if buf is value and not buf.flags.owndata:
            buf = buf.copy()  # never reduce into memory a session still holds
        average = op.attrs["op"] == "average"
        if average and not np.issubdtype(buf.dtype, np.floating):
            comm.allreduce(buf, "sum")
            buf //= comm.size
            return buf
        return comm.allreduce(buf, op.attrs["op"])
    if op.type == "hvd_allgather":
        return comm.allgather(value)
    buf = np.array(value, order="C")
    return comm.bcast(buf, root=op.attrs["root_rank"])


class Split:
    """How one run signature splits: its collective ops, the fetches computed in phase 1
    (``early``) and those left to phase 2."""

    def __init__(self, ops, tensors, fed):
        self.ops = ops
        self.inputs = list(dict.fromkeys(op.inputs[0] for op in ops))
        self.early = [t for t in tensors if not depends_on(t, ops, fed)]
        self.late = [t for t in tensors if t not in self.early]


def cached_plan(cache, graph, tensors, targets, fed):
    """The :class:`Split` of a run signature, or None when it reaches no collective;
    remembered in ``cache`` (a Session's dict) per signature."""
    if graph not in _GRAPHS:
        return None
    key = (tuple(tensors), tuple(targets), tuple(sorted(fed, key=lambda t: (t.op.id, t.name))))
    if key not in cache:
        ops = reached(graph, tensors, targets, fed)
        cache[key] = Split(ops, tensors, set(fed)) if ops else None
    return cache[key]


def run_split(split, run, tensors, targets, feeds, comm=None) -> dict:
    """Run a signature in the two phases of the module doc.  ``run(tensors, targets,
    feeds) -> {tensor: value}`` runs one phase (it may split again for nested collectives);
    ``comm`` defaults to the process's communicator (``runtime.collective``)."""
    if comm is None:
        from runtime.collective import communicator

        comm = communicator()
    first = run(list(dict.fromkeys(split.inputs + split.early)), [], feeds)
    fed = dict(feeds)
    for op in split.ops:
        fed[op.outputs[0]] = perform(op, first[op.inputs[0]], comm)
    fed.update({t: first[t] for t in split.early})
    second = run(split.late, targets, fed) if (split.late or targets) else {}
    return {t: (first[t] if t in first else second[t]) for t in tensors}


def split_entry(graph, fetches, targets, feeds):
    """``kiln compile``'s split of an entry whose walk reaches allreduce ops: ``None`` when
    it reaches none, else ``(grads entries, apply entry, record)``, each entry a
    ``(fetches, targets, feeds)`` tuple.  One grads entry per fusion group (the allreduce
    ops' ``group`` attr, 0 first: the last layers' gradients), each computing what the
    earlier ones did not and fed their boundary tensors (:func:`_stages`), so the host can
    reduce one group while the next entry runs the rest of the backward pass.  The record
    (manifest JSON) names per allreduce its op (``average``/``sum``/...), input (a grads-entry
    fetch) and output (an apply-entry feed); per stage its allreduces and fed boundary
    tensors (``cut``); and the fetches the first stage computes (``early``)."""
    fed = set(feeds)
    ops = reached(graph, fetches, targets, fed)
    if not ops:
        return None
    unsupported = [op for op in ops if op.type != "hvd_allreduce" or reached(graph, [op.inputs[0]], [], fed)]
    if unsupported:
        raise ValueError(f"{unsupported[0].type} '{unsupported[0].name}': a compiled entry can be split "
                         "around allreduce ops only (one level, no collective feeding another)")
    split = Split(ops, fetches, fed)
    grads, stages = _stages(ops, split.early, feeds)
    outputs = [op.outputs[0] for op in ops]
    offered = outputs + split.early + [t for t in feeds if t not in outputs + split.early]
    apply = (split.late, list(targets), consumed(offered, split.late, targets))
    reduce = lambda op: {"op": op.attrs["op"], "input": op.inputs[0].name, "output": op.outputs[0].name}  # noqa: E731
    record = {"reduce": [reduce(op) for op in ops], "early": [t.name for t in split.early],
              "stages": [{"reduce": [reduce(op) for op in g_ops], "cut": [t.name for t in cut]}
                         for g_ops, cut in stages]}
    return grads, apply, record


_RECOMPUTED = ("const", "variable", "placeholder")  # never passed between stages


def _stages(ops, early, feeds):
    """The grads entries of the fusion groups of ``ops`` and, per stage, ``(its allreduce
    ops, the boundary tensors it is fed from earlier stages)``; a boundary tensor becomes a
    fetch of the stage that computes it."""
    fed = set(feeds)
    by_group = {}
    for op in ops:
        by_group.setdefault(op.attrs.get("group", 0), []).append(op)
    entries, stages, producer = [], [], {}
    for k, group in enumerate(sorted(by_group)):
        g_ops = by_group[group]
        fetch = list(dict.fromkeys((early if k == 0 else []) + [op.inputs[0] for op in g_ops]))
        cut = consumed(list(producer), fetch, [])
        for t in cut:
            if t not in entries[producer[t]][0]:
                entries[producer[t]][0].append(t)
        closure = needed_ops([t.op for t in fetch if t not in fed], fed | set(cut))
        for op in closure:
            if op.type not in _RECOMPUTED:
                for t in op.outputs:
                    producer.setdefault(t, k)
        entries.append((fetch, [], list(feeds) + cut))
        stages.append((g_ops, cut))
    return entries, stages


def consumed(offered, tensors, targets) -> list:
    """The tensors of ``offered`` that a run of ``tensors``/``targets`` fed with them reads
    (the apply entry's feeds: the reduced buffers, and any phase-1 value or data feed the
    update still needs, e.g. an UPDATE_OPS dependency that reads the batch)."""
    fed = set(offered)
    roots = [t.op for t in tensors if t not in fed] + list(targets)
    used = {t for op in needed_ops(roots, fed) for t in op.inputs} | set(tensors)
    return [t for t in offered if t in used]

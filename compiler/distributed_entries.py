"""``kiln compile``'s data-parallel split of a model's ``train`` entry.

When the ``train`` entry reaches allreduce ops (the model uses ``hvd.DistributedOptimizer``,
or was compiled with ``--distributed``, which wraps every optimizer's gradients in one
fused allreduce: ``compiler.horovod.distributed_gradients``), it is compiled as two entries
around them (``frontend/collectives.py``): ``train_grads`` (metrics and the fused gradient
buffer) and ``train_apply`` (the update, fed the reduced buffer); with fusion groups
(``--fusion-groups N``) the backward pass is split further into ``train_grads_1``, ...
(one per group, docs/distributed.md).  The manifest's
``model.distributed`` record names them for ``runtime.distributed``.
"""
from __future__ import annotations

import contextlib

from .frontend.collectives import split_entry

GRADS_ENTRY, APPLY_ENTRY = "train_grads", "train_apply"


def model_context(distributed: bool, fusion_groups: int = 1):
    """The context to build a model file in: ``distributed_gradients()`` for ``--distributed``."""
    if not distributed:
        return contextlib.nullcontext()
    from . import horovod

    return horovod.distributed_gradients(num_groups=fusion_groups)


def split_entries(graph, entries: dict):
    """``(compile entries, distributed record or None)`` for ``compile_entries``: each
    ``EntryPoint`` as its ``(fetches, targets, feeds)``, ``train`` split when it reaches
    allreduce ops (another entry reaching one is a ``ValueError``)."""
    out, record = {}, None
    for name, entry in entries.items():
        parts = split_entry(graph, *entry.as_compile_entry())
        if parts is None:
            out[name] = entry.as_compile_entry()
            continue
        if name != "train":
            raise ValueError(f"entry {name!r} reaches collective ops (hvd.allreduce, ...); only the "
                             "'train' entry can be compiled around them")
        grads, out[APPLY_ENTRY], rec = parts
        names = [GRADS_ENTRY] + [f"{GRADS_ENTRY}_{k}" for k in range(1, len(grads))]
        out.update(zip(names, grads))
        for name, stage in zip(names, rec["stages"]):
            stage["entry"] = name
        record = {"grads": GRADS_ENTRY, "apply": APPLY_ENTRY, **rec}
    return out, record

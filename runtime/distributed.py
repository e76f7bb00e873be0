"""Data-parallel pieces of the trainer (``kiln train`` under ``mpiexec -n N``).

An artifact compiled with ``kiln compile --distributed`` (or from a model that uses
``hvd.DistributedOptimizer``) has its training step as two entries, recorded in the
manifest's ``model.distributed``: ``train_grads`` (forward + backward: the metrics and one
fused gradient buffer per dtype) and ``train_apply`` (the optimizer update, fed the
reduced buffer).  :class:`DistributedStep` runs them with the allreduce in between, in
place on the buffer the grads entry returned (no host copy).

Sharding: every rank draws the same global batches (``batch_size * size`` examples, same
shuffle seed and epoch) and takes the rank-strided slice ``[rank::size]``.  Gradients are
averaged weighted by each rank's example count, so N ranks x batch B give the step of one
rank x batch N*B, the last (short) batch included (without random ops: each rank draws its
own dropout masks, :func:`rank_rng_step`).  Never imports ``compiler``.
"""
from __future__ import annotations

import time

import numpy as np

from . import data as kdata
from .entries import EntryInfo, TrainerError, batch_feeds
from .manifest import RNG_STEP

RANK_SHIFT = 48

__all__ = ["DistributedStep", "broadcast_state", "distributed_record", "global_mean", "rank_rng_step",
           "shard_batches"]


def distributed_record(art):
    """The manifest's ``model.distributed`` record (None for a single-entry train step)."""
    return art.manifest.get("model", {}).get("distributed")


def shard_batches(source, batch_size, rank, size, **batch_args):
    """This rank's slices of the global batches: ``(x, y, n_global)`` per step."""
    with kdata.batches(source, batch_size * size, **batch_args) as it:
        for x, y in it:
            yield x[rank::size], (None if y is None else y[rank::size]), len(x)


class DistributedStep:
    """The two-entry train step with the fused allreduce between (module doc)."""

    def __init__(self, art, record, comm):
        self.comm, self.record = comm, record
        model = art.manifest["model"]["entries"]["train"]
        spec = art.entry(record["grads"])
        by_name = {s.name: s for s in spec.feeds}
        self.info = EntryInfo(record["grads"], list(model["feeds"]), dict(model["fetches"]),
                              [by_name[f] for f in model["feeds"]])
        fetch_specs = {f.name: f for f in spec.fetches}
        self.buffers = [(r["input"], r["output"], r["op"], fetch_specs[r["input"]]) for r in record["reduce"]]
        self.metric_keys = scalar_keys(self.info, fetch_specs)
        self.apply_feeds = set(s.name for s in art.entry(record["apply"]).feeds)
        self.reduce_s = 0.0  # seconds spent in allreduce (bench: share of the step)
        self.steps = 0

    def run(self, state, x, y, feature_shape, n_global) -> dict:
        """One step on this rank's shard ``x, y`` of a global batch of ``n_global``; returns
        the fetches of both entries (a fetch that depends on the reduced gradients comes
        from the apply entry; only the apply entry's when this rank's shard is empty)."""
        n = len(x)
        out = state.run(self.info.name, batch_feeds(self.info, x, y, feature_shape)) if n else {}
        feeds = {k: v for k, v in out.items() if k in self.apply_feeds}
        scale = n * self.comm.size / n_global
        t0 = time.perf_counter()
        for src, dst, op, spec in self.buffers:
            buf = out[src] if n else np.zeros(tuple(spec.shape), spec.dtype)
            if op == "average" and scale != 1.0:
                buf *= buf.dtype.type(scale)  # example-weighted mean over uneven shards
            feeds[dst] = self.comm.allreduce(buf, op)
        self.reduce_s += time.perf_counter() - t0
        self.steps += 1
        if n and len(self.apply_feeds - set(feeds)):
            feeds.update({k: v for k, v in batch_feeds(self.info, x, y, feature_shape).items()
                          if k in self.apply_feeds})
        missing = self.apply_feeds - set(feeds)
        if missing:
            raise TrainerError(f"rank {self.comm.rank}: entry {self.record['apply']!r} needs "
                               f"{sorted(missing)} but this rank's shard of the batch is empty")
        return {**out, **state.run(self.record["apply"], feeds)}


def run_train_epoch(step, state, source, batch_size, mean, tick=None, **batch_args) -> int:
    """One epoch of this rank's shards through ``step``; ``mean`` made global at the end
    (the metrics of all ranks); returns the number of steps."""
    comm, n_steps = step.comm, 0
    for x, y, n_global in shard_batches(source, batch_size, comm.rank, comm.size, **batch_args):
        out = step.run(state, x, y, source.feature_shape, n_global)
        if len(x):
            mean.add(out, step.info, len(x))
        n_steps += 1
        if tick:
            tick(n_global, mean)
    global_mean(mean, step.metric_keys, comm)
    return n_steps


def global_mean(mean, keys, comm):
    """Make the example-weighted :class:`entries.Mean` ``mean`` global: sums and counts of
    every rank added (one small allreduce)."""
    buf = np.array([mean.sums.get(k, 0.0) for k in keys] + [float(mean.count)], np.float64)
    comm.allreduce(buf, "sum")
    mean.sums = {k: float(v) for k, v in zip(keys, buf[:-1])}
    mean.count = int(buf[-1])
    return mean


def scalar_keys(info, fetch_specs) -> list:
    """The fetch keys of ``info`` whose values are scalars (the metrics ``Mean`` keeps)."""
    def scalar(shape):
        return all(isinstance(d, int) for d in shape) and int(np.prod(shape, dtype=np.int64)) == 1

    return [k for k, name in info.fetches.items() if scalar(fetch_specs[name].shape)]


def broadcast_state(state, comm, root=0):
    """Every variable of ``state`` set to rank ``root``'s value (initial weights, resume),
    then the random stream made this rank's own (:func:`rank_rng_step`)."""
    if comm.size == 1:
        return
    for name in state.variable_names():
        value = np.array(state.read_variable(name), order="C")  # (0-d stays 0-d)
        state.write_variable(name, comm.bcast(value, root))
    if RNG_STEP in state.variable_names():
        state.write_variable(RNG_STEP, rank_rng_step(state.read_variable(RNG_STEP), comm.rank))


def rank_rng_step(step, rank):
    """The random-op step counter of ``rank``: rank 0's plus ``rank << RANK_SHIFT``, so each
    rank draws its own dropout masks (Philox counters of different ranks never meet in
    2**48 steps) and rank 0, which writes the checkpoints, keeps the true step."""
    return np.asarray(step, np.int64) + np.int64(int(rank) << RANK_SHIFT)


def run_eval(state, info, source, batch_size, mean, comm, **batch_args):
    """Evaluate this rank's shards of ``source`` into ``mean`` (then :func:`global_mean`)."""
    specs = {f.name: f for f in state.artifact.entry(info.name).fetches}
    keys = scalar_keys(info, specs)
    for x, y, _ in shard_batches(source, batch_size, comm.rank, comm.size, **batch_args):
        if len(x):
            mean.add(state.run(info.name, batch_feeds(info, x, y, source.feature_shape)), info, len(x))
    return global_mean(mean, keys, comm)

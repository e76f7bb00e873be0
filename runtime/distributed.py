"""Data-parallel pieces of the trainer (``kiln train`` under ``mpiexec -n N``).

An artifact compiled with ``kiln compile --distributed`` (or from a model that uses
``hvd.DistributedOptimizer``) has its training step as two entries, recorded in the
manifest's ``model.distributed``: ``train_grads`` (forward + backward: the metrics and one
fused gradient buffer per dtype) and ``train_apply`` (the optimizer update, fed the
reduced buffer); with fusion groups, further grads entries ``train_grads_1``, ... (the
record's ``stages``) compute the rest of the backward pass while the earlier buffers are
reduced.  :class:`DistributedStep` runs them with the allreduces in between, in place on
the buffers the grads entries returned (no host copy).

Sharding: every rank draws the same global batches (``batch_size * size`` examples, same
shuffle seed and epoch) and takes the rank-strided slice ``[rank::size]``.  Gradients are
averaged weighted by each rank's example count, so N ranks x batch B give the step of one
rank x batch N*B, the last (short) batch included (without random ops: each rank draws its
own dropout masks, :func:`rank_rng_step`).  Never imports ``compiler``.
"""
from __future__ import annotations

import threading
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
    """The split train step with the fused allreduces between (module doc).  With several
    fusion groups the grads entries run in stages: while stage k+1 computes the rest of the
    backward pass, stage k's buffers are reduced on a helper thread (mpi4py releases the
    GIL in MPI calls, the runtime in native calls), so communication overlaps compute."""

    def __init__(self, art, record, comm):
        self.comm, self.record = comm, record
        model = art.manifest["model"]["entries"]["train"]
        stages = record.get("stages") or [{"entry": record["grads"], "reduce": record["reduce"], "cut": []}]
        self.stages = []  # (entry, its feed names, [(input, output, op, fetch spec)])
        for stage in stages:
            spec = art.entry(stage["entry"])
            fetches = {f.name: f for f in spec.fetches}
            self.stages.append((stage["entry"], {f.name for f in spec.feeds},
                                [(r["input"], r["output"], r["op"], fetches[r["input"]]) for r in stage["reduce"]]))
        first = art.entry(record["grads"])
        by_name = {s.name: s for s in first.feeds}
        self.info = EntryInfo(record["grads"], list(model["feeds"]), dict(model["fetches"]),
                              [by_name[f] for f in model["feeds"]])
        self.metric_keys = scalar_keys(self.info, {f.name: f for f in first.fetches})
        self.buffers = [b for *_, bufs in self.stages for b in bufs]
        self.apply_feeds = set(s.name for s in art.entry(record["apply"]).feeds)
        self.reduce_s = 0.0  # seconds the step waited for allreduces (bench: share of the step)
        self.steps = 0

    def run(self, state, x, y, feature_shape, n_global) -> dict:
        """One step on this rank's shard ``x, y`` of a global batch of ``n_global``; returns
        the fetches of every entry (a fetch that depends on the reduced gradients comes
        from the apply entry; only the apply entry's when this rank's shard is empty)."""
        n = len(x)
        data = batch_feeds(self.info, x, y, feature_shape) if n else {}
        scale = n * self.comm.size / n_global
        out, feeds, pending = {}, {}, None
        for k, (entry, names, bufs) in enumerate(self.stages):
            if n:
                out.update(state.run(entry, {name: v for name, v in {**data, **out}.items() if name in names}))
            jobs = [(dst, op, _scaled(out[src] if n else np.zeros(tuple(spec.shape), spec.dtype), op, scale))
                    for src, dst, op, spec in bufs]
            self._wait(pending)  # collectives stay in the same order on every rank
            pending = self._reduce(jobs, feeds, background=k + 1 < len(self.stages))
        self._wait(pending)
        self.steps += 1
        feeds.update({name: v for name, v in {**data, **out}.items() if name in self.apply_feeds})
        missing = self.apply_feeds - set(feeds)
        if missing:
            raise TrainerError(f"rank {self.comm.rank}: entry {self.record['apply']!r} needs "
                               f"{sorted(missing)} but this rank's shard of the batch is empty")
        return {**out, **state.run(self.record["apply"], feeds)}

    def _reduce(self, jobs, into, background):
        """Allreduce ``jobs`` (output name, op, buffer) into ``into``: now, or on a helper
        thread (returned, for :meth:`_wait`)."""
        def work():
            for dst, op, buf in jobs:
                into[dst] = self.comm.allreduce(buf, op)

        if not background:
            t0 = time.perf_counter()
            work()
            self.reduce_s += time.perf_counter() - t0
            return None
        box = {}

        def guarded():
            try:
                work()
            except BaseException as err:  # re-raised by _wait on the step's thread
                box["error"] = err

        thread = threading.Thread(target=guarded, name="kiln-allreduce", daemon=True)
        thread.start()
        return thread, box

    def _wait(self, pending):
        if pending is None:
            return
        thread, box = pending
        t0 = time.perf_counter()
        thread.join()
        self.reduce_s += time.perf_counter() - t0
        if "error" in box:
            raise box["error"]


def _scaled(buf, op, scale):
    """``buf`` (in place) times this rank's share of the examples, for the example-weighted
    mean over uneven shards (``average`` only)."""
    if op == "average" and scale != 1.0:
        buf *= buf.dtype.type(scale)
    return buf


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

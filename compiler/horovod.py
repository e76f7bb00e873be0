"""Horovod's TF1 API on Kiln: ``from compiler import horovod as hvd``.

A TF1 + Horovod program ports by changing its two imports (``import tensorflow as tf`` ->
``from compiler import tf``, ``import horovod.tensorflow as hvd`` -> ``from compiler import
horovod as hvd``) and runs under ``mpiexec -n N python prog.py``::

    hvd.init()
    opt = hvd.DistributedOptimizer(tf.train.AdamOptimizer(1e-3 * hvd.size()))
    train_op = opt.minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(hvd.broadcast_global_variables(0))

Semantics are Horovod's: ``DistributedOptimizer`` averages each gradient over the ranks
before the wrapped optimizer's update (scaling the learning rate is the user's choice);
the gradients of one dtype travel as **one fused buffer** (Horovod's tensor fusion).  The
collectives are graph ops (``compiler/frontend/collectives.py``): a Session run that
reaches them runs in two compiled phases with the reduction on the host in between, and
``kiln compile`` splits the ``train`` entry the same way.  The communicator is
``runtime.collective`` (MPI through mpi4py; one process when not launched by MPI).
See docs/distributed.md.
"""
from __future__ import annotations

import contextlib
import functools

from compiler import tf

from runtime.collective import communicator

from .frontend.collectives import collective_op
from .frontend.train.optimizer_base import GRADIENT_TRANSFORMS, Optimizer

__all__ = ["Average", "BroadcastGlobalVariablesHook", "Compression", "DistributedOptimizer", "Sum",
           "allgather", "allreduce", "broadcast", "broadcast_global_variables", "broadcast_variables",
           "distributed_gradients", "init", "is_initialized", "local_rank", "local_size", "rank", "shutdown", "size"]

Average, Sum = "average", "sum"
_OPS = (Average, Sum, "min", "max")
_STATE = {"initialized": False}


def init(comm=None):
    """Start the communicator (MPI when launched by mpiexec/mpirun, else one process)."""
    if comm is not None:
        raise NotImplementedError("hvd.init(comm=...): Kiln uses MPI_COMM_WORLD only")
    communicator()
    _STATE["initialized"] = True


def is_initialized() -> bool:
    return _STATE["initialized"]


def shutdown():
    """Horovod's shutdown: MPI is finalized at exit, so nothing to do."""
    _STATE["initialized"] = False


def _comm():
    if not _STATE["initialized"]:
        raise ValueError("Horovod has not been initialized; use hvd.init().")
    return communicator()


def rank() -> int:
    return _comm().rank


def size() -> int:
    return _comm().size


def local_rank() -> int:
    return _comm().local_rank


def local_size() -> int:
    return _comm().local_size


class Compression:
    """Horovod's gradient compression choices; Kiln reduces uncompressed (``none``)."""

    none = None


def _reduce_op(average, op):
    if average is not None and op is not None:
        raise ValueError("The op parameter supersedes average. Please provide only one of them.")
    op = op if op is not None else (Average if average in (None, True) else Sum)
    if op not in _OPS:
        raise ValueError(f"allreduce: unknown op {op!r}; use hvd.Average or hvd.Sum")
    return op


def allreduce(tensor, average=None, device_dense="", device_sparse="", compression=Compression.none,
              op=None, name=None):
    """The average (default) or sum of ``tensor`` over all ranks."""
    if compression is not Compression.none:
        raise NotImplementedError("hvd.allreduce(compression=...): Kiln reduces uncompressed")
    tensor = tf.convert_to_tensor(tensor)
    return collective_op("hvd_allreduce", tensor, {"op": _reduce_op(average, op)}, name or "HorovodAllreduce")


def allgather(tensor, name=None):
    """Every rank's ``tensor`` concatenated along the first dimension, in rank order."""
    return collective_op("hvd_allgather", tf.convert_to_tensor(tensor), {}, name or "HorovodAllgather")


def broadcast(tensor, root_rank, name=None):
    """Rank ``root_rank``'s value of ``tensor`` on every rank."""
    return collective_op("hvd_broadcast", tf.convert_to_tensor(tensor), {"root_rank": int(root_rank)},
                         name or "HorovodBroadcast")


def broadcast_variables(variables, root_rank):
    """An op assigning each variable rank ``root_rank``'s value."""
    with tf.name_scope("HorovodBroadcastVariables"):
        return tf.group(*[tf.assign(v, broadcast(v, root_rank)) for v in variables])


def broadcast_global_variables(root_rank):
    """An op assigning every global variable rank ``root_rank``'s value (run it once after
    the initializer, or after restoring a checkpoint on ``root_rank``)."""
    return broadcast_variables(tf.global_variables(), root_rank)


class BroadcastGlobalVariablesHook:
    """Horovod's session hook: broadcasts the global variables from ``root_rank`` once the
    session exists.  Kiln has no MonitoredTrainingSession: call
    ``hook.after_create_session(sess)`` after initializing (``begin()`` builds the op)."""

    def __init__(self, root_rank, device=""):
        self.root_rank, self.device = root_rank, device
        self.bcast_op = None

    def begin(self):
        if self.bcast_op is None or self.bcast_op.graph is not tf.get_default_graph():
            self.bcast_op = broadcast_global_variables(self.root_rank)

    def after_create_session(self, session, coord=None):
        if self.bcast_op is None:
            with session.graph.as_default():
                self.begin()
        session.run(self.bcast_op)

    def before_run(self, run_context):
        return None

    def after_run(self, run_context, run_values):
        pass

    def end(self, session):
        pass


def fusion_groups(grads, num_groups):
    """Indices of the non-None ``grads`` in ``num_groups`` contiguous groups of about equal
    element counts (a gradient joins the group its middle element falls in), the **last**
    variables' group first (their gradients are ready first in the backward pass).
    ``num_groups`` <= 1: one group."""
    idx = [i for i, g in enumerate(grads) if g is not None]
    sizes = [grads[i].shape.num_elements() for i in idx]
    if any(s is None for s in sizes):
        raise ValueError("DistributedOptimizer: every gradient needs a static shape to be fused "
                         f"(shapes: {[str(grads[i].shape) for i in idx]})")
    k = max(1, min(int(num_groups or 1), len(idx)))
    total, groups, run = sum(sizes), [[] for _ in range(k)], 0
    for i, n in zip(idx, sizes):
        groups[min(k - 1, (2 * run + n) * k // max(2 * total, 1))].append(i)  # where its middle falls
        run += n
    return [g for g in reversed(groups) if g]


def fused_allreduce(grads, op=Average, num_groups=1, name="DistributedAllreduce"):
    """Allreduce a list of gradients (None entries kept) as one flat buffer per dtype and
    fusion group (Horovod's tensor fusion): concat -> one allreduce -> split -> reshape.
    Each allreduce op's ``group`` attr orders them (0: the last layers');
    ``kiln compile`` splits the backward pass at the groups so that each group's allreduce
    overlaps the backward of the layers before it (docs/distributed.md)."""
    out = list(grads)
    with tf.name_scope(name):
        for group, members in enumerate(fusion_groups(grads, num_groups)):
            by_dtype = {}
            for i in members:
                by_dtype.setdefault(grads[i].dtype.name, []).append(i)
            for idx in by_dtype.values():
                parts = [grads[i] for i in idx]
                flat = tf.concat([tf.reshape(g, [-1]) for g in parts], 0)
                reduced = collective_op("hvd_allreduce", flat, {"op": op, "group": group}, "FusedAllreduce")
                sizes = [g.shape.num_elements() for g in parts]
                for i, piece in zip(idx, tf.split(reduced, sizes, 0)):
                    out[i] = tf.reshape(piece, grads[i].shape.as_list())
    return out


@contextlib.contextmanager
def distributed_gradients(op=Average, num_groups=1):
    """Within the block, every optimizer's ``compute_gradients`` (so ``minimize``) reduces
    its gradients over the ranks as ``DistributedOptimizer`` does: how ``kiln compile
    --distributed`` makes a plain TF1 model data-parallel."""
    transform = functools.partial(fused_allreduce, op=_reduce_op(None, op), num_groups=num_groups)
    GRADIENT_TRANSFORMS.append(transform)
    try:
        yield
    finally:
        GRADIENT_TRANSFORMS.remove(transform)


class DistributedOptimizer(Optimizer):
    """Wraps a TF1 optimizer: ``compute_gradients`` averages the gradients over the ranks
    (one fused allreduce per dtype, or per dtype and each of ``num_groups`` groups of
    variables, as Horovod's ``num_groups``), ``apply_gradients`` is the wrapped optimizer's."""

    def __init__(self, optimizer, name=None, use_locking=False, device_dense="", device_sparse="",
                 compression=Compression.none, sparse_as_dense=False, backward_passes_per_step=1, op=Average,
                 gradient_predivide_factor=1.0, average_aggregated_gradients=False, num_groups=0, groups=None,
                 process_set=None):
        unsupported = {"compression": compression is not Compression.none,
                       "backward_passes_per_step": backward_passes_per_step != 1,
                       "gradient_predivide_factor": gradient_predivide_factor != 1.0,
                       "groups": groups is not None, "process_set": process_set is not None}
        for arg, given in unsupported.items():
            if given:
                raise NotImplementedError(f"hvd.DistributedOptimizer({arg}=...) is not supported by Kiln "
                                          "(docs/distributed.md lists what is)")
        super().__init__(use_locking, name or f"Distributed{type(optimizer).__name__}")
        self._optimizer = optimizer
        self._op = _reduce_op(None, op)
        self._num_groups = num_groups

    def compute_gradients(self, *args, **kwargs):
        """The wrapped optimizer's gradients, averaged (or summed) over all ranks."""
        pairs = self._optimizer.compute_gradients(*args, **kwargs)
        if GRADIENT_TRANSFORMS:  # inside distributed_gradients(): already reduced
            return pairs
        grads = fused_allreduce([g for g, _ in pairs], self._op, self._num_groups)
        return list(zip(grads, [v for _, v in pairs]))

    def apply_gradients(self, *args, **kwargs):
        return self._optimizer.apply_gradients(*args, **kwargs)

    def get_slot(self, *args, **kwargs):
        return self._optimizer.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._optimizer.get_slot_names(*args, **kwargs)

    def variables(self, *args, **kwargs):
        return self._optimizer.variables(*args, **kwargs)

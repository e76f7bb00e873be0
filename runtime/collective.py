"""Collectives between the processes of a data-parallel job (MPI through mpi4py).

    from runtime.collective import communicator
    comm = communicator()          # MPI when launched by mpiexec/mpirun, else one process
    comm.allreduce(buf, "average")  # in place, on the caller's numpy buffer
    comm.bcast(arr, root=0); comm.allgather(arr); comm.rank, comm.size, comm.local_rank

:func:`communicator` returns the process-wide communicator: :class:`MPIComm` over
``MPI.COMM_WORLD`` when the process was started by an MPI launcher (``PMI_RANK``,
``OMPI_COMM_WORLD_RANK`` or ``PMIX_RANK`` set) and mpi4py imports, else :class:`LocalComm`
(one rank; every collective is the identity).  Nothing imports mpi4py until then.

No hang when a rank dies: every collective runs under a watchdog thread with a deadline
(``KILN_COLLECTIVE_TIMEOUT`` seconds, default 120).  Past it, :meth:`MPIComm.abort` prints
``kiln: rank R: ...`` on stderr and calls ``MPI_Abort`` (mpi4py initializes MPI with
``MPI_THREAD_MULTIPLE``), which ends every rank of the job.  (Blocking collectives under a
watchdog, not polled nonblocking ones: MPICH's blocking allreduce is ~3x quicker.)
Numeric buffers are reduced in place (``MPI_IN_PLACE``): no copies besides MPI's own.
Device (CUDA/MLU) artifacts hand their fetched host arrays to these calls, so their
reduction goes through host buffers.  Never imports ``compiler``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

import numpy as np

__all__ = ["CollectiveError", "LocalComm", "MPIComm", "communicator", "launched_by_mpi", "timeout_s"]

_LAUNCHER_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
_REDUCE_OPS = ("average", "sum", "min", "max")
DEFAULT_TIMEOUT_S = 120.0


class CollectiveError(RuntimeError):
    """A collective used wrongly (unknown op, mismatched buffer); the message names it."""


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpiexec/mpirun) started this process."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def timeout_s() -> float:
    """Seconds a collective may wait for the other ranks (``KILN_COLLECTIVE_TIMEOUT``)."""
    raw = os.environ.get("KILN_COLLECTIVE_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise CollectiveError(f"KILN_COLLECTIVE_TIMEOUT must be a number of seconds, got {raw!r}") from None
    return value if value > 0 else DEFAULT_TIMEOUT_S


def _check_op(op):
    if op not in _REDUCE_OPS:
        raise CollectiveError(f"allreduce: unknown op {op!r} (one of {', '.join(_REDUCE_OPS)})")


class LocalComm:
    """One process: rank 0 of 1; collectives return their input (allreduce leaves it)."""

    rank, size, local_rank, local_size = 0, 1, 0, 1
    is_mpi = False

    def allreduce(self, buf, op="average"):
        _check_op(op)
        return buf

    def allgather(self, arr):
        return np.asarray(arr)

    def bcast(self, arr, root=0):
        return arr

    def bcast_object(self, obj, root=0):
        return obj

    def barrier(self):
        pass

    def abort(self, message, code=1):
        """One process: raise instead of aborting a job."""
        raise SystemExit(f"kiln: {message}")


def _json_plain(value):
    """numpy scalars and arrays as plain JSON values (``bcast_object``)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"cannot broadcast a {type(value).__name__} between ranks")


ABORT_GRACE_S = 1.0  # seconds between a rank's abort message and MPI_Abort


class MPIComm:
    """``MPI.COMM_WORLD`` with collectives under a deadline watchdog (module doc)."""

    is_mpi = True

    def __init__(self, mpi):
        self._mpi = mpi
        self._comm = mpi.COMM_WORLD
        self.rank, self.size = self._comm.Get_rank(), self._comm.Get_size()
        local = self._comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self._watchdog = _Watchdog(self._timed_out)
        self._ops = {"average": mpi.SUM, "sum": mpi.SUM, "min": mpi.MIN, "max": mpi.MAX}

    @contextlib.contextmanager
    def _deadline(self, what):
        """Run a (blocking) collective under the watchdog: past ``timeout_s()`` the job is
        aborted naming ``what`` (a blocking call is ~3x quicker than a polled nonblocking one)."""
        with self._watchdog.armed(what, timeout_s()):
            yield

    def _timed_out(self, what, limit):
        """The watchdog's verdict: end the job (from the watchdog thread; MPI_THREAD_MULTIPLE)."""
        self.abort(f"{what} timed out after {limit:g} s waiting for the other ranks (a rank "
                   "died or stopped); aborting the job (KILN_COLLECTIVE_TIMEOUT sets the limit)")

    def allreduce(self, buf, op="average"):
        """Reduce the contiguous numpy ``buf`` over all ranks in place; ``average`` divides by
        the number of ranks.  Returns ``buf``."""
        _check_op(op)
        if not (isinstance(buf, np.ndarray) and buf.flags.c_contiguous and buf.flags.writeable):
            raise CollectiveError("allreduce needs a writable C-contiguous numpy array, got "
                                  f"{type(buf).__name__}")
        with self._deadline(f"allreduce of {buf.size} {buf.dtype} values"):
            self._comm.Allreduce(self._mpi.IN_PLACE, buf, self._ops[op])
        if op == "average":
            buf /= self.size
        return buf

    def allgather(self, arr):
        """Concatenate every rank's ``arr`` along its first axis (first dims may differ)."""
        arr = np.ascontiguousarray(arr)
        counts = np.zeros(self.size, np.int64)
        self.allreduce_into(counts, len(arr) if arr.ndim else 1)
        inner = arr.shape[1:] if arr.ndim else ()
        out = np.empty((int(counts.sum()),) + inner, arr.dtype)
        per = int(np.prod(inner, dtype=np.int64))
        sizes = [int(c) * per for c in counts]
        with self._deadline(f"allgather of {arr.dtype}{list(arr.shape)}"):
            self._comm.Allgatherv(arr, [out, sizes])
        return out

    def allreduce_into(self, counts, mine):
        """``counts[r]`` = rank r's ``mine`` on every rank (a small gather by sum)."""
        counts[self.rank] = mine
        self.allreduce(counts, "sum")

    def bcast(self, arr, root=0):
        """Rank ``root``'s ``arr`` on every rank, written into ``arr`` in place (same shape)."""
        if not (isinstance(arr, np.ndarray) and arr.flags.c_contiguous):
            raise CollectiveError(f"bcast needs a C-contiguous numpy array, got {type(arr).__name__}")
        with self._deadline(f"broadcast of {arr.dtype}{list(arr.shape)} from rank {root}"):
            self._comm.Bcast(arr, root=root)
        return arr

    def bcast_object(self, obj, root=0):
        """A small JSON-able object of rank ``root`` on every rank (a length, then the UTF-8
        bytes; numpy scalars become numbers, tuples lists).  JSON, not pickle: a rank never
        unpickles bytes that came over the network."""
        data = json.dumps(obj, default=_json_plain).encode() if self.rank == root else b""
        n = self.bcast(np.array([len(data)], np.int64), root)[0]
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else np.empty(int(n), np.uint8)
        self.bcast(buf, root)
        return json.loads(buf.tobytes().decode())

    def barrier(self):
        with self._deadline("barrier"):
            self._comm.Barrier()

    def abort(self, message, code=1):
        """Print ``kiln: rank R: message`` and end every rank of the job (``MPI_Abort``)."""
        print(f"kiln: rank {self.rank}: {message}", file=sys.stderr, flush=True)
        # The launcher forwards each rank's stderr asynchronously and MPI_Abort tears the job
        # down at once: give it a moment to pass the message on (seen lost on a loaded machine).
        time.sleep(ABORT_GRACE_S)
        self._comm.Abort(code)


class _Watchdog:
    """A daemon thread that calls ``on_timeout(what, limit)`` when a collective armed with
    :meth:`armed` runs past its limit (started on first use)."""

    def __init__(self, on_timeout):
        self._on_timeout = on_timeout
        self._cond = threading.Condition()
        self._armed = None  # (deadline, what, limit) while a collective runs
        self._thread = None

    @contextlib.contextmanager
    def armed(self, what, limit):
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="kiln-collective-watchdog", daemon=True)
                self._thread.start()
            self._armed = (time.monotonic() + limit, what, limit)
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._armed = None

    def _watch(self):
        with self._cond:
            while True:
                if self._armed is None:
                    self._cond.wait()
                    continue
                deadline, what, limit = self._armed
                if time.monotonic() >= deadline:
                    self._on_timeout(what, limit)
                    return
                self._cond.wait(deadline - time.monotonic())


_COMM = None


def communicator():
    """The process-wide communicator (MPI when launched by mpiexec, else one process)."""
    global _COMM
    if _COMM is None:
        _COMM = _mpi_comm() if launched_by_mpi() else LocalComm()
    return _COMM


def _mpi_comm():
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise CollectiveError(f"this process was started by an MPI launcher but mpi4py cannot be "
                              f"imported ({err}); pip install 'kiln[mpi]'") from None
    return MPIComm(MPI)

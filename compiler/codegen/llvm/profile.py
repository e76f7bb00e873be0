"""Profiling instrumentation of the CPU module, emitted only for a profiling build
(``kiln compile --profile``, the cpu backend's ``profile`` option; docs/performance.md).

``install(module)`` adds, and marks the module with, the event recorder:

* ``void kiln_profile_attach(void *events, int64_t capacity)``: where events go (caller
  memory of ``capacity`` records; NULL stops recording); resets the count;
* ``int64_t kiln_profile_count(void)``: events recorded since the attach (more than
  ``capacity`` when some were dropped);
* internal ``kiln.prof.now()`` (``clock_gettime(CLOCK_MONOTONIC)`` in ns, the clock of
  Python's ``time.monotonic_ns``) and ``kiln.prof.record(id, tid, start, end)``, which claims
  a slot with an atomic add so that worker threads record concurrently.

An event is ``{i32 id, i32 arg, i64 start, i64 end}`` (``lower/profile_table.py`` numbers
the ids and writes the manifest record that names them; ``arg`` is the thread, or the batch
size for a step).  The entry function records its whole step and every kernel call on thread 0 (the calling thread, thread 0 of every libgomp
team); the outlined bodies of parallel loops and of the GEMM record each thread's chunk
under the id of the kernel call that launched them (``kiln.prof.current``, set before each
call) with ``CHUNK_FLAG`` set.  The buffer and the current id are per library, not per state: profile one step at a
time.  A module without ``install`` has none of these symbols (tests check it).
"""
from __future__ import annotations

from llvmlite import ir

from ...lower.profile_table import CHUNK_FLAG
from .gemm_kernel import I32, I64, PTR, c64, i32, intrinsic, new_function, opaque

EVENT = ir.LiteralStructType([I32, I32, I64, I64])
CLOCK_MONOTONIC = 1
_TIMESPEC = ir.LiteralStructType([I64, I64])


class Profiler:
    """The recorder's globals and functions in one module (see the module doc)."""

    def __init__(self, module: ir.Module):
        self.module = module
        self.events, self.capacity, self.count, self.current = (
            self._global(name, ty) for name, ty in (("events", PTR), ("capacity", I64), ("count", I64),
                                                    ("current", I32)))
        self.now_fn = self._emit_now()
        self.record_fn = self._emit_record()
        self._emit_attach()
        self._emit_count()

    def _global(self, name, ty):
        g = ir.GlobalVariable(self.module, ty, f"kiln.prof.{name}")
        g.initializer = ir.Constant(ty, None)
        g.linkage = "internal"
        return opaque(g)

    def _emit_now(self) -> ir.Function:
        fn, b = new_function(self.module, "kiln.prof.now", I64, [], [])
        clock = intrinsic(self.module, "clock_gettime", I32, [I32, PTR])
        ts = opaque(b.alloca(_TIMESPEC))
        b.call(clock, [i32(CLOCK_MONOTONIC), ts])
        sec, nsec = (b.load(b.gep(ts, [i32(0), i32(k)], source_etype=_TIMESPEC), typ=I64) for k in (0, 1))
        b.ret(b.add(b.mul(sec, c64(1_000_000_000)), nsec))
        return fn

    def _emit_record(self) -> ir.Function:
        fn, b = new_function(self.module, "kiln.prof.record", ir.VoidType(), [I32, I32, I64, I64],
                             ["id", "arg", "start", "end"])
        slot = b.atomic_rmw("add", self.count, c64(1), "monotonic")
        events = b.load(self.events, typ=PTR)
        room = b.and_(b.icmp_signed("<", slot, b.load(self.capacity, typ=I64)),
                      b.icmp_unsigned("!=", events, ir.Constant(PTR, None)))
        with b.if_then(room):
            at = b.gep(events, [slot], source_etype=EVENT)
            for k, value in enumerate(fn.args):
                b.store(value, b.gep(at, [i32(0), i32(k)], source_etype=EVENT))
        b.ret_void()
        return fn

    def _emit_attach(self) -> None:
        fn, b = new_function(self.module, "kiln_profile_attach", ir.VoidType(), [PTR, I64],
                             ["events", "capacity"], internal=False)
        b.store(fn.args[0], self.events)
        b.store(fn.args[1], self.capacity)
        b.store(c64(0), self.count)
        b.ret_void()

    def _emit_count(self) -> None:
        _, b = new_function(self.module, "kiln_profile_count", I64, [], [], internal=False)
        b.ret(b.load(self.count, typ=I64))

    # -- hooks used by the emitters
    def now(self, b):
        """The current time in ns (an i64 value)."""
        return b.call(self.now_fn, [])

    def record(self, b, event_id, arg, start) -> None:
        """Record ``[start, now)`` as event ``event_id`` with ``arg`` (thread, or a step's
        batch size; i32 values or ints)."""
        ids = [v if isinstance(v, ir.Value) else i32(v) for v in (event_id, arg)]
        b.call(self.record_fn, [*ids, start, self.now(b)])

    def timed_call(self, b, event_id, emit):
        """``emit()`` (a kernel call) recorded as event ``event_id`` on thread 0, with
        ``kiln.prof.current`` set for the parallel chunks it launches; returns its result."""
        event_id = event_id if isinstance(event_id, ir.Value) else i32(event_id)
        b.store(event_id, self.current)
        start = self.now(b)
        result = emit()
        self.record(b, event_id, 0, start)
        return result

    def timed_chunk(self, b, tid, emit, when=None):
        """``emit()`` (one thread's chunk of a parallel loop) recorded on thread ``tid``
        (i64 or i32) under the id of the kernel call running it, ``CHUNK_FLAG`` set, if
        ``when`` (an i1, default true: a loop run without a team records no chunk); returns
        its result."""
        start = self.now(b)
        result = emit()
        tid = b.trunc(tid, I32) if tid.type == I64 else tid
        chunk = b.or_(b.load(self.current, typ=I32), i32(CHUNK_FLAG))
        if when is None:
            self.record(b, chunk, tid, start)
        else:
            with b.if_then(when):
                self.record(b, chunk, tid, start)
        return result


def install(module: ir.Module) -> Profiler:
    """Add the recorder to ``module`` and mark the module as profiled; returns it."""
    module.kiln_profiler = Profiler(module)
    return module.kiln_profiler


def active(module: ir.Module):
    """The module's :class:`Profiler`, or None when it is not a profiling build."""
    return getattr(module, "kiln_profiler", None)

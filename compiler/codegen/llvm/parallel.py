"""Parallel ``For`` loops through libgomp: ``GOMP_parallel`` with an outlined body.

``For(parallel=True)`` at the top level of a kernel (not inside another parallel loop, and
not combining into an accumulator declared outside it) is emitted as ::

    alone = !((stop - start) * work >= 32768 && omp_get_max_threads() > 1 && stop - start > 1);
    if (!alone)
        GOMP_parallel(body.par, &captured, 0, 0);   // libgomp's team (OMP_NUM_THREADS)
    else
        body.par(&captured);                        // the whole loop on this thread

The captured struct holds ``bufs``, ``N``, ``err``, the loop bounds, a status word, the
``alone`` flag, a chunk counter and every outer value the body reads (loop indices, Lets,
the current value of accumulators, renderer temporaries).  The loop's code exists once, in
the outlined ``void body.par(ptr data)``: each thread of the team (``T`` =
``omp_get_num_threads``, 1 when alone) claims chunks of ``g = ceil(trip / (4T))``
iterations, rounded up to the SIMD width, with an atomic add on the counter and runs them
(vectorized when the loop is) until none is left; so a thread the OS deschedules holds back
one chunk, not a fixed half of the loop.  Iterations are independent (what lowering and the
scheduling pass flag), so which thread runs a chunk never changes a result.  A failed
``Check`` in a thread sets the status with a compare-and-swap; the first writer owns the
message, the thread stops, and the kernel returns the status after the join.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .exprs import AccSlot
from .gemm_kernel import c64, ceil_div, imax, imin
from .profile import active as active_profiler
from .vals import I32, I64, PTR, declare
from .walk import read_vars

STATUS_FIELD = 5  # index of the status word in the captured struct
ALONE_FIELD = 6  # non-zero: the body runs on the calling thread alone (no team)
NEXT_FIELD = 7  # the next unclaimed iteration's offset from the start (an atomic counter)
CAPTURES = 8  # where the captured values start

#: a team's threads claim chunks of about trip / (threads * CHUNKS_PER_THREAD) iterations
CHUNKS_PER_THREAD = 4


class ParallelFail:
    """Failing in an outlined body: first failing thread writes the message; return."""

    def __init__(self, status_ptr):
        self.status = status_ptr

    def fail(self, r, code, message, value=None, dtype=None):
        b = r.b
        res = b.cmpxchg(self.status, ir.Constant(I32, 0), ir.Constant(I32, code), "monotonic", "monotonic")
        with b.if_then(b.extract_value(res, 1)):
            r.write_message(message, value, dtype)
        b.ret_void()

    def propagate(self, r, status):
        raise NotImplementedError("a parallel loop inside a parallel loop is rendered serially")


def emit_parallel_for(r, s, start, stop):
    """Loop ``s`` over ``[start, stop)``: threaded when large enough, else on this thread."""
    b = r.b
    work = b.mul(b.sub(stop, start), c64(max(1, int(s.work or 1))))
    threads = b.call(declare(r.module, "omp_get_max_threads", I32, []), [])
    go = b.and_(b.icmp_signed(">=", work, c64(r.options.parallel_min_work)),
                b.icmp_signed(">", threads, ir.Constant(I32, 1)))
    # one iteration gains nothing from the team; on this thread its GEMMs may use the team
    go = b.and_(go, b.icmp_signed(">", b.sub(stop, start), c64(1)))
    _launch(r, s, start, stop, go)


def _captures(r, s):
    """(names, values) of the outer variables the body reads, accumulators by value."""
    names = sorted(n for n in read_vars(s.body) if n in r.env and n != s.var.name)
    values = []
    for n in names:
        v = r.env[n]
        values.append(r.b.load(v.ptr, typ=v.type) if isinstance(v, AccSlot) else v)
    return names, values


def _launch(r, s, start, stop, threaded):
    """Fill the captured struct, run the outlined body on the team when ``threaded`` (else
    call it on this thread, as a team of one), propagate a failure."""
    b = r.b
    names, values = _captures(r, s)
    extras = sorted(r.extra_buffers)
    alone = b.zext(b.not_(threaded), I32)
    head = [r.bufs, r.batch, r.err, start, stop, ir.Constant(I32, 0), alone, c64(0)]
    fields = head + values + [r.extra_buffers[n][0] for n in extras]
    struct = ir.LiteralStructType([v.type for v in fields])
    data = r.alloca(struct)
    data.type = PTR  # an opaque pointer (llvmlite types allocas as typed pointers)
    for i, v in enumerate(fields):
        b.store(v, _field(b, data, struct, i))
    outlined = _outline(r, s, struct, names, extras)
    gomp = declare(r.module, "GOMP_parallel", ir.VoidType(), [PTR, PTR, I32, I32])
    with b.if_else(threaded) as (team, this_thread):
        with team:
            b.call(gomp, [outlined, data, ir.Constant(I32, 0), ir.Constant(I32, 0)])
        with this_thread:
            b.call(outlined, [data])
    status = b.load(_field(b, data, struct, STATUS_FIELD), typ=I32)
    with b.if_then(b.icmp_signed("!=", status, ir.Constant(I32, 0)), likely=False):
        r.failure.propagate(r, status)


def _field(b, data, struct, i):
    return b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, i)], source_etype=struct)


def _outline(r, s, struct, names, extras):
    """``void <kernel>.par(ptr data)``: this thread's chunk of the loop."""
    from .render import open_function  # render imports this module

    fn, pro, b = open_function(r.module, r.module.get_unique_name(f"{r.fn.name}.par"), ir.VoidType(),
                               [PTR], ["data"])
    fn.attributes.add("noinline")  # called from two sites: one copy of the loop, not two
    data = fn.args[0]
    # read in the prologue: buffer pointers loaded there (from bufs) must see them
    vals = [pro.load(_field(pro, data, struct, i), typ=t) for i, t in enumerate(struct.elements)]
    bufs, batch, err, start, stop = vals[:5]
    alone = pro.icmp_signed("!=", vals[ALONE_FIELD], ir.Constant(I32, 0))
    env = dict(zip(names, vals[CAPTURES:CAPTURES + len(names)]))
    child = r.derive(fn, b, pro, bufs, batch, err, ParallelFail(_field(pro, data, struct, STATUS_FIELD)), env)
    # alone, the body's GEMMs may use the team (nthreads 0); in a team, their own thread
    child.gemm_threads = pro.select(alone, ir.Constant(I32, 0), ir.Constant(I32, 1))
    for name, ptr in zip(extras, vals[CAPTURES + len(names):]):
        child.extra_buffers[name] = (ptr, r.extra_buffers[name][1])
    tid = b.sext(b.call(declare(r.module, "omp_get_thread_num", I32, []), []), I64)
    team = b.sext(b.call(declare(r.module, "omp_get_num_threads", I32, []), []), I64)
    tid, team = b.select(alone, c64(0), tid), b.select(alone, c64(1), team)
    w = r.vector_width(s) if s.vectorize else 1
    chunks = b.mul(team, c64(CHUNKS_PER_THREAD))
    per = b.sdiv(b.add(b.sub(stop, start), b.sub(chunks, c64(1))), chunks)
    grain = b.mul(imax(b, ceil_div(b, per, w), c64(1)), c64(w))
    counter = _field(pro, data, struct, NEXT_FIELD)

    def claim_chunks():
        _claim_loop(b, fn, counter, start, stop, grain, lambda lo, hi: child.loop_range(s, lo, hi))
    profiler = active_profiler(r.module)
    if profiler:  # a profiling build: this thread's share is an event (profile.py)
        profiler.timed_chunk(b, tid, claim_chunks, when=b.not_(alone))
    else:
        claim_chunks()
    b.ret_void()
    child.finish()
    return fn


def _claim_loop(b, fn, counter, start, stop, grain, run):
    """Until the loop is done: claim the next ``grain`` iterations from the shared ``counter``
    (an atomic add) and ``run(lo, hi)`` them.  Threads take chunks as they free up, so one
    that the OS deschedules holds back only the chunk it has, not a fixed share."""
    grab, work, done = (fn.append_basic_block(n) for n in ("claim", "chunk", "claimed"))
    b.branch(grab)
    b.position_at_end(grab)
    lo = b.add(start, b.atomic_rmw("add", counter, grain, "monotonic"))
    b.cbranch(b.icmp_signed("<", lo, stop), work, done)
    b.position_at_end(work)
    run(lo, imin(b, b.add(lo, grain), stop))
    b.branch(grab)
    b.position_at_end(done)

"""Reductions over leading axes split into parts (part of the scheduling pass, schedule.py,
for a target that threads loops in place and declares ``Capabilities.reduction_parts``).

A reduce group whose reduced axes lead (loops.py, strategy (b): a bias gradient) lowers to
an init loop, a nest with the reduced loops outside and the kept loops inside that updates
its result in place, ``b[E] = combine(b[E], v)``, and maybe an epilogue loop.  No loop of
that nest can be threaded as it is: every iteration of the outer (reduced) loop updates
every ``b[E]``, and the inner (kept) loops are too short to pay for a thread team.
``split_reductions`` rewrites such a top-level loop ``for r in [start, stop)`` (trip count
``T``) as ``P = caps.reduction_parts`` parts, each with its own row of partial results in
a scratch buffer ``b_part`` (rows of ``R`` elements: ``|b|`` rounded up to whole 64-byte
cache lines, so that parts running on two threads never write the same line)::

    for p in [0, P) parallel:                             # the parts: independent
        for e in [0, |b|) vectorize:
            b_part[p*R + e] = identity                    # the combine's neutral element
        for r in [start + p*T//P, start + (p+1)*T//P):    # part p of the iterations
            ...                                           # the body, updating b_part[p*R + E]
    for e in [0, |b|) vectorize:                          # the rows into b, in part order
        b[e] = combine(...combine(combine(b[e], b_part[e]), b_part[R + e])..., b_part[(P-1)*R + e])

The parts and the order in which they are combined depend on ``P`` and ``T`` only, never on
the threads that run them, so results are the same for every thread count and every run;
they differ from the sequential loop by reassociation (the rounding of float sums).

A top-level loop is split when: its bounds are free of loop variables, it is not flagged,
no loop inside it is flagged ``parallel`` (lowering's choice stays) and it is not itself
proven independent (then plain threading serves); independence may be inferred from its accesses
(no check, GEMM or workspace aliasing: ``launches.inferable``); some buffers are only
updated in it, every access being the load and store of an update ``b[E] = combine(b[E], v)``
with one combine per buffer and a static shape; every other buffer it writes is written at
elements its iterations keep apart (``footprint.separating``); its trip count grows with N
or is at least ``P``; the parts pay for threads (``P`` x the work of a part, its iterations
counted as ``ceil(T/P)``, one when ``T`` grows with N, is at least ``caps.min_parallel_work``);
and the partial rows take at most ``SPLIT_MAX_BYTES``.

``Parts`` places the partial buffers after the program's static scratch region; every
kernel's start at the same offset, as they live only while their kernel runs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..ir.types import int64
from . import kernel_ir as K
from .combine import combine_op, identity
from .context import scratch_aligned, unique_name
from .footprint import accesses, separating, walk
from .indexing import add, i64, idiv, mul, sub
from .kernel_walk import static_trip, stmt_work
from .launches import flagged, independent_loops, inferable, rectangular, rmw

SPLIT_MAX_BYTES = 1 << 20  # the most bytes of partial results (all rows) one split loop may use


class Parts:
    """The partial-result buffers of one program's split loops (see the module docstring):
    ``buffers`` (the program's, plus the new ones) and ``static_bytes`` (the scratch region's
    static part, grown to hold the largest kernel's partial buffers)."""

    def __init__(self, program: K.Program):
        self.buffers = dict(program.buffers)
        self.base = scratch_aligned(program.scratch_static_bytes)
        self.static_bytes = program.scratch_static_bytes
        self.count = 0  # split loops so far (names their loop variables)
        self.kernel_buffers = []  # the current kernel's partial buffers
        self._next = self.base

    def begin_kernel(self) -> None:
        """A new kernel: its partial buffers start at the base again."""
        self._next = self.base
        self.kernel_buffers = []

    def allocate(self, hint: str, dtype, shape: tuple) -> str:
        """A fresh static scratch buffer of ``shape`` for the current kernel."""
        name = unique_name(f"{hint}_part", set(self.buffers))
        nbytes = dtype.np.itemsize
        for d in shape:
            nbytes *= d
        self.buffers[name] = K.BufferDecl(name, dtype, tuple(shape), "scratch", space="static", offset=self._next)
        self._next += scratch_aligned(nbytes)
        self.kernel_buffers.append(name)
        self.static_bytes = max(self.static_bytes, self._next)
        return name


def split_reductions(body: list, buffers: dict, caps, parts: Parts) -> list:
    """The top-level statements ``body`` of a kernel with each qualifying loop split into
    ``caps.reduction_parts`` parts and its combine loop (see the module docstring)."""
    parts.begin_kernel()
    out = []
    for s in body:
        targets = _updated(s, buffers, caps) if isinstance(s, K.For) else None
        out += _split(s, targets, caps.reduction_parts, parts) if targets else [s]
    return out


def _size(decl) -> int | None:
    """Elements of a buffer with a static shape, else None."""
    if not all(isinstance(d, int) for d in decl.shape):
        return None
    n = 1
    for d in decl.shape:
        n *= d
    return n


@dataclass(frozen=True)
class _Target:
    """A buffer a split loop updates: its combine, dtype and elements."""

    buffer: str
    combine: str
    dtype: object
    size: int

    @property
    def stride(self) -> int:
        return part_stride(self.size, self.dtype)


def part_stride(size: int, dtype) -> int:
    """Elements per partial row of ``size`` elements: whole cache lines, so parts on two
    threads share none."""
    item = dtype.np.itemsize
    return scratch_aligned(size * item) // item


def _updated(loop: K.For, buffers: dict, caps) -> list | None:
    """The ``_Target``s ``loop`` updates when it qualifies for a split (module docstring),
    else None."""
    count = caps.reduction_parts
    trip = static_trip([loop])
    if not rectangular(loop) or (trip is not None and trip < count):
        return None
    if flagged(loop) or any(isinstance(s, K.For) and s.parallel for s, _ in walk(loop)) or not inferable(loop, buffers):
        return None
    if any(f is loop for f in independent_loops(loop, buffers)):
        return None  # plain threading serves it
    acc = accesses(loop)
    updates = {}
    for s, _ in walk(loop):
        hit = rmw(s)
        if hit is not None:
            updates.setdefault(s.buffer, []).append((hit[0], s.value.dtype))
    targets = [_Target(b, *ups[0], _size(buffers[b])) for b, ups in updates.items()
               if len(set(ups)) == 1 and _size(buffers[b]) is not None
               and sum(a.buffer == b for a in acc) == 2 * len(ups)]
    if not targets:
        return None
    others = {a.buffer for a in acc if a.store} - {t.buffer for t in targets}
    if others and not separating(loop, others, {loop.var.name}):
        return None
    part_bytes = sum(count * t.stride * t.dtype.np.itemsize for t in targets)
    rows = -(-trip // count) if trip is not None else 1
    if part_bytes > SPLIT_MAX_BYTES or count * rows * stmt_work(loop.body) < caps.min_parallel_work:
        return None
    return targets


def _split(loop: K.For, targets: list, count: int, parts: Parts) -> list:
    """``loop`` as ``count`` parallel parts over partial rows, then the combine loops."""
    k = parts.count
    parts.count += 1
    p = K.Var(f"kiln_part{k}", int64)
    rows = {t.buffer: parts.allocate(t.buffer, t.dtype, (count, t.stride)) for t in targets}
    inits = [_row_loop(K.Var(f"kiln_init{k}_{j}", int64), t.size, lambda e, t=t: K.Store(
        rows[t.buffer], add(mul(p, t.stride), e), identity(t.combine, t.dtype))) for j, t in enumerate(targets)]
    trip = sub(loop.stop, loop.start)
    lo = add(loop.start, idiv(mul(p, trip), count))
    hi = add(loop.start, idiv(mul(add(p, 1), trip), count))
    body = _retarget(loop.body, {t.buffer: (rows[t.buffer], mul(p, t.stride)) for t in targets})
    static = static_trip([loop])
    work = (-(-static // count) if static is not None else 1) * max(1, stmt_work(loop.body))
    split = K.For(p, i64(0), i64(count), K.Block(inits + [replace(loop, start=lo, stop=hi, body=body)]),
                  parallel=True, work=work)
    combines = [_row_loop(K.Var(f"kiln_comb{k}_{j}", int64), t.size,
                          lambda e, t=t: _combine_rows(t, rows[t.buffer], e, count)) for j, t in enumerate(targets)]
    return [split] + combines


def _row_loop(var: K.Var, size: int, store) -> K.For:
    """``for var in [0, size) vectorize: store(var)``."""
    return K.For(var, i64(0), i64(size), store(var), vectorize=True, work=1)


def _combine_rows(t: _Target, rows: str, e, count: int) -> K.Store:
    """``b[e] = combine(...combine(b[e], rows[e])..., rows[(count-1)*stride + e])``: the parts
    in order."""
    return K.Store(t.buffer, e, combine_parts(t.combine, K.Load(t.buffer, e, t.dtype), rows, t.stride, e, count,
                                              t.dtype))


def combine_parts(combine: str, first, rows: str, stride: int, e, count: int, dtype):
    """``combine(...combine(first, rows[e])..., rows[(count-1)*stride + e])``: element ``e`` of
    ``count`` partial rows folded in part order (``first`` None: from the first row)."""
    value = first
    for q in range(count):
        term = K.Load(rows, add(i64(q * stride), e), dtype)
        value = term if value is None else K.Op(combine_op(combine), (value, term), dtype)
    return value


def _retarget(s, moved: dict):
    """``s`` with every update of a buffer in ``moved`` (``{buffer: (rows, row offset)}``)
    made on its row instead: ``rows[offset + E]``."""
    if isinstance(s, K.Block):
        return K.Block([_retarget(x, moved) for x in s.body])
    if isinstance(s, K.For):
        return replace(s, body=_retarget(s.body, moved))
    if isinstance(s, K.If):
        return replace(s, then=_retarget(s.then, moved))
    if isinstance(s, K.Store) and s.buffer in moved:
        rows, offset = moved[s.buffer]
        index = add(offset, s.index)
        old = K.Load(s.buffer, s.index, s.value.dtype)
        args = tuple(K.Load(rows, index, s.value.dtype) if a == old else a for a in s.value.args)
        return K.Store(rows, index, replace(s.value, args=args))
    return s

"""Packed, blocked, multithreaded sgemm written as LLVM IR (the CPU backend's GEMM engine).

``emit_sgemm(module)`` adds::

    int32 kiln_sgemm(int64 M, int64 N, int64 K, const float* A, int64 lda, int32 transA,
                     const float* B, int64 ldb, int32 transB, float* C, int64 ldc,
                     float beta, int32 nthreads, <epilogue args...>)

computing ``C = op(A) @ op(B) + beta*C`` on row-major matrices with leading dimensions
(op = transpose when the flag is non-zero), then the optional epilogue elementwise on C.
It returns 0, or 2 (``KILN_ENOMEM`` of docs/ABI.md) when a packing buffer could not be
allocated (C is then incomplete).

Structure (Goto/BLIS): per thread, loop over NC-column blocks of C, KC-deep blocks of K
(B block packed into NR-wide panels), MC-row blocks (A block packed into MR-high panels),
then MR x NR tiles computed by the register micro-kernel (``gemm_kernel.emit_tile``).
When the thread's columns are at most ``DIRECT_A_PANELS`` NR panels (a convolution with 64
output channels), each A element would feed one or two tiles: the tiles read A in place.
Threads come from libgomp's ``GOMP_parallel``: the rows of C (its columns when N > M, see
``_split_rows``) are split in MR (NR) multiples, one contiguous range per thread, each thread
running the serial algorithm on its range.  Packing buffers are ``aligned_alloc``'d per
call and per thread and freed before returning: no globals, so calls from several
states or threads at once are safe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import llvmlite.ir as ir

from runtime.abi_spec import KILN_ENOMEM

from .gemm_kernel import (F32, I32, I64, PTR, TileContext, c64, ceil_div, counted_loop,
                          emit_tile, fptr, imax, imin, intrinsic, new_function)
from .gemm_pack import emit_pack
from .profile import active as active_profiler
from .target import HostTarget, has_feature, host_target

#: the names of engine functions start with this (build.py compiles them with their own pipeline)
ENGINE_PREFIX = "kiln_sgemm"

#: problems with M*N*K below this run on the calling thread (threads cost more).
PARALLEL_MIN_WORK = 64 ** 3

#: a thread's range of at most this many NR panels reads A in place instead of packing it,
#: when consecutive k of op(A) are at most DIRECT_A_MAX_K_STRIDE floats apart (1 unless
#: A is transposed): packing an element used by one or two tiles does not pay.
DIRECT_A_PANELS = 2
DIRECT_A_MAX_K_STRIDE = 32


@dataclass(frozen=True)
class GemmConfig:
    """Register tile (MR x NR, vectors of VEC floats), cache blocking (KC, MC, NC), prefetch.

    MR*NR/VEC accumulators + NR/VEC B vectors + 1 broadcast must fit the vector
    registers (32 with AVX-512, 16 with AVX2).  A KC x NR panel of B is reused by the
    MC/MR row panels of an A block (MC*KC floats, in L2); the KC x NC block of B lies in
    L3.  ``prefetch`` > 0: the micro-kernel prefetches the B panel that many k steps
    ahead, so a panel's first pass does not wait on L3 (0: hardware prefetch only).

    A thread with fewer than ``few_rows`` rows of C uses K blocks of ``kc_few`` (when
    set) instead of ``kc``: deep K blocks cut the passes over C (a cost ~ 1/KC of the
    work), but packing B costs ~ 1/M of it, and with few rows the shallower blocks pack
    and use B faster.  Only threaded calls have such threads at 256+ sizes; the KC
    measurements (1 thread) are in docs/performance.md, "sgemm".
    """

    vec: int = 16
    mr: int = 6
    nr: int = 32
    kc: int = 384
    mc: int = 144
    nc: int = 3072
    fma: bool = True
    prefetch: int = 0
    kc_few: int = 0
    few_rows: int = 0

    def __post_init__(self):
        if self.nr % self.vec or self.mc % self.mr or self.nc % self.nr:
            raise ValueError(f"inconsistent GEMM blocking {self}")


# AVX-512: 14x32 uses 28 of the 32 zmm as accumulators (28 FMAs per 2 loads and 14
# broadcasts); KC = 512 halves the passes over C against 256, except for threads with
# few rows (measured on a Sapphire Rapids core, docs/performance.md "sgemm").
AVX512 = GemmConfig(vec=16, mr=14, nr=32, kc=512, mc=98, nc=3072, prefetch=32,
                    kc_few=256, few_rows=256)
AVX2 = GemmConfig(vec=8, mr=6, nr=16, kc=256, mc=120, nc=3072)
SSE = GemmConfig(vec=4, mr=4, nr=8, kc=256, mc=96, nc=2048, fma=False)


def config_for(target: HostTarget | None = None, features: str | None = None) -> GemmConfig:
    """The blocking for a target's SIMD: AVX-512 -> 14x32 of <16 x float>, AVX2 -> 6x16."""
    features = features if features is not None else (target or host_target()).features
    if has_feature(features, "avx512f"):
        return AVX512
    if has_feature(features, "avx2") and has_feature(features, "fma"):
        return AVX2
    return SSE


@dataclass(frozen=True)
class Epilogue:
    """Elementwise code fused into the store of every C tile (e.g. bias + relu).

    ``extra_args`` are LLVM types appended to ``kiln_sgemm``'s parameters and passed
    through to ``emit``.  ``emit(builder, ctx)`` gets a ``gemm_kernel.TileContext``
    (``ctx.accs[r][j]`` vectors, ``ctx.args``, ``ctx.row``/``ctx.col``,
    ``ctx.col_vector(ptr, j)``) and returns the new ``accs`` (same nesting and types).
    It may be called more than once per function (full and edge tiles): it must only
    emit code.  It runs once, after the last K block, on ``A'B' + beta*C``.

    ``keeps_c(builder, args) -> i1`` (optional; default: always): whether C still receives
    the epilogue's results.  Where it is false the epilogue consumes the tile (it stored
    what it computes elsewhere): the last K block neither stores nor prefetches C, which
    then only holds the partial sums of earlier K blocks (K > KC) and may be scratch.
    """

    emit: Callable[[ir.IRBuilder, TileContext], list]
    extra_args: Sequence[ir.Type] = ()
    keeps_c: Callable[[ir.IRBuilder, list], ir.Value] | None = None


def bias_relu_epilogue(relu: bool = True) -> Epilogue:
    """``C = C + bias[col]`` (then ``max(C, 0)``, NaN kept); one extra ``float* bias`` arg."""

    def emit(b, ctx):
        bias = [ctx.col_vector(ctx.args[0], j) for j in range(len(ctx.accs[0]))]
        out = []
        for row in ctx.accs:
            vals = [b.fadd(v, bias[j]) for j, v in enumerate(row)]
            if relu:
                zero = ir.Constant(vals[0].type, None)
                vals = [b.select(b.fcmp_ordered("<", v, zero), zero, v) for v in vals]
            out.append(vals)
        return out

    return Epilogue(emit=emit, extra_args=(PTR,))


# Argument layout shared by the entry, the serial driver and the thread data struct.
_ARGS = ["M", "N", "K", "A", "lda", "transA", "B", "ldb", "transB", "C", "ldc", "beta"]
_TYPES = [I64, I64, I64, PTR, I64, I32, PTR, I64, I32, PTR, I64, F32]


def emit_sgemm(module: ir.Module, name: str = ENGINE_PREFIX, cfg: GemmConfig | None = None,
               epilogue: Epilogue | None = None) -> ir.Function:
    """Add the exported sgemm ``name`` (and its internal helpers ``name.*``) to ``module``."""
    cfg = cfg or config_for()
    extra = list(epilogue.extra_args) if epilogue else []
    pack_a = emit_pack(module, f"{name}.pack_a", cfg.mr, cfg.vec)
    pack_b = emit_pack(module, f"{name}.pack_b", cfg.nr, cfg.vec)
    tiles = (emit_tile(module, f"{name}.tile", cfg, epilogue),
             emit_tile(module, f"{name}.tile_in_place", cfg, epilogue, in_place=True))
    serial = _emit_serial(module, f"{name}.serial", cfg, extra, pack_a, pack_b, tiles)
    struct = ir.LiteralStructType(_TYPES + extra + [I32, I32])  # ..., nthreads, status
    worker = _emit_worker(module, f"{name}.worker", cfg, struct, serial)
    return _emit_entry(module, name, extra, struct, serial, worker)


def _emit_serial(module, name, cfg, extra, pack_a, pack_b, tiles):
    """``int32 serial(row0, col0, mt, nt, K, A, lda, tA, B, ldb, tB, C, ldc, beta, *extra)``.

    Computes rows [row0, row0+mt) x columns [col0, col0+nt) of C on the calling thread.
    ``tiles``: the packed-A tile and the in-place one, each called from one site (so
    each inlines, and the packed k loop keeps its constant A strides).
    """
    names = ["row0", "col0", "mt", "nt"] + _ARGS[2:] + [f"e{i}" for i in range(len(extra))]
    fn, b = new_function(module, name, I32, [I64] * 4 + _TYPES[2:] + extra, names)
    row0, col0, mt, nt, k, a, lda, ta, bm, ldb, tb, c, ldc, beta = fn.args[:14]
    ep_args = list(fn.args[14:])
    # Strides of op(A)[i, k] and op(B)[k, j] in memory: transposition is a swap.
    ta1 = b.icmp_signed("!=", ta, ir.Constant(I32, 0))
    tb1 = b.icmp_signed("!=", tb, ir.Constant(I32, 0))
    sa_row, sa_k = b.select(ta1, c64(1), lda), b.select(ta1, lda, c64(1))
    sb_k, sb_col = b.select(tb1, c64(1), ldb), b.select(tb1, ldb, c64(1))
    kcb = c64(cfg.kc)  # the K block depth for this thread's rows
    if cfg.kc_few:
        kcb = b.select(b.icmp_signed("<", mt, c64(cfg.few_rows)), c64(cfg.kc_few), kcb)
    kc_max = imax(b, imin(b, k, kcb), c64(1))
    a_buf = _alloc(b, module, b.mul(kc_max, _round_up(b, imin(b, mt, c64(cfg.mc)), cfg.mr)))
    b_buf = _alloc(b, module, b.mul(kc_max, _round_up(b, imin(b, nt, c64(cfg.nc)), cfg.nr)))
    nkb = b.sdiv(b.sub(b.add(k, kcb), c64(1)), kcb)
    nkb = imax(b, nkb, c64(1))  # one (empty) K block when K == 0
    # Few columns: each A element feeds at most DIRECT_A_PANELS B panels, too few to repay
    # packing it; the tiles read A in place instead, unless consecutive k of op(A) lie far
    # apart (a transposed A with a long leading dimension: measured slower).
    direct = b.and_(b.icmp_signed("<=", nt, c64(DIRECT_A_PANELS * cfg.nr)),
                    b.icmp_signed("<=", sa_k, c64(DIRECT_A_MAX_K_STRIDE)))
    ok = b.and_(b.icmp_unsigned("!=", a_buf, ir.Constant(PTR, None)),
                b.icmp_unsigned("!=", b_buf, ir.Constant(PTR, None)))

    def jc_block(b, jc, _):
        nc = imin(b, c64(cfg.nc), b.sub(nt, jc))

        def k_block(b, kb, _):
            pc = b.mul(kb, kcb)
            kc = imin(b, kcb, b.sub(k, pc))
            b_src = fptr(b, bm, b.add(b.mul(pc, sb_k), b.mul(b.add(col0, jc), sb_col)))
            beta_k = b.select(b.icmp_signed("==", kb, c64(0)), beta, ir.Constant(F32, 1.0))
            last = b.icmp_signed("==", kb, b.sub(nkb, c64(1)))

            def i_block(b, ic, _):
                mc = imin(b, c64(cfg.mc), b.sub(mt, ic))
                a_src = fptr(b, a, b.add(b.mul(b.add(row0, ic), sa_row), b.mul(pc, sa_k)))
                # The first A block packs each B panel just before its first use.
                pack = (pack_b, b_src, sb_col, sb_k, b.icmp_signed("==", ic, c64(0)))
                block = dict(cfg=cfg, b_buf=b_buf, kc=kc, c=c, ldc=ldc, row=b.add(row0, ic),
                             col=b.add(col0, jc), mc=mc, nc=nc, beta=beta_k, last=last,
                             ep_args=ep_args, pack=pack)
                with b.if_else(direct) as (in_place, packed):
                    with in_place:
                        _tile_loops(b, tile=tiles[1], a_panels=(a_src, sa_row, sa_row, sa_k),
                                    **block)
                    with packed:
                        b.call(pack_a, [a_src, sa_row, sa_k, mc, kc, a_buf])
                        _tile_loops(b, tile=tiles[0], a_panels=(a_buf, kc, c64(1), c64(cfg.mr)),
                                    **block)
                return []
            counted_loop(b, c64(0), mt, c64(cfg.mc), i_block, name="ic")
            return []
        counted_loop(b, c64(0), nkb, c64(1), k_block, name="kb")
        return []

    with b.if_then(ok):
        counted_loop(b, c64(0), nt, c64(cfg.nc), jc_block, name="jc")
    free = intrinsic(module, "free", ir.VoidType(), [PTR])
    b.call(free, [a_buf])
    b.call(free, [b_buf])
    b.ret(b.select(ok, ir.Constant(I32, 0), ir.Constant(I32, KILN_ENOMEM)))
    return fn


def _tile_loops(b, cfg, tile, a_panels, b_buf, kc, c, ldc, row, col, mc, nc, beta, last,
                ep_args, pack):
    """For each NR-column panel, for each MR-row panel of the A block: one tile call.

    ``a_panels = (base, row_step, a_rs, a_ks)``: row panel i starts at ``base[i*row_step]``
    (packed A: ``i*kc``; A in place: ``i*`` its row stride), the tile's A strides follow.

    ``pack = (pack_b, src, s_col, s_k, first)``: when ``first``, each B panel is packed
    right before its row panels use it (OpenBLAS's order), so the first A block reads it
    from L1/L2 instead of from wherever packing the whole KC x NC block left it; later A
    blocks reuse the packed block.  With few rows (one A block) this is all of B's use.
    """
    pack_b, b_src, sb_col, sb_k, first = pack
    a_base, a_row, a_rs, a_ks = a_panels

    def jr_loop(b, jr, _):
        bp = fptr(b, b_buf, b.mul(jr, kc))
        nr = imin(b, c64(cfg.nr), b.sub(nc, jr))
        with b.if_then(first):
            b.call(pack_b, [fptr(b, b_src, b.mul(jr, sb_col)), sb_col, sb_k, nr, kc, bp])

        def ir_loop(b, i, _):
            ap = fptr(b, a_base, b.mul(i, a_row))
            mr = imin(b, c64(cfg.mr), b.sub(mc, i))
            b.call(tile, [ap, a_rs, a_ks, bp, kc, c, ldc, b.add(row, i), b.add(col, jr), mr, nr,
                          beta, last, *ep_args])
            return []
        counted_loop(b, c64(0), mc, c64(cfg.mr), ir_loop, name="ir")
        return []
    counted_loop(b, c64(0), nc, c64(cfg.nr), jr_loop, name="jr")


def _round_up(b, x, m: int):
    """x rounded up to a multiple of the constant m."""
    return b.mul(ceil_div(b, x, m), c64(m))


def _alloc(b, module, n_floats):
    """``aligned_alloc(64, ...)`` room for n floats (size rounded up to 64 bytes)."""
    alloc = intrinsic(module, "aligned_alloc", PTR, [I64, I64])
    size = _round_up(b, b.mul(n_floats, c64(4)), 64)
    return b.call(alloc, [c64(64), size])


def _emit_worker(module, name, cfg, struct, serial):
    """``void worker(void* data)``: the outlined body run by each thread of the team.

    Splits C's rows (or columns when there are too few row panels) into one contiguous
    range per thread, in MR (NR) multiples (``_split_point``), and runs the serial
    driver on it.
    """
    fn, b = new_function(module, name, ir.VoidType(), [PTR], ["data"])
    nfields = len(struct.elements)
    vals = [b.load(b.gep(fn.args[0], [ir.Constant(I32, 0), ir.Constant(I32, i)],
                         source_etype=struct), typ=struct.elements[i]) for i in range(nfields)]
    m, n = vals[0], vals[1]
    tid = b.sext(b.call(intrinsic(module, "omp_get_thread_num", I32, []), []), I64)
    team = b.sext(b.call(intrinsic(module, "omp_get_num_threads", I32, []), []), I64)
    by_rows = _split_rows(b, m, n, team, cfg)
    extent, unit = b.select(by_rows, m, n), b.select(by_rows, c64(cfg.mr), c64(cfg.nr))
    start = _split_point(b, tid, team, extent, unit)
    end = _split_point(b, b.add(tid, c64(1)), team, extent, unit)
    count = b.sub(end, start)
    with b.if_then(b.icmp_signed(">", count, c64(0))):
        row0, mt = b.select(by_rows, start, c64(0)), b.select(by_rows, count, m)
        col0, nt = b.select(by_rows, c64(0), start), b.select(by_rows, n, count)
        run = lambda: b.call(serial, [row0, col0, mt, nt, *vals[2:nfields - 2]])
        profiler = active_profiler(module)  # a profiling build: each thread's share is an event
        status = profiler.timed_chunk(b, tid, run) if profiler else run()
        with b.if_then(b.icmp_signed("!=", status, ir.Constant(I32, 0))):
            slot = b.gep(fn.args[0], [ir.Constant(I32, 0), ir.Constant(I32, nfields - 1)],
                         source_etype=struct)
            b.atomic_rmw("or", slot, status, "monotonic")
    b.ret_void()
    return fn


def _split_point(b, t, team, extent, unit):
    """Where thread ``t``'s range starts: ``t * extent / team`` rounded to the nearest
    multiple of ``unit`` (MR or NR), ``extent`` for ``t == team``.

    Rounding to the nearest (not up) lets the partial last tile make up a short range:
    256 rows in 14-row tiles on 2 threads split 126 + 130 (9 tiles, 9 tiles and 4 rows),
    not 140 + 116 (10 tiles against 8 and 4 rows)."""
    # floor(t*extent/(team*unit) + 1/2) * unit, in integers
    num = b.add(b.mul(c64(2), b.mul(t, extent)), b.mul(team, unit))
    point = b.mul(b.sdiv(num, b.mul(c64(2), b.mul(team, unit))), unit)
    return b.select(b.icmp_signed(">=", t, team), extent, imin(b, point, extent))


def _split_rows(b, m, n, team, cfg):
    """Whether threads split C's rows (else its columns).  Each thread packs all of the
    operand along the unsplit dimension, so the split goes along the longer side (a row
    split repacks B per thread: wasteful for a skinny M x K times a large K x N), unless that
    side has fewer MR (NR) units than there are threads and the other side has more."""
    rows, cols = ceil_div(b, m, cfg.mr), ceil_div(b, n, cfg.nr)
    rows_fill = b.or_(b.icmp_signed(">=", rows, team), b.icmp_signed(">=", rows, cols))
    cols_short = b.and_(b.icmp_signed("<", cols, team), b.icmp_signed(">", rows, cols))
    return b.select(b.icmp_signed(">=", m, n), rows_fill, cols_short)


def _emit_entry(module, name, extra, struct, serial, worker):
    """The exported function: serial for small problems or one thread, else GOMP_parallel."""
    names = _ARGS + ["nthreads"] + [f"e{i}" for i in range(len(extra))]
    fn, b = new_function(module, name, I32, _TYPES + [I32] + extra, names, internal=False)
    args = list(fn.args)
    m, n, k, nthreads = args[0], args[1], args[2], args[12]
    gemm_args, ep_args = args[2:12], args[13:]
    empty = b.or_(b.icmp_signed("<=", m, c64(0)), b.icmp_signed("<=", n, c64(0)))
    with b.if_then(empty):
        b.ret(ir.Constant(I32, 0))
    work = b.mul(b.mul(m, n), imax(b, k, c64(1)))
    small = b.or_(b.icmp_signed("<", work, c64(PARALLEL_MIN_WORK)),
                  b.icmp_signed("==", nthreads, ir.Constant(I32, 1)))
    with b.if_then(small):
        b.ret(b.call(serial, [c64(0), c64(0), m, n, *gemm_args, *ep_args]))
    data = b.alloca(struct)
    data.type = PTR  # llvmlite types allocas as typed pointers; use an opaque ptr
    for i, v in enumerate(args[:12] + ep_args + [nthreads, ir.Constant(I32, 0)]):
        b.store(v, b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, i)], source_etype=struct))
    gomp = intrinsic(module, "GOMP_parallel", ir.VoidType(), [PTR, PTR, I32, I32])
    # nthreads <= 0 lets libgomp choose (OMP_NUM_THREADS or all cores).
    team = b.select(b.icmp_signed(">", nthreads, ir.Constant(I32, 0)), nthreads,
                    ir.Constant(I32, 0))
    b.call(gomp, [worker, data, team, ir.Constant(I32, 0)])
    status_ptr = b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, len(struct.elements) - 1)],
                       source_etype=struct)
    b.ret(b.load(status_ptr, typ=I32))
    return fn


def bind(lib, name: str = ENGINE_PREFIX, n_extra: int = 0):
    """The ctypes function for ``name`` in a loaded library, with its argument types set.

    Matrices are passed as addresses (``arr.ctypes.data``); ``n_extra`` pointer
    arguments of an epilogue follow ``nthreads``.  (For tests and benchmarks; the
    runtime binds its own entry points.)
    """
    import ctypes
    i64, i32, p = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    fn = getattr(lib, name)
    fn.restype = i32
    fn.argtypes = [i64, i64, i64, p, i64, i32, p, i64, i32, p, i64, ctypes.c_float, i32]
    fn.argtypes += [p] * n_extra
    return fn

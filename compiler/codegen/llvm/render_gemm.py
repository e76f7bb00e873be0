"""``Gemm`` statements: calls into the GEMM engine (gemm.py), epilogues fused into its tiles.

Three ways, chosen per statement:

1. **Fused epilogue** (float32, the common matmul + bias + relu / optimizer-update case).
   The epilogue holds only ``Let``/``Store``; one of its stores writes exactly C's own
   element (``c.offset + bidx*c.batch_stride + row*c.ld + col``) or C is a "scratch"
   buffer that the epilogue does not store to (then the epilogue consumes the tiles: the
   engine does not write C, except partial sums when K spans several K blocks); every
   other store is unit-stride in ``col`` (and not into A or B); nothing loads from C (the
   engine keeps partial sums there).
   Then the module's shared ``kiln_sgemm`` variant is called with this statement's two
   epilogue functions (full and edge tiles, render_epilogue.py): each renders the epilogue
   in vector form on a tile's accumulator vectors, one call per tile: ``Var("acc")`` is the
   accumulator, ``Var("col")`` the vector of column indices, ``Var("row")`` the tile row,
   ``Var("bidx")`` the batch index.  The store to C's element becomes the value the engine
   stores; the other stores are (masked, on edge tiles) vector stores.  A context struct
   passes ``bufs``, ``N``, ``bidx`` and the outer values the epilogue reads.
2. **Temporary** (float32, any other epilogue): the engine writes ``A'B'`` into an
   ``aligned_alloc``'d M x N buffer, then a loop nest over (row, col) runs the epilogue with
   ``acc`` loaded from it (vectorized / parallel by the ordinary loop rules).
3. **Reference loops** (other dtypes, a transposed C): the product as kernel-IR loops
   (a vectorized dot product per element), rendered like any kernel code.

Without an epilogue the same engine is called with null epilogue functions (a module holds
one engine copy) and stores into C (``beta = 1`` when ``accumulate``).  The
engine's own threads are used except inside a parallel loop (``nthreads = 1``).  A batched
Gemm loops over ``bidx`` around the calls.
"""
from __future__ import annotations

import llvmlite.ir as ir

from runtime.abi_spec import KILN_ENOMEM

from ...ir.types import float32, int64
from ...lower import kernel_ir as K
from .affine import lane_stride, same_index
from .exprs import AccSlot
from .gemm_kernel import c64, counted_loop
from .render_epilogue import CONSUME_C, KEEP_C, epilogue_fn, shared_engine
from .vals import F32, I32, I64, PTR, declare
from .walk import GEMM_VARS, all_exprs, iter_stmts, read_vars

TEMP = "__gemm_acc"


def _add(x, y):
    return K.Op("add", (x, y), int64)


def _mul(x, y):
    return K.Op("mul", (x, y), int64)


def _var(name):
    return K.Var(name, int64)


def render_gemm(r, g: K.Gemm):
    """Render Gemm statement ``g`` with renderer ``r`` (see the module doc)."""
    dtypes = {r.program.buffers[op.buffer].dtype.short for op in (g.a, g.b, g.c)}
    if dtypes != {"f32"} or g.c.transposed:
        r.render(reference_loops(g, r.program.buffers[g.c.buffer].dtype))
        return
    if g.epilogue is None:
        beta = 1.0 if g.accumulate else 0.0
        _per_batch(r, g, lambda bidx: _plain_call(r, g, bidx, _operand_ptr(r, g.c, bidx), r.emit(g.c.ld), beta))
        return
    c_index = fused_c_index(g, r.program.buffers[g.c.buffer].role == "scratch")
    if c_index is not None:
        _fused(r, g, c_index, KEEP_C if stores_c(g) else CONSUME_C)
    else:
        _via_temp(r, g)


# ----------------------------------------------------------------------------- engine calls
def _plain_call(r, g, bidx, c_ptr, ldc, beta):
    """An engine call without an epilogue: the module's one engine with null epilogue
    functions (its tiles skip them), so a module never holds a second engine copy (each
    costs LLVM ~0.3 s at O3)."""
    null = ir.Constant(PTR, None)
    _call(r, g, shared_engine(r), bidx, c_ptr, ldc, beta, [null, null, null, r.emit(g.m), KEEP_C])


def _per_batch(r, g, body):
    """``body(bidx)`` for each batch item (once with bidx = 0 when not batched)."""
    if g.batch is None:
        body(c64(0))
        return
    counted_loop(r.b, c64(0), r.emit(g.batch), c64(1), lambda b, i, _: body(i), name="bidx")


def _operand_ptr(r, op, bidx):
    b = r.b
    ptr, _ = r.buffer(op.buffer)
    off = r.emit(op.offset)
    if op.batch_stride is not None:
        off = b.add(off, b.mul(bidx, r.emit(op.batch_stride)))
    return b.gep(ptr, [off], source_etype=F32)


def _call(r, g, fn, bidx, c_ptr, ldc, beta, extra):
    """One engine call for batch item ``bidx``; a non-zero status fails the kernel."""
    b = r.b
    args = [r.emit(g.m), r.emit(g.n), r.emit(g.k),
            _operand_ptr(r, g.a, bidx), r.emit(g.a.ld), ir.Constant(I32, int(g.a.transposed)),
            _operand_ptr(r, g.b, bidx), r.emit(g.b.ld), ir.Constant(I32, int(g.b.transposed)),
            c_ptr, ldc, ir.Constant(F32, beta), r.gemm_threads, *extra]
    status = b.call(fn, args)
    with b.if_then(b.icmp_signed("!=", status, ir.Constant(I32, 0)), likely=False):
        r.failure.fail(r, KILN_ENOMEM, "out of memory in a matrix product")


# ----------------------------------------------------------------------------- fused epilogue
def c_element(g: K.Gemm):
    """The flat index of C's element (row, col) of batch item bidx, as an expression."""
    idx = _add(g.c.offset, _add(_mul(_var("row"), g.c.ld), _var("col")))
    if g.c.batch_stride is not None:
        idx = _add(idx, _mul(_var("bidx"), g.c.batch_stride))
    return idx


def fused_c_index(g: K.Gemm, c_is_scratch: bool = False):
    """C's element index when the epilogue can run inside the engine's tiles, else None.

    The engine keeps partial sums in C and then stores the epilogue's value there, so C
    must be written by the epilogue at that very element (the store is taken over) or be
    scratch that the epilogue does not store to (it consumes the tile: ``CONSUME_C``, the
    engine's last K block leaves C alone)."""
    epi = g.epilogue
    if not all(isinstance(s, (K.Block, K.Let, K.Store)) for s in iter_stmts(epi)):
        return None
    lets = {s.var.name: s.value for s in iter_stmts(epi) if isinstance(s, K.Let)}
    c_index, hits = c_element(g), 0
    for s in iter_stmts(epi):
        if not isinstance(s, K.Store):
            continue
        if s.buffer in (g.a.buffer, g.b.buffer):
            return None  # other tiles still read A and B
        if s.buffer == g.c.buffer:
            if not same_index(s.index, c_index, lets):
                return None
            hits += 1
        elif lane_stride(s.index, "col", lets) != 1:
            return None
    if any(isinstance(e, K.Load) and e.buffer == g.c.buffer for e in all_exprs(epi)):
        return None  # C holds partial sums of earlier K blocks by the time the epilogue runs
    return c_index if hits or c_is_scratch else None


def stores_c(g: K.Gemm) -> bool:
    """Whether the epilogue stores into C (else a fused epilogue consumes the tile: C is
    scratch, and the engine skips writing it, see ``CONSUME_C``)."""
    return any(isinstance(s, K.Store) and s.buffer == g.c.buffer for s in iter_stmts(g.epilogue))


def _captured(r, epi):
    """(names, values) of outer variables the epilogue reads (accumulators by value)."""
    names = sorted(n for n in read_vars(epi) - set(GEMM_VARS) if n in r.env)
    vals = [r.b.load(r.env[n].ptr, typ=r.env[n].type) if isinstance(r.env[n], AccSlot) else r.env[n]
            for n in names]
    return names, vals


def _fused(r, g, c_index, keep_c):
    """Call the module's shared epilogue engine per batch item, with this statement's epilogue
    functions and a context struct holding what they read (bufs, N, bidx, captured values);
    ``keep_c``: ``KEEP_C`` or ``CONSUME_C`` (the engine does not write C's tiles)."""
    names, vals = _captured(r, g.epilogue)
    ctx_t = ir.LiteralStructType([PTR, I64, I64, *[v.type for v in vals]])
    full, masked = (epilogue_fn(r, g, c_index, names, ctx_t, with_mask) for with_mask in (False, True))
    ctx = r.alloca(ctx_t)
    m = r.emit(g.m)

    def one(bidx):
        for i, v in enumerate([r.bufs, r.batch, bidx, *vals]):
            r.b.store(v, r.b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, i)]))
        _call(r, g, shared_engine(r), bidx, _operand_ptr(r, g.c, bidx), r.emit(g.c.ld), 0.0,
              [ctx, full, masked, m, keep_c])

    _per_batch(r, g, one)


# ----------------------------------------------------------------------------- temporary
def _via_temp(r, g):
    """Engine into an M x N temporary, then the epilogue as an ordinary loop nest."""
    b = r.b
    m, n = r.emit(g.m), r.emit(g.n)
    nbytes = b.mul(b.add(b.mul(m, n), c64(16)), c64(4))
    tmp = b.call(declare(r.module, "aligned_alloc", PTR, [I64, I64]),
                 [c64(64), b.and_(b.add(nbytes, c64(63)), c64(-64))])
    with b.if_then(b.icmp_unsigned("==", tmp, ir.Constant(PTR, None)), likely=False):
        r.failure.fail(r, KILN_ENOMEM, "out of memory in a matrix product")
    r.extra_buffers[TEMP] = (tmp, float32)
    r.cleanups.append(tmp)
    row, col = _var("row"), _var("col")
    acc = K.Load(TEMP, _add(_mul(row, g.n), col), float32)
    work = 4 * (g.n.value if isinstance(g.n, K.Const) else 64)
    nest = K.For(row, K.Const(0, int64), g.m, K.For(
        col, K.Const(0, int64), g.n, K.Block([K.Let(K.Var("acc", float32), acc), g.epilogue]),
        vectorize=True), parallel=True, work=work)

    def one(bidx):
        _plain_call(r, g, bidx, tmp, n, 0.0)
        r.scoped(nest, {"bidx": bidx})
    _per_batch(r, g, one)
    b.call(declare(r.module, "free", ir.VoidType(), [PTR]), [tmp])
    del r.extra_buffers[TEMP]
    r.cleanups.remove(tmp)


# ----------------------------------------------------------------------------- reference loops
def reference_loops(g: K.Gemm, dtype) -> K.Stmt:
    """The product as kernel-IR loops (any dtype): sum over k, then store or epilogue."""
    row, col, kk, bidx = (_var(n) for n in ("row", "col", "__gemm_k", "bidx"))
    total = K.Var("__gemm_sum", dtype)

    def element(op, i, j):
        base = op.offset if op.batch_stride is None else _add(op.offset, _mul(bidx, op.batch_stride))
        return _add(base, _add(_mul(j, op.ld), i) if op.transposed else _add(_mul(i, op.ld), j))
    prod = K.Op("mul", (K.Load(g.a.buffer, element(g.a, row, kk), dtype),
                        K.Load(g.b.buffer, element(g.b, kk, col), dtype)), dtype)
    zero = K.Const(0.0 if dtype.is_floating else 0, dtype)
    body = [K.DeclareAcc(total, zero),
            K.For(kk, K.Const(0, int64), g.k, K.Accumulate(total, "add", prod), vectorize=True)]
    if g.epilogue is not None:
        body += [K.Let(K.Var("acc", dtype), total), g.epilogue]
    else:
        cidx = element(g.c, row, col)
        value = K.Op("add", (K.Load(g.c.buffer, cidx, dtype), total), dtype) if g.accumulate else total
        body.append(K.Store(g.c.buffer, cidx, value))
    nest = K.For(row, K.Const(0, int64), g.m, K.For(col, K.Const(0, int64), g.n, K.Block(body)),
                 parallel=True, work=256)
    if g.batch is None:
        return K.Block([K.Let(bidx, K.Const(0, int64)), nest])
    return K.For(bidx, K.Const(0, int64), g.batch, nest)

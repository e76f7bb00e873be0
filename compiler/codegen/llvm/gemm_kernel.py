"""The inner pieces of the sgemm engine, as LLVM IR: IR helpers and the tile kernel
(the packers are in ``gemm_pack``).

* ``emit_tile``: the MR x NR register-blocked micro-kernel (MR*NR/VEC vector accumulators,
  a broadcast of A times vectors of packed B with ``llvm.fma``), followed by the store of
  the tile into C: plus ``beta * C``, then the optional epilogue, then vector stores.
  Edge tiles (fewer than MR rows or NR columns left) use masked loads/stores, so any
  M, N >= 1 works without a scalar tail.
"""
from __future__ import annotations

import llvmlite.ir as ir

I1, I8, I32, I64, F32 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
PTR = ir.PointerType()


def c64(v: int) -> ir.Constant:
    """An i64 constant."""
    return ir.Constant(I64, v)


def i32(v: int) -> ir.Constant:
    """An i32 constant."""
    return ir.Constant(I32, v)


def opaque(v):
    """llvmlite types globals and allocas as typed pointers; the module uses opaque ``ptr``."""
    v.type = PTR
    return v


def imin(b: ir.IRBuilder, x, y):
    """Signed minimum of two integers."""
    return b.select(b.icmp_signed("<", x, y), x, y)


def imax(b: ir.IRBuilder, x, y):
    """Signed maximum of two integers."""
    return b.select(b.icmp_signed(">", x, y), x, y)


def ceil_div(b: ir.IRBuilder, x, d: int):
    """ceil(x / d) for x >= 0 and a constant d > 0."""
    return b.sdiv(b.add(x, c64(d - 1)), c64(d))


def fptr(b: ir.IRBuilder, base, index):
    """Address of ``base[index]`` for a float pointer (plain GEP: edge rows may lie past C)."""
    return b.gep(base, [index], source_etype=F32)


def intrinsic(module: ir.Module, name: str, ret, args) -> ir.Function:
    """Declare (once) an LLVM intrinsic or C function in ``module``."""
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


class Indirect:
    """A function pointer seen as an opaque ``ptr`` (e.g. in a table of functions) and as a
    callee of type ``function_type`` (llvmlite's ``call`` reads the callee's function type;
    an opaque ``ptr`` value has none)."""

    def __init__(self, ptr, function_type):
        self.ptr, self.function_type, self.type = ptr, function_type, PTR

    def get_reference(self):
        return self.ptr.get_reference()

    __str__ = get_reference  # as an element of a constant array


def new_function(module, name, ret, args, arg_names, internal=True):
    """A function with named arguments and an entry block; returns (fn, builder)."""
    fn = ir.Function(module, ir.FunctionType(ret, args), name)
    for a, n in zip(fn.args, arg_names):
        a.name = n
    if internal:
        fn.linkage = "internal"
    fn.attributes.add("nounwind")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def counted_loop(b: ir.IRBuilder, start, stop, step, body, carry=(), name="i"):
    """Emit ``for (i = start; i < stop; i += step)`` with loop-carried values.

    ``body(b, i, carried) -> new carried values`` emits the loop body.  Returns the
    carried values after the loop (the header's phis); the builder ends in the exit block.
    """
    pre = b.block
    head = b.append_basic_block(name + ".head")
    loop = b.append_basic_block(name + ".body")
    done = b.append_basic_block(name + ".exit")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(start.type, name)
    i.add_incoming(start, pre)
    phis = []
    for c in carry:
        p = b.phi(c.type)
        p.add_incoming(c, pre)
        phis.append(p)
    b.cbranch(b.icmp_signed("<", i, stop), loop, done)
    b.position_at_end(loop)
    new = body(b, i, list(phis)) or []
    latch = b.block
    i.add_incoming(b.add(i, step), latch)
    for p, v in zip(phis, new):
        p.add_incoming(v, latch)
    b.branch(head)
    b.position_at_end(done)
    return phis


def if_then_values(b: ir.IRBuilder, cond, then, values):
    """``values = then(values) if cond else values`` as a branch and phi merge."""
    pre = b.block
    with b.if_then(cond):
        new = then(list(values))
        then_end = b.block
    merged = []
    for v, n in zip(values, new):
        p = b.phi(v.type)
        p.add_incoming(v, pre)
        p.add_incoming(n, then_end)
        merged.append(p)
    return merged


def splat(b: ir.IRBuilder, scalar, width: int):
    """A vector of ``width`` copies of ``scalar``."""
    vty = ir.VectorType(scalar.type, width)
    one = b.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(I32, 0))
    return b.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                            ir.Constant(ir.VectorType(I32, width), [0] * width))


def iota(width: int, start: int = 0, ty=I64) -> ir.Constant:
    """The constant vector ``<start, start+1, ...>``."""
    return ir.Constant(ir.VectorType(ty, width), list(range(start, start + width)))


def masked_load(b, module, ptr, mask, width, align=4):
    """``llvm.masked.load``: lanes where ``mask`` is false are not read and come back 0."""
    vty = ir.VectorType(F32, width)
    fn = intrinsic(module, f"llvm.masked.load.v{width}f32.p0", vty,
                   [PTR, I32, ir.VectorType(I1, width), vty])
    return b.call(fn, [ptr, ir.Constant(I32, align), mask, ir.Constant(vty, None)])


def masked_store(b, module, value, ptr, mask, align=4):
    """``llvm.masked.store``: only lanes where ``mask`` is true are written."""
    width = value.type.count
    fn = intrinsic(module, f"llvm.masked.store.v{width}f32.p0", ir.VoidType(),
                   [value.type, PTR, I32, ir.VectorType(I1, width)])
    b.call(fn, [value, ptr, ir.Constant(I32, align), mask])


def vfma(b, module, x, y, z, fused=True):
    """``x*y + z`` on float vectors: ``llvm.fma`` on FMA hardware, else ``llvm.fmuladd``."""
    base = "llvm.fma" if fused else "llvm.fmuladd"
    fn = intrinsic(module, f"{base}.v{x.type.count}f32", x.type, [x.type] * 3)
    return b.call(fn, [x, y, z])


# --------------------------------------------------------------------------- tile kernel

class TileContext:
    """What an epilogue callback sees for one C tile (see ``gemm.Epilogue``).

    ``accs[r][j]`` is the ``<VEC x float>`` holding C[row + r, col + j*VEC : +VEC]
    (already ``A'B' + beta*C``); ``args`` are the epilogue's extra function arguments;
    ``row``/``col`` are the tile's first global row/column (i64 values).  On an edge tile
    (``masked``) lanes past the last column are don't-care: use ``col_vector`` to read a
    per-column operand so those lanes are never loaded.
    """

    def __init__(self, b, module, cfg, args, row, col, accs, col_masks):
        self.builder, self.module, self.cfg = b, module, cfg
        self.args, self.row, self.col, self.accs = args, row, col, accs
        self.col_masks = col_masks
        self.masked = col_masks is not None

    def row_index(self, r: int):
        """Global row index (i64) of tile row ``r``."""
        return self.builder.add(self.row, c64(r))

    def col_vector(self, ptr, j: int):
        """``ptr[col + j*VEC : +VEC]`` as a vector (masked on edge tiles: no read past N)."""
        b, vec = self.builder, self.cfg.vec
        p = fptr(b, ptr, b.add(self.col, c64(j * vec)))
        if not self.masked:
            return b.load(p, typ=ir.VectorType(F32, vec), align=4)
        return masked_load(b, self.module, p, self.col_masks[j], vec)

    def splat(self, scalar):
        """A vector of VEC copies of a float scalar."""
        return splat(self.builder, scalar, self.cfg.vec)


def emit_tile(module: ir.Module, name: str, cfg, epilogue=None,
              in_place: bool = False) -> ir.Function:
    """``void tile(Ap, a_rs, a_ks, Bp, kc, C, ldc, row, col, mr, nr, beta, last, *extra)``.

    Multiplies an MR-row panel of A by an NR-column panel of packed B over ``kc`` and
    stores the tile at C[row:row+mr, col:col+nr] (mr <= MR, nr <= NR): ``C = acc + beta*C``
    (C is not read when beta == 0), then the epilogue when ``last``.  Packed A (the
    default) is an MR-high panel: ``a_rs``/``a_ks`` are unused, its strides are the
    constants 1 and MR (the simplest k loop addressing; runtime strides cost a few %).
    ``in_place``: A is read where it lies, element (r, k) at ``Ap[r*a_rs + k*a_ks]``; rows
    r >= mr (of the reduced or full k loop) read row mr-1 instead, so no read leaves A
    (their results are masked off by the store).
    """
    extra = list(epilogue.extra_args) if epilogue else []
    fn, b = new_function(
        module, name, ir.VoidType(),
        [PTR, I64, I64, PTR, I64, PTR, I64, I64, I64, I64, I64, F32, I1, *extra],
        ["Ap", "a_rs", "a_ks", "Bp", "kc", "C", "ldc", "row", "col", "mr", "nr", "beta", "last"]
        + [f"e{i}" for i in range(len(extra))])
    ap, a_rs, a_ks, bp, kc, c, ldc, row, col, mr, nr, beta, last = fn.args[:13]
    for a in (ap, bp, c):
        a.add_attribute("noalias")
    consumed = _consumed(b, epilogue, fn.args[13:], last)
    want_c = b.icmp_signed(">=", kc, c64(C_PREFETCH_MIN_K))
    if consumed is not None:  # C neither read (beta == 0) nor written: nothing to prefetch
        untouched = b.and_(consumed, b.fcmp_ordered("==", beta, ir.Constant(F32, 0.0)))
        want_c = b.and_(want_c, b.not_(untouched))
    with b.if_then(want_c):
        _prefetch_tile(b, module, cfg, c, ldc, row, col)
    a_at = _a_in_place(b, cfg, ap, a_rs, a_ks, mr) if in_place else _a_packed(cfg, ap)
    accs = _microkernel(b, module, cfg, a_at, bp, kc, mr)
    full = b.and_(b.icmp_signed("==", mr, c64(cfg.mr)), b.icmp_signed("==", nr, c64(cfg.nr)))
    store = dict(module=module, cfg=cfg, c=c, ldc=ldc, row=row, col=col, beta=beta,
                 last=last, epilogue=epilogue, extra=fn.args[13:], consumed=consumed)
    with b.if_else(full) as (then, other):
        with then:
            _store_tile(b, accs, masks=None, **store)
        with other:
            _store_tile(b, accs, masks=_edge_masks(b, cfg, mr, nr), **store)
    b.ret_void()
    return fn


def _consumed(b, epilogue, extra, last):
    """i1: this call's tile goes to the epilogue only, not to C (the last K block of an
    epilogue whose ``keeps_c`` is false); None when the epilogue always keeps C."""
    if epilogue is None or epilogue.keeps_c is None:
        return None
    return b.and_(last, b.not_(epilogue.keeps_c(b, list(extra))))


def _a_packed(cfg, ap):
    """``a_at(b, k, r)`` of a packed A panel: element (r, k) at ``ap[k*MR + r]``."""
    return lambda b, k, r: fptr(b, fptr(b, ap, b.mul(k, c64(cfg.mr))), c64(r))


def _a_in_place(b, cfg, ap, a_rs, a_ks, mr):
    """``a_at(b, k, r)`` of A read in place: row r's element k at ``ap[r'*a_rs + k*a_ks]``
    with r' = min(r, mr - 1) (the row pointers are computed once, before the k loops)."""
    last = b.sub(mr, c64(1))
    rows = [fptr(b, ap, b.mul(imin(b, c64(r), last), a_rs)) for r in range(cfg.mr)]
    return lambda b, k, r: fptr(b, rows[r], b.mul(k, a_ks))


def prefetch(b, module, ptr, write=True, locality=3):
    """``llvm.prefetch`` of the cache line at ``ptr`` (a hint: never faults, even past C)."""
    fn = intrinsic(module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
    b.call(fn, [ptr, i32(int(write)), i32(locality), i32(1)])


#: the shortest k loop (kc) before which the C tile is prefetched.
C_PREFETCH_MIN_K = 256


def _prefetch_tile(b, module, cfg, c, ldc, row, col):
    """Prefetch the MR x NR tile of C (first and last column of each row) for writing.

    The tile is read (beta != 0, later K blocks) and written after the k loop; when C
    is large its lines come from L3, a latency a long k loop hides once they are
    requested up front.  Short loops (kc < C_PREFETCH_MIN_K) skip it: there the
    outstanding prefetches delay the loop's own loads (1024 x 1024 x K, K <= 128: up to
    13 % slower with it).
    """
    for r in range(cfg.mr):
        base = b.mul(b.add(row, c64(r)), ldc)
        for off in (0, cfg.nr - 1):
            prefetch(b, module, fptr(b, c, b.add(base, b.add(col, c64(off)))))


#: row counts of the reduced k loops an M-edge tile (fewer than MR rows) dispatches to.
EDGE_ROWS = (1, 2, 4, 8)


def _microkernel(b, module, cfg, a_at, bp, kc, mr):
    """The k loop, with as few rows as the tile needs: a full MR-row loop, or for an
    M-edge tile (``mr < MR``, e.g. a skinny M) the smallest of ``EDGE_ROWS`` covering it,
    so a 1-row GEMM does not pay MR rows of FMAs.  Returns MR rows of accumulators (rows
    not computed are zero; the store masks them)."""
    counts = [r for r in EDGE_ROWS if r < cfg.mr] + [cfg.mr]
    done = b.append_basic_block("kernel.done")
    results = []
    for rows in counts:
        if rows != cfg.mr:
            run, skip = b.append_basic_block(f"kernel.r{rows}"), b.append_basic_block()
            b.cbranch(b.icmp_signed("<=", mr, c64(rows)), run, skip)
            b.position_at_end(run)
        accs = _kloop(b, module, cfg, a_at, bp, kc, rows)
        results.append((b.block, accs))
        b.branch(done)
        if rows != cfg.mr:
            b.position_at_end(skip)
    b.position_at_end(done)
    nv = cfg.nr // cfg.vec
    merged = []
    for i in range(cfg.mr * nv):
        phi = b.phi(results[0][1][i].type)
        for block, accs in results:
            phi.add_incoming(accs[i], block)
        merged.append(phi)
    return [merged[r * nv:(r + 1) * nv] for r in range(cfg.mr)]


def _kloop(b, module, cfg, a_at, bp, kc, rows):
    """Per k: NR/VEC vectors of B, ``rows`` broadcasts of A (element (r, k) at
    ``a_at(b, k, r)``), their FMAs.

    Returns MR*NR/VEC accumulators, row-major; those of rows >= ``rows`` are zero."""
    vty = ir.VectorType(F32, cfg.vec)
    nv = cfg.nr // cfg.vec
    zero = ir.Constant(vty, None)

    def body(b, k, accs):
        b_k = fptr(b, bp, b.mul(k, c64(cfg.nr)))
        bv = [b.load(fptr(b, b_k, c64(j * cfg.vec)), typ=vty, align=cfg.vec * 4)
              for j in range(nv)]
        if cfg.prefetch:  # the B panel's lines `prefetch` k steps ahead (L3 -> L1)
            for j in range(0, cfg.nr, 16):
                prefetch(b, module, fptr(b, b_k, c64(cfg.prefetch * cfg.nr + j)), write=False)
        out = []
        for r in range(rows):
            a = splat(b, b.load(a_at(b, k, r), typ=F32, align=4), cfg.vec)
            out += [vfma(b, module, a, bv[j], accs[r * nv + j], cfg.fma) for j in range(nv)]
        return out

    flat = counted_loop(b, c64(0), kc, c64(1), body, carry=[zero] * (rows * nv),
                        name=f"k{rows}")
    return flat + [zero] * ((cfg.mr - rows) * nv)


def _edge_masks(b, cfg, mr, nr):
    """Per (row r, vector j) lane masks of an edge tile: column < nr and row < mr."""
    vec, nv = cfg.vec, cfg.nr // cfg.vec
    nr_v = splat(b, nr, vec)
    cols = [b.icmp_signed("<", iota(vec, j * vec), nr_v) for j in range(nv)]
    masks = []
    for r in range(cfg.mr):
        row_ok = splat(b, b.icmp_signed("<", c64(r), mr), vec)
        masks.append([cols[j] if r == 0 else b.and_(cols[j], row_ok) for j in range(nv)])
    return masks


def _store_tile(b, accs, masks, module, cfg, c, ldc, row, col, beta, last, epilogue, extra,
                consumed):
    """Add ``beta*C``, run the epilogue (when ``last``), store (unless ``consumed``); masked
    when ``masks``."""
    vec, nv, mr = cfg.vec, cfg.nr // cfg.vec, cfg.mr
    vty = ir.VectorType(F32, vec)
    ptrs = [[fptr(b, c, b.add(b.mul(b.add(row, c64(r)), ldc), b.add(col, c64(j * vec))))
             for j in range(nv)] for r in range(mr)]
    flat = [a for row_accs in accs for a in row_accs]

    def load(r, j):
        if masks is None:
            return b.load(ptrs[r][j], typ=vty, align=4)
        return masked_load(b, module, ptrs[r][j], masks[r][j], vec)

    def add_beta_c(vals):
        bv = splat(b, beta, vec)
        return [vfma(b, module, bv, load(i // nv, i % nv), v, cfg.fma) for i, v in enumerate(vals)]

    flat = if_then_values(b, b.fcmp_unordered("!=", beta, ir.Constant(F32, 0.0)),
                          add_beta_c, flat)
    if epilogue is not None:
        def run_epilogue(vals):
            tile = [vals[r * nv:(r + 1) * nv] for r in range(mr)]
            ctx = TileContext(b, module, cfg, extra, row, col, tile,
                              None if masks is None else masks[0])
            out = epilogue.emit(b, ctx)
            return [v for row_vals in out for v in row_vals]
        flat = if_then_values(b, last, run_epilogue, flat)

    def store():
        for i, v in enumerate(flat):
            r, j = divmod(i, nv)
            if masks is None:
                b.store(v, ptrs[r][j], align=4)
            else:
                masked_store(b, module, v, ptrs[r][j], masks[r][j])
    if consumed is None:
        store()
        return
    with b.if_then(b.not_(consumed)):
        store()

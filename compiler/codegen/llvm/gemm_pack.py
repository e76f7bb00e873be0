"""The sgemm engine's packers, as LLVM IR: a K-block of A (or B) copied into W-wide panels.

``emit_pack`` makes ``dst[p][k][w] = src[(p*W + w)*s_outer + k*s_k]`` (W = MR for A, NR
for B), zero-padding the last panel so the micro-kernel always runs on full tiles.
Transposition is only a choice of strides; the copy picks its loads by layout:

* ``s_outer == 1`` (a panel's W elements adjacent, e.g. B of ``A @ B``): one W-wide
  vector load per k;
* ``s_k == 1`` (each of the W rows contiguous along k, e.g. A of ``A @ B``): VEC k at a
  time, one vector load per row, an in-register VEC x VEC transpose (shuffles), then one
  store per k; the ``kc % VEC`` last k take the path below;
* otherwise W scalar loads per k (a gather), and element by element for a partial panel.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .gemm_kernel import (F32, I32, I64, PTR, c64, ceil_div, counted_loop, fptr, imin,
                          masked_store, new_function)


def emit_pack(module: ir.Module, name: str, width: int, vec: int) -> ir.Function:
    """``void pack(src, s_outer, s_k, n_outer, kc, dst)``: copy into W-wide zero-padded panels.

    ``vec`` is the SIMD width (floats) of the row-major path's loads and transposes.
    """
    fn, b = new_function(module, name, ir.VoidType(), [PTR, I64, I64, I64, I64, PTR],
                         ["src", "s_outer", "s_k", "n_outer", "kc", "dst"])
    src, s_outer, s_k, n_outer, kc, dst = fn.args
    for a in (src, dst):
        a.add_attribute("noalias")
    vty = ir.VectorType(F32, width)
    row_major = b.and_(b.icmp_signed("==", s_k, c64(1)), b.icmp_signed("!=", s_outer, c64(1)))
    # k handled by the transposing path: the whole VEC-multiples of kc of row-major panels.
    k_t = b.select(row_major, b.and_(kc, c64(-vec)), c64(0))

    def panel(b, p, _):
        nvalid = imin(b, c64(width), b.sub(n_outer, b.mul(p, c64(width))))
        sp = fptr(b, src, b.mul(b.mul(p, c64(width)), s_outer))
        dp = fptr(b, dst, b.mul(b.mul(p, kc), c64(width)))
        _pack_transposed(b, module, sp, s_outer, k_t, dp, width, nvalid, vec)
        full = b.icmp_signed("==", nvalid, c64(width))
        contiguous = b.icmp_signed("==", s_outer, c64(1))
        with b.if_else(full) as (then, other):
            with then:
                with b.if_else(contiguous) as (vec_copy, gather):
                    with vec_copy:
                        _pack_rows(b, sp, s_k, k_t, kc, dp, width,
                                   lambda b, row: b.load(row, typ=vty, align=4))
                    with gather:
                        _pack_rows(b, sp, s_k, k_t, kc, dp, width,
                                   lambda b, row: _gather(b, row, s_outer, width))
            with other:
                _pack_partial(b, sp, s_outer, s_k, k_t, kc, dp, width, nvalid)
        return []

    counted_loop(b, c64(0), ceil_div(b, n_outer, width), c64(1), panel, name="p")
    b.ret_void()
    return fn


def transpose(b: ir.IRBuilder, rows: list) -> list:
    """The transpose of a square block held as ``n`` vectors of ``n`` lanes (n a power of 2).

    log2(n) rounds of two-source shuffles; the round of distance d swaps, for every pair
    of rows (i, i + d) with bit d of i clear, the lanes l + d of row i with the lanes l of
    row i + d (bit d of l clear): the in-place recursive block transpose.
    """
    n = len(rows)
    mty = ir.VectorType(I32, n)
    rows, d = list(rows), 1
    while d < n:
        lo = [lane if not lane & d else n + lane - d for lane in range(n)]
        hi = [lane + d if not lane & d else n + lane for lane in range(n)]
        for i in (i for i in range(n) if not i & d):
            x, y = rows[i], rows[i + d]
            rows[i] = b.shuffle_vector(x, y, ir.Constant(mty, lo))
            rows[i + d] = b.shuffle_vector(x, y, ir.Constant(mty, hi))
        d *= 2
    return rows


def _pack_transposed(b, module, sp, s_outer, k_end, dp, width, nvalid, vec):
    """k in [0, k_end) step VEC of a row-major panel: per group of VEC rows, one vector
    load per row (rows >= nvalid read as zeros), a transpose, one (masked) store per k."""
    vty = ir.VectorType(F32, vec)
    zero = ir.Constant(vty, None)

    def body(b, k0, _):
        for g in range(0, width, vec):
            rows = []
            for w in range(g, g + vec):
                if w >= width:
                    rows.append(zero)
                    continue
                src_w = imin(b, c64(w), b.sub(nvalid, c64(1)))  # a valid row to read
                v = b.load(fptr(b, sp, b.add(b.mul(src_w, s_outer), k0)), typ=vty, align=4)
                rows.append(b.select(b.icmp_signed("<", c64(w), nvalid), v, zero))
            n = min(vec, width - g)
            mask = ir.Constant(ir.VectorType(ir.IntType(1), vec), [i < n for i in range(vec)])
            for kk, col in enumerate(transpose(b, rows)):
                ptr = fptr(b, dp, b.add(b.mul(b.add(k0, c64(kk)), c64(width)), c64(g)))
                if n == vec:
                    b.store(col, ptr, align=4)
                else:
                    masked_store(b, module, col, ptr, mask)
        return []

    counted_loop(b, c64(0), k_end, c64(vec), body, name="kt")


def _gather(b, row, s_outer, width):
    """The W elements ``row[w * s_outer]`` as one vector."""
    vec = ir.Constant(ir.VectorType(F32, width), ir.Undefined)
    for w in range(width):
        x = b.load(fptr(b, row, b.mul(c64(w), s_outer)), typ=F32, align=4)
        vec = b.insert_element(vec, x, ir.Constant(I32, w))
    return vec


def _pack_rows(b, sp, s_k, k0, kc, dp, width, load_row):
    """For each k in [k0, kc): ``dp[k*W : k*W+W] = load_row(sp + k*s_k)``."""
    def body(b, k, _):
        v = load_row(b, fptr(b, sp, b.mul(k, s_k)))
        b.store(v, fptr(b, dp, b.mul(k, c64(width))), align=4)
        return []
    counted_loop(b, k0, kc, c64(1), body, name="k")


def _pack_partial(b, sp, s_outer, s_k, k0, kc, dp, width, nvalid):
    """Element-wise copy of a partial panel for k in [k0, kc): lanes ``w >= nvalid`` are 0."""
    def lane(b, w, _):
        valid = b.icmp_signed("<", w, nvalid)
        src_w = fptr(b, sp, b.mul(imin(b, w, b.sub(nvalid, c64(1))), s_outer))

        def body(b, k, _):
            x = b.load(fptr(b, src_w, b.mul(k, s_k)), typ=F32, align=4)
            x = b.select(valid, x, ir.Constant(F32, 0.0))
            b.store(x, fptr(b, dp, b.add(b.mul(k, c64(width)), w)), align=4)
            return []
        counted_loop(b, k0, kc, c64(1), body, name="k")
        return []
    counted_loop(b, c64(0), c64(width), c64(1), lane, name="w")

"""Lower the plain indexing kinds: argmax/argmin, the gathers and scatter-adds,
random_shuffle (pools and their gradients: ``pools.py``).  Semantics are
compiler/ir/ops/{nn,array_index,random}.py's.

Gathers (and reverse_sequence, whose lengths give each row's source steps) check their
indices first with a ``Check`` carrying the interpreter's message; scatter-adds run
serially over their rows.
"""
from __future__ import annotations

from ..ir.ops.array_index import SEQ_LENS_NEGATIVE, SEQ_LENS_TOO_LONG
from ..ir.types import bool_, int64
from .indexing import add, dim_expr, flat_index, i64, idiv, imin, mul, size_expr, sub
from .kernel_ir import Accumulate, Block, Cast, Check, DeclareAcc, For, If, Let, Load, Op, Random, Store
from .plain_ops import (all_of, any_of, as_i64, check_message, cmp, emit_kernel, fill, kernel_hint, nest,
                        out_nest, select, store_out, zero)
from .pools import KINDS as POOL_KINDS


# ----------------------------------------------------------------------------- argmax / argmin
def _arg_extreme(ins, ctx):
    """Two passes along the axis: the extremum, then the first index holding it (or a NaN)."""
    x = ins.operands[0]
    shape, dtype = tuple(x.type.shape), x.type.dtype
    axis = ins.attrs["axis"] % len(shape)
    combine = "max" if ins.kind == "argmax" else "min"
    extent = dim_expr(shape[axis])

    def body(v):
        best, first = ctx.scalar("acc", dtype), ctx.scalar("pos", int64)
        k1, k2 = ctx.var("k"), ctx.var("k")

        def at(k):
            return Load(ctx.buffer(x), flat_index(v[:axis] + [k] + v[axis:], shape), dtype)

        hit = cmp("equal", at(k2), best)
        if dtype.is_floating:
            hit = any_of(hit, Op("is_nan", (at(k2),), bool_))
        return [DeclareAcc(best, at(i64(0))),
                For(k1, i64(1), extent, Accumulate(best, combine, at(k1))),
                DeclareAcc(first, extent),
                For(k2, i64(0), extent, Accumulate(first, "min", select(hit, k2, extent))),
                store_out(ctx, ins, v, Cast(first, ins.result.type.dtype))]

    out_nest(ins, ctx, body, vectorize=False)


# ----------------------------------------------------------------------------- gathers
def _index_check(ins, ctx, index, limit, what):
    """Check(index outside [0, limit)) with the interpreter's message for ``what``."""
    bad = any_of(cmp("less", index, 0), cmp("greater_equal", index, dim_expr(limit)))
    return Check(bad, check_message(ins, f"{what} {{value}} is not in [0, {limit})"), index)


def _gather(ins, ctx):
    """Check every index, then out[pre, i..., post] = params[pre, indices[i...], post]."""
    params, indices = ins.operands
    p_shape, i_shape = tuple(params.type.shape), tuple(indices.type.shape)
    axis, rank_i = ins.attrs["axis"] % len(p_shape), len(i_shape)
    ib = ctx.buffer(indices)

    def index_at(v):
        return as_i64(Load(ib, flat_index(v, i_shape), indices.type.dtype))

    check = nest(ctx, i_shape, lambda v: [_index_check(ins, ctx, index_at(v), p_shape[axis], "gather index")],
                 parallel=False, vectorize=False)

    def body(v):
        src = v[:axis] + [index_at(v[axis:axis + rank_i])] + v[axis + rank_i:]
        return [store_out(ctx, ins, v, Load(ctx.buffer(params), flat_index(src, p_shape), params.type.dtype))]

    gather = nest(ctx, ins.result.type.shape, body)
    emit_kernel(ctx, kernel_hint(ins), [check, gather])


def _reverse_sequence(ins, ctx):
    """Check the lengths in row order (TF's messages), then out[.., b, .., t, ..] loads step
    ``len_b - 1 - t`` of row b for ``t < len_b`` (else step t) - one load per element."""
    x, lengths = ins.operands
    shape, rank = tuple(x.type.shape), len(x.type.shape)
    seq, batch = ins.attrs["seq_axis"] % rank, ins.attrs["batch_axis"] % rank
    lb = ctx.buffer(lengths)

    def length(b):
        return as_i64(Load(lb, b, lengths.type.dtype))

    def check_row(v):
        (b,) = v
        too_long = SEQ_LENS_TOO_LONG.format(value="{value}", seq_axis=seq)
        return [Check(cmp("less", length(b), 0), check_message(ins, SEQ_LENS_NEGATIVE), b),
                Check(cmp("greater", length(b), dim_expr(shape[seq])), check_message(ins, too_long), b)]

    def body(v):
        n, t = length(v[batch]), v[seq]
        src = v[:seq] + [select(cmp("less", t, n), sub(sub(n, 1), t), t)] + v[seq + 1:]
        return [store_out(ctx, ins, v, Load(ctx.buffer(x), flat_index(src, shape), x.type.dtype))]

    check = nest(ctx, [shape[batch]], check_row, parallel=False, vectorize=False)
    emit_kernel(ctx, kernel_hint(ins), [check, nest(ctx, shape, body)])


def _update_row(ins, ctx):
    """Check the index, copy the stack unless the result is written in place over it (inside
    a loop, lower/control_flow.py), then store the row."""
    stack, value, index = ins.operands
    s_shape, v_shape = tuple(stack.type.shape), tuple(value.type.shape)
    row = as_i64(Load(ctx.buffer(index), i64(0), index.type.dtype))
    stmts = [_index_check(ins, ctx, row, s_shape[0], "update_row index")]
    if ctx.buffer(ins.result) != ctx.buffer(stack):
        stmts.append(nest(ctx, s_shape, lambda v: [store_out(ctx, ins, v, Load(
            ctx.buffer(stack), flat_index(v, s_shape), stack.type.dtype))]))
    stmts.append(nest(ctx, v_shape, lambda v: [store_out(ctx, ins, [row] + list(v), Load(
        ctx.buffer(value), flat_index(v, v_shape), value.type.dtype))]))
    emit_kernel(ctx, kernel_hint(ins), stmts)


def _nd_rows(ins, ctx, indices, shape):
    """For indices ``[..., K]`` into ``shape``: (row shape, index-expr maker, the check nest)."""
    i_shape = tuple(indices.type.shape)
    rows, k = i_shape[:-1], int(i_shape[-1])
    ib = ctx.buffer(indices)

    def coords(row):
        return [as_i64(Load(ib, flat_index(list(row) + [i64(j)], i_shape), indices.type.dtype)) for j in range(k)]

    check = nest(ctx, rows, lambda row: [_index_check(ins, ctx, e, shape[j], "gather_nd/scatter_nd index")
                                         for j, e in enumerate(coords(row))], parallel=False, vectorize=False)
    return rows, k, coords, check


def _gather_nd(ins, ctx):
    params, indices = ins.operands
    p_shape = tuple(params.type.shape)
    rows, _, coords, check = _nd_rows(ins, ctx, indices, p_shape)

    def body(v):
        src = coords(v[:len(rows)]) + v[len(rows):]
        return [store_out(ctx, ins, v, Load(ctx.buffer(params), flat_index(src, p_shape), params.type.dtype))]

    emit_kernel(ctx, kernel_hint(ins), [check, nest(ctx, ins.result.type.shape, body)])


def _scatter_nd(ins, ctx):
    """Zeros, then each update row added at its index (rows serially: duplicates sum)."""
    indices, updates = ins.operands
    out, dtype = ins.result, updates.type.dtype
    shape, dst = tuple(out.type.shape), ctx.buffer(out)
    rows, k, coords, check = _nd_rows(ins, ctx, indices, shape)

    def row_body(row):
        def inner(e):
            at = flat_index(coords(row) + e, shape)
            upd = Load(ctx.buffer(updates), flat_index(list(row) + e, updates.type.shape), dtype)
            return [Store(dst, at, Op("add", (Load(dst, at, dtype), upd), dtype))]

        return [nest(ctx, shape[k:], inner, parallel=False)]

    scatter = nest(ctx, rows, row_body, parallel=False, vectorize=False)
    emit_kernel(ctx, kernel_hint(ins), [fill(ctx, dst, shape, zero(dtype)), check, scatter])


def _segment_sum(ins, ctx):
    """Zeros, then data rows added to their segment serially (negative ids dropped, as TF)."""
    data, ids = ins.operands
    out, dtype = ins.result, data.type.dtype
    dst, segments = ctx.buffer(out), out.type.shape[0]
    inner = size_expr(data.type.shape[len(ids.type.shape):])
    i, e = ctx.var(), ctx.var()
    sid = ctx.scalar("id", int64)
    at = add(mul(sid, inner), e)
    row = For(e, i64(0), inner, Store(dst, at, Op("add", (
        Load(dst, at, dtype), Load(ctx.buffer(data), add(mul(i, inner), e), dtype)), dtype)), vectorize=True)
    body = Block([
        Let(sid, as_i64(Load(ctx.buffer(ids), i, ids.type.dtype))),
        Check(cmp("greater_equal", sid, dim_expr(segments)),
              check_message(ins, f"segment id {{value}} is not in [0, {segments})"), sid),
        If(cmp("greater_equal", sid, 0), row)])
    scatter = For(i, i64(0), size_expr(ids.type.shape), body)
    emit_kernel(ctx, kernel_hint(ins), [fill(ctx, dst, out.type.shape, zero(dtype)), scatter])


# ----------------------------------------------------------------------------- random_shuffle
def _random_shuffle(ins, ctx):
    """Rows permuted by a stable sort of their Philox keys (random.py's ``random_bits``): keys
    and row numbers in scratch, a bottom-up merge sort (serial), then the rows gathered."""
    step, value = ins.operands
    shape = tuple(value.type.shape)
    rows, inner = dim_expr(shape[0]), size_expr(shape[1:])
    keys, perm, tkeys, tperm = (ctx.scratch(int64, (shape[0],), hint=h) for h in ("keys", "perm", "keys_tmp", "perm_tmp"))
    i = ctx.var()
    draw = Random("bits", int(ins.attrs["seed"]), int(ins.attrs["seed2"]), i,
                  Load(ctx.buffer(step), i64(0), step.type.dtype), int64)
    init = For(i, i64(0), rows, Block([Store(keys, i, draw), Store(perm, i, i)]), parallel=True)
    width = ctx.scalar("width", int64)
    passes = For(ctx.var("p"), i64(0), i64(63), Block([
        If(cmp("less", width, rows), Block([_merge_pass(ctx, keys, perm, tkeys, tperm, rows, width),
                                             _copy_back(ctx, (keys, tkeys), (perm, tperm), rows)])),
        Accumulate(width, "mul", i64(2))]))
    r, e = ctx.var(), ctx.var()
    src = add(mul(Load(perm, r, int64), inner), e)
    gather = For(r, i64(0), rows, For(e, i64(0), inner, Store(
        ctx.buffer(ins.result), add(mul(r, inner), e), Load(ctx.buffer(value), src, value.type.dtype)),
        vectorize=True), parallel=True)
    emit_kernel(ctx, kernel_hint(ins), [init, DeclareAcc(width, i64(1)), passes, gather])


def _merge_pass(ctx, keys, perm, tkeys, tperm, rows, width):
    """Merge neighbouring sorted runs of ``width`` rows into the temporaries (ties: left first)."""
    r, k = ctx.var(), ctx.var()
    lo = mul(mul(r, width), 2)
    mid, hi = imin(add(lo, width), rows), imin(add(lo, mul(width, 2)), rows)
    left, right = ctx.scalar("left", int64), ctx.scalar("right", int64)
    last = sub(rows, 1)
    kl, kr = Load(keys, imin(left, last), int64), Load(keys, imin(right, last), int64)
    take = ctx.scalar("take", bool_)
    step = Block([
        Let(take, all_of(cmp("less", left, mid),
                          any_of(cmp("greater_equal", right, hi), cmp("less_equal", kl, kr)))),
        Store(tkeys, k, select(take, kl, kr)),
        Store(tperm, k, select(take, Load(perm, imin(left, last), int64), Load(perm, imin(right, last), int64))),
        Accumulate(left, "add", select(take, i64(1), i64(0))),
        Accumulate(right, "add", select(take, i64(0), i64(1)))])
    runs = idiv(sub(add(rows, mul(width, 2)), 1), mul(width, 2))
    return For(r, i64(0), runs, Block([DeclareAcc(left, lo), DeclareAcc(right, mid), For(k, lo, hi, step)]))


def _copy_back(ctx, *pairs_and_rows):
    *pairs, rows = pairs_and_rows
    k = ctx.var()
    return For(k, i64(0), rows, Block([Store(dst, k, Load(src, k, int64)) for dst, src in pairs]), vectorize=True)


KINDS = {
    **POOL_KINDS,
    "argmax": _arg_extreme, "argmin": _arg_extreme,
    "gather": _gather, "gather_nd": _gather_nd, "scatter_nd": _scatter_nd,
    "reverse_sequence": _reverse_sequence,


    "gather": _gather, "gather_nd": _gather_nd, "scatter_nd": _scatter_nd, "update_row": _update_row,
    "unsorted_segment_sum": _segment_sum, "random_shuffle": _random_shuffle,
}

"""Convolutions one batch item at a time, for backends that run a ``Gemm`` inside a loop.

A convolution kernel of ``conv_lowering.py`` is ``[im2col nest, Gemm]`` (forward, filter
gradient) or ``[Gemm, col2im nest]`` (input gradient), its Gemm carrying an ``ItemSplit``.
As written, the im2col matrix of the whole batch (``N*OH*OW x KH*KW*C``: 31 MB for the
seed-002 CNN's second layer at batch 50) is written to memory and read back.
``split_conv(kernel, buffers, slots, min_macs)`` plans it so that each thread works on a
slot of that matrix that stays in its core's cache (when a slot's product for one item has
at least ``min_macs`` multiply-adds: smaller ones keep the whole batch):

* ``kind == "rows"`` (forward, input gradient): a parallel loop over ``P = min(slots, N)``
  slots, each taking its contiguous range of items one at a time: the item's im2col into the
  slot's rows of the matrix, then the item's product (its ``rows`` rows of M), or the product
  then the col2im.  With one item (one slot) the slot loop runs on the calling thread (the
  renderer does not start a team for one iteration), so the item's product uses the team.
* ``kind == "k"`` (filter gradient): the product's M (taps x channels) is split at tap
  boundaries into ``P = min(slots, taps)`` ranges; per item, in batch order, a slot builds the
  im2col columns of its taps (in the first item's rows: the slots' columns are disjoint) and
  adds its item's product into its rows of C (items are K blocks).  Every element sums the
  items in the same order whatever ``P``, so the result does not depend on the core count.
  The epilogue runs after the last item, on the slot's rows.
* A filter gradient whose per-slot product is below ``min_macs`` (the first layer's, with
  one input channel: C is 25 x 32 for the seed-002 CNN, too few tiles for the engine's
  threads, each of which would read all of the output gradient) takes the batch in a fixed
  number of parts instead, each with a partial C of its own, summed in part order
  (:func:`_by_item_parts`; measured at batch 128 on 2 threads: 4.3 -> 2.8 ms).

Only the scratch matrix changes place (an item's rows move to its slot's rows, or to the
first item's); every other buffer is read and written at the same elements as before.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.types import bool_, int64
from . import kernel_ir as K
from .indexing import add, const_value, i64, idiv, imin, mul, sub
from .kernel_walk import substitute
from .split_reduce import combine_parts, part_stride


#: a slot's product for one item must have at least this many multiply-adds, in units of
#: the capabilities' ``min_parallel_work``, for the split to pay: smaller products (the
#: seed-002 CNN's first-layer filter gradient, 12 x 32 x 784 per slot and item) are
#: dominated by each call's packing and setup, and the whole batch's im2col is small anyway
MIN_ITEM_WORK = 16


def split_conv(kernel: K.Kernel, buffers: dict, slots: int, min_macs: int = 0, parts=None,
               part_count: int = 0) -> K.Kernel:
    """``kernel`` planned one item at a time on ``slots`` slots when it is a convolution kernel
    with an ``ItemSplit`` (see the module docstring) whose per-slot, per-item product has at
    least ``min_macs`` multiply-adds, else unchanged (``buffers``: the program's buffer table).
    A smaller filter gradient on more than one slot is split into ``part_count`` parts of the
    batch when ``parts`` (``split_reduce.Parts``) can hold their partial results
    (:func:`_by_item_parts`)."""
    body = kernel.body.body if isinstance(kernel.body, K.Block) else [kernel.body]
    if len(body) != 2 or slots < 1:
        return kernel
    gemm_first = isinstance(body[0], K.Gemm)
    g, nest = (body[0], body[1]) if gemm_first else (body[1], body[0])
    if not (isinstance(g, K.Gemm) and g.split is not None and isinstance(nest, K.For)
            and nest.var.name == g.split.item and g.batch is None):
        return kernel
    dtype, partial = buffers[g.c.buffer].dtype, []
    if _slot_macs(g, slots) < min_macs:
        if g.split.kind != "k" or slots < 2 or parts is None or part_count < 2:
            return kernel
        parts.begin_kernel()
        new = _by_item_parts(g, nest, parts, part_count, dtype)
        partial = list(parts.kernel_buffers)
    elif g.split.kind == "rows":
        new = _by_rows(g, nest, gemm_first, slots)
    else:
        new = _by_taps(g, nest, slots, dtype)
    if new is None:
        return kernel
    extra = [g.c.buffer] * (g.split.kind == "k" and g.c.buffer not in kernel.reads)  # added into
    return replace(kernel, body=K.Block(new), reads=kernel.reads + extra + partial,
                   writes=kernel.writes + partial)


def _slot_macs(g: K.Gemm, slots: int) -> int:
    """Multiply-adds of one slot's product for one item (M, N, K static but for N items):
    what decides the split, and the slot loop's work for the renderer's threading test."""
    sp = g.split
    if sp.kind == "rows":
        m, n, k = sp.rows, const_value(g.n), const_value(g.k)
    else:
        taps = sp.window[0] * sp.window[1] if sp.window else 1
        m, n, k = -(-taps // min(slots, taps)) * sp.channels, const_value(g.n), sp.rows
    return m * n * k if n is not None and k is not None else 0


def _slot_var(g: K.Gemm) -> K.Var:
    return K.Var(f"{g.split.item}_slot", int64)


def _by_rows(g: K.Gemm, nest: K.For, gemm_first: bool, slots: int):
    """Forward / input gradient: slots over contiguous ranges of items (module docstring)."""
    sp, item, slot = g.split, nest.var, _slot_var(g)
    if g.a.transposed or g.c.transposed:
        return None
    count = imin(i64(slots), sp.items)
    lo = idiv(mul(slot, sp.items), count)
    hi = idiv(mul(add(slot, i64(1)), sp.items), count)

    def rows_of_item(op: K.Operand) -> K.Operand:
        owner = slot if op.buffer == sp.scratch else item
        return replace(op, offset=add(op.offset, mul(owner, mul(i64(sp.rows), op.ld))))

    epilogue = g.epilogue
    if epilogue is not None:
        epilogue = substitute(epilogue, {"row": add(K.Var("row", int64), mul(item, i64(sp.rows)))})
    product = replace(g, m=i64(sp.rows), a=rows_of_item(g.a), c=rows_of_item(g.c), split=None, epilogue=epilogue)
    im2col = substitute(nest.body, {item.name: slot}, buffer=sp.scratch)
    steps = [product, im2col] if gemm_first else [im2col, product]
    per_item = K.For(item, lo, hi, K.Block(steps))
    return [K.For(slot, i64(0), count, per_item, parallel=True, work=max(1, _slot_macs(g, slots)))]


def _by_taps(g: K.Gemm, nest: K.For, slots: int, dtype):
    """Filter gradient: slots over ranges of taps, items in batch order (module docstring)."""
    sp, item, slot = g.split, nest.var, _slot_var(g)
    if not sp.taps or not g.a.transposed or g.b.transposed or g.c.transposed or g.c.ld != g.n:
        return None
    taps = sp.window[0] * sp.window[1]
    count = min(slots, taps)
    t0, t1 = (idiv(mul(s, i64(taps)), i64(count)) for s in (slot, add(slot, i64(1))))
    m0, m1 = mul(t0, i64(sp.channels)), mul(t1, i64(sp.channels))
    # the slots write disjoint columns (their taps): they share the first item's rows
    im2col = _only_taps(substitute(nest.body, {item.name: i64(0)}, buffer=sp.scratch), sp, t0, t1)
    a = replace(g.a, offset=add(g.a.offset, m0))
    b = replace(g.b, offset=add(g.b.offset, mul(item, mul(i64(sp.rows), g.b.ld))))
    c = replace(g.c, offset=add(g.c.offset, mul(m0, g.c.ld)))
    product = K.Gemm(sub(m1, m0), g.n, i64(sp.rows), a, b, c, accumulate=True)
    steps = [] if g.accumulate else [_fill_rows(g.c, m0, m1, dtype)]
    steps.append(K.For(item, i64(0), sp.items, K.Block([im2col, product])))
    if g.epilogue is not None:
        steps.append(_epilogue_rows(g, m0, m1, dtype))
    return [K.For(slot, i64(0), i64(count), K.Block(steps), parallel=True, work=max(1, _slot_macs(g, slots)))]


def _by_item_parts(g: K.Gemm, nest: K.For, parts, count: int, dtype):
    """A filter gradient too small to split by taps (the first layer's: M x N of 25 x 32 and
    K = N x 784 for the seed-002 CNN), whose product the engine's threads cannot share (few
    tiles of C, each reading all of K): the batch in ``count`` parts, each part's im2col (its
    items' own rows of the scratch, as in the whole-batch nest) and product into a partial C
    of its own, on the team; then the partial Cs added into C in part order, and the
    epilogue.  ``count`` is a constant, so results do not depend on the core count."""
    sp, item = g.split, nest.var
    m, n = const_value(g.m), const_value(g.n)
    if (m is None or n is None or not g.a.transposed or g.b.transposed or g.c.transposed
            or const_value(g.c.ld) != n):
        return None
    stride = part_stride(m * n, dtype)
    part = parts.allocate(g.c.buffer, dtype, (count * stride,))
    parts.count += 1
    p = K.Var(f"{item.name}_part", int64)
    lo, hi = (idiv(mul(q, sp.items), i64(count)) for q in (p, add(p, i64(1))))
    first = lambda op: replace(op, offset=add(op.offset, mul(lo, mul(i64(sp.rows), op.ld))))  # noqa: E731
    c = K.Operand(part, mul(p, i64(stride)), i64(n))
    product = K.Gemm(g.m, g.n, mul(sub(hi, lo), i64(sp.rows)), first(g.a), first(g.b), c, accumulate=True)
    im2col = K.For(item, lo, hi, nest.body)
    steps = [_fill_rows(c, i64(0), i64(m), dtype), im2col, K.If(K.Op("greater", (hi, lo), bool_), product)]
    per_part = K.For(p, i64(0), i64(count), K.Block(steps), parallel=True, work=max(1, m * n * sp.rows))
    e = K.Var(f"{item.name}_e", int64)
    at = add(g.c.offset, e)
    total = combine_parts("add", K.Load(g.c.buffer, at, dtype) if g.accumulate else None, part, stride, e, count,
                          dtype)
    combine = K.For(e, i64(0), i64(m * n), K.Store(g.c.buffer, at, total), vectorize=True)
    steps = [per_part, combine]
    if g.epilogue is not None:
        steps.append(_epilogue_rows(g, i64(0), i64(m), dtype))
    return steps


def _only_taps(stmt, sp: K.ItemSplit, t0, t1):
    """``stmt`` with the body of the window-column loop guarded to taps ``[t0, t1)`` (the
    window loops keep their constant bounds, so the compiler still unrolls them)."""
    if isinstance(stmt, K.Block):
        return K.Block([_only_taps(s, sp, t0, t1) for s in stmt.body])
    if not isinstance(stmt, K.For):
        return stmt
    if stmt.var.name != sp.taps[1]:
        return replace(stmt, body=_only_taps(stmt.body, sp, t0, t1))
    tap = add(mul(K.Var(sp.taps[0], int64), i64(sp.window[1])), stmt.var)
    inside = K.Op("logical_and", (K.Op("greater_equal", (tap, t0), bool_), K.Op("less", (tap, t1), bool_)), bool_)
    return replace(stmt, body=K.If(inside, stmt.body))


def _fill_rows(c: K.Operand, m0, m1, dtype) -> K.For:
    """C's rows ``[m0, m1)`` (contiguous: ld == N) set to zero before the items add to them."""
    e = K.Var("__fill", int64)
    zero = K.Const(0.0 if dtype.is_floating else 0, dtype)
    return K.For(e, mul(m0, c.ld), mul(m1, c.ld), K.Store(c.buffer, add(c.offset, e), zero), vectorize=True)


def _epilogue_rows(g: K.Gemm, m0, m1, dtype) -> K.For:
    """The Gemm's epilogue on C's rows ``[m0, m1)``, once they hold the whole sum."""
    row, col, acc = K.Var("row", int64), K.Var("col", int64), K.Var("acc", dtype)
    value = K.Load(g.c.buffer, add(g.c.offset, add(mul(row, g.c.ld), col)), dtype)
    cols = K.For(col, i64(0), g.n, K.Block([K.Let(acc, value), g.epilogue]), vectorize=True)
    return K.For(row, m0, m1, cols)

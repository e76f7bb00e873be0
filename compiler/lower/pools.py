"""Lower pools and their gradients on NHWC windows (semantics: compiler/ir/ops/nn.py and
conv.py's geometry), and the window geometry the convolutions share (``Window``).

Windows follow conv.py's geometry: input position ``o*stride - pad + k*dilation``; a
position outside the input is loaded at a clamped index and masked (padding never wins a
max, adds nothing to a sum).  Gradients are written in gather form where each input element
can find the windows that cover it (avg_pool_grad, col2im); max_pool_grad too when the
windows tile the input (each element takes dy if it is its window's first max, else 0),
else it scatters to the first max of each window, serially within a batch item.
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.conv import spatial_out
from ..ir.types import bool_, int64
from .combine import identity
from .indexing import add, dim_expr, flat_index, i64, idiv, imax, imin, imod, loop_nest, mul, sub
from .kernel_ir import Accumulate, Block, Cast, DeclareAcc, For, If, Let, Load, Op, Store
from .plain_ops import all_of, any_of, clamp, cmp, emit_kernel, kernel_hint, nest, out_nest, select, store_out, zero


# ----------------------------------------------------------------------------- window geometry
class Window:
    """An NHWC sliding window: input ``[N,H,W,C]``, window ``(KH,KW)``, strides, pads
    ``((top,bottom),(left,right))``, dilations, output ``(OH,OW)``."""

    def __init__(self, in_shape, window, strides, pads, dilations=(1, 1)):
        self.in_shape = tuple(in_shape)
        self.size = (int(in_shape[1]), int(in_shape[2]))
        self.window = tuple(int(k) for k in window)
        self.strides, self.dilations = tuple(strides), tuple(dilations)
        self.before = (pads[0][0], pads[1][0])
        self.out = spatial_out(self.in_shape, self.window, self.strides, pads, self.dilations, "window")

    def input_pos(self, axis, o, k):
        """Input row (axis 0) / column (axis 1) of window tap ``k`` at output position ``o``."""
        return add(sub(mul(o, self.strides[axis]), self.before[axis]), mul(k, self.dilations[axis]))

    def inside(self, axis, i):
        return all_of(cmp("greater_equal", i, 0), cmp("less", i, self.size[axis]))

    def input_index(self, n, ih, iw, c):
        """Flat index of input element (n, ih, iw, c) with ih/iw clamped into the input."""
        return flat_index([n, clamp(ih, 0, self.size[0] - 1), clamp(iw, 0, self.size[1] - 1), c], self.in_shape)

    def tap(self, buffer, dtype, n, oh, ow, kh, kw, c):
        """(masked-safe load of the input under tap (kh, kw) of window (oh, ow), validity)."""
        ih, iw = self.input_pos(0, oh, kh), self.input_pos(1, ow, kw)
        return Load(buffer, self.input_index(n, ih, iw, c), dtype), all_of(self.inside(0, ih), self.inside(1, iw))

    def output_pos(self, axis, i, k):
        """Gather form: (output position whose tap ``k`` lands on input ``i`` (clamped), validity)."""
        num = sub(add(i, self.before[axis]), mul(k, self.dilations[axis]))
        safe = imax(num, 0)
        o = idiv(safe, self.strides[axis])
        valid = all_of(cmp("greater_equal", num, 0), cmp("equal", imod(safe, self.strides[axis]), 0),
                       cmp("less", o, self.out[axis]))
        return imin(o, self.out[axis] - 1), valid

    def count(self, oh, ow):
        """Number of unpadded input elements in window (oh, ow) (no dilation), i64."""
        rows = [sub(imin(add(s, k), size), imax(s, 0)) for s, k, size in
                ((self.input_pos(0, oh, 0), self.window[0], self.size[0]),
                 (self.input_pos(1, ow, 0), self.window[1], self.size[1]))]
        return mul(rows[0], rows[1])


def pool_window(ins, in_shape) -> Window:
    a = ins.attrs
    return Window(in_shape, a["ksize"], a["strides"], a["pads"])


def taps(ctx, win, make_body):
    """An inner serial loop nest over the window taps (kh, kw)."""
    kh, kw = ctx.var("k"), ctx.var("k")
    return loop_nest([kh, kw], win.window, make_body(kh, kw), parallel_outer=False, vectorize_inner=False)


#: the most taps of a window that the pools unroll (and max_pool_grad, see _tiles)
MAX_UNROLLED_TAPS = 16


def unrolls(win) -> bool:
    """Whether ``window_taps`` unrolls this window's taps."""
    return win.window[0] * win.window[1] <= MAX_UNROLLED_TAPS


def window_taps(ctx, win, make_body) -> list:
    """The statements of every tap: unrolled (constant kh, kw, so the loop around them, over
    channels, vectorizes) when ``unrolls(win)``, else the ``taps`` loop nest."""
    if not unrolls(win):
        return [taps(ctx, win, make_body)]
    return [s for i in range(win.window[0]) for j in range(win.window[1]) for s in make_body(i64(i), i64(j))]


# ----------------------------------------------------------------------------- pools
def _pool(ins, ctx):
    """max_pool / avg_pool: one accumulator per output element over the window taps."""
    x = ins.operands[0]
    dtype, win = x.type.dtype, pool_window(ins, x.type.shape)
    is_max = ins.kind == "max_pool"

    def body(v):
        n, oh, ow, c = v
        acc = ctx.scalar("acc", dtype)
        init = identity("max", dtype) if is_max else zero(dtype)

        def tap(kh, kw):
            load, valid = win.tap(ctx.buffer(x), dtype, n, oh, ow, kh, kw, c)
            return [Accumulate(acc, "max" if is_max else "add", select(valid, load, init))]

        value = acc if is_max else Op("div", (acc, Cast(win.count(oh, ow), dtype)), dtype)
        return [DeclareAcc(acc, init)] + window_taps(ctx, win, tap) + [store_out(ctx, ins, v, value)]

    out_nest(ins, ctx, body, vectorize=unrolls(win), work=win.window[0] * win.window[1])


def _avg_pool_grad(ins, ctx):
    """Gather form: each input element sums dy/count of the windows that cover it."""
    dy = ins.operands[0]
    dtype = dy.type.dtype
    win = pool_window(ins, ins.attrs["input_shape"])

    def body(v):
        n, h, w, c = v
        acc = ctx.scalar("acc", dtype)

        def tap(kh, kw):
            (oh, vh), (ow, vw) = win.output_pos(0, h, kh), win.output_pos(1, w, kw)
            share = Op("div", (Load(ctx.buffer(dy), flat_index([n, oh, ow, c], dy.type.shape), dtype),
                               Cast(win.count(oh, ow), dtype)), dtype)
            return [Accumulate(acc, "add", select(all_of(vh, vw), share, zero(dtype)))]

        return [DeclareAcc(acc, zero(dtype))] + window_taps(ctx, win, tap) + [store_out(ctx, ins, v, acc)]

    out_nest(ins, ctx, body, vectorize=unrolls(win), work=win.window[0] * win.window[1])




def _tiles(win: Window) -> bool:
    """Windows that tile the input exactly: stride = window, no padding, no remainder (the
    common 2x2/2 pool of an even plane).  Every input element then lies in exactly one window."""
    return (win.strides == win.window and win.before == (0, 0) and win.dilations == (1, 1)
            and all(o * k == s for o, k, s in zip(win.out, win.window, win.size))
            and unrolls(win))


def _hit(load, best, dtype):
    """Whether a tap holds the window's max (a NaN max: the first NaN)."""
    hit = cmp("equal", load, best)
    return any_of(hit, Op("is_nan", (load,), bool_)) if dtype.is_floating else hit


def _max_pool_grad_tiled(ins, ctx, win: Window):
    """Windows that tile the input, in gather form: one parallel, vectorizable nest over dx
    (C innermost); each element finds its window's first max (the taps unrolled) and takes
    dy there, else 0.  Every dx element is written once, by the iteration that owns it: no
    zeroing pass, no scatter, and the whole plane can be spread over threads."""
    x, dy = ins.operands
    dtype = x.type.dtype
    xb = ctx.buffer(x)
    kh_n, kw_n = win.window
    offsets = [(i, j) for i in range(kh_n) for j in range(kw_n)]

    def element(v):
        n, h, w, c = v
        oh, ow = idiv(h, kh_n), idiv(w, kw_n)
        loads = [ctx.scalar("x", dtype) for _ in offsets]
        best, first = ctx.scalar("best", dtype), ctx.scalar("first", int64)
        at = [flat_index([n, add(mul(oh, kh_n), i), add(mul(ow, kw_n), j), c], x.type.shape) for i, j in offsets]
        stmts = [Let(var, Load(xb, index, dtype)) for var, index in zip(loads, at)]
        top = loads[0]
        for load in loads[1:]:
            top = Op("maximum", (top, load), dtype)
        pick = i64(len(offsets) - 1)
        for t in range(len(offsets) - 2, -1, -1):
            pick = select(_hit(loads[t], best, dtype), i64(t), pick)
        mine = add(mul(imod(h, kh_n), kw_n), imod(w, kw_n))
        grad = Load(ctx.buffer(dy), flat_index([n, oh, ow, c], dy.type.shape), dtype)
        return stmts + [Let(best, top), Let(first, pick),
                        store_out(ctx, ins, v, select(cmp("equal", first, mine), grad, zero(dtype)))]

    out_nest(ins, ctx, element, work=2 * len(offsets))


def _max_pool_grad(ins, ctx):
    """dy to the first max of each window.  Windows that tile the input: ``_max_pool_grad_tiled``;
    else per batch item (parallel): zero dx, then for each window (serially) add dy to its
    first max (overlapping windows accumulate)."""
    x, dy = ins.operands
    dtype, win = x.type.dtype, pool_window(ins, x.type.shape)
    if _tiles(win):
        return _max_pool_grad_tiled(ins, ctx, win)
    dx, xb = ctx.buffer(ins.result), ctx.buffer(x)
    kh_n, kw_n = win.window
    none = i64(kh_n * kw_n)
    n = ctx.var()
    plane = [int(d) for d in x.type.shape[1:]]

    def window(v):
        oh, ow, c = v
        best, first = ctx.scalar("acc", dtype), ctx.scalar("pos", int64)

        def find_max(kh, kw):
            load, valid = win.tap(xb, dtype, n, oh, ow, kh, kw, c)
            return [Accumulate(best, "max", select(valid, load, identity("max", dtype)))]

        def find_first(kh, kw):
            load, valid = win.tap(xb, dtype, n, oh, ow, kh, kw, c)
            hit = cmp("equal", load, best)
            if dtype.is_floating:
                hit = any_of(hit, Op("is_nan", (load,), bool_))
            return [Accumulate(first, "min", select(all_of(valid, hit), add(mul(kh, kw_n), kw), none))]

        ih, iw = win.input_pos(0, oh, idiv(first, kw_n)), win.input_pos(1, ow, imod(first, kw_n))
        at = win.input_index(n, ih, iw, c)
        grad = Load(ctx.buffer(dy), flat_index([n, oh, ow, c], dy.type.shape), dtype)
        add_grad = Store(dx, at, Op("add", (Load(dx, at, dtype), grad), dtype))
        return [DeclareAcc(best, identity("max", dtype)), taps(ctx, win, find_max),
                DeclareAcc(first, none), taps(ctx, win, find_first), If(cmp("less", first, none), add_grad)]

    per_item = Block([
        nest(ctx, plane, lambda v: [Store(dx, flat_index([n] + v, x.type.shape), zero(dtype))], parallel=False),
        nest(ctx, dy.type.shape[1:], window, parallel=False, vectorize=False)])
    body = For(n, i64(0), dim_expr(x.type.shape[0]), per_item, parallel=True, work=int(np.prod(plane)))
    emit_kernel(ctx, kernel_hint(ins), body)


KINDS = {"max_pool": _pool, "avg_pool": _pool, "avg_pool_grad": _avg_pool_grad, "max_pool_grad": _max_pool_grad}

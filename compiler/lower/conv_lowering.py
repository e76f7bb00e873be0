"""Lower the convolution anchors of fused contraction groups (NHWC input, HWIO filter; the
reference semantics are compiler/ir/ops/conv.py's, pads explicit).

* ``conv2d``: im2col of the input into scratch ``cols[N*OH*OW, KH*KW*C]`` (zero where the
  window hangs over the padding), then ``cols · W[KH*KW*C, O]`` as a Gemm with the epilogue.
* ``conv2d_backprop_filter``: the same im2col, then ``colsᵀ · dy[N*OH*OW, O]`` — a
  ``[KH*KW*C, O]`` result that is the filter layout — with the epilogue (an optimizer update
  fused there runs per filter element).
* ``conv2d_backprop_input``: ``dy · Wᵀ`` into scratch cols, then col2im in gather form: each
  input element sums the cols entries of the windows that cover it (no write races, parallel
  over the batch; taps unrolled up to 7x7, so the sum is vectorized over channels) and the
  epilogue runs in that loop.
* Each of the three is one kernel holding the im2col (col2im) nest and the Gemm, which
  carries an ``ItemSplit``: a planner whose backend runs a Gemm inside a loop may turn the
  kernel into one product per batch item on a per-thread slot of the scratch matrix, so
  that the matrix stays in cache (``conv_chunks.py``); others launch the two as written.
* A 1x1 convolution with stride 1 and no padding needs no im2col: the input is the matrix.
* A ``conv2d`` with few input elements per window (``DIRECT_MAX_TAPS``: a first layer of one
  or three channels) is a direct nest over the output, taps unrolled, epilogue after the sum.
* ``depthwise_conv2d`` and its gradients: direct loop nests (one accumulator per output
  element, taps inside), the epilogue after the sum.
"""
from __future__ import annotations

from ..ir.types import dim_mul
from .indexing import add, dim_expr, flat_index, i64, loop_nest, mul
from .kernel_ir import Accumulate, DeclareAcc, Gemm, ItemSplit, Let, Load, Op, Operand, Store
from .pools import Window, taps
from .contraction import IndexSpace
from .plain_ops import all_of, emit_kernel, nest, select, zero


def lower_conv(scope) -> None:
    """Append the kernels of a contraction group whose anchor is a convolution."""
    LOWER[scope.anchor.kind](scope)


def _window(anchor, in_shape, filter_shape) -> Window:
    a = anchor.attrs
    return Window(in_shape, filter_shape[:2], a["strides"], a["pads"], a["dilations"])


def _pointwise(win: Window) -> bool:
    """A 1x1 window with stride 1 and no padding: im2col would be a copy."""
    return win.window == (1, 1) and win.strides == (1, 1) and win.before == (0, 0) and win.out == win.size


def _im2col(scope, x, win: Window) -> tuple:
    """``(cols, leading dim, nest, loop vars)``: the nest (not emitted) writing the im2col
    matrix ``cols[N*OH*OW, KH*KW*C]`` of input ``x`` (zero where the window hangs over the
    padding), over (item, oh, ow, window row, window column, channel)."""
    ctx, dtype = scope.ctx, x.type.dtype
    n, c = x.type.shape[0], int(x.type.shape[3])
    kh, kw = win.window
    shape = (n, win.out[0], win.out[1], kh, kw, c)
    cols = ctx.scratch(dtype, (dim_mul(n, win.out[0] * win.out[1]), kh * kw * c), hint="cols")
    loop_vars = []

    def body(v):
        loop_vars.extend(v)
        b, oh, ow, i, j, ch = v
        load, valid = win.tap(scope.buffer_of(x), dtype, b, oh, ow, i, j, ch)
        return [Store(cols, flat_index(v, shape), select(valid, load, zero(dtype)))]

    im2col = nest(ctx, shape, body, vectorize=c >= IM2COL_MIN_VECTOR_CHANNELS)
    return cols, kh * kw * c, im2col, loop_vars


#: im2col's channel loop is vectorized from this many channels (fewer: a masked vector op
#: per element would cost more than scalar copies)
IM2COL_MIN_VECTOR_CHANNELS = 8


#: col2im unrolls windows of at most this many taps (the sum is then vectorized over channels)
COL2IM_MAX_UNROLLED = 49

#: a convolution whose window holds at most this many input elements (KH*KW*C_in: 25 for
#: the usual 5x5 first layer of one channel, 27 for 3x3 RGB) runs as a direct nest
DIRECT_MAX_TAPS = 32


def _direct(scope, x, w, win: Window) -> None:
    """A direct convolution for few input elements per window: per output pixel (the pixels
    spread over threads) the window's input elements are loaded once (zero in the padding),
    then a loop over the output channels (vectorized) sums them times the filter, taps
    unrolled, and runs the group's epilogue.  An im2col round trip plus a GEMM with
    K = KH*KW*C would mostly move memory for so short a dot product."""
    ctx, dtype = scope.ctx, x.type.dtype
    kh, kw, c, o = (int(d) for d in w.type.shape)
    n = x.type.shape[0]
    xb, wb = scope.buffer_of(x), scope.buffer_of(w)
    out_shape = (n, win.out[0], win.out[1], o)
    b, oh, ow, oc = (ctx.var() for _ in out_shape)
    taps = [(i, j, ch) for i in range(kh) for j in range(kw) for ch in range(c)]
    inputs = [ctx.scalar("x", dtype) for _ in taps]
    pixel = []
    for var, (i, j, ch) in zip(inputs, taps):
        load, valid = win.tap(xb, dtype, b, oh, ow, i64(i), i64(j), i64(ch))
        pixel.append(Let(var, select(valid, load, zero(dtype))))  # zero padding, as im2col
    # one partial sum per window row: independent add chains instead of one of KH*KW*C adds
    accs = [ctx.scalar("acc", dtype) for _ in range(kh)]
    weights = [Load(wb, flat_index([i64(i), i64(j), i64(ch), oc], w.type.shape), dtype) for i, j, ch in taps]
    sums = [Accumulate(accs[i], "add", _mul(var, weight))
            for var, weight, (i, _, _) in zip(inputs, weights, taps)]
    total, value = ctx.scalar("sum", dtype), accs[0]
    for part in accs[1:]:
        value = Op("add", (value, part), dtype)
    epilogue = scope.epilogue(total, IndexSpace.of_loop(out_shape, [b, oh, ow, oc]))
    inner = [DeclareAcc(a, zero(dtype)) for a in accs] + sums + [Let(total, value)] + epilogue
    channels = loop_nest([oc], (o,), inner, parallel_outer=False, work=2 * len(taps))
    body = loop_nest([b, oh, ow], out_shape[:3], pixel + [channels], vectorize_inner=False,
                     work=2 * len(taps) * o)
    emit_kernel(ctx, scope.hint("direct"), body)


def _conv2d(scope):
    """im2col then ``cols · W`` in one kernel (a pointwise conv multiplies the input itself)."""
    x, w = scope.anchor.operands
    win = _window(scope.anchor, x.type.shape, w.type.shape)
    n = x.type.shape[0]
    kh, kw, c, o = (int(d) for d in w.type.shape)
    if kh * kw * c <= DIRECT_MAX_TAPS and not _pointwise(win):
        return _direct(scope, x, w, win)
    rows, m = (n, win.out[0], win.out[1]), dim_expr(dim_mul(n, win.out[0] * win.out[1]))
    b = Operand(scope.buffer_of(w), i64(0), i64(o))
    if _pointwise(win):
        scope.gemm(m, i64(c), Operand(scope.buffer_of(x), i64(0), i64(c)), b, rows, (o,))
        return
    cols, ld, im2col, loop_vars = _im2col(scope, x, win)
    split = ItemSplit("rows", dim_expr(n), win.out[0] * win.out[1], cols, loop_vars[0].name)
    gemm = scope.gemm_stmt(m, i64(ld), Operand(cols, i64(0), i64(ld)), b, rows, (o,), split=split)
    emit_kernel(scope.ctx, scope.hint("conv"), [im2col, gemm])


def _conv2d_backprop_filter(scope):
    """im2col then ``colsᵀ · dy`` in one kernel: a ``[KH*KW*C, O]`` result, the filter layout."""
    x, dy = scope.anchor.operands
    kh, kw, c, o = (int(d) for d in scope.anchor.attrs["filter_shape"])
    win = _window(scope.anchor, x.type.shape, (kh, kw, c, o))
    n = x.type.shape[0]
    k = dim_expr(dim_mul(n, win.out[0] * win.out[1]))
    b = Operand(scope.buffer_of(dy), i64(0), i64(o))
    if _pointwise(win):
        scope.gemm(i64(c), k, Operand(scope.buffer_of(x), i64(0), i64(c), transposed=True), b, (kh, kw, c), (o,))
        return
    cols, ld, im2col, loop_vars = _im2col(scope, x, win)
    split = ItemSplit("k", dim_expr(n), win.out[0] * win.out[1], cols, loop_vars[0].name,
                      (loop_vars[3].name, loop_vars[4].name), (kh, kw), c)
    gemm = scope.gemm_stmt(i64(ld), k, Operand(cols, i64(0), i64(ld), transposed=True), b, (kh, kw, c), (o,),
                           split=split)
    emit_kernel(scope.ctx, scope.hint("conv"), [im2col, gemm])


def _conv2d_backprop_input(scope):
    """``dy · Wᵀ`` into cols, then col2im (gather form) with the epilogue, in one kernel."""
    w, dy = scope.anchor.operands
    ctx, dtype = scope.ctx, dy.type.dtype
    in_shape = tuple(scope.anchor.attrs["input_shape"])
    n = in_shape[0]
    kh, kw, c, o = (int(d) for d in w.type.shape)
    win = _window(scope.anchor, in_shape, w.type.shape)
    rows = dim_mul(n, win.out[0] * win.out[1])
    a = Operand(scope.buffer_of(dy), i64(0), i64(o))
    b = Operand(scope.buffer_of(w), i64(0), i64(o), transposed=True)
    if _pointwise(win):
        scope.gemm(dim_expr(rows), i64(o), a, b, (n, win.size[0], win.size[1]), (c,))
        return
    cols = ctx.scratch(dtype, (rows, kh * kw * c), hint="cols")
    col_shape = (n, win.out[0], win.out[1], kh, kw, c)
    unrolled = kh * kw <= COL2IM_MAX_UNROLLED
    items = []

    def body(v):
        b_, h, w_, ch = v
        items.append(b_)
        acc = ctx.scalar("acc", dtype)

        def tap(i, j):
            (oh, vh), (ow, vw) = win.output_pos(0, h, i), win.output_pos(1, w_, j)
            load = Load(cols, flat_index([b_, oh, ow, i, j, ch], col_shape), dtype)
            return [Accumulate(acc, "add", select(all_of(vh, vw), load, zero(dtype)))]

        space = IndexSpace.of_loop(in_shape, v)
        if unrolled:
            sums = [s for i in range(kh) for j in range(kw) for s in tap(i64(i), i64(j))]
        else:
            sums = [taps(ctx, win, tap)]
        return [DeclareAcc(acc, zero(dtype))] + sums + scope.epilogue(acc, space)

    col2im = nest(ctx, in_shape, body, vectorize=unrolled, work=kh * kw)
    split = ItemSplit("rows", dim_expr(n), win.out[0] * win.out[1], cols, items[0].name)
    gemm = Gemm(dim_expr(rows), i64(kh * kw * c), i64(o), a, b, Operand(cols, i64(0), i64(kh * kw * c)), split=split)
    emit_kernel(ctx, scope.hint("conv"), [gemm, col2im])


# ----------------------------------------------------------------------------- depthwise
def _sum_nest(scope, out_shape, space_of, reduce_shape, term, work):
    """One kernel: for each element of ``out_shape`` an accumulator summed over ``reduce_shape``
    (``term(out vars, reduce vars)``), then the epilogue at ``space_of(out vars)``."""
    ctx, dtype = scope.ctx, scope.anchor.result.type.dtype

    def body(v):
        acc = ctx.scalar("acc", dtype)
        inner_vars = [ctx.var("k") for _ in reduce_shape]
        inner = loop_nest(inner_vars, tuple(reduce_shape), [Accumulate(acc, "add", term(v, inner_vars))],
                          parallel_outer=False, vectorize_inner=False)
        return [DeclareAcc(acc, zero(dtype)), inner] + scope.epilogue(acc, space_of(v))

    emit_kernel(ctx, scope.hint(scope.anchor.kind), nest(ctx, out_shape, body, vectorize=False, work=work))


def _mul(a, b):
    return Op("mul", (a, b), a.dtype)


def _depthwise(scope):
    """out[n, oh, ow, c*M + m] = sum_taps x[n, ih, iw, c] * w[kh, kw, c, m]."""
    x, w = scope.anchor.operands
    win = _window(scope.anchor, x.type.shape, w.type.shape)
    kh, kw, c, m = (int(d) for d in w.type.shape)
    n, dtype = x.type.shape[0], x.type.dtype
    xb, wb = scope.buffer_of(x), scope.buffer_of(w)

    def term(v, k):
        b, oh, ow, ch, mm = v
        load, valid = win.tap(xb, dtype, b, oh, ow, k[0], k[1], ch)
        weight = Load(wb, flat_index([k[0], k[1], ch, mm], w.type.shape), dtype)
        return select(valid, _mul(load, weight), zero(dtype))

    def space_of(v):
        b, oh, ow, ch, mm = v
        return IndexSpace([((n,), b), ((win.out[0],), oh), ((win.out[1],), ow), ((c * m,), add(mul(ch, m), mm))])

    _sum_nest(scope, (n, win.out[0], win.out[1], c, m), space_of, (kh, kw), term, kh * kw)


def _depthwise_backprop_input(scope):
    """dx[n, h, w, c] = sum over taps and m of dy[n, oh, ow, c*M + m] * w[kh, kw, c, m]."""
    w, dy = scope.anchor.operands
    in_shape = tuple(scope.anchor.attrs["input_shape"])
    win = _window(scope.anchor, in_shape, w.type.shape)
    kh, kw, _, m = (int(d) for d in w.type.shape)
    dtype = dy.type.dtype
    wb, dyb = scope.buffer_of(w), scope.buffer_of(dy)

    def term(v, k):
        b, h, w_, ch = v
        (oh, vh), (ow, vw) = win.output_pos(0, h, k[0]), win.output_pos(1, w_, k[1])
        grad = Load(dyb, flat_index([b, oh, ow, add(mul(ch, m), k[2])], dy.type.shape), dtype)
        weight = Load(wb, flat_index([k[0], k[1], ch, k[2]], w.type.shape), dtype)
        return select(all_of(vh, vw), _mul(grad, weight), zero(dtype))

    _sum_nest(scope, in_shape, lambda v: IndexSpace.of_loop(in_shape, v), (kh, kw, m), term, kh * kw * m)


def _depthwise_backprop_filter(scope):
    """dw[kh, kw, c, m] = sum over n, oh, ow of x[n, ih, iw, c] * dy[n, oh, ow, c*M + m]."""
    x, dy = scope.anchor.operands
    f_shape = tuple(int(d) for d in scope.anchor.attrs["filter_shape"])
    win = _window(scope.anchor, x.type.shape, f_shape)
    m, dtype = f_shape[3], x.type.dtype
    xb, dyb = scope.buffer_of(x), scope.buffer_of(dy)

    def term(v, k):
        i, j, ch, mm = v
        b, oh, ow = k
        load, valid = win.tap(xb, dtype, b, oh, ow, i, j, ch)
        grad = Load(dyb, flat_index([b, oh, ow, add(mul(ch, m), mm)], dy.type.shape), dtype)
        return select(valid, _mul(load, grad), zero(dtype))

    reduce_shape = (x.type.shape[0], win.out[0], win.out[1])
    _sum_nest(scope, f_shape, lambda v: IndexSpace.of_loop(f_shape, v), reduce_shape, term, win.out[0] * win.out[1])


LOWER = {
    "conv2d": _conv2d, "conv2d_backprop_filter": _conv2d_backprop_filter,
    "conv2d_backprop_input": _conv2d_backprop_input, "depthwise_conv2d": _depthwise,
    "depthwise_conv2d_backprop_input": _depthwise_backprop_input,
    "depthwise_conv2d_backprop_filter": _depthwise_backprop_filter,
}

"""Convolution op kinds (NHWC input, HWIO filter) and the sliding-window geometry they share
with the pooling kinds in ``nn.py``.

Attrs are explicit so later stages never recompute TF's padding rule:
``strides=(sh, sw)``, ``pads=((top, bottom), (left, right))``, ``dilations=(dh, dw)``.
The frontend turns 'SAME'/'VALID' into pads with :func:`padding_pads` (TF's rule: the
odd extra row/column of SAME padding goes to the bottom/right).

Kinds (one output each):
  conv2d(x[N,H,W,C], w[KH,KW,C,O])                       -> [N,OH,OW,O]
  conv2d_backprop_input(w, dy) {input_shape}             -> d(conv)/dx applied to dy
  conv2d_backprop_filter(x, dy) {filter_shape}           -> d(conv)/dw applied to dy
  depthwise_conv2d(x[N,H,W,C], w[KH,KW,C,M])             -> [N,OH,OW,C*M]
  depthwise_conv2d_backprop_input / _backprop_filter     (same pattern)

The numpy reference uses im2col through ``as_strided`` (a view, no python loop over
pixels) and one tensordot; the adjoint scatters back with one slice-add per kernel tap.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..opdef import register_op
from ..types import ShapeError, TensorType, is_static, shape_str


# ----------------------------------------------------------------------------- geometry
def window_output_size(size: int, k: int, stride: int, dilation: int, pads) -> int:
    """Number of window positions along one spatial dim (may be <= 0 when the window does not fit)."""
    eff = (k - 1) * dilation + 1
    return (size + pads[0] + pads[1] - eff) // stride + 1


def padding_pads(size: int, k: int, stride: int, dilation: int, padding: str) -> tuple:
    """(before, after) padding of one spatial dim for TF's 'SAME' or 'VALID' rule."""
    if padding == "VALID":
        return (0, 0)
    if padding != "SAME":
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return (total // 2, total - total // 2)


def spatial_out(shape, window, strides, pads, dilations, what: str) -> tuple:
    """(OH, OW) of a window op over an NHWC ``shape``; ShapeError when H/W are not static or too small."""
    h, w = shape[1], shape[2]
    if not (is_static(h) and is_static(w)):
        raise ShapeError(f"{what} needs static height and width, got input {shape_str(shape)}")
    out = tuple(window_output_size(int(s), k, st, d, p)
                for s, k, st, d, p in zip((h, w), window, strides, dilations, pads))
    if min(out) <= 0:
        raise ShapeError(f"{what}: window {tuple(window)} (dilations {tuple(dilations)}, pads {tuple(pads)}) "
                         f"does not fit input {shape_str(shape)}; computed output size would be {out}")
    return out


def patches(x, window, strides, pads, dilations, fill=0):
    """im2col view: [N,H,W,C] -> [N,OH,OW,KH,KW,C] after padding with ``fill``."""
    (pt, pb), (pl, pr) = pads
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    n, hp, wp, c = x.shape
    oh = window_output_size(hp, window[0], strides[0], dilations[0], (0, 0))
    ow = window_output_size(wp, window[1], strides[1], dilations[1], (0, 0))
    sn, sh, sw, sc = x.strides
    view_strides = (sn, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1], sc)
    return as_strided(x, (n, oh, ow, window[0], window[1], c), view_strides, writeable=False)


def col2im(cols, input_hw, strides, pads, dilations):
    """Adjoint of :func:`patches`: sum window entries [N,OH,OW,KH,KW,C] back into [N,H,W,C]."""
    n, oh, ow, kh, kw, c = cols.shape
    (pt, pb), (pl, pr) = pads
    h, w = input_hw
    out = np.zeros((n, h + pt + pb, w + pl + pr, c), dtype=cols.dtype)
    for i in range(kh):
        r0 = i * dilations[0]
        for j in range(kw):
            c0 = j * dilations[1]
            out[:, r0:r0 + (oh - 1) * strides[0] + 1:strides[0], c0:c0 + (ow - 1) * strides[1] + 1:strides[1], :] \
                += cols[:, :, :, i, j, :]
    return out[:, pt:pt + h, pl:pl + w, :]


# ----------------------------------------------------------------------------- type rules
def _check_float_rank4(what, *types):
    for t in types:
        if t.rank != 4:
            raise ShapeError(f"{what} needs rank-4 operands (NHWC input, HWIO filter), got {shape_str(t.shape)}")
        if not t.dtype.is_floating:
            raise ShapeError(f"{what} needs floating operands, got {t.dtype.name}")
    if len({t.dtype for t in types}) > 1:
        raise ShapeError(f"{what}: operand dtypes differ: {', '.join(t.dtype.name for t in types)}")


def _forward_shape(kind, x_shape, w_shape, strides, pads, dilations):
    """Output shape of conv2d / depthwise_conv2d for an input and filter shape."""
    what = f"{kind} of input {shape_str(x_shape)} with filter {shape_str(w_shape)}"
    if x_shape[3] != w_shape[2]:
        raise ShapeError(f"{what}: input depth {x_shape[3]} does not match filter in-channels {w_shape[2]}")
    oh, ow = spatial_out(x_shape, w_shape[:2], strides, pads, dilations, what)
    out_c = w_shape[3] if kind == "conv2d" else w_shape[2] * w_shape[3]
    return (x_shape[0], oh, ow, out_c)


def _forward_rule(kind):
    def infer(inputs, *, strides, pads, dilations):
        x, w = inputs
        _check_float_rank4(kind, x, w)
        return TensorType(x.dtype, _forward_shape(kind, x.shape, w.shape, strides, pads, dilations))

    return infer


def _backprop_input_rule(kind):
    def infer(inputs, *, input_shape, strides, pads, dilations):
        w, dy = inputs
        _check_float_rank4(f"{kind}_backprop_input", w, dy)
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ShapeError(f"{kind}_backprop_input: input_shape must have 4 dims, got {shape_str(input_shape)}")
        want = _forward_shape(kind, input_shape, w.shape, strides, pads, dilations)
        if want != dy.shape:
            raise ShapeError(f"{kind}_backprop_input: out_backprop {shape_str(dy.shape)} does not match the "
                             f"{kind} output {shape_str(want)} of input {shape_str(input_shape)} "
                             f"and filter {shape_str(w.shape)}")
        return TensorType(w.dtype, input_shape)

    return infer


def _backprop_filter_rule(kind):
    def infer(inputs, *, filter_shape, strides, pads, dilations):
        x, dy = inputs
        _check_float_rank4(f"{kind}_backprop_filter", x, dy)
        filter_shape = tuple(int(d) for d in filter_shape)
        if len(filter_shape) != 4:
            raise ShapeError(f"{kind}_backprop_filter: filter_shape must have 4 dims, got {list(filter_shape)}")
        want = _forward_shape(kind, x.shape, filter_shape, strides, pads, dilations)
        if want != dy.shape:
            raise ShapeError(f"{kind}_backprop_filter: out_backprop {shape_str(dy.shape)} does not match the "
                             f"{kind} output {shape_str(want)} of input {shape_str(x.shape)} "
                             f"and filter {shape_str(filter_shape)}")
        return TensorType(x.dtype, filter_shape)

    return infer


# ----------------------------------------------------------------------------- numpy semantics
def _eval_conv2d(ctx, x, w, *, strides, pads, dilations):
    cols = patches(x, w.shape[:2], strides, pads, dilations)
    return np.tensordot(cols, w, axes=([3, 4, 5], [0, 1, 2])).astype(x.dtype, copy=False)


def _eval_conv2d_backprop_input(ctx, w, dy, *, input_shape, strides, pads, dilations):
    cols = np.tensordot(dy, w, axes=([3], [3]))  # [N,OH,OW,KH,KW,C]
    return col2im(cols, ctx.shape(input_shape)[1:3], strides, pads, dilations)


def _eval_conv2d_backprop_filter(ctx, x, dy, *, filter_shape, strides, pads, dilations):
    cols = patches(x, filter_shape[:2], strides, pads, dilations)
    return np.tensordot(cols, dy, axes=([0, 1, 2], [0, 1, 2])).astype(x.dtype, copy=False)


def _eval_depthwise(ctx, x, w, *, strides, pads, dilations):
    cols = patches(x, w.shape[:2], strides, pads, dilations)
    out = np.einsum("nhwijc,ijcm->nhwcm", cols, w, optimize=True)
    return out.reshape(out.shape[:3] + (-1,)).astype(x.dtype, copy=False)


def _eval_depthwise_backprop_input(ctx, w, dy, *, input_shape, strides, pads, dilations):
    kh, kw, c, m = w.shape
    dy = dy.reshape(dy.shape[:3] + (c, m))
    cols = np.einsum("nhwcm,ijcm->nhwijc", dy, w, optimize=True)
    return col2im(cols, ctx.shape(input_shape)[1:3], strides, pads, dilations)


def _eval_depthwise_backprop_filter(ctx, x, dy, *, filter_shape, strides, pads, dilations):
    kh, kw, c, m = filter_shape
    cols = patches(x, (kh, kw), strides, pads, dilations)
    dy = dy.reshape(dy.shape[:3] + (c, m))
    return np.einsum("nhwijc,nhwcm->ijcm", cols, dy, optimize=True).astype(x.dtype, copy=False)


_WINDOW_DOC = "attrs: strides (sh,sw), pads ((top,bottom),(left,right)), dilations (dh,dw)"
register_op("conv2d", _forward_rule("conv2d"), _eval_conv2d, arity=2,
            doc="NHWC input x HWIO filter; " + _WINDOW_DOC)
register_op("conv2d_backprop_input", _backprop_input_rule("conv2d"), _eval_conv2d_backprop_input, arity=2,
            doc="(filter, out_backprop) -> input gradient; attr input_shape; " + _WINDOW_DOC)
register_op("conv2d_backprop_filter", _backprop_filter_rule("conv2d"), _eval_conv2d_backprop_filter, arity=2,
            doc="(input, out_backprop) -> filter gradient; attr filter_shape; " + _WINDOW_DOC)
register_op("depthwise_conv2d", _forward_rule("depthwise_conv2d"), _eval_depthwise, arity=2,
            doc="per-channel conv, filter [KH,KW,C,M] -> C*M channels; " + _WINDOW_DOC)
register_op("depthwise_conv2d_backprop_input", _backprop_input_rule("depthwise_conv2d"),
            _eval_depthwise_backprop_input, arity=2, doc="attr input_shape; " + _WINDOW_DOC)
register_op("depthwise_conv2d_backprop_filter", _backprop_filter_rule("depthwise_conv2d"),
            _eval_depthwise_backprop_filter, arity=2, doc="attr filter_shape; " + _WINDOW_DOC)

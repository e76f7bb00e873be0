"""Neural-network op kinds: pooling (here) and convolutions (``conv.py``, imported below).

Everything else in ``tf.nn`` (activations, softmax, losses, bias_add, dropout, batch norm)
is built by the frontend from math kinds, so later passes see one kind per operation.

Pooling kinds over NHWC input (attrs ``ksize=(kh, kw)``, ``strides=(sh, sw)``,
``pads=((top, bottom), (left, right))`` — see ``conv.py`` for the geometry):
  max_pool(x)                          -> [N,OH,OW,C]; padding never wins the max
  max_pool_grad(x, dy)                 -> dx: each window's gradient goes to its FIRST max
                                          (row-major), like TF's CPU kernel
  avg_pool(x)                          -> mean over the window's valid (unpadded) elements
  avg_pool_grad(dy) {input_shape}      -> dx: dy / count spread over each window
"""
from __future__ import annotations

import numpy as np

from ..opdef import register_op
from ..types import ShapeError, TensorType, shape_str
from . import conv  # noqa: F401  (registers the convolution kinds)
from .conv import col2im, patches, spatial_out

_NO_DILATION = (1, 1)


def _pool_out_shape(kind, shape, ksize, strides, pads):
    """[N,OH,OW,C] of a pool over an NHWC shape."""
    if len(shape) != 4:
        raise ShapeError(f"{kind} needs an NHWC rank-4 input, got {shape_str(shape)}")
    oh, ow = spatial_out(shape, ksize, strides, pads, _NO_DILATION, f"{kind} of input {shape_str(shape)}")
    return (shape[0], oh, ow, shape[3])


def _check_pool_dtype(kind, t):
    if t.dtype.is_bool:
        raise ShapeError(f"{kind} is not defined for bool input")


def _infer_pool(kind):
    def infer(inputs, *, ksize, strides, pads):
        (x,) = inputs
        _check_pool_dtype(kind, x)
        if kind == "avg_pool" and not x.dtype.is_floating:
            raise ShapeError(f"avg_pool needs a floating input, got {x.dtype.name}")
        return TensorType(x.dtype, _pool_out_shape(kind, x.shape, ksize, strides, pads))

    return infer


def _infer_max_pool_grad(inputs, *, ksize, strides, pads):
    x, dy = inputs
    _check_pool_dtype("max_pool_grad", x)
    want = _pool_out_shape("max_pool_grad", x.shape, ksize, strides, pads)
    if dy.shape != want or dy.dtype != x.dtype:
        raise ShapeError(f"max_pool_grad: gradient {dy} does not match the pool output "
                         f"{x.dtype.short}{shape_str(want)} of input {shape_str(x.shape)}")
    return x


def _infer_avg_pool_grad(inputs, *, input_shape, ksize, strides, pads):
    (dy,) = inputs
    want = _pool_out_shape("avg_pool_grad", tuple(input_shape), ksize, strides, pads)
    if dy.shape != want:
        raise ShapeError(f"avg_pool_grad: gradient {shape_str(dy.shape)} does not match the pool output "
                         f"{shape_str(want)} of input {shape_str(tuple(input_shape))}")
    if not dy.dtype.is_floating:
        raise ShapeError(f"avg_pool_grad needs a floating gradient, got {dy.dtype.name}")
    return TensorType(dy.dtype, tuple(input_shape))


def _lowest(dtype):
    """The padding value that never wins a max."""
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


def _eval_max_pool(ctx, x, *, ksize, strides, pads):
    return patches(x, ksize, strides, pads, _NO_DILATION, fill=_lowest(x.dtype)).max(axis=(3, 4))


def _eval_max_pool_grad(ctx, x, dy, *, ksize, strides, pads):
    cols = patches(x, ksize, strides, pads, _NO_DILATION, fill=_lowest(x.dtype))
    n, oh, ow, kh, kw, c = cols.shape
    first = cols.reshape(n, oh, ow, kh * kw, c).argmax(axis=3)  # first max, row-major
    mask = np.arange(kh * kw)[:, None] == first[:, :, :, None, :]
    routed = np.where(mask, dy[:, :, :, None, :], np.zeros((), dy.dtype))
    return col2im(routed.reshape(cols.shape), x.shape[1:3], strides, pads, _NO_DILATION)


def _window_counts(hw, ksize, strides, pads, dtype):
    """[1,OH,OW,1] number of unpadded input elements in each window."""
    ones = np.ones((1,) + tuple(hw) + (1,), dtype)
    return patches(ones, ksize, strides, pads, _NO_DILATION, fill=0).sum(axis=(3, 4))


def _eval_avg_pool(ctx, x, *, ksize, strides, pads):
    sums = patches(x, ksize, strides, pads, _NO_DILATION, fill=0).sum(axis=(3, 4))
    return (sums / _window_counts(x.shape[1:3], ksize, strides, pads, x.dtype)).astype(x.dtype, copy=False)


def _eval_avg_pool_grad(ctx, dy, *, input_shape, ksize, strides, pads):
    hw = ctx.shape(input_shape)[1:3]
    share = dy / _window_counts(hw, ksize, strides, pads, dy.dtype)
    cols = np.broadcast_to(share[:, :, :, None, None, :], share.shape[:3] + tuple(ksize) + share.shape[3:])
    return col2im(cols, hw, strides, pads, _NO_DILATION)


_POOL_DOC = "attrs: ksize (kh,kw), strides (sh,sw), pads ((top,bottom),(left,right))"
register_op("max_pool", _infer_pool("max_pool"), _eval_max_pool, arity=1, doc=_POOL_DOC)
register_op("max_pool_grad", _infer_max_pool_grad, _eval_max_pool_grad, arity=2,
            doc="(input, out_backprop) -> input gradient routed to the first max; " + _POOL_DOC)
register_op("avg_pool", _infer_pool("avg_pool"), _eval_avg_pool, arity=1,
            doc="mean over valid elements; " + _POOL_DOC)
register_op("avg_pool_grad", _infer_avg_pool_grad, _eval_avg_pool_grad, arity=1,
            doc="out_backprop -> input gradient; attr input_shape; " + _POOL_DOC)

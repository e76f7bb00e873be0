"""Gradient rules for the convolution and pooling kinds (``compiler/ir/ops/conv.py``, ``nn.py``).

Activations, softmax and the losses are built from math kinds, so their gradients come
from the math rules.  A convolution is bilinear in (input, filter), so each of the three
conv kinds of a family has its gradients expressed with the other two:

  y  = conv(x, w)            dx = backprop_input(w, g)     dw = backprop_filter(x, g)
  dx = backprop_input(w, dy)  dw = backprop_filter(g, dy)   ddy = conv(g, w)
  dw = backprop_filter(x, dy) dx = backprop_input(g, dy)    ddy = conv(x, g)
"""
from __future__ import annotations

from ..gradients import register_gradient
from ..graph import make_op

_CONV_FAMILIES = ("conv2d", "depthwise_conv2d")
_POOL_ATTRS = ("ksize", "strides", "pads")


def _window(op, keys=("strides", "pads", "dilations")):
    """The window attrs of a forward or backprop op, to reuse in its gradient ops."""
    return {k: op.attrs[k] for k in keys}


def _conv(kind, x, w, op):
    return make_op(kind, [x, w], _window(op))


def _input_grad(kind, w, dy, input_shape, op):
    return make_op(f"{kind}_backprop_input", [w, dy], dict(_window(op), input_shape=tuple(input_shape)))


def _filter_grad(kind, x, dy, filter_shape, op):
    return make_op(f"{kind}_backprop_filter", [x, dy], dict(_window(op), filter_shape=tuple(filter_shape)))


def _register_conv_family(kind):
    """Gradients of ``kind``, ``kind_backprop_input`` and ``kind_backprop_filter``."""

    @register_gradient(kind)
    def _forward_grad(op, grad):
        x, w = op.inputs
        return [_input_grad(kind, w, grad, x.type.shape, op), _filter_grad(kind, x, grad, w.type.shape, op)]

    @register_gradient(f"{kind}_backprop_input")
    def _backprop_input_grad(op, grad):
        w, dy = op.inputs
        return [_filter_grad(kind, grad, dy, w.type.shape, op), _conv(kind, grad, w, op)]

    @register_gradient(f"{kind}_backprop_filter")
    def _backprop_filter_grad(op, grad):
        x, dy = op.inputs
        return [_input_grad(kind, grad, dy, x.type.shape, op), _conv(kind, x, grad, op)]


for _kind in _CONV_FAMILIES:
    _register_conv_family(_kind)


@register_gradient("max_pool")
def _max_pool_grad(op, grad):
    """The gradient goes to the first maximum of each window (TF's CPU rule)."""
    return [make_op("max_pool_grad", [op.inputs[0], grad], _window(op, _POOL_ATTRS))]


@register_gradient("avg_pool")
def _avg_pool_grad(op, grad):
    attrs = dict(_window(op, _POOL_ATTRS), input_shape=tuple(op.inputs[0].type.shape))
    return [make_op("avg_pool_grad", [grad], attrs)]


@register_gradient("avg_pool_grad")
def _avg_pool_grad_grad(op, grad):
    """avg_pool_grad is linear in its gradient input; its adjoint is avg_pool."""
    return [make_op("avg_pool", [grad], _window(op, _POOL_ATTRS))]

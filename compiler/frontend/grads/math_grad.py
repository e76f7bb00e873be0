"""Gradient rules for the math kinds (compiler/ir/ops/math.py), following TF1's math_grad.py.

Every rule is built from frontend constructors, so the gradient graph is itself
differentiable (gradients of gradients work).  Broadcasting binary kinds reduce each
input's gradient back to its shape with ``sum_to_shape``; reductions reshape the incoming
gradient to the kept-dims shape and broadcast it back over the input.  A reduction over
the batch dim counts its elements at run time (``tf.shape``), so one graph serves every
batch size.
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.ops.math import reduction_axes
from ...ir.types import is_known_shape, num_elements
from ..convert import constant
from ..gradients import not_differentiable, register_gradient
from ..ops import math_ops as M
from ..ops.array_ops import broadcast_to, reshape, shape, size, sum_to_shape, zeros_like
from ..ops.dynamic_dims import dims_of, known_rank

# TF: comparisons, logical ops, arg-reductions, predicates and integer-only kinds have no
# gradient; Floor/Ceil/Round have a registered gradient of None, which is the same thing here.
not_differentiable("equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
                   "logical_and", "logical_or", "logical_xor", "logical_not", "is_nan", "is_finite",
                   "argmax", "argmin", "floordiv", "reduce_all", "reduce_any", "floor", "ceil", "round")

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# ----------------------------------------------------------------------------- unary
# each entry: (x, y, grad) -> gradient wrt x, where y is the op's output
_UNARY = {
    "neg": lambda x, y, g: M.negative(g),
    "abs": lambda x, y, g: g * M.sign(x),
    "sign": lambda x, y, g: zeros_like(x),  # TF returns zeros, not None
    "exp": lambda x, y, g: g * y,
    "log": lambda x, y, g: g * M.reciprocal(x),
    "log1p": lambda x, y, g: g * M.reciprocal(1.0 + x),
    "expm1": lambda x, y, g: g * M.exp(x),
    "sqrt": lambda x, y, g: g * 0.5 / y,
    "rsqrt": lambda x, y, g: g * (-0.5 * y * y * y),
    "square": lambda x, y, g: g * (2.0 * x),
    "reciprocal": lambda x, y, g: M.negative(g) * y * y,
    "tanh": lambda x, y, g: g * (1.0 - y * y),
    "sigmoid": lambda x, y, g: g * (y * (1.0 - y)),
    "relu": lambda x, y, g: M.where_v2(M.greater(y, 0.0), g, 0.0),
    "elu": lambda x, y, g: M.where_v2(M.less(y, 0.0), g * (y + 1.0), g),
    "softplus": lambda x, y, g: g * M.sigmoid(x),
    "sin": lambda x, y, g: g * M.cos(x),
    "cos": lambda x, y, g: M.negative(g) * M.sin(x),
    "erf": lambda x, y, g: g * (_TWO_OVER_SQRT_PI * M.exp(M.negative(M.square(x)))),
}


def _unary_rule(fn):
    """Adapt an (x, y, grad) formula to the (op, grad) -> [dx] rule signature."""
    def rule(op, grad):
        return [fn(op.inputs[0], op.outputs[0], grad)]

    return rule


for _kind, _fn in _UNARY.items():
    register_gradient(_kind)(_unary_rule(_fn))


# ----------------------------------------------------------------------------- binary
def _to_input(g, t):
    """Sum a broadcast-shaped gradient back to input ``t``'s shape (None stays None)."""
    return None if g is None else sum_to_shape(g, t)


# each entry: (x, y, z, grad) -> (dx, dy) in the broadcast shape; z is the op's output
def _pow_grads(x, y, z, g):
    """TF's rule: the exponent's gradient uses log(x) only where x > 0 (0 elsewhere)."""
    positive = M.greater(x, 0.0)
    log_x = M.where_v2(positive, M.log(M.where_v2(positive, x, 1.0)), 0.0)
    return g * y * M.pow(x, y - 1.0), g * z * log_x


def _extreme_grads(mask):
    """maximum/minimum: the gradient goes to x where ``mask(x, y)`` holds (ties go to x), else to y."""
    def grads(x, y, z, g):
        take_x = mask(x, y)
        return M.where_v2(take_x, g, 0.0), M.where_v2(take_x, 0.0, g)

    return grads


_BINARY = {
    "add": lambda x, y, z, g: (g, g),
    "sub": lambda x, y, z, g: (g, M.negative(g)),
    "mul": lambda x, y, z, g: (g * y, g * x),
    "div": lambda x, y, z, g: (g / y, g * ((M.negative(x) / y) / y)),
    "pow": _pow_grads,
    "maximum": _extreme_grads(M.greater_equal),
    "minimum": _extreme_grads(M.less_equal),
    "mod": lambda x, y, z, g: (g, g * M.negative(M.floordiv(x, y))),  # TF's FloorMod gradient
}


def _binary_rule(fn):
    """Adapt a broadcast-shape formula to a rule that reduces each gradient to its input."""
    def rule(op, grad):
        x, y = op.inputs
        gx, gy = fn(x, y, op.outputs[0], grad)
        return [_to_input(gx, x), _to_input(gy, y)]

    return rule


for _kind, _fn in _BINARY.items():
    register_gradient(_kind)(_binary_rule(_fn))


@register_gradient("select")
def _select_grad(op, grad):
    """No gradient for the condition; each branch gets the gradient where it was chosen."""
    cond, a, b = op.inputs
    return [None, _to_input(M.where_v2(cond, grad, 0.0), a), _to_input(M.where_v2(cond, 0.0, grad), b)]


@register_gradient("cast")
def _cast_grad(op, grad):
    """Float-to-float casts pass the gradient back in the source dtype; int/bool ends get none."""
    src = op.inputs[0].dtype
    if src.is_floating and grad.dtype.is_floating:
        return [M.cast(grad, src)]
    return [None]


@register_gradient("add_n")
def _add_n_grad(op, grad):
    return [grad] * len(op.inputs)


# ----------------------------------------------------------------------------- reductions
def _axes_of(op):
    return reduction_axes(known_rank(op.inputs[0], f"gradient of {op.type} '{op.name}'"), op.attrs["axes"])


def _kept(t, op):
    """``t`` (shaped like the reduction's output) reshaped to the keepdims shape of the input
    (a scalar when the input's rank is unknown: the reduction was over all its axes)."""
    if op.inputs[0].type.rank is None:
        return t if t.type.shape == () else reshape(t, ())
    axes = _axes_of(op)
    kept = tuple(1 if i in axes else d for i, d in enumerate(dims_of(op.inputs[0])))
    return t if t.type.shape == kept else reshape(t, kept)


def _over_input(t, op):
    """Broadcast a keepdims-shaped tensor over the reduction's input shape."""
    target = op.inputs[0].type.shape
    return t if t.type.shape == target and is_known_shape(target) else broadcast_to(t, dims_of(op.inputs[0]))


def _count(op):
    """Number of elements each output of the reduction summed: a python number when static,
    else computed at run time from tf.shape (the batch dim or an unknown dim is reduced)."""
    x = op.inputs[0]
    if x.type.rank is None:
        return M.cast(size(x), x.dtype)
    axes = _axes_of(op)
    dims = [x.type.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        return float(num_elements(dims))
    mask = constant(np.array([i in axes for i in range(x.type.rank)]))
    return M.cast(M.reduce_prod(M.where_v2(mask, shape(x), 1)), x.dtype)


@register_gradient("reduce_sum")
def _sum_grad(op, grad):
    return [_over_input(_kept(grad, op), op)]


@register_gradient("reduce_mean")
def _mean_grad(op, grad):
    return [_over_input(_kept(grad, op) / _count(op), op)]


def _extreme_reduce_grad(op, grad):
    """reduce_max/min: the gradient is split equally among the elements equal to the result."""
    x = op.inputs[0]
    hits = M.cast(M.equal(_kept(op.outputs[0], op), x), grad.dtype)
    ties = M.reduce_sum(hits, _axes_of(op), keepdims=True)
    return [hits / ties * _kept(grad, op)]


register_gradient("reduce_max")(_extreme_reduce_grad)
register_gradient("reduce_min")(_extreme_reduce_grad)


@register_gradient("reduce_prod")
def _prod_grad(op, grad):
    """Product of the other elements of each group, exact with zeros: with no zero it is
    prod/x; with one zero only that element gets the product of the rest; with more, 0."""
    x, axes = op.inputs[0], _axes_of(op)
    nonzero = M.not_equal(x, 0.0)
    safe_x = M.where_v2(nonzero, x, 1.0)
    prod_nonzero = M.reduce_prod(safe_x, axes, keepdims=True)
    zeros = M.reduce_sum(M.cast(M.logical_not(nonzero), x.dtype), axes, keepdims=True)
    when_nonzero = M.where_v2(M.equal(zeros, 0.0), prod_nonzero / safe_x, 0.0)
    when_zero = M.where_v2(M.equal(zeros, 1.0), prod_nonzero, 0.0)
    return [M.where_v2(nonzero, when_nonzero, when_zero) * _kept(grad, op)]


# ----------------------------------------------------------------------------- matmul
def _matmul_pair(op, grad):
    """dA, dB for a@b with transpose flags (TF's four cases), shaped like the batched result."""
    a, b = op.inputs
    ta, tb = op.attrs["transpose_a"], op.attrs["transpose_b"]
    if not ta and not tb:
        return M.matmul(grad, b, transpose_b=True), M.matmul(a, grad, transpose_a=True)
    if not ta and tb:
        return M.matmul(grad, b), M.matmul(grad, a, transpose_a=True)
    if ta and not tb:
        return M.matmul(b, grad, transpose_b=True), M.matmul(a, grad)
    return (M.matmul(b, grad, transpose_a=True, transpose_b=True),
            M.matmul(grad, a, transpose_a=True, transpose_b=True))


@register_gradient("matmul")
def _matmul_grad(op, grad):
    """Broadcast batch dims are summed back to each operand's own shape."""
    ga, gb = _matmul_pair(op, grad)
    return [_to_input(ga, op.inputs[0]), _to_input(gb, op.inputs[1])]

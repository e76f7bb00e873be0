"""``tf.nn`` constructors built from math kinds: activations, softmax, bias_add, dropout,
moments, batch normalization, l2_normalize (convolutions and pools are in ``conv_ops``,
cross-entropies in ``losses``).

Composing these from primitive kinds (max, exp, sum, select, ...) keeps the IR small: later
passes fuse them, and their gradients come from the math rules.  Softmax subtracts the
(gradient-stopped) row max first, so large logits never overflow.
"""
from __future__ import annotations

import numbers

from ...ir.types import normalize_axis, shape_str
from ..convert import convert_to_tensor
from ..graph import get_default_graph
from . import math_ops as M
from ..shape_inference import compatible
from .conv_ops import NN_API as _CONV_API
from .dynamic_dims import known_rank


# ----------------------------------------------------------------------------- helpers
def float_tensor(x, what, name="x"):
    """``x`` as a tensor, which must be floating (the message names the op)."""
    t = convert_to_tensor(x)
    if not t.dtype.is_floating:
        raise ValueError(f"{what}: {name} must be a floating tensor, got {t.dtype.name} {shape_str(t.type.shape)}")
    return t


def pick_axis(axis, dim, what, default=-1):
    """TF1's ``dim`` alias of ``axis`` (only one may be given)."""
    if axis is not None and dim is not None:
        raise ValueError(f"{what}: pass either 'axis' or its deprecated alias 'dim', not both")
    chosen = axis if axis is not None else dim
    return default if chosen is None else int(chosen)


def check_axis(x, axis, what):
    """A valid axis of ``x`` (ValueError naming the op and shape otherwise)."""
    known_rank(x, what)
    try:
        return normalize_axis(axis, x.type.rank)
    except Exception:
        raise ValueError(f"{what}: axis {axis} is out of range for {shape_str(x.type.shape)}") from None


def scope(name, default):
    return get_default_graph().name_scope(name or default)


# ----------------------------------------------------------------------------- activations
def relu6(features, name=None):
    """min(max(x, 0), 6)."""
    x = float_tensor(features, "relu6", "features")
    return M.minimum(M.relu(x), 6.0, name=name or "Relu6")


def leaky_relu(features, alpha=0.2, name=None):
    """max(x, alpha*x) for alpha <= 1 (TF's formulation)."""
    x = float_tensor(features, "leaky_relu", "features")
    if alpha > 1:
        return M.where(M.greater(x, 0.0), x, M.multiply(x, alpha), name=name or "LeakyRelu")
    return M.maximum(x, M.multiply(x, alpha), name=name or "LeakyRelu")


def selu(features, name=None):
    """scale * (x if x > 0 else alpha * (exp(x) - 1)) with TF's constants."""
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    x = float_tensor(features, "selu", "features")
    negative = M.multiply(M.elu(x), alpha)
    return M.multiply(M.where(M.greater(x, 0.0), x, negative), scale, name=name or "Selu")


def softsign(features, name=None):
    """x / (1 + |x|)."""
    x = float_tensor(features, "softsign", "features")
    return M.truediv(x, M.add(M.abs(x), 1.0), name=name or "Softsign")


def shifted_logits(logits, axis, what):
    """(x - stop_gradient(max x), log-sum-exp of that) along ``axis``, keepdims."""
    x = float_tensor(logits, what, "logits")
    if x.type.rank == 0:
        raise ValueError(f"{what}: logits must have rank >= 1, got a scalar")
    axis = check_axis(x, axis, what)
    shifted = M.subtract(x, M.stop_gradient_(M.reduce_max(x, axis, keepdims=True)))
    return shifted, M.log(M.reduce_sum(M.exp(shifted), axis, keepdims=True)), axis


def softmax(logits, axis=None, name=None, dim=None):
    """tf.nn.softmax: exp(x - max) / sum(exp(x - max)) along ``axis`` (TF1 alias ``dim``)."""
    shifted, _, axis = shifted_logits(logits, pick_axis(axis, dim, "softmax"), "softmax")
    e = M.exp(shifted)
    return M.truediv(e, M.reduce_sum(e, axis, keepdims=True), name=name or "Softmax")


def log_softmax(logits, axis=None, name=None, dim=None):
    """tf.nn.log_softmax: x - max - log(sum(exp(x - max)))."""
    shifted, lse, _ = shifted_logits(logits, pick_axis(axis, dim, "log_softmax"), "log_softmax")
    return M.subtract(shifted, lse, name=name or "LogSoftmax")


# ----------------------------------------------------------------------------- bias and layers
def bias_add(value, bias, data_format=None, name=None):
    """tf.nn.bias_add: ``bias`` (1-D) must be as long as the last dim of ``value``; lowers to ``add``."""
    if data_format not in (None, "NHWC", "N...C"):
        raise ValueError(f"bias_add: data_format {data_format!r} is not supported; Kiln supports NHWC only")
    v = convert_to_tensor(value)
    b = convert_to_tensor(bias, dtype_hint=v.dtype)
    shapes = f"value {v.type}, bias {b.type}"
    known_rank(v, f"bias_add '{name or 'BiasAdd'}'")
    if v.type.rank < 2:
        raise ValueError(f"bias_add '{name or 'BiasAdd'}': value must be at least rank 2 ({shapes})")
    if b.type.rank != 1 or not compatible((b.type.shape[0],), (v.type.shape[-1],)):
        raise ValueError(f"bias_add '{name or 'BiasAdd'}': bias must be 1-D with length equal to the last "
                         f"dimension of value ({shapes})")
    if b.dtype != v.dtype:
        raise ValueError(f"bias_add '{name or 'BiasAdd'}': dtypes differ ({shapes})")
    return M.add(v, b, name=name or "BiasAdd")


def xw_plus_b(x, weights, biases, name=None):
    """tf.nn.xw_plus_b: matmul(x, weights) + biases."""
    with scope(name, "xw_plus_b"):
        return bias_add(M.matmul(x, weights), biases)


def relu_layer(x, weights, biases, name=None):
    with scope(name, "relu_layer"):
        return M.relu(xw_plus_b(x, weights, biases))


# ----------------------------------------------------------------------------- dropout
def _noise_shape(x, noise_shape):
    """The random tensor's shape: x's (batch dim included), or noise_shape with None -> x's dim."""
    from .dynamic_dims import dims_of

    if noise_shape is None:
        return dims_of(x)
    dims = list(noise_shape.as_list() if hasattr(noise_shape, "as_list") else noise_shape)
    if len(dims) != x.type.rank:
        raise ValueError(f"dropout: noise_shape {dims} must have the rank of x {shape_str(x.type.shape)}")
    out = tuple(x.type.shape[i] if d is None else int(d) for i, d in enumerate(dims))
    for d, xd in zip(out, x.type.shape):
        if d != 1 and d != xd:
            raise ValueError(f"dropout: noise_shape {dims} does not broadcast to x {shape_str(x.type.shape)}")
    return out


def _keep_prob(keep_prob, rate, x):
    """TF1's keep_prob/rate arguments as a python float or a scalar tensor of x's dtype."""
    if keep_prob is not None and rate is not None:
        raise ValueError("dropout: cannot specify both 'rate' and 'keep_prob'")
    if keep_prob is None:
        if rate is None:
            raise ValueError("dropout: you must provide a rate (or keep_prob) to dropout")
        keep_prob = 1.0 - rate if isinstance(rate, numbers.Real) else M.subtract(1.0, convert_to_tensor(rate))
    if isinstance(keep_prob, numbers.Real):
        if not 0 < keep_prob <= 1:
            raise ValueError(f"dropout: keep_prob must be a scalar tensor or a float in the range (0, 1], "
                             f"got {keep_prob:g}")
        return float(keep_prob)
    keep_prob = convert_to_tensor(keep_prob, dtype_hint=x.dtype)
    if keep_prob.dtype != x.dtype or keep_prob.type.rank not in (0, None):  # (None: checked at the feed)
        raise ValueError(f"dropout: keep_prob must be a scalar {x.dtype.name} tensor, got {keep_prob.type}")
    return keep_prob


def dropout(x, keep_prob=None, noise_shape=None, seed=None, name=None, rate=None):
    """tf.nn.dropout (TF1): x / keep_prob * floor(keep_prob + uniform[0, 1)).

    ``keep_prob`` may be a python float or a scalar tensor (e.g. a placeholder fed 0.5
    while training and 1.0 in evaluation); a python keep_prob of 1 returns x itself.
    """
    from .random_ops import random_uniform

    x = float_tensor(x, "dropout")
    keep = _keep_prob(keep_prob, rate, x)
    if isinstance(keep, float) and keep == 1.0:
        return x
    with scope(name, "dropout"):
        u = random_uniform(_noise_shape(x, noise_shape), seed=seed, dtype=x.dtype)
        kept = M.floor(M.add(u, keep))
        out = M.multiply(M.truediv(x, keep), kept)
        out.set_shape(x.type.shape)  # as TF: keep_prob of unknown rank is a scalar
        return out


# ----------------------------------------------------------------------------- normalization
def _axes_list(axes, x, what):
    axes = [axes] if isinstance(axes, int) else list(axes)
    return sorted({check_axis(x, int(a), what) for a in axes})


def moments(x, axes, shift=None, name=None, keep_dims=None, keepdims=None):
    """tf.nn.moments: (mean, variance) over ``axes``; the variance uses the gradient-stopped mean."""
    from .array_ops import squeeze

    x = float_tensor(x, "moments")
    axes = _axes_list(axes, x, "moments")
    keep = bool(keepdims if keepdims is not None else keep_dims)
    with scope(name, "moments"):
        mean = M.reduce_mean(x, axes, keepdims=True, name="mean")
        variance = M.reduce_mean(M.squared_difference(x, M.stop_gradient_(mean)), axes, keepdims=True,
                                 name="variance")
        if keep:
            return mean, variance
        return squeeze(mean, axes), squeeze(variance, axes)


def batch_normalization(x, mean, variance, offset, scale, variance_epsilon, name=None):
    """tf.nn.batch_normalization: scale * (x - mean) / sqrt(variance + eps) + offset (offset/scale may be None)."""
    x = float_tensor(x, "batch_normalization")
    with scope(name, "batchnorm"):
        inv = M.rsqrt(M.add(convert_to_tensor(variance, dtype_hint=x.dtype), variance_epsilon))
        if scale is not None:
            inv = M.multiply(inv, scale)
        shift = M.multiply(mean, inv)
        shift = M.subtract(offset, shift) if offset is not None else M.negative(shift)
        return M.add(M.multiply(x, inv), shift)


def l2_normalize(x, axis=None, epsilon=1e-12, name=None, dim=None):
    """tf.nn.l2_normalize: x / sqrt(max(sum(x^2, axis), epsilon)); axis None means all axes."""
    x = float_tensor(x, "l2_normalize")
    chosen = axis if axis is not None else dim
    axes = list(range(x.type.rank)) if chosen is None else _axes_list(chosen, x, "l2_normalize")
    with scope(name, "l2_normalize"):
        square_sum = M.reduce_sum(M.square(x), axes, keepdims=True)
        return M.multiply(x, M.rsqrt(M.maximum(square_sum, epsilon)))


TF_API = {
    "tf.nn": dict(
        _CONV_API,
        relu=M.relu, relu6=relu6, leaky_relu=leaky_relu, elu=M.elu, selu=selu, softplus=M.softplus,
        softsign=softsign, sigmoid=M.sigmoid, tanh=M.tanh, softmax=softmax, log_softmax=log_softmax,
        bias_add=bias_add, xw_plus_b=xw_plus_b, relu_layer=relu_layer, dropout=dropout, moments=moments,
        batch_normalization=batch_normalization, l2_normalize=l2_normalize,
    ),
    "tf.math": {"softmax": softmax, "log_softmax": log_softmax, "l2_normalize": l2_normalize,
                "softplus": M.softplus, "softsign": softsign},
}

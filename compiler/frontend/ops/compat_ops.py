"""TF1 names public programs still use: tf.arg_max/arg_min, tf.to_double, tf.nn.in_top_k,
tf.div_no_nan, tf.realdiv, tf.log_sigmoid, tf.math.reduce_variance/reduce_std, tf.nn.swish,
tf.nn.zero_fraction, tf.nn.fused_batch_norm, tf.random.set_random_seed.

Each is composed from existing ops (no kernel of its own), so every backend runs it and
its gradient (where one exists) comes from the parts.
"""
from __future__ import annotations

from ..convert import convert_to_tensor
from ..graph import get_default_graph
from .math_ops import argmax, argmin, cast


def arg_max(input, dimension, output_type="int64", name=None):
    """tf.arg_max (TF1): argmax over ``dimension`` (required)."""
    return argmax(input, dimension=dimension, output_type=output_type, name=name or "ArgMax")


def arg_min(input, dimension, output_type="int64", name=None):
    """tf.arg_min (TF1): argmin over ``dimension`` (required)."""
    return argmin(input, dimension=dimension, output_type=output_type, name=name or "ArgMin")


def to_double(x, name="ToDouble"):
    """tf.to_double: cast to float64."""
    return cast(x, "float64", name=name)


def _check_in_top_k(p, t, k):
    """TF's checks: predictions [batch, classes] float32, targets [batch] int32/int64, k an int."""
    if p.shape.ndims != 2 or not p.dtype.is_floating:
        raise ValueError(f"in_top_k: predictions must be a 2-D float tensor, got {p.name} {p.type}")
    if t.shape.ndims != 1 or not t.dtype.is_integer:
        raise ValueError(f"in_top_k: targets must be a 1-D int32 or int64 tensor, got {t.name} {t.type}")
    if p.type.shape[0] != t.type.shape[0]:
        raise ValueError(f"in_top_k: First dimension of predictions {p.type.shape[0]} must match length of "
                         f"targets {t.type.shape[0]} (predictions {p.type}, targets {t.type})")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"in_top_k: k must be a Python int, got {k!r}")


def in_top_k(predictions, targets, k, name=None):
    """tf.nn.in_top_k: is ``predictions[i, targets[i]]`` among the ``k`` largest of row i?

    TF's rule: the target is in the top k when fewer than ``k`` classes score strictly
    higher, so ties at the boundary all count as in.  A target out of range, or a row with
    any non-finite score, gives False.
    """
    from .array_creation import one_hot
    from .math_ops import greater, is_finite, less, logical_and, reduce_all, reduce_sum, where_v2

    p, t = convert_to_tensor(predictions), convert_to_tensor(targets)
    _check_in_top_k(p, t, k)
    classes = p.type.shape[1]
    with get_default_graph().name_scope(name or "in_top_k"):
        pick = one_hot(t, classes, on_value=True, off_value=False, dtype="bool")
        score = reduce_sum(where_v2(pick, p, 0.0), axis=1, keepdims=True)
        higher = reduce_sum(cast(greater(p, score), "int32"), axis=1)
        valid = logical_and(logical_and(t >= 0, t < classes), reduce_all(is_finite(p), axis=1))
        return logical_and(less(higher, int(k)), valid)


def _float(x, what):
    x = convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"{what}: expected a floating point tensor, got {x.name} of dtype {x.dtype.name}")
    return x


def div_no_nan(x, y, name=None):
    """tf.div_no_nan / tf.math.divide_no_nan: x / y, and 0 wherever y == 0 (also in the gradient)."""
    from .math_ops import equal, truediv, where_v2

    x, y = _float(x, "div_no_nan"), _float(y, "div_no_nan")
    with get_default_graph().name_scope(name or "div_no_nan"):
        zero = equal(y, 0.0)
        quotient = truediv(x, where_v2(zero, 1.0, y))
        return where_v2(zero, 0.0, quotient)


def realdiv(x, y, name=None):
    """tf.realdiv: x / y for floating point tensors."""
    from .math_ops import truediv

    return truediv(_float(x, "realdiv"), _float(y, "realdiv"), name=name or "RealDiv")


def log_sigmoid(x, name=None):
    """tf.log_sigmoid: log(1 / (1 + exp(-x))) = -softplus(-x), stable for large |x|."""
    from .math_ops import negative, softplus

    with get_default_graph().name_scope(name or "LogSigmoid"):
        return negative(softplus(negative(_float(x, "log_sigmoid"))))


def reduce_variance(input_tensor, axis=None, keepdims=False, name=None):
    """tf.math.reduce_variance: the (biased) variance over ``axis``."""
    from .math_ops import reduce_mean, squared_difference

    x = _float(input_tensor, "reduce_variance")
    with get_default_graph().name_scope(name or "reduce_variance"):
        mean = reduce_mean(x, axis, keepdims=True)
        return reduce_mean(squared_difference(x, mean), axis, keepdims=keepdims)


def reduce_std(input_tensor, axis=None, keepdims=False, name=None):
    """tf.math.reduce_std: sqrt of reduce_variance."""
    from .math_ops import sqrt

    with get_default_graph().name_scope(name or "reduce_std"):
        return sqrt(reduce_variance(input_tensor, axis, keepdims))


def swish(features, name=None):
    """tf.nn.swish: x * sigmoid(x)."""
    from .math_ops import multiply, sigmoid

    x = _float(features, "swish")
    return multiply(x, sigmoid(x), name=name or "swish")


def zero_fraction(value, name=None):
    """tf.nn.zero_fraction: the fraction of zeros in ``value`` (float32)."""
    from .math_ops import equal, reduce_mean

    return reduce_mean(cast(equal(convert_to_tensor(value), 0), "float32"), name=name or "zero_fraction")


def random_set_random_seed(seed):
    """tf.random.set_random_seed: tf.set_random_seed under its TF 1.13+ path."""
    from ..core_api import set_random_seed

    set_random_seed(seed)


_ALIASES = {"arg_max": arg_max, "arg_min": arg_min, "to_double": to_double, "div_no_nan": div_no_nan,
            "realdiv": realdiv, "log_sigmoid": log_sigmoid}
_MATH = {"in_top_k": in_top_k, "divide_no_nan": div_no_nan, "log_sigmoid": log_sigmoid,
         "reduce_variance": reduce_variance, "reduce_std": reduce_std, "realdiv": realdiv}
TF_API = {"tf": _ALIASES, "tf.math": _MATH,
          "tf.nn": {"in_top_k": in_top_k, "swish": swish, "zero_fraction": zero_fraction},
          "tf.random": {"set_random_seed": random_set_random_seed}}

"""TF1 names public programs still use: tf.arg_max/arg_min, tf.to_double, tf.nn.in_top_k.

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


_ALIASES = {"arg_max": arg_max, "arg_min": arg_min, "to_double": to_double}
TF_API = {"tf": _ALIASES, "tf.nn": {"in_top_k": in_top_k}, "tf.math": {"in_top_k": in_top_k}}

"""Weight regularizers: tf.contrib.layers.l1/l2_regularizer and tf.keras.regularizers.

A regularizer is a callable ``weights -> scalar loss``; ``get_variable(regularizer=...)``
adds its result to the REGULARIZATION_LOSSES collection.  Note the two families differ
as in TF: contrib's l2 is ``scale * sum(w^2) / 2`` (``tf.nn.l2_loss``), Keras's l2 is
``l * sum(w^2)``.  ``tf.losses.get_regularization_loss`` (ops/losses.py) sums the collection.
"""
from __future__ import annotations

import numbers

from ..convert import constant, convert_to_tensor
from ..graph import GraphKeys, get_default_graph
from ..ops import math_ops as M
from ..ops.losses import l2_loss


def _check_scale(scale):
    """TF1's validation; returns True when the scale disables the regularizer (0.0)."""
    if isinstance(scale, numbers.Integral):
        raise ValueError(f"scale cannot be an integer: {scale}")
    if isinstance(scale, numbers.Real):
        if scale < 0.0:
            raise ValueError(f"Setting a scale less than 0 on a regularizer: {scale:g}")
        return scale == 0.0
    return False


def _scaled(scale, penalty, default_name, scope):
    """Build ``scale * penalty(weights)`` under a name scope; None for a zero scale."""
    if _check_scale(scale):
        return lambda _weights: None

    def regularizer(weights, name=None):
        with get_default_graph().name_scope(scope or default_name):
            w = convert_to_tensor(weights)
            my_scale = convert_to_tensor(scale, dtype=w.dtype, name="scale")
            return M.multiply(my_scale, penalty(w), name=name or "value")

    return regularizer


def l1_regularizer(scale, scope=None):
    """tf.contrib.layers.l1_regularizer: scale * sum(|w|)."""
    return _scaled(scale, lambda w: M.reduce_sum(M.abs(w)), "l1_regularizer", scope)


def l2_regularizer(scale, scope=None):
    """tf.contrib.layers.l2_regularizer: scale * sum(w^2) / 2."""
    return _scaled(scale, l2_loss, "l2_regularizer", scope)


def sum_regularizer(regularizer_list, scope=None):
    """A regularizer returning the sum of the (non-None) penalties of ``regularizer_list``."""
    regularizer_list = [r for r in regularizer_list if r is not None]
    if not regularizer_list:
        return None

    def regularizer(weights):
        with get_default_graph().name_scope(scope or "sum_regularizer"):
            penalties = [p for p in (r(weights) for r in regularizer_list) if p is not None]
            return M.add_n(penalties) if penalties else None

    return regularizer


def l1_l2_regularizer(scale_l1=1.0, scale_l2=1.0, scope=None):
    """tf.contrib.layers.l1_l2_regularizer: l1_regularizer(scale_l1) + l2_regularizer(scale_l2)."""
    return sum_regularizer([l1_regularizer(scale_l1), l2_regularizer(scale_l2)], scope=scope)


def apply_regularization(regularizer, weights_list=None):
    """Sum ``regularizer`` over ``weights_list`` (default: the 'weights' collection) and add the
    total to REGULARIZATION_LOSSES."""
    graph = get_default_graph()
    weights_list = weights_list or graph.get_collection("weights")
    if not weights_list:
        raise ValueError("No weights to regularize.")
    with graph.name_scope("get_regularization_penalty"):
        penalties = [regularizer(w) for w in weights_list]
        penalties = [p if p is not None else constant(0.0) for p in penalties]
        for p in penalties:
            if p.shape.ndims != 0:
                raise ValueError("regularizer must return a scalar Tensor instead of a Tensor with "
                                 f"rank {p.shape.ndims}.")
        total = M.add_n(penalties)
    graph.add_to_collection(GraphKeys.REGULARIZATION_LOSSES, total)
    return total


# ----------------------------------------------------------------------------- keras
class Regularizer:
    """Base class of tf.keras.regularizers."""

    def __call__(self, x):
        return 0.0

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class L1L2(Regularizer):
    """tf.keras.regularizers.L1L2: l1 * sum(|x|) + l2 * sum(x^2) (no 1/2 factor)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, x):
        x = convert_to_tensor(x)
        total = constant(0.0, dtype=x.dtype)
        if self.l1:
            total = total + self.l1 * M.reduce_sum(M.abs(x))
        if self.l2:
            total = total + self.l2 * M.reduce_sum(M.square(x))
        return total

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


def keras_l1(l=0.01):  # noqa: E741 (Keras's argument name)
    return L1L2(l1=l)


def keras_l2(l=0.01):  # noqa: E741
    return L1L2(l2=l)


def keras_l1_l2(l1=0.01, l2=0.01):
    return L1L2(l1=l1, l2=l2)


_CONTRIB = {"l1_regularizer": l1_regularizer, "l2_regularizer": l2_regularizer,
            "l1_l2_regularizer": l1_l2_regularizer, "sum_regularizer": sum_regularizer,
            "apply_regularization": apply_regularization}
_KERAS = {"Regularizer": Regularizer, "L1L2": L1L2, "l1": keras_l1, "l2": keras_l2, "l1_l2": keras_l1_l2}

TF_API = {
    "tf.contrib.layers": _CONTRIB,
    "tf.keras.regularizers": _KERAS,
}

"""Clipping (tf.clip_by_value, clip_by_norm, global_norm, clip_by_global_norm, clip_by_average_norm).

Built from math kinds like TF1 builds them, so gradients follow TF: clip_by_value passes
the gradient only where the value is inside [min, max] (through maximum/minimum), the
norm clips scale by a factor that itself carries gradient.  ``None`` entries of a tensor
list (variables without gradients) pass through the global-norm functions untouched.
"""
from __future__ import annotations

import numpy as np

from ...ir.types import shape_str
from ..convert import convert_to_tensor
from ..graph import Tensor, make_op
from . import math_ops as M
from .losses import l2_loss
from .nn_ops import scope


def _identity(x, name):
    return make_op("identity", [x], name=name)


def clip_by_value(t, clip_value_min, clip_value_max, name=None):
    """min(max(t, clip_value_min), clip_value_max); the bounds may not enlarge t's shape."""
    with scope(name, "clip_by_value"):
        t = convert_to_tensor(t)
        lo = convert_to_tensor(clip_value_min, dtype_hint=t.dtype)
        hi = convert_to_tensor(clip_value_max, dtype_hint=t.dtype)
        for bound, what in ((lo, "clip_value_min"), (hi, "clip_value_max")):
            if bound.dtype != t.dtype:
                raise ValueError(f"clip_by_value: {what} dtype {bound.dtype.name} differs from t's {t.dtype.name}")
        out = M.minimum(M.maximum(t, lo), hi)
        if out.type.shape != t.type.shape:
            raise ValueError(f"clip_by_value: clip values of shapes {shape_str(lo.type.shape)} and "
                             f"{shape_str(hi.type.shape)} would broadcast t {shape_str(t.type.shape)} "
                             f"to {shape_str(out.type.shape)}")
        return out


def _float(t, what):
    t = convert_to_tensor(t)
    if not t.dtype.is_floating:
        raise ValueError(f"{what}: t must be a floating tensor, got {t.dtype.name}")
    return t


def clip_by_norm(t, clip_norm, axes=None, name=None):
    """t * clip_norm / max(l2norm(t, axes), clip_norm); a zero t stays zero (no NaN gradient)."""
    from .array_ops import ones_like

    with scope(name, "clip_by_norm"):
        t = _float(t, "clip_by_norm")
        clip_norm = convert_to_tensor(clip_norm, dtype_hint=t.dtype)
        axes = None if axes is None else ([int(axes)] if isinstance(axes, (int, np.integer)) else list(axes))
        l2sum = M.reduce_sum(M.square(t), axes, keepdims=True)
        positive = M.greater(l2sum, 0.0)
        safe = M.where(positive, l2sum, ones_like(l2sum))
        l2norm = M.where(positive, M.sqrt(safe), l2sum)
        scaled = M.multiply(t, clip_norm)
        return _identity(M.truediv(scaled, M.maximum(l2norm, clip_norm)), "clipped")


def _check_list(t_list, what):
    if isinstance(t_list, Tensor) or not isinstance(t_list, (list, tuple)):
        raise TypeError(f"{what}: t_list should be a sequence of tensors, got {type(t_list).__name__}")
    return [None if t is None else convert_to_tensor(t) for t in t_list]


def global_norm(t_list, name=None):
    """sqrt(sum of squares of every entry of every tensor); None entries are ignored."""
    tensors = _check_list(t_list, "global_norm")
    present = [t for t in tensors if t is not None]
    if not present:
        raise ValueError("global_norm: t_list holds no tensors")
    with scope(name, "global_norm"):
        halves = [l2_loss(_float(t, "global_norm")) for t in present]
        dtypes = {h.dtype for h in halves}
        if len(dtypes) > 1:
            raise ValueError(f"global_norm: tensors of different dtypes {sorted(d.name for d in dtypes)}")
        return M.sqrt(M.multiply(M.add_n(halves), 2.0), name="global_norm")


def clip_by_global_norm(t_list, clip_norm, use_norm=None, name=None):
    """Scale every tensor by clip_norm / max(global_norm, clip_norm); returns (list, global_norm).

    ``use_norm`` replaces the computed norm; a non-finite norm makes every value NaN (like TF).
    """
    tensors = _check_list(t_list, "clip_by_global_norm")
    use_norm = global_norm(tensors) if use_norm is None else convert_to_tensor(use_norm)
    with scope(name, "clip_by_global_norm"):
        clip_norm = convert_to_tensor(clip_norm, dtype_hint=use_norm.dtype)
        finite_scale = M.multiply(clip_norm, M.minimum(M.reciprocal(use_norm), M.reciprocal(clip_norm)))
        nan = convert_to_tensor(float("nan"), dtype=use_norm.dtype)  # a constant: no NaN reaches the gradient
        scale = M.where(M.is_finite(use_norm), finite_scale, nan)
        clipped = [None if t is None else _identity(M.multiply(t, M.cast(scale, t.dtype)), f"clip_by_global_norm_{i}")
                   for i, t in enumerate(tensors)]
    return clipped, use_norm


def clip_by_average_norm(t, clip_norm, name=None):
    """t * clip_norm / max(l2norm(t) / size(t), clip_norm) — TF1's average-norm clip."""
    from .array_ops import ones_like

    with scope(name, "clip_by_average_norm"):
        t = _float(t, "clip_by_average_norm")
        count = M.reduce_sum(ones_like(t))
        inv_norm = M.rsqrt(M.reduce_sum(M.square(t)))
        factor = M.minimum(M.multiply(inv_norm, count), M.reciprocal(convert_to_tensor(clip_norm, dtype_hint=t.dtype)))
        return _identity(M.multiply(M.multiply(t, clip_norm), factor), "clip_by_average_norm")


TF_API = {
    "tf": {"clip_by_value": clip_by_value, "clip_by_norm": clip_by_norm, "global_norm": global_norm,
           "clip_by_global_norm": clip_by_global_norm, "clip_by_average_norm": clip_by_average_norm},
}

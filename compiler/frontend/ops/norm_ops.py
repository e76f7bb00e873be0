"""tf.nn.fused_batch_norm and the variance rule of TF's fused batch-norm kernel;
tf.nn.local_response_normalization (tf.nn.lrn).

TF's FusedBatchNorm normalizes with the biased batch variance but *reports* (and feeds
to running averages) the Bessel-corrected one, ``var * n / (n - 1)`` with ``n`` the
elements per channel (``n <= 1`` leaves it as is).  tf.layers / tf.contrib.layers batch
norm use that kernel for 4-D (contrib: 2-D and 4-D) inputs, so their moving variance
follows the same rule (see ``layers_norm.py``).
"""
from __future__ import annotations

from ..graph import get_default_graph
from . import math_ops as M
from .nn_ops import batch_normalization, float_tensor, moments


def bessel_variance(x, variance, channels: int):
    """``variance * n / max(n - 1, 1)`` with ``n = size(x) / channels`` (the batch may be symbolic)."""
    from .array_ops import size

    n = M.cast(size(x), variance.dtype) / float(channels)
    return variance * (n / M.maximum(n - 1.0, 1.0))


def _check_vector(t, channels, role):
    if t.shape.ndims != 1 or t.type.shape[0] != channels:
        raise ValueError(f"fused_batch_norm: {role} must be a 1-D tensor of size {channels} (the channels), "
                         f"got {t.name} {t.type}")


def fused_batch_norm(x, scale, offset, mean=None, variance=None, epsilon=0.001, data_format="NHWC",
                     is_training=True, name=None, exponential_avg_factor=1.0):
    """tf.nn.fused_batch_norm: returns ``(y, mean, variance)`` of a 4-D input over its channel axis.

    Training normalizes with the batch statistics and returns the batch mean and the
    Bessel-corrected batch variance (blended into the given ``mean``/``variance`` as
    ``(1 - f) * given + f * batch`` when ``exponential_avg_factor`` f is not 1);
    inference normalizes with, and returns, the given ``mean`` and ``variance``.
    """
    from ..convert import convert_to_tensor
    from .array_ops import reshape

    x = float_tensor(x, "fused_batch_norm")
    if x.shape.ndims != 4:
        raise ValueError(f"fused_batch_norm: x must be 4-dimensional, got {x.name} {x.type}")
    if data_format not in ("NHWC", "NCHW"):
        raise ValueError(f"fused_batch_norm: data_format must be NHWC or NCHW, got {data_format!r}")
    if (not is_training or exponential_avg_factor != 1.0) and (mean is None or variance is None):
        raise ValueError("Both `mean` and `variance` must be a 1D tensor when `is_training` is False or "
                         "`exponential_avg_factor` != 1.0.")
    axis = 3 if data_format == "NHWC" else 1
    channels = x.type.shape[axis]
    params = [None if t is None else convert_to_tensor(t, dtype_hint=x.dtype) for t in (scale, offset, mean, variance)]
    for t, role in zip(params, ("scale", "offset", "mean", "variance")):
        if t is not None:
            _check_vector(t, channels, role)
    scale, offset, mean, variance = params
    shaped = (lambda t: t) if axis == 3 else (lambda t: reshape(t, [channels, 1, 1]))
    with get_default_graph().name_scope(name or "FusedBatchNorm"):
        if is_training:
            batch_mean, batch_var = moments(x, [a for a in range(4) if a != axis])
            y = batch_normalization(x, shaped(batch_mean), shaped(batch_var), shaped(offset), shaped(scale), epsilon)
            batch_var = bessel_variance(x, batch_var, channels)
            if exponential_avg_factor != 1.0:
                f = float(exponential_avg_factor)
                return y, mean * (1.0 - f) + batch_mean * f, variance * (1.0 - f) + batch_var * f
            return y, batch_mean, batch_var
        y = batch_normalization(x, shaped(mean), shaped(variance), shaped(offset), shaped(scale), epsilon)
        return y, mean, variance


def local_response_normalization(input, depth_radius=5, bias=1.0, alpha=1.0, beta=0.5, name=None):
    """tf.nn.lrn: ``x / (bias + alpha * sum(x[..., c-r:c+r+1] ** 2)) ** beta`` over the channel axis of a 4-D input.

    The window sum is the sum of ``2r + 1`` shifted slices of the zero-padded squares, so the
    op (and its gradient) is made of existing kinds.
    """
    from .array_ops import pad
    from .array_slicing import slice as slice_

    x = float_tensor(input, "local_response_normalization")
    if x.shape.ndims != 4:
        raise ValueError(f"local_response_normalization: input must be 4-dimensional, got {x.name} {x.type}")
    r = int(depth_radius)
    if r < 0:
        raise ValueError(f"local_response_normalization: depth_radius must be >= 0, got {depth_radius}")
    channels = x.type.shape[3]
    with get_default_graph().name_scope(name or "LRN"):
        padded = pad(M.square(x), [[0, 0], [0, 0], [0, 0], [r, r]])
        window = M.add_n([slice_(padded, [0, 0, 0, k], [-1, -1, -1, channels]) for k in range(2 * r + 1)])
        return M.multiply(x, M.pow(M.add(M.multiply(window, float(alpha)), float(bias)), -float(beta)))


TF_API = {"tf.nn": {"fused_batch_norm": fused_batch_norm, "lrn": local_response_normalization,
                    "local_response_normalization": local_response_normalization}}

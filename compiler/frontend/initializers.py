"""Variable initializers (tf.zeros_initializer, glorot_uniform_initializer, ...), TF1 defaults.

An initializer is called as ``init(shape, dtype=None, partition_info=None)`` and returns a
Tensor that computes the initial value (random ones draw with Philox, see random_ops).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.types import as_dtype
from .convert import constant
from .ops import random_ops


class Initializer:
    dtype = None

    def _dtype(self, dtype):
        return as_dtype(dtype or self.dtype or "float32")

    def get_config(self):
        return {k: v for k, v in vars(self).items()}


class Zeros(Initializer):
    def __init__(self, dtype="float32"):
        self.dtype = dtype

    def __call__(self, shape, dtype=None, partition_info=None):
        from .ops.array_ops import zeros

        return zeros(_dims(shape), self._dtype(dtype))


class Ones(Initializer):
    def __init__(self, dtype="float32"):
        self.dtype = dtype

    def __call__(self, shape, dtype=None, partition_info=None):
        from .ops.array_ops import ones

        return ones(_dims(shape), self._dtype(dtype))


class Constant(Initializer):
    """A scalar fills the shape; a list/array must have the variable's element count."""

    def __init__(self, value=0, dtype="float32", verify_shape=False):
        self.value, self.dtype, self.verify_shape = value, dtype, verify_shape

    def __call__(self, shape, dtype=None, partition_info=None):
        dt = self._dtype(dtype)
        arr = np.asarray(self.value, dtype=dt.np)
        dims = _dims(shape)
        if arr.size == 1:  # a fill: a broadcast scalar, not a dense constant in the graph
            from .ops.array_ops import fill

            return fill(list(dims), constant(arr.reshape(()), name="Const"))
        if arr.size == int(np.prod(dims, dtype=np.int64)):
            arr = arr.reshape(dims)
        else:
            raise ValueError(f"constant_initializer: value has {arr.size} elements, variable shape {list(dims)} needs {int(np.prod(dims))}")
        return constant(arr, name="Const")


class RandomUniform(Initializer):
    def __init__(self, minval=0.0, maxval=None, seed=None, dtype="float32"):
        self.minval, self.maxval, self.seed, self.dtype = minval, maxval, seed, dtype

    def __call__(self, shape, dtype=None, partition_info=None):
        dt = self._dtype(dtype)
        maxval = self.maxval if self.maxval is not None else (1.0 if dt.is_floating else None)
        return random_ops.random_uniform(_dims(shape), self.minval, maxval, dt, seed=self.seed)


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=1.0, seed=None, dtype="float32"):
        self.mean, self.stddev, self.seed, self.dtype = mean, stddev, seed, dtype

    def __call__(self, shape, dtype=None, partition_info=None):
        return random_ops.random_normal(_dims(shape), self.mean, self.stddev, self._dtype(dtype), seed=self.seed)


class TruncatedNormal(Initializer):
    def __init__(self, mean=0.0, stddev=1.0, seed=None, dtype="float32"):
        self.mean, self.stddev, self.seed, self.dtype = mean, stddev, seed, dtype

    def __call__(self, shape, dtype=None, partition_info=None):
        return random_ops.truncated_normal(_dims(shape), self.mean, self.stddev, self._dtype(dtype), seed=self.seed)


def compute_fans(shape):
    """TF's fan-in/fan-out: conv kernels multiply by the receptive field size."""
    shape = _dims(shape)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(Initializer):
    """TF1 variance scaling: stddev = sqrt(scale / n), n from fan_in/fan_out/fan_avg."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None, dtype="float32"):
        if scale <= 0.0:
            raise ValueError("`scale` must be positive float.")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"Invalid `mode` argument: {mode}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("uniform", "truncated_normal", "untruncated_normal"):
            raise ValueError(f"Invalid `distribution` argument: {distribution}")
        self.scale, self.mode, self.distribution, self.seed, self.dtype = scale, mode, distribution, seed, dtype

    def __call__(self, shape, dtype=None, partition_info=None):
        dt = self._dtype(dtype)
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        dims = _dims(shape)
        if self.distribution == "truncated_normal":
            # 0.8796... is the stddev of a unit normal truncated to (-2, 2)
            return random_ops.truncated_normal(dims, 0.0, math.sqrt(scale) / 0.87962566103423978, dt, seed=self.seed)
        if self.distribution == "untruncated_normal":
            return random_ops.random_normal(dims, 0.0, math.sqrt(scale), dt, seed=self.seed)
        limit = math.sqrt(3.0 * scale)
        return random_ops.random_uniform(dims, -limit, limit, dt, seed=self.seed)


def glorot_uniform_initializer(seed=None, dtype="float32"):
    return VarianceScaling(1.0, "fan_avg", "uniform", seed, dtype)


def glorot_normal_initializer(seed=None, dtype="float32"):
    return VarianceScaling(1.0, "fan_avg", "truncated_normal", seed, dtype)


def he_normal(seed=None):
    return VarianceScaling(2.0, "fan_in", "truncated_normal", seed)


def he_uniform(seed=None):
    return VarianceScaling(2.0, "fan_in", "uniform", seed)


def lecun_normal(seed=None):
    return VarianceScaling(1.0, "fan_in", "truncated_normal", seed)


def lecun_uniform(seed=None):
    return VarianceScaling(1.0, "fan_in", "uniform", seed)


def _dims(shape):
    if hasattr(shape, "as_list"):
        shape = shape.as_list()
    if isinstance(shape, (int, np.integer)):
        shape = [shape]
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"initializer shape must be non-negative, got {list(dims)}")
    return dims


_INITIALIZERS = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "random_uniform": RandomUniform,
    "random_normal": RandomNormal, "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling, "glorot_uniform": glorot_uniform_initializer,
    "glorot_normal": glorot_normal_initializer, "he_normal": he_normal, "he_uniform": he_uniform,
    "lecun_normal": lecun_normal, "lecun_uniform": lecun_uniform,
}

TF_API = {
    "tf": {
        "zeros_initializer": Zeros, "ones_initializer": Ones, "constant_initializer": Constant,
        "random_uniform_initializer": RandomUniform, "random_normal_initializer": RandomNormal,
        "truncated_normal_initializer": TruncatedNormal, "variance_scaling_initializer": VarianceScaling,
        "glorot_uniform_initializer": glorot_uniform_initializer,
        "glorot_normal_initializer": glorot_normal_initializer,
    },
    "tf.initializers": dict(_INITIALIZERS),
    "tf.keras.initializers": dict(_INITIALIZERS),
    "tf.contrib.layers": {"xavier_initializer": lambda uniform=True, seed=None, dtype="float32":
                          VarianceScaling(1.0, "fan_avg", "uniform" if uniform else "truncated_normal", seed, dtype)},
}

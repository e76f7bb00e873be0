"""Turning python values, numpy arrays and Variables into graph tensors."""
from __future__ import annotations

import numpy as np

from ..ir.types import DType, as_dtype
from .graph import Operation, Tensor, get_default_graph, make_op


def _python_dtype(value) -> DType:
    """TF's default dtype for a python/numpy value: floats -> float32, ints -> int32."""
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        return as_dtype(value.dtype)
    arr = np.asarray(value)
    if arr.dtype == np.bool_:
        return as_dtype("bool")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min):
            return as_dtype("int64")
        return as_dtype("int32")
    if np.issubdtype(arr.dtype, np.floating):
        return as_dtype("float32")
    raise TypeError(f"Failed to convert object of type {type(value).__name__} to Tensor. Contents: {value!r}.")


def constant_value_array(value, dtype=None) -> np.ndarray:
    """The numpy array for ``value`` in ``dtype`` (TF's default dtype when None)."""
    if isinstance(value, (Tensor, Operation)):
        raise TypeError(f"expected a python or numpy value, got {value!r}")
    dtype = as_dtype(dtype) if dtype is not None else _python_dtype(value)
    arr = np.asarray(value)
    if arr.dtype == object:
        raise TypeError(f"Failed to convert object of type {type(value).__name__} to Tensor (ragged or non-numeric): {value!r}")
    if dtype.is_integer and np.issubdtype(arr.dtype, np.floating) and not np.all(np.equal(np.mod(arr, 1), 0)):
        raise TypeError(f"Expected {dtype.name}, got {value!r} of type '{type(value).__name__}' instead.")
    return np.array(arr, dtype=dtype.np)


def constant(value, dtype=None, shape=None, name="Const", verify_shape=False):
    """tf.constant: a short value fills the requested shape with its last element (TF1 rule)."""
    arr = constant_value_array(value, dtype)
    if shape is not None:
        shape = tuple(int(d) for d in shape)
        size = int(np.prod(shape, dtype=np.int64))
        if arr.size == size:
            arr = arr.reshape(shape)
        elif verify_shape:
            raise TypeError(f"Expected Tensor's shape: {shape}, got {arr.shape}.")
        elif arr.size == 1 or (arr.ndim <= 1 and arr.size < size):
            flat = arr.reshape(-1)
            fill = np.full(size, flat[-1] if flat.size else 0, dtype=arr.dtype)
            fill[: flat.size] = flat
            arr = fill.reshape(shape)
        else:
            raise ValueError(f"Too many elements provided. Needed at most {size}, but received {arr.size}")
    return make_op("constant", (), {"value": arr}, name=name)


def convert_to_tensor(value, dtype=None, name=None, dtype_hint=None) -> Tensor:
    """tf.convert_to_tensor: tensors pass through (dtype checked), other values become constants."""
    if isinstance(value, Tensor):
        if dtype is not None and as_dtype(dtype) != value.dtype:
            raise ValueError(f"Tensor conversion requested dtype {as_dtype(dtype).name} for Tensor with dtype {value.dtype.name}: {value!r}")
        return value
    if isinstance(value, Operation):
        raise TypeError(f"Can not convert an Operation ({value.name}) into a Tensor.")
    if isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) for v in value):
        from .ops.array_ops import stack  # a list holding tensors packs them (TF's auto-stacking)

        return stack([convert_to_tensor(v, dtype=dtype, dtype_hint=dtype_hint) for v in value], name=name or "packed")
    if dtype is None and dtype_hint is not None:
        try:
            arr = constant_value_array(value, dtype_hint)
            return constant(arr, name=name or "Const")
        except (TypeError, ValueError):
            pass
    return constant(value, dtype=dtype, name=name or "Const")


def convert_pair(a, b):
    """Convert two operands of a binary op so python scalars take the tensor operand's dtype."""
    if isinstance(a, Tensor) and not isinstance(b, Tensor):
        return a, convert_to_tensor(b, dtype_hint=a.dtype)
    if isinstance(b, Tensor) and not isinstance(a, Tensor):
        return convert_to_tensor(a, dtype_hint=b.dtype), b
    return convert_to_tensor(a), convert_to_tensor(b)


def default_graph_of(*values):
    for v in values:
        if isinstance(v, (Tensor, Operation)):
            return v.graph
    return get_default_graph()

"""Value-building constructors: tf.linspace, tf.range (constants from static arguments),
tf.one_hot and tf.sequence_mask (comparisons against a constant arange, then a select)."""
from __future__ import annotations

import builtins

import numpy as np

from ...ir.types import as_dtype, float32, float64, int32, int64
from ..convert import constant, constant_value_array, convert_to_tensor
from ..graph import Tensor, make_op
from .array_ops import expand_dims, reshape, static_int, static_value

_RANGE_DTYPES = (int32, int64, float32, float64)  # TF picks the widest of the arguments'


def _static_scalar(x, what):
    """A python/numpy scalar from a number or a constant scalar tensor, with its TF dtype."""
    value = static_value(x)
    if value is None:
        raise ValueError(f"{what}: Kiln needs arguments known when the graph is built")
    arr = np.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"{what}: expected a scalar, got shape {list(arr.shape)}")
    if isinstance(x, Tensor):
        return arr.item(), x.dtype
    return arr.item(), (float32 if isinstance(arr.item(), float) else int32)


def linspace(start, stop, num, name=None, axis=0):
    """tf.linspace / tf.lin_space: ``num`` evenly spaced values from start to stop inclusive."""
    a, dtype = _static_scalar(start, "LinSpace")
    b, _ = _static_scalar(stop, "LinSpace")
    n = static_int(num, "LinSpace")
    if not dtype.is_floating:
        raise TypeError(f"LinSpace: start must be float32 or float64, got {dtype.name}")
    if n <= 0:
        raise ValueError(f"LinSpace: num must be positive, got {n}")
    values = np.linspace(a, b, n, dtype=np.float64).astype(dtype.np)
    return constant(values, name=name or "LinSpace")


def range(start, limit=None, delta=1, dtype=None, name="range"):  # noqa: A001  (TF's name)
    """tf.range: like python range; dtype is the widest of the arguments' (int32 < int64 < float).

    An integer limit known only from shapes (``tf.range(tf.shape(x)[0])``) gives a ``range``
    op of that length: ``[N]`` for the batch dim (one artifact serves every batch size).
    """
    if limit is None:
        start, limit = 0, start
    if isinstance(limit, Tensor) and _is_shape_dim(limit):
        return _dynamic_range(start, limit, delta, dtype, name)
    args = [_static_scalar(v, "Range") for v in (start, limit, delta)]
    inferred = max((d for _, d in args), key=_RANGE_DTYPES.index)
    out = as_dtype(dtype) if dtype is not None else inferred
    s, l, d = (v for v, _ in args)
    if d == 0:
        raise ValueError("Range: delta must not be 0")
    if (d > 0 and s > l) or (d < 0 and s < l):
        raise ValueError(f"Range: requires start <= limit when delta > 0 (or >= when delta < 0): "
                         f"start={s}, limit={l}, delta={d}")
    count = int(np.ceil((l - s) / d))
    values = (s + d * np.arange(builtins.max(count, 0))).astype(out.np)
    return constant(values, name=name)


def _is_shape_dim(t) -> bool:
    """An int scalar whose value is a dim not known when the graph is built (N, a fed size)."""
    value = static_value(t)
    return t.dtype.is_integer and t.type.shape == () and (value is None or not isinstance(value, (int, np.integer, np.ndarray)))


def _dynamic_range(start, limit, delta, dtype, name):
    """tf.range with a shape-valued limit: length ceil((limit - start) / delta) >= 0."""
    from .array_ops import _as_dim
    from .math_ops import floordiv, maximum, subtract

    (s, _), (d, _) = _static_scalar(start, "Range"), _static_scalar(delta, "Range")
    if not (isinstance(s, int) and isinstance(d, int) and d > 0):
        raise ValueError("Range: with a limit known only at run time Kiln needs integer start and a "
                         f"positive integer delta, got start={s}, delta={d}")
    count = limit if (s, d) == (0, 1) else maximum(floordiv(subtract(limit, s) + (d - 1), d), 0)
    out = as_dtype(dtype) if dtype is not None else limit.dtype
    return make_op("range", [], {"start": s, "delta": d, "shape": (_as_dim(count, "Range"),), "dtype": out},
                   name=name)


def _onehot_value(value, default, dtype):
    return convert_to_tensor(default if value is None else value, dtype=dtype)


def one_hot(indices, depth, on_value=None, off_value=None, axis=None, dtype=None, name=None):
    """tf.one_hot: a new axis of size ``depth``; on_value where it equals the index, else off_value."""
    from .math_ops import equal, where_v2

    idx = convert_to_tensor(indices, dtype_hint=int32)
    if not idx.dtype.is_integer:
        raise TypeError(f"one_hot: indices must be integers, got {idx.dtype.name}")
    depth = static_int(depth, "one_hot")
    if dtype is None:  # TF: the dtype of on_value (or off_value) when given, else float32
        given = next((v for v in (on_value, off_value) if v is not None), None)
        dtype = float32 if given is None else (
            given.dtype if isinstance(given, Tensor) else as_dtype(constant_value_array(given).dtype))
    dtype = as_dtype(dtype)
    rank = idx.type.rank
    axis = -1 if axis is None else static_int(axis, "one_hot")
    if not -1 <= axis <= rank:
        raise ValueError(f"one_hot: axis must be in [-1, {rank}], got {axis}")
    axis = rank if axis == -1 else axis
    grid = [1] * (rank + 1)
    grid[axis] = depth
    positions = reshape(constant(np.arange(depth, dtype=idx.dtype.np)), grid)
    hit = equal(expand_dims(idx, axis), positions)
    return where_v2(hit, _onehot_value(on_value, 1, dtype), _onehot_value(off_value, 0, dtype),
                 name=name or "one_hot")


def sequence_mask(lengths, maxlen=None, dtype="bool", name=None):
    """tf.sequence_mask: mask[..., j] = j < lengths[...]; maxlen must be known (or lengths constant)."""
    from .math_ops import cast, less

    lens = convert_to_tensor(lengths, dtype_hint=int32)
    if maxlen is None:
        value = static_value(lens)
        if value is None:
            raise ValueError("sequence_mask: maxlen=None needs max(lengths), which depends on the data; "
                             "pass maxlen")
        maxlen = int(np.max(value)) if np.size(value) else 0
    positions = constant(np.arange(static_int(maxlen, "sequence_mask"), dtype=lens.dtype.np))
    mask = less(positions, expand_dims(lens, -1))
    return cast(mask, dtype, name=name or "SequenceMask")


TF_API = {
    "tf": {"linspace": linspace, "lin_space": linspace, "range": range, "one_hot": one_hot,
           "sequence_mask": sequence_mask},
    "tf.math": {"linspace": linspace},
}

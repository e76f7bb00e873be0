"""Array/shape constructors (tf.reshape, tf.concat, tf.zeros_like, tf.shape, ...) with TF1 names.

Most TF ops here are built from a few IR kinds (reshape, broadcast_to, transpose, concat,
tile, pad, shape; slicing and gathers live in ``array_slicing``).  Shapes are static except
for the batch dim N: a shape argument may be a list, tuple, TensorShape, a constant tensor,
or a tensor whose value is known when the graph is built (``tf.shape(x)``, ``tf.shape(x)[0]``,
a stack of those) — see ``static_value``.
"""
from __future__ import annotations

import numpy as np

from ...ir.deferred import Deferred, ShapeOf, SumAxes
from ...ir.types import (N, ShapeError, Sym, TensorType, as_dtype, dim_div, float32, int32, is_known_shape,
                         normalize_axis, num_elements, shape_str)
from ..convert import constant, convert_to_tensor
from ..graph import Tensor, TensorShape, make_op
from ..shape_inference import merge_shapes
from .dynamic_dims import deferred_value, dims_of, known_rank

_STATIC = "_kiln_static"  # attribute holding a tensor's build-time value (may hold Sym dims)


# ----------------------------------------------------------------------------- static values
def static_value(x):
    """The value of ``x`` known while building the graph (numpy array or tuple of dims), or None."""
    if not isinstance(x, Tensor):
        return x
    if x.op.type == "constant":
        return x.op.attrs["value"]
    return getattr(x, _STATIC, None)


def with_static(t: Tensor, value) -> Tensor:
    """Record the build-time value of ``t`` (e.g. a shape holding the batch dim)."""
    setattr(t, _STATIC, value)
    return t


def _as_dim(d, what):
    """One element of a shape argument as an int or Sym (-1 allowed; the caller checks), or a
    ``DimOf``/``ValueOf`` when it is a dim known only once the feeds' shapes are."""
    if isinstance(d, Tensor) and static_value(d) is None:
        if not d.dtype.is_integer or d.type.shape != ():
            raise ValueError(f"{what}: a shape element must be an int scalar, got {d.name} {d.type}")
        return deferred_value(d, what)
    d = static_value(d)
    if d is None:
        raise ValueError(f"{what}: Kiln needs static shapes; this tensor's value is not known "
                         f"when the graph is built")
    if isinstance(d, (Sym, Deferred)):
        return d
    if isinstance(d, np.ndarray):
        if d.ndim != 0:
            raise ValueError(f"{what}: a shape element must be a scalar, got shape {list(d.shape)}")
        d = d.item()
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) and not (
            isinstance(d, float) and d.is_integer()):
        raise TypeError(f"{what}: shape elements must be integers, got {d!r}")
    return int(d)


def shape_arg(shape, what, allow_unknown=False) -> tuple:
    """Turn a user shape (int, list, tuple, TensorShape, 1-D int tensor) into a tuple of dims.

    A None dim (TensorShape) is the batch dim N.  With ``allow_unknown`` a -1 may appear
    (reshape); otherwise dims must be >= 0.
    """
    if isinstance(shape, ShapeOf):
        return shape  # a tensor's whole shape, its rank unknown (dims_of)
    if isinstance(shape, TensorShape):
        shape = [N if d is None else d for d in shape.as_list()]
    value = static_value(shape)
    if value is None:
        if not shape.dtype.is_integer or shape.type.rank != 1:
            raise ValueError(f"{what}: a shape must be a 1-D int tensor, got {shape.name} {shape.type}")
        return deferred_value(shape, what, None if shape.type.shape[0] is None else (None,) * shape.type.shape[0])
    if isinstance(value, np.ndarray) and value.ndim == 0 or isinstance(value, (int, np.integer, Sym, Deferred)):
        value = [value]
    dims = tuple(_as_dim(d, what) for d in value)
    low = -1 if allow_unknown else 0
    if any(isinstance(d, int) and d < low for d in dims):
        raise ValueError(f"{what}: dimensions must be >= {low}, got {list(dims)}")
    return dims


def static_int(x, what) -> int:
    """A python int from an int or a constant scalar tensor (axes, counts)."""
    d = _as_dim(x, what)
    if isinstance(d, (Sym, Deferred)):
        raise ValueError(f"{what}: expected a static integer, got {'the batch dim ' if isinstance(d, Sym) else ''}"
                         f"{d} (known only when the graph runs)")
    return d


# ----------------------------------------------------------------------------- broadcasting helper
def sum_to_shape(x, target_type):
    """Reduce a broadcast result ``x`` back to ``target_type``'s shape (for gradients).

    Leading extra dims are summed away; a dim that is 1 in the target but not in ``x``
    (static or batch) is summed with keepdims.  ``target_type`` may be a TensorType, a
    Tensor or a shape tuple; with a Tensor whose shape (or ``x``'s) is partly unknown, the
    axes and the shape are deferred to lowering (TF's BroadcastGradientArgs, done once the
    fed shapes are known).
    """
    from .math_ops import reduce_sum

    if isinstance(target_type, Tensor) and not (is_known_shape(target_type.type.shape)
                                                and is_known_shape(x.type.shape)):
        summed = make_op("reduce_sum", [x], {"axes": SumAxes(x, target_type), "keepdims": True})
        return make_op("reshape", [summed], {"shape": dims_of(target_type)})
    if isinstance(target_type, Tensor):
        target_type = target_type.type
    target = tuple(target_type.shape if isinstance(target_type, TensorType) else target_type)
    shape = x.type.shape
    if shape == target:
        return x
    lead = len(shape) - len(target)
    if lead < 0:
        raise ValueError(f"sum_to_shape: {shape_str(shape)} has fewer dims than {shape_str(target)}")
    axes = list(range(lead)) + [lead + i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1]
    if axes:
        x = reduce_sum(x, axes, keepdims=True)
    return reshape(x, target) if x.type.shape != target else x


# ----------------------------------------------------------------------------- creation
def _filled(value, shape, dtype, name):
    """A tensor of ``shape`` holding ``value`` everywhere: broadcast of a scalar constant."""
    scalar = constant(np.asarray(value, dtype=as_dtype(dtype).np), name=name if shape == () else "Const")
    if shape == ():
        return scalar
    return make_op("broadcast_to", [scalar], {"shape": shape if isinstance(shape, Deferred) else tuple(shape)},
                   name=name)


def zeros(shape, dtype=float32, name=None):
    """tf.zeros: shape may hold the batch dim (e.g. from tf.shape(x))."""
    return _filled(0, shape_arg(shape, "zeros"), dtype, name or "zeros")


def ones(shape, dtype=float32, name=None):
    return _filled(1, shape_arg(shape, "ones"), dtype, name or "ones")


def zeros_like(tensor, dtype=None, name=None, optimize=True):
    """tf.zeros_like: zeros with the type of ``tensor`` (batch dim included)."""
    t = convert_to_tensor(tensor)
    return _filled(0, dims_of(t), dtype or t.dtype, name or "zeros_like")


def ones_like(tensor, dtype=None, name=None, optimize=True):
    t = convert_to_tensor(tensor)
    return _filled(1, dims_of(t), dtype or t.dtype, name or "ones_like")


def fill(dims, value, name=None):
    """tf.fill: ``value`` (a scalar, python or tensor) broadcast to ``dims``."""
    shape = shape_arg(dims, "fill")
    v = convert_to_tensor(value)
    if v.type.rank != 0:
        raise ValueError(f"fill: value must be a scalar, got shape {shape_str(v.type.shape)}")
    if shape == ():
        return make_op("identity", [v], name=name or "Fill")
    return make_op("broadcast_to", [v], {"shape": shape}, name=name or "Fill")


def broadcast_to(input, shape, name=None):
    """tf.broadcast_to: numpy broadcasting to a static shape (the batch dim allowed)."""
    x = convert_to_tensor(input)
    return make_op("broadcast_to", [x], {"shape": shape_arg(shape, "broadcast_to")}, name=name or "BroadcastTo")


# ----------------------------------------------------------------------------- reshaping
def _infer_minus_one(x, dims):
    """Replace a single -1 in ``dims`` by the size that keeps x's element count."""
    if isinstance(dims, Deferred) or not is_known_shape(x.type.shape) or any(isinstance(d, Deferred) for d in dims):
        return dims  # -1 is filled in when lowering, from the fed shapes
    unknown = [i for i, d in enumerate(dims) if isinstance(d, int) and d == -1]
    if len(unknown) > 1:
        raise ValueError(f"Reshape: only one input size may be -1, not both {unknown[0]} and {unknown[1]} "
                         f"(shape {list(dims)})")
    if not unknown:
        return dims
    known = num_elements([d for d in dims if not (isinstance(d, int) and d == -1)])
    try:
        fill_in = dim_div(num_elements(x.type.shape), known)
    except ShapeError as err:
        raise ValueError(f"Reshape: cannot reshape a tensor of shape {shape_str(x.type.shape)} to "
                         f"{shape_str(dims)}: {err}") from None
    return dims[:unknown[0]] + (fill_in,) + dims[unknown[0] + 1:]


def reshape(tensor, shape, name=None):
    """tf.reshape: one -1 is inferred; works with the batch dim ([N,7,7,64] -> [-1,3136] = [N,3136])."""
    x = convert_to_tensor(tensor)
    dims = _infer_minus_one(x, shape_arg(shape, "Reshape", allow_unknown=True))
    return make_op("reshape", [x], {"shape": dims}, name=name or "Reshape")


def expand_dims(input, axis=None, name=None, dim=None):
    """tf.expand_dims (TF1 also spells the axis ``dim``): insert a size-1 dim at ``axis``."""
    if axis is None:
        if dim is None:
            raise ValueError("expand_dims: either axis or dim must be given")
        axis = dim
    elif dim is not None:
        raise ValueError("expand_dims: cannot specify both 'axis' and 'dim'")
    x = convert_to_tensor(input)
    rank = known_rank(x, "ExpandDims")
    axis = static_int(axis, "ExpandDims")
    if not -rank - 1 <= axis <= rank:
        raise ValueError(f"ExpandDims: axis {axis} is out of range [{-rank - 1}, {rank}] for shape "
                         f"{shape_str(x.type.shape)}")
    axis = axis % (rank + 1)
    dims = dims_of(x)
    shape = dims[:axis] + (1,) + dims[axis:]
    return make_op("reshape", [x], {"shape": shape}, name=name or "ExpandDims")


def squeeze(input, axis=None, name=None, squeeze_dims=None):
    """tf.squeeze: drop size-1 dims (all of them, or those in ``axis``/``squeeze_dims``)."""
    x = convert_to_tensor(input)
    axis = squeeze_dims if axis is None else axis
    shape = x.type.shape
    known_rank(x, "Squeeze")
    if axis is None or axis == []:
        if not is_known_shape(shape):
            raise ValueError(f"Squeeze: {x.name} has unknown dims {shape_str(shape)}; Kiln needs the axes to "
                             f"squeeze (squeeze(x, axis=[...])) when dims are known only at the feed")
        drop = {i for i, d in enumerate(shape) if d == 1}
    else:
        axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
        drop = {normalize_axis(int(a), len(shape)) for a in axes}
        for i in sorted(drop):
            if shape[i] is not None and shape[i] != 1:
                raise ValueError(f"Squeeze: can not squeeze dim[{i}], expected a dimension of 1, got "
                                 f"{shape[i]} (shape {shape_str(shape)})")
    out = tuple(d for i, d in enumerate(dims_of(x)) if i not in drop)
    return make_op("reshape", [x], {"shape": out}, name=name or "Squeeze")


def transpose(a, perm=None, name="transpose", conjugate=False):
    """tf.transpose: default perm reverses the dims."""
    x = convert_to_tensor(a)
    rank = known_rank(x, "transpose")
    perm = tuple(reversed(range(rank))) if perm is None else tuple(
        static_int(p, "transpose") % max(rank, 1) for p in shape_arg(perm, "transpose", True))
    return make_op("transpose", [x], {"perm": perm}, name=name)


def _axis_of(axis, rank, what):
    axis = static_int(axis, what)
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"{what}: axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def concat(values, axis, name="concat"):
    """tf.concat(values, axis): join along an existing axis."""
    values = [convert_to_tensor(v) for v in values]
    if not values:
        raise ValueError("concat: values must not be empty")
    axis = static_int(axis, "concat")
    if len(values) == 1:
        _axis_of(axis, values[0].type.rank, "concat")
        return make_op("identity", values, name=name)
    return make_op("concat", values, {"axis": axis}, name=name)


def stack(values, axis=0, name="stack"):
    """tf.stack: join equal-shaped tensors along a new axis (each is reshaped, then concatenated)."""
    values = [convert_to_tensor(v) for v in values]
    if not values:
        raise ValueError("stack: values must not be empty")
    first = values[0].type
    for v in values:
        try:
            merge_shapes(first.shape, v.type.shape)
        except ShapeError:
            raise ValueError(f"stack: shapes of all inputs must match: {shape_str(first.shape)} vs "
                             f"{shape_str(v.type.shape)}") from None
    axis = _axis_of(axis, known_rank(values[0], "stack") + 1, "stack")
    if len(values) == 1:
        return expand_dims(values[0], axis, name=name)
    parts = [expand_dims(v, axis) for v in values]
    out = make_op("concat", parts, {"axis": axis}, name=name)
    statics = [static_value(v) for v in values]
    if first.rank == 0 and all(s is not None for s in statics):
        with_static(out, tuple(_as_dim(s, "stack") for s in statics))
    return out


parallel_stack = stack


def tile(input, multiples, name=None):
    """tf.tile: repeat ``multiples[i]`` times along dim i."""
    x = convert_to_tensor(input)
    mult = shape_arg(multiples, "Tile")
    if not isinstance(mult, Deferred):
        mult = tuple(m if isinstance(m, (Sym, Deferred)) else int(m) for m in mult)
    return make_op("tile", [x], {"multiples": mult}, name=name or "Tile")


def pad(tensor, paddings, mode="CONSTANT", name=None, constant_values=0):
    """tf.pad: CONSTANT (with constant_values), REFLECT or SYMMETRIC (mode is case-insensitive)."""
    x = convert_to_tensor(tensor)
    value = static_value(paddings)
    if value is None:
        raise ValueError("Pad: Kiln needs static paddings")
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] != x.type.rank:
        raise ValueError(f"Pad: paddings must have shape [{x.type.rank}, 2] for input "
                         f"{shape_str(x.type.shape)}, got {list(arr.shape)}")
    pads = tuple((int(lo), int(hi)) for lo, hi in arr.tolist())
    cval = static_value(constant_values)
    if cval is None:
        raise ValueError("Pad: constant_values must be known when the graph is built")
    attrs = {"paddings": pads, "mode": str(mode).upper(), "constant_values": np.asarray(cval).item()}
    return make_op("pad", [x], attrs, name=name or "Pad")


# ----------------------------------------------------------------------------- shape queries
def shape(input, name=None, out_type=int32):
    """tf.shape: an int [rank] tensor; a constant when the shape is static.  Otherwise a
    ``shape`` op whose build-time value holds the batch dim ``Sym`` and ``DimOf`` where a dim
    is known only at the feed; lowering folds it to a constant, or keeps it (it reads N)."""
    x = convert_to_tensor(input)
    dims = x.type.shape
    if dims is not None and all(isinstance(d, int) for d in dims):
        return constant(np.array(dims, dtype=as_dtype(out_type).np), name=name or "Shape")
    out = make_op("shape", [x], {"out_type": as_dtype(out_type)}, name=name or "Shape")
    return out if dims is None else with_static(out, dims_of(x))


def shape_n(input, out_type=int32, name=None):
    return [shape(x, out_type=out_type) for x in input]


def size(input, name=None, out_type=int32):
    """tf.size: element count (computed at run time when the batch dim or an unknown dim is involved)."""
    from .math_ops import reduce_prod

    x = convert_to_tensor(input)
    if not is_known_shape(x.type.shape):
        return reduce_prod(shape(x, out_type=out_type), name=name or "Size")
    count = num_elements(x.type.shape)
    if isinstance(count, Sym):
        return with_static(reduce_prod(shape(x, out_type=out_type), name=name or "Size"), count)
    return constant(np.array(count, dtype=as_dtype(out_type).np), name=name or "Size")


def rank(input, name=None):
    """tf.rank: a constant, or (rank unknown) the length of tf.shape, folded when lowering."""
    x = convert_to_tensor(input)
    if x.type.rank is None:
        return make_op("reshape", [shape(shape(x))], {"shape": ()}, name=name or "Rank")
    return constant(np.array(x.type.rank, dtype=np.int32), name=name or "Rank")


def identity_n(input, name=None):
    return [make_op("identity", [convert_to_tensor(x)], name=name or "IdentityN") for x in input]


from . import array_slicing as _slicing  # noqa: E402  (slicing/gather ops; imports this module)
from . import array_creation as _creation  # noqa: E402
from .array_slicing import (apply_index, gather, gather_nd, slice, split, strided_slice,  # noqa: E402,F401,A004
                            strided_slice_from_key, unstack)

TF_API = {
    "tf": {
        "zeros": zeros, "ones": ones, "zeros_like": zeros_like, "ones_like": ones_like, "fill": fill,
        "broadcast_to": broadcast_to, "reshape": reshape, "expand_dims": expand_dims,
        "squeeze": squeeze, "transpose": transpose, "concat": concat, "stack": stack,
        "parallel_stack": parallel_stack, "tile": tile, "pad": pad, "shape": shape,
        "shape_n": shape_n, "size": size, "rank": rank, "identity_n": identity_n,
    },
}
for _module in (_slicing, _creation):
    for _path, _names in _module.TF_API.items():
        TF_API.setdefault(_path, {}).update(_names)

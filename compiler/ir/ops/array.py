"""Array/shape op kinds: reshape, broadcast_to, transpose, concat, tile, pad (+ its adjoint
``pad_grad``) and ``shape``.  Indexing kinds (slice, gather, scatters) live in ``array_index``.

The set is kept small and primitive: TF's expand_dims/squeeze/stack/unstack/split/reverse/
one_hot/fill/zeros are built in the frontend from these kinds, so each backend has few
kinds to implement.  Shape attrs may hold the batch dim (``Sym``).
"""
from __future__ import annotations

import numpy as np

from ..opdef import register_op
from ..types import (ShapeError, Sym, TensorType, as_dtype, broadcast_shapes, dim_mul,
                     normalize_axis, num_elements, shape_str)
from . import array_index  # noqa: F401  (registers the indexing kinds)


def dim_add(a, b):
    """Sum of two dims: ints add, batch dims add their multiples; int + batch dim is an error."""
    if isinstance(a, Sym) and isinstance(b, Sym):
        return Sym(a.coef + b.coef)
    if isinstance(a, Sym) or isinstance(b, Sym):
        if a == 0:
            return b
        if b == 0:
            return a
        raise ShapeError(f"cannot add a static dim to the batch dim ({a} + {b})")
    return int(a) + int(b)


# ----------------------------------------------------------------------------- reshape
def _infer_reshape(inputs, *, shape):
    (x,) = inputs
    if num_elements(x.shape) != num_elements(shape):
        raise ShapeError(f"cannot reshape a tensor of shape {shape_str(x.shape)} "
                         f"({num_elements(x.shape)} elements) to {shape_str(shape)} "
                         f"({num_elements(shape)} elements)")
    return TensorType(x.dtype, tuple(shape))


register_op("reshape", _infer_reshape, lambda ctx, x, *, shape: x.reshape(ctx.shape(shape)),
            arity=1, doc="attr shape (may hold N); element count must match")


# ----------------------------------------------------------------------------- broadcast_to
def _infer_broadcast_to(inputs, *, shape):
    (x,) = inputs
    shape = tuple(shape)
    ok = len(x.shape) <= len(shape)
    if ok:
        try:
            ok = broadcast_shapes(x.shape, shape) == shape
        except ShapeError:
            ok = False
    if not ok:
        raise ShapeError(f"cannot broadcast shape {shape_str(x.shape)} to {shape_str(shape)}")
    return TensorType(x.dtype, shape)


register_op("broadcast_to", _infer_broadcast_to,
            lambda ctx, x, *, shape: np.array(np.broadcast_to(x, ctx.shape(shape))),
            arity=1, doc="numpy broadcasting of the operand to attr shape")


# ----------------------------------------------------------------------------- transpose
def _infer_transpose(inputs, *, perm):
    (x,) = inputs
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"perm {list(perm)} is not a permutation of the {x.rank} dims of {shape_str(x.shape)}")
    return TensorType(x.dtype, tuple(x.shape[p] for p in perm))


register_op("transpose", _infer_transpose, lambda ctx, x, *, perm: np.transpose(x, perm),
            arity=1, doc="attr perm: output dim i is input dim perm[i]")


# ----------------------------------------------------------------------------- concat
def _infer_concat(inputs, *, axis):
    if not inputs:
        raise ShapeError("concat needs at least one input")
    first = inputs[0]
    if first.rank == 0:
        raise ShapeError("concat of scalars: inputs must have rank >= 1 (use stack)")
    axis = normalize_axis(axis, first.rank)
    total = 0
    for t in inputs:
        if t.dtype != first.dtype:
            raise ShapeError(f"inputs differ in dtype: {first.dtype.name} vs {t.dtype.name}")
        same = t.rank == first.rank and all(a == b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis)
        if not same:
            raise ShapeError(f"shapes {shape_str(first.shape)} and {shape_str(t.shape)} differ outside "
                             f"the concat axis {axis}")
        total = dim_add(total, t.shape[axis])
    return TensorType(first.dtype, first.shape[:axis] + (total,) + first.shape[axis + 1:])


register_op("concat", _infer_concat,
            lambda ctx, *xs, axis: np.concatenate(xs, axis=normalize_axis(axis, xs[0].ndim)),
            doc="variadic; attr axis")


# ----------------------------------------------------------------------------- tile
def _infer_tile(inputs, *, multiples):
    (x,) = inputs
    if len(multiples) != x.rank or any(not isinstance(m, Sym) and m < 0 for m in multiples):
        raise ShapeError(f"multiples {list(multiples)} must be {x.rank} non-negative ints for shape "
                         f"{shape_str(x.shape)}")
    return TensorType(x.dtype, tuple(dim_mul(d, m) for d, m in zip(x.shape, multiples)))


register_op("tile", _infer_tile, lambda ctx, x, *, multiples: np.tile(x, ctx.shape(multiples)), arity=1,
            doc="attr multiples (may hold N: tf.tile(row, [tf.shape(x)[0], 1]))")


# ----------------------------------------------------------------------------- pad and its adjoint
PAD_MODES = ("CONSTANT", "REFLECT", "SYMMETRIC")


def _check_paddings(shape, paddings, mode, what):
    """Validate paddings against an (unpadded) shape; the batch dim cannot be padded."""
    if mode not in PAD_MODES:
        raise ShapeError(f"{what}: mode must be one of {PAD_MODES}, got {mode!r}")
    if len(paddings) != len(shape):
        raise ShapeError(f"{what}: paddings must have one (before, after) pair per dim of "
                         f"{shape_str(shape)}, got {len(paddings)}")
    for d, (lo, hi) in zip(shape, paddings):
        if lo < 0 or hi < 0:
            raise ShapeError(f"{what}: paddings must be >= 0, got {[list(p) for p in paddings]}")
        if isinstance(d, Sym):
            if lo or hi:
                raise ShapeError(f"{what}: the batch dim of {shape_str(shape)} cannot be padded")
            continue
        limit = d - 1 if mode == "REFLECT" else d
        if mode != "CONSTANT" and max(lo, hi) > limit:
            raise ShapeError(f"{what}: {mode} paddings must be <= {limit} for a dim of size {d} "
                             f"(shape {shape_str(shape)}, paddings {[list(p) for p in paddings]})")


def _infer_pad(inputs, *, paddings, mode, constant_values):
    (x,) = inputs
    _check_paddings(x.shape, paddings, mode, "pad")
    return TensorType(x.dtype, tuple(dim_add(d, lo + hi) for d, (lo, hi) in zip(x.shape, paddings)))


def _eval_pad(ctx, x, *, paddings, mode, constant_values):
    if mode == "CONSTANT":
        return np.pad(x, paddings, mode="constant", constant_values=np.asarray(constant_values, x.dtype))
    return np.pad(x, paddings, mode=mode.lower())


def _pad_source_index(d, lo, hi, mode):
    """For each padded position along one axis, the source index (-1 where it is a constant)."""
    j = np.arange(lo + d + hi) - lo
    if mode == "CONSTANT":
        return np.where((j >= 0) & (j < d), j, -1)
    shift = 0 if mode == "REFLECT" else 1
    j = np.where(j < 0, -j - shift, j)
    return np.where(j >= d, 2 * (d - 1) - j + shift, j)


def _infer_pad_grad(inputs, *, paddings, mode):
    (g,) = inputs
    shape = tuple(d if isinstance(d, Sym) else d - lo - hi for d, (lo, hi) in zip(g.shape, paddings))
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise ShapeError(f"pad_grad: paddings {[list(p) for p in paddings]} exceed shape {shape_str(g.shape)}")
    _check_paddings(shape, paddings, mode, "pad_grad")
    return TensorType(g.dtype, shape)


def _eval_pad_grad(ctx, g, *, paddings, mode):
    """Adjoint of pad: every padded element adds into the element it was copied from."""
    out = g
    for axis, (lo, hi) in enumerate(paddings):
        d = out.shape[axis] - lo - hi
        src = _pad_source_index(d, lo, hi, mode)
        moved = np.moveaxis(out, axis, 0)
        acc = np.zeros((d,) + moved.shape[1:], dtype=g.dtype)
        keep = src >= 0
        np.add.at(acc, src[keep], moved[keep])
        out = np.moveaxis(acc, 0, axis)
    return out


register_op("pad", _infer_pad, _eval_pad, arity=1,
            doc="attrs paddings ((before, after) per dim), mode CONSTANT|REFLECT|SYMMETRIC, constant_values")
register_op("pad_grad", _infer_pad_grad, _eval_pad_grad, arity=1,
            doc="adjoint of pad (sums reflected copies back); attrs paddings, mode")


# ----------------------------------------------------------------------------- shape
def _infer_shape(inputs, *, out_type):
    (x,) = inputs
    dtype = as_dtype(out_type)
    if dtype.short not in ("i32", "i64"):
        raise ShapeError(f"out_type must be int32 or int64, got {dtype.name}")
    return TensorType(dtype, (x.rank,))


register_op("shape", _infer_shape,
            lambda ctx, x, *, out_type: np.array(x.shape, dtype=as_dtype(out_type).np),
            arity=1, doc="the operand's runtime shape (reads the batch size)")


# ----------------------------------------------------------------------------- range
def _infer_range(inputs, *, start, delta, shape, dtype):
    dtype = as_dtype(dtype)
    if len(shape) != 1 or dtype.is_bool:
        raise ShapeError(f"range makes a 1-D numeric tensor, got shape {shape_str(shape)} of {dtype.name}")
    return TensorType(dtype, tuple(shape))


def _eval_range(ctx, *, start, delta, shape, dtype):
    (count,) = ctx.shape(shape)
    return (start + delta * np.arange(count)).astype(as_dtype(dtype).np)


register_op("range", _infer_range, _eval_range, arity=0,
            doc="start + delta*i for i < shape[0] (attrs start, delta, shape (may be [N]), dtype): "
                "tf.range whose length is known only when lowering")

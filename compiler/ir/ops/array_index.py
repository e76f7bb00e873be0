"""Indexing op kinds: ``slice`` (one strided window per axis; serves tf.slice, strided_slice,
python slicing and reverse), its adjoint ``strided_slice_grad``, ``gather``, ``gather_nd``,
``reverse_sequence`` and the scatter-adds ``unsorted_segment_sum`` and ``scatter_nd`` (the
adjoints of the gathers).

``slice`` attrs, one entry per axis: ``begin`` (an int, negative counts from the end, or a
batch-dim multiple ``Sym``), ``size`` (element count, int or ``Sym``) and ``strides``
(non-zero ints).  Element i of an axis is ``begin + i*stride``.
"""
from __future__ import annotations

import numpy as np

from ..opdef import register_op
from ..types import ShapeError, Sym, TensorType, normalize_axis, shape_str


def _coef(d):
    """A dim that is 0 or a batch multiple as its multiple of N (None for other ints)."""
    if isinstance(d, Sym):
        return d.coef
    return 0 if d == 0 else None


def _check_axis_window(d, b, s, st):
    """Raise ShapeError when the window (begin b, size s, stride st) does not fit a dim d."""
    if st == 0:
        raise ShapeError("slice strides must be non-zero")
    if isinstance(s, Sym):
        whole_reverse = st == -1 and b == -1 and s == d
        cb, cd = _coef(b), _coef(d)
        forward = st == 1 and cb is not None and isinstance(d, Sym) and cb + s.coef <= cd
        if not (whole_reverse or forward):
            raise ShapeError(f"a window of {s} elements (begin {b}, stride {st}) does not fit dim {d}; "
                             f"the batch dim can only be sliced whole or in batch-sized blocks")
        return
    if s < 0:
        raise ShapeError(f"slice size must be >= 0, got {s}")
    if isinstance(d, Sym) or isinstance(b, Sym) or s == 0:
        return  # checked when the batch size is known
    start = b if b >= 0 else d + b
    last = start + (s - 1) * st
    if not (0 <= start < d and 0 <= last < d):
        raise ShapeError(f"window begin {b}, size {s}, stride {st} is out of range for a dim of size {d}")


def _infer_slice(inputs, *, begin, size, strides):
    (x,) = inputs
    if not len(begin) == len(size) == len(strides) == x.rank:
        raise ShapeError(f"begin/size/strides need {x.rank} entries for shape {shape_str(x.shape)}, "
                         f"got {list(begin)}, {list(size)}, {list(strides)}")
    for axis, (d, b, s, st) in enumerate(zip(x.shape, begin, size, strides)):
        try:
            _check_axis_window(d, b, s, st)
        except ShapeError as err:
            raise ShapeError(f"axis {axis} of {shape_str(x.shape)}: {err}") from None
    return TensorType(x.dtype, tuple(size))


def _window_index(ctx, shape, begin, size, strides):
    """The numpy index (a tuple of python slices) for a slice window, range-checked."""
    index = []
    for d, b, s, st in zip(shape, begin, ctx.shape(size), strides):
        start = ctx.shape((b,))[0] if isinstance(b, Sym) else (b if b >= 0 else d + b)
        if s and not (0 <= start < d and 0 <= start + (s - 1) * st < d):
            raise IndexError(f"slice window begin {b}, size {s}, stride {st} is out of range for a dim of size {d}")
        stop = start + s * st
        index.append(slice(start, stop if stop >= 0 else None, st))
    return tuple(index)


def _eval_slice(ctx, x, *, begin, size, strides):
    return x[_window_index(ctx, x.shape, begin, size, strides)]


def _infer_slice_grad(inputs, *, shape, begin, strides):
    (g,) = inputs
    _infer_slice([TensorType(g.dtype, tuple(shape))], begin=begin, size=g.shape, strides=strides)
    return TensorType(g.dtype, tuple(shape))


def _eval_slice_grad(ctx, g, *, shape, begin, strides):
    out = np.zeros(ctx.shape(shape), dtype=g.dtype)
    out[_window_index(ctx, out.shape, begin, g.shape, strides)] = g
    return out


register_op("slice", _infer_slice, _eval_slice, arity=1,
            doc="strided window; attrs begin, size, strides (one per axis)")
register_op("strided_slice_grad", _infer_slice_grad, _eval_slice_grad, arity=1,
            doc="adjoint of slice: the operand placed into zeros of attr shape")


# ----------------------------------------------------------------------------- gathers
def _check_indices(t, what):
    if t.dtype.short not in ("i32", "i64"):
        raise ShapeError(f"{what} must be int32 or int64, got {t.dtype.name}")


def _checked(indices, limit, what):
    if indices.size and (indices.min() < 0 or indices.max() >= limit):
        bad = indices[(indices < 0) | (indices >= limit)].ravel()[0]
        raise IndexError(f"{what} {bad} is not in [0, {limit})")
    return indices


def _infer_gather(inputs, *, axis):
    params, indices = inputs
    _check_indices(indices, "gather indices")
    if params.rank == 0:
        raise ShapeError("gather params must have rank >= 1")
    axis = normalize_axis(axis, params.rank)
    return TensorType(params.dtype, params.shape[:axis] + indices.shape + params.shape[axis + 1:])


def _eval_gather(ctx, params, indices, *, axis):
    axis = normalize_axis(axis, params.ndim)
    return np.take(params, _checked(indices, params.shape[axis], "gather index"), axis=axis)


def _infer_gather_nd(inputs):
    params, indices = inputs
    _check_indices(indices, "gather_nd indices")
    k = indices.shape[-1] if indices.rank else None
    if k is None or isinstance(k, Sym) or k > params.rank:
        raise ShapeError(f"indices {shape_str(indices.shape)} must have a static last dim <= rank of "
                         f"params {shape_str(params.shape)}")
    return TensorType(params.dtype, indices.shape[:-1] + params.shape[k:])


def _nd_index(indices, shape):
    """indices[..., k] as a numpy advanced index into the first k dims of ``shape``."""
    cols = np.moveaxis(indices, -1, 0)
    return tuple(_checked(c, d, "gather_nd/scatter_nd index") for c, d in zip(cols, shape))


# ----------------------------------------------------------------------------- reverse_sequence
def _infer_reverse_sequence(inputs, *, seq_axis, batch_axis):
    """x of rank >= 2, lengths an int vector of x.dims(batch_axis) entries; axes distinct."""
    x, lengths = inputs
    _check_indices(lengths, "reverse_sequence seq_lengths")
    if x.rank < 2:
        raise ShapeError(f"reverse_sequence input must have rank >= 2, got {shape_str(x.shape)}")
    seq = normalize_axis(seq_axis, x.rank, "seq_axis")
    batch = normalize_axis(batch_axis, x.rank, "batch_axis")
    if seq == batch:
        raise ShapeError(f"seq_axis ({seq_axis}) and batch_axis ({batch_axis}) must differ")
    if lengths.rank != 1 or lengths.shape[0] != x.shape[batch]:
        raise ShapeError(f"seq_lengths {shape_str(lengths.shape)} must be a vector of input.dims(batch_axis) = "
                         f"{x.shape[batch]} entries for input {shape_str(x.shape)}")
    return x


# TF's messages for a bad seq_lengths entry of row {value} (checked in row order, < 0 first)
SEQ_LENS_NEGATIVE = "seq_lens({value}) < 0"
SEQ_LENS_TOO_LONG = "seq_lens({value}) > input.dims({seq_axis})"


def _check_sequence_lengths(lengths, steps, seq_axis):
    """Raise ValueError with TF's message for the first entry of ``lengths`` outside [0, steps]."""
    bad = (lengths < 0) | (lengths > steps)
    if bad.any():
        b = int(np.argmax(bad))
        message = SEQ_LENS_NEGATIVE if lengths[b] < 0 else SEQ_LENS_TOO_LONG
        raise ValueError(message.format(value=b, seq_axis=seq_axis))


def _eval_reverse_sequence(ctx, x, lengths, *, seq_axis, batch_axis):
    """out[b, t] = x[b, len_b - 1 - t] for t < len_b, else x[b, t] (seq/batch axes anywhere)."""
    seq, batch = seq_axis % x.ndim, batch_axis % x.ndim
    _check_sequence_lengths(lengths, x.shape[seq], seq)
    moved = np.moveaxis(x, (batch, seq), (0, 1))
    lens = lengths.astype(np.int64)[:, None]
    t = np.arange(moved.shape[1])[None, :]
    src = np.where(t < lens, lens - 1 - t, t)
    picked = np.take_along_axis(moved, src.reshape(src.shape + (1,) * (moved.ndim - 2)), axis=1)
    return np.moveaxis(picked, (0, 1), (batch, seq))


register_op("gather", _infer_gather, _eval_gather, arity=2, doc="params[..., indices, ...] on attr axis")
register_op("gather_nd", _infer_gather_nd, lambda ctx, p, i: p[_nd_index(i, p.shape)], arity=2)
register_op("reverse_sequence", _infer_reverse_sequence, _eval_reverse_sequence, arity=2,
            doc="each batch row's first lengths[b] steps reversed; attrs seq_axis, batch_axis")


def _infer_update_row(inputs):
    stack, value, index = inputs
    _check_indices(index, "update_row index")
    if index.rank != 0:
        raise ShapeError(f"update_row index must be a scalar, got {shape_str(index.shape)}")
    if stack.dtype != value.dtype:
        raise ShapeError(f"update_row: the row is {value.dtype.name} but the stack is {stack.dtype.name}")
    if stack.rank != value.rank + 1 or tuple(stack.shape[1:]) != tuple(value.shape):
        raise ShapeError(f"update_row: a row of shape {shape_str(value.shape)} does not fit a stack of shape "
                         f"{shape_str(stack.shape)}")
    return stack


def _eval_update_row(ctx, stack, value, index):
    out = np.array(stack, copy=True)
    out[int(_checked(np.asarray(index), stack.shape[0], "update_row index"))] = value
    return out


# The row store of the stacks a while loop's gradient keeps (frontend/grads/control_flow_grad.py):
# inside a loop it is lowered in place over the loop value it updates (lower/control_flow.py).
register_op("update_row", _infer_update_row, _eval_update_row, arity=3,
            doc="the stack (operand 0) with row `index` (a scalar) replaced by the value (operand 1)")


# ----------------------------------------------------------------------------- scatter-adds
def _infer_segment_sum(inputs, *, num_segments):
    data, ids = inputs
    _check_indices(ids, "segment_ids")
    if data.shape[:ids.rank] != ids.shape:
        raise ShapeError(f"segment_ids shape {shape_str(ids.shape)} must be a prefix of data shape "
                         f"{shape_str(data.shape)}")
    return TensorType(data.dtype, (num_segments,) + data.shape[ids.rank:])


def _eval_segment_sum(ctx, data, ids, *, num_segments):
    """Sum rows of data into their segment; negative ids are dropped (TF semantics)."""
    n = ctx.shape((num_segments,))[0]
    out = np.zeros((n,) + data.shape[ids.ndim:], dtype=data.dtype)
    flat_ids = ids.reshape(-1)
    rows = data.reshape((flat_ids.size,) + data.shape[ids.ndim:])
    keep = flat_ids >= 0
    np.add.at(out, _checked(flat_ids[keep], n, "segment id"), rows[keep])
    return out


def _infer_scatter_nd(inputs, *, shape):
    indices, updates = inputs
    _check_indices(indices, "scatter_nd indices")
    k = indices.shape[-1] if indices.rank else None
    if k is None or isinstance(k, Sym) or k > len(shape) or updates.shape != indices.shape[:-1] + tuple(shape[k:]):
        raise ShapeError(f"scatter_nd: updates {shape_str(updates.shape)} must be indices.shape[:-1] + "
                         f"shape[k:] for indices {shape_str(indices.shape)} and shape {shape_str(shape)}")
    return TensorType(updates.dtype, tuple(shape))


def _eval_scatter_nd(ctx, indices, updates, *, shape):
    out = np.zeros(ctx.shape(shape), dtype=updates.dtype)
    np.add.at(out, _nd_index(indices, out.shape), updates)
    return out


register_op("unsorted_segment_sum", _infer_segment_sum, _eval_segment_sum, arity=2,
            doc="out[ids[i], ...] += data[i, ...]; attr num_segments (int or N)")
register_op("scatter_nd", _infer_scatter_nd, _eval_scatter_nd, arity=2,
            doc="zeros of attr shape with updates added at indices (duplicates sum)")

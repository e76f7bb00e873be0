"""Slicing and gathering constructors: tf.slice, tf.strided_slice, python ``x[...]``, split,
unstack, reverse, reverse_sequence, gather, gather_nd, embedding_lookup, segment sums, scatter_nd.

Every window becomes one IR ``slice`` (begin/size/strides per axis) followed, when axes are
added or dropped, by a ``reshape``.  The batch dim can be taken whole, reversed whole, or
indexed (``x[0]``); other windows of it would give a shape that is not a multiple of N and
are rejected with a clear error.
"""
from __future__ import annotations

import builtins

import numpy as np

from ...ir.deferred import SliceOf
from ...ir.ops.array import dim_add
from ...ir.types import Sym, dim_div, int32, normalize_axis, shape_str
from ..convert import convert_to_tensor
from ..graph import Tensor, make_op
from .array_ops import concat, reshape, static_int, static_value, with_static
from .dynamic_dims import dims_of

_pyslice = builtins.slice  # this module defines tf.slice
_INDEX_ERROR = ("Only integers, slices (`:`), ellipsis (`...`), tf.newaxis (`None`) and scalar "
                "tf.int32/tf.int64 tensors are valid indices, got {!r}")


# ----------------------------------------------------------------------------- windows
def _axis_window(d, item, axis, x=None):
    """(begin, size, stride, keep) for one input axis of size d and a slice or an int index
    (of ``x``: a dim known only at the feed gets a window resolved when lowering)."""
    if isinstance(item, int):
        if isinstance(d, Sym) or d is None:
            return item, 1, 1, False  # x[0], x[-1] of the batch: checked at run time
        if not -d <= item < d:
            raise ValueError(f"slice index {item} of dimension {axis} out of bounds (size {d})")
        return item % d, 1, 1, False
    start, stop, step = item.start, item.stop, 1 if item.step is None else item.step
    if step == 0:
        raise ValueError("strided_slice: slice step cannot be zero")
    if isinstance(d, Sym):
        if start is None and stop is None and abs(step) == 1:
            return (0 if step == 1 else -1), d, step, True
        raise ValueError(f"strided_slice: dimension {axis} is the batch dim {d}; Kiln can take it only "
                         f"whole, reversed or at one index (got {start}:{stop}:{step})")
    if d is None:
        bounds = (start, stop, step)
        return SliceOf(x, axis, bounds, "begin"), SliceOf(x, axis, bounds, "size"), step, True
    begin, end, step = _pyslice(start, stop, step).indices(d)
    count = len(range(begin, end, step))
    return (begin if count else 0), count, step, True


def _expand_ellipsis(items, rank):
    """Replace the ellipsis (or an implied trailing one) by full slices."""
    consumed = sum(1 for it in items if it is not None and it is not Ellipsis)
    if consumed > rank:
        raise ValueError(f"strided_slice: too many indices ({consumed}) for a tensor of rank {rank}")
    if Ellipsis not in items:
        items = items + [Ellipsis]
    at = items.index(Ellipsis)
    if Ellipsis in items[at + 1:]:
        raise ValueError("strided_slice: an index can only have a single ellipsis ('...')")
    return items[:at] + [_pyslice(None)] * (rank - consumed) + items[at + 1:]


def apply_index(x, items, name="strided_slice"):
    """Apply a list of ints / slices / None (new axis) / Ellipsis to x: one slice + one reshape."""
    x = convert_to_tensor(x)
    shape = x.type.shape
    if shape is None:
        raise ValueError(f"{name}: the rank of {x.name} is unknown; Kiln needs it to index the tensor "
                         f"(give it a shape or use set_shape)")
    begin, size, strides, out_shape = [], [], [], []
    axis = 0
    for item in _expand_ellipsis(list(items), len(shape)):
        if item is None:
            out_shape.append(1)
            continue
        b, s, st, keep = _axis_window(shape[axis], item, axis, x)
        begin.append(b), size.append(s), strides.append(st)
        if keep:
            out_shape.append(s)
        axis += 1
    whole = all(b == 0 and s == d and st == 1 for b, s, st, d in zip(begin, size, strides, shape))
    out = x if whole else make_op("slice", [x], {"begin": tuple(begin), "size": tuple(size),
                                                 "strides": tuple(strides)}, name=name)
    if tuple(out_shape) != out.type.shape:
        out = reshape(out, tuple(out_shape), name=name if whole else None)
    return out


def _key_item(k):
    """One element of a python index key as an int, slice, None or Ellipsis."""
    if k is None or k is Ellipsis:
        return k
    if isinstance(k, _pyslice):
        parts = [None if v is None else static_int(v, "strided_slice") for v in (k.start, k.stop, k.step)]
        return _pyslice(*parts)
    if isinstance(k, (bool, np.bool_)) or isinstance(k, (list, np.ndarray)) or (
            isinstance(k, Tensor) and (k.type.rank != 0 or not k.dtype.is_integer)):
        raise TypeError(_INDEX_ERROR.format(k))
    if isinstance(k, (int, np.integer, Tensor)):
        return static_int(k, "strided_slice")
    raise TypeError(_INDEX_ERROR.format(k))


def strided_slice_from_key(tensor, key):
    """``tensor[key]`` with python slicing: ints, slices, None/tf.newaxis and ``...``."""
    keys = list(key) if isinstance(key, tuple) else [key]
    items = [_key_item(k) for k in keys]
    out = apply_index(tensor, items)
    value = static_value(tensor)
    if value is not None and len(items) == 1 and isinstance(items[0], (int, _pyslice)) and tensor.type.rank == 1:
        picked = list(value)[items[0]]
        with_static(out, tuple(picked) if isinstance(picked, list) else picked)
    return out


def _static_ints(values, what):
    """A list of python ints from a list/array/constant tensor (begin, end, strides, sizes)."""
    value = static_value(values)
    if value is None:
        raise ValueError(f"{what}: Kiln needs begin/end/size values known when the graph is built")
    return [static_int(v, what) for v in np.atleast_1d(np.asarray(value, dtype=object))]


def _mask_bits(mask, n):
    return [bool(mask >> i & 1) for i in range(n)]


def strided_slice(input_, begin, end, strides=None, begin_mask=0, end_mask=0, ellipsis_mask=0,
                  new_axis_mask=0, shrink_axis_mask=0, var=None, name=None):
    """tf.strided_slice with TF's masks; built like python slicing."""
    begin = _static_ints(begin, "strided_slice")
    end = _static_ints(end, "strided_slice")
    strides = [1] * len(begin) if strides is None else _static_ints(strides, "strided_slice")
    if not len(begin) == len(end) == len(strides):
        raise ValueError(f"strided_slice: begin, end and strides must have the same length, got "
                         f"{len(begin)}, {len(end)}, {len(strides)}")
    n = len(begin)
    masks = zip(_mask_bits(begin_mask, n), _mask_bits(end_mask, n), _mask_bits(ellipsis_mask, n),
                _mask_bits(new_axis_mask, n), _mask_bits(shrink_axis_mask, n))
    items = []
    for i, (bm, em, el, na, sh) in enumerate(masks):
        if el:
            items.append(Ellipsis)
        elif na:
            items.append(None)
        elif sh:
            items.append(begin[i])
        else:
            items.append(_pyslice(None if bm else begin[i], None if em else end[i], strides[i]))
    return apply_index(input_, items, name=name or "StridedSlice")


def slice(input_, begin, size, name=None):  # noqa: A001  (TF's name)
    """tf.slice: size -1 means 'to the end of the dim'."""
    x = convert_to_tensor(input_)
    begin = _static_ints(begin, "Slice")
    size = _static_ints(size, "Slice")
    if not len(begin) == len(size) == x.type.rank:
        raise ValueError(f"Slice: begin {begin} and size {size} must have {x.type.rank} entries for "
                         f"shape {shape_str(x.type.shape)}")
    items = []
    for d, b, s in zip(x.type.shape, begin, size):
        if isinstance(d, Sym) and b == 0 and s == -1:
            items.append(_pyslice(None))
        elif not isinstance(d, Sym) and (b < 0 or b > d or s < -1 or (s != -1 and b + s > d)):
            raise ValueError(f"Slice: begin {begin} and size {size} are out of range for shape "
                             f"{shape_str(x.type.shape)}")
        else:
            items.append(_pyslice(b, None if s == -1 else b + s))
    return apply_index(x, items, name=name or "Slice")


def _window_along(x, axis, begin, count, name=None):
    """x restricted to ``count`` elements from ``begin`` on one axis (begin/count may be batch dims;
    the other dims may be unknown until the feed: deferred ``DimOf``)."""
    rank = x.type.rank
    attrs = {"begin": tuple(begin if i == axis else 0 for i in range(rank)),
             "size": tuple(count if i == axis else d for i, d in enumerate(dims_of(x))),
             "strides": (1,) * rank}
    return make_op("slice", [x], attrs, name=name)


def split(value, num_or_size_splits, axis=0, num=None, name="split"):
    """tf.split: into equal parts or the given sizes (one size may be -1); returns a list."""
    x = convert_to_tensor(value)
    axis = normalize_axis(static_int(axis, "split"), x.type.rank)
    d = x.type.shape[axis]
    sizes_value = static_value(num_or_size_splits)
    if np.ndim(sizes_value) == 0:
        count = static_int(sizes_value, "split")
        try:
            sizes = [dim_div(d, count)] * count
        except Exception:
            raise ValueError(f"split: dimension {axis} of shape {shape_str(x.type.shape)} ({d}) is not "
                             f"divisible into {count} parts") from None
    else:
        sizes = [static_int(s, "split") for s in sizes_value]
        if sizes.count(-1) > 1:
            raise ValueError(f"split: at most one size may be -1, got {sizes}")
        if -1 in sizes:
            if isinstance(d, Sym) or d is None:
                raise ValueError(f"split: a -1 size cannot be inferred on the {'batch' if d else 'unknown'} dim "
                                 f"{axis} of {shape_str(x.type.shape)}")
            sizes[sizes.index(-1)] = d - sum(s for s in sizes if s != -1)
        if d is not None and (isinstance(d, Sym) or sum(sizes) != d) or min(sizes) < 0:
            raise ValueError(f"split: sizes {sizes} do not add up to dimension {axis} of shape "
                             f"{shape_str(x.type.shape)}")
    parts, offset = [], 0
    for s in sizes:
        parts.append(_window_along(x, axis, offset, s, name=name))
        offset = dim_add(offset, s)
    return parts


def unstack(value, num=None, axis=0, name="unstack"):
    """tf.unstack: a list of the slices along ``axis`` (that dim must be static)."""
    x = convert_to_tensor(value)
    axis = normalize_axis(static_int(axis, "unstack"), x.type.rank)
    d = x.type.shape[axis]
    if isinstance(d, Sym) or d is None:
        raise ValueError(f"unstack: cannot unstack along the {'batch' if d else 'unknown'} dim {axis} of "
                         f"{shape_str(x.type.shape)}: Kiln needs its size when the graph is built")
    if num is not None and num != d:
        raise ValueError(f"unstack: num={num} does not match dimension {axis} ({d}) of "
                         f"{shape_str(x.type.shape)}")
    rest = x.type.shape[:axis] + x.type.shape[axis + 1:]
    return [reshape(_window_along(x, axis, i, 1), rest, name=name) for i in range(d)]


def reverse(tensor, axis, name=None):
    """tf.reverse (TF1 >= 1.0, = reverse_v2): flip the listed axes."""
    x = convert_to_tensor(tensor)
    axes = {normalize_axis(static_int(a, "ReverseV2"), x.type.rank) for a in np.atleast_1d(static_value(axis))}
    items = [_pyslice(None, None, -1) if i in axes else _pyslice(None) for i in range(x.type.rank)]
    return apply_index(x, items, name=name or "ReverseV2")


# ----------------------------------------------------------------------------- gathers
def _indices(x):
    return convert_to_tensor(x, dtype_hint=int32)


def reverse_sequence(input, seq_lengths, seq_axis=None, batch_axis=None, name=None, seq_dim=None,  # noqa: A002
                     batch_dim=None):
    """tf.reverse_sequence(input, seq_lengths, seq_axis, batch_axis=0).

    Reverses the first ``seq_lengths[b]`` steps of each batch row b (IR kind
    ``reverse_sequence``); ``seq_dim``/``batch_dim`` are TF's older names of the axes."""
    x = convert_to_tensor(input)
    seq_axis = seq_axis if seq_axis is not None else seq_dim
    batch_axis = batch_axis if batch_axis is not None else (batch_dim if batch_dim is not None else 0)
    if seq_axis is None:
        raise ValueError("ReverseSequence: seq_axis (seq_dim) must be given")
    attrs = {"seq_axis": static_int(seq_axis, "ReverseSequence"),
             "batch_axis": static_int(batch_axis, "ReverseSequence")}
    return make_op("reverse_sequence", [x, _indices(seq_lengths)], attrs, name=name or "ReverseSequence")


def gather(params, indices, validate_indices=None, name=None, axis=None, batch_dims=0):
    """tf.gather: out = params[..., indices, ...] along ``axis``; indices of any rank."""
    if batch_dims:
        raise ValueError("gather: batch_dims != 0 is not supported by Kiln")
    axis = static_int(0 if axis is None else axis, "GatherV2")
    return make_op("gather", [convert_to_tensor(params), _indices(indices)], {"axis": axis}, name=name or "GatherV2")


def gather_nd(params, indices, name=None, batch_dims=0):
    if batch_dims:
        raise ValueError("gather_nd: batch_dims != 0 is not supported by Kiln")
    return make_op("gather_nd", [convert_to_tensor(params), _indices(indices)], name=name or "GatherNd")


def _interleaved_table(parts, strategy):
    """The full embedding table from partitioned params ('mod': row r is in part r % P)."""
    table = concat(parts, 0)
    if strategy == "div":
        return table
    sizes = [p.type.shape[0] for p in parts]
    starts = np.cumsum([0] + sizes[:-1])
    rows = [starts[r % len(parts)] + r // len(parts) for r in range(sum(sizes))]
    return gather(table, np.array(rows, dtype=np.int32))


def embedding_lookup(params, ids, partition_strategy="mod", name=None, validate_indices=True,
                     max_norm=None):
    """tf.nn.embedding_lookup: rows of params (a tensor, or a list of partitions) at ids."""
    if max_norm is not None:
        raise ValueError("embedding_lookup: max_norm is not supported by Kiln")
    if partition_strategy not in ("mod", "div"):
        raise ValueError(f"embedding_lookup: unknown partition_strategy {partition_strategy!r}")
    parts = [convert_to_tensor(p) for p in params] if isinstance(params, (list, tuple)) else [convert_to_tensor(params)]
    if not parts:
        raise ValueError("embedding_lookup: need at least one param tensor")
    table = parts[0] if len(parts) == 1 else _interleaved_table(parts, partition_strategy)
    return gather(table, ids, name=name or "embedding_lookup")


def unsorted_segment_sum(data, segment_ids, num_segments, name=None):
    """tf.math.unsorted_segment_sum: out[ids[i]] += data[i]; negative ids are dropped."""
    n = static_value(num_segments)
    n = n if isinstance(n, Sym) else static_int(num_segments, "UnsortedSegmentSum")
    return make_op("unsorted_segment_sum", [convert_to_tensor(data), _indices(segment_ids)],
                   {"num_segments": n}, name=name or "UnsortedSegmentSum")


def segment_sum(data, segment_ids, name=None):
    """tf.math.segment_sum: needs build-time ids (the output length is max(id) + 1)."""
    ids = static_value(segment_ids)
    if ids is None or not isinstance(ids, np.ndarray):
        raise ValueError("segment_sum: the output length depends on the values of segment_ids; Kiln needs "
                         "them constant (or use unsorted_segment_sum with num_segments)")
    if ids.size and np.any(np.diff(ids.reshape(-1)) < 0):
        raise ValueError("segment_sum: segment_ids must be sorted")
    count = int(ids.max()) + 1 if ids.size else 0
    return unsorted_segment_sum(data, segment_ids, count, name=name or "SegmentSum")


def scatter_nd(indices, updates, shape, name=None):
    """tf.scatter_nd: zeros of ``shape`` with updates added at indices (duplicates sum)."""
    from .array_ops import shape_arg

    return make_op("scatter_nd", [_indices(indices), convert_to_tensor(updates)],
                   {"shape": shape_arg(shape, "ScatterNd")}, name=name or "ScatterNd")


def boolean_mask(tensor, mask, name="boolean_mask", axis=None):
    raise ValueError("boolean_mask: the output shape depends on the mask's values, which Kiln's static "
                     "shapes cannot express; multiply by tf.cast(mask, dtype) or use tf.where(mask, x, y)")


TF_API = {
    "tf": {
        "slice": slice, "strided_slice": strided_slice, "split": split, "unstack": unstack,
        "reverse": reverse, "reverse_v2": reverse, "reverse_sequence": reverse_sequence,
        "gather": gather, "gather_nd": gather_nd,
        "unsorted_segment_sum": unsorted_segment_sum, "segment_sum": segment_sum,
        "scatter_nd": scatter_nd, "boolean_mask": boolean_mask, "newaxis": None,
    },
    "tf.nn": {"embedding_lookup": embedding_lookup},
    "tf.math": {"unsorted_segment_sum": unsorted_segment_sum, "segment_sum": segment_sum},
    "tf.manip": {"reverse": reverse, "gather_nd": gather_nd, "scatter_nd": scatter_nd},
}

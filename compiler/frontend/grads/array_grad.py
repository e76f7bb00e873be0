"""Gradient rules for the array/shape kinds (and the core kind ``identity``).

Each rule builds the adjoint from frontend constructors and IR kinds: reshape/transpose
invert themselves, broadcasts sum back (``sum_to_shape``), slices scatter into zeros
(``strided_slice_grad``), gathers scatter-add (``unsorted_segment_sum``, ``scatter_nd``) and
the scatters gather back, reverse_sequence reverses the gradient alike, so second derivatives
work too.
"""
from __future__ import annotations

from ...ir.deferred import DimSum
from ...ir.ops.array import dim_add
from ..gradients import not_differentiable, register_gradient
from ..graph import make_op
from ..ops.array_ops import reshape, sum_to_shape, transpose, zeros_like
from ..ops.dynamic_dims import dims_of

not_differentiable("shape")


@register_gradient("identity")
def _identity_grad(op, grad):
    return [grad]


@register_gradient("reshape")
def _reshape_grad(op, grad):
    return [reshape(grad, dims_of(op.inputs[0]))]


@register_gradient("transpose")
def _transpose_grad(op, grad):
    perm = op.attrs["perm"]
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return [transpose(grad, inverse)]


@register_gradient("broadcast_to")
def _broadcast_to_grad(op, grad):
    return [sum_to_shape(grad, op.inputs[0])]


@register_gradient("concat")
def _concat_grad(op, grad):
    """Each input gets its window of the gradient along the concat axis."""
    rank = grad.type.rank
    axis = op.attrs["axis"] % rank
    grads, offset = [], 0
    for j, t in enumerate(op.inputs):
        d = t.type.shape[axis]
        begin = tuple(offset if i == axis else 0 for i in range(rank))
        grads.append(make_op("slice", [grad], {"begin": begin, "size": dims_of(t), "strides": (1,) * rank}))
        known = d is not None and not isinstance(offset, DimSum)
        offset = dim_add(offset, d) if known else DimSum(op.inputs[:j + 1], axis)  # (summed when lowering)
    return grads


def _is_permutation(shape, attrs):
    """True when a slice takes every element of every axis (identity or reversals)."""
    for d, b, s, st in zip(shape, attrs["begin"], attrs["size"], attrs["strides"]):
        if s != d or (st, b) not in ((1, 0), (-1, -1)):
            return False
    return True


@register_gradient("slice")
def _slice_grad(op, grad):
    x = op.inputs[0]
    if _is_permutation(x.type.shape, op.attrs):  # reverse: its own adjoint
        return [make_op("slice", [grad], dict(op.attrs))]
    attrs = {"shape": dims_of(x), "begin": op.attrs["begin"], "strides": op.attrs["strides"]}
    return [make_op("strided_slice_grad", [grad], attrs)]


@register_gradient("strided_slice_grad")
def _strided_slice_grad_grad(op, grad):
    attrs = {"begin": op.attrs["begin"], "size": dims_of(op.inputs[0]), "strides": op.attrs["strides"]}
    return [make_op("slice", [grad], attrs)]


@register_gradient("tile")
def _tile_grad(op, grad):
    """View the gradient as [m0, d0, m1, d1, ...] and sum over the repeat axes."""
    from ..ops.math_ops import reduce_sum

    x = op.inputs[0]
    split = []
    for m, d in zip(op.attrs["multiples"], dims_of(x)):
        split += [m, d]
    summed = reduce_sum(reshape(grad, split), list(range(0, len(split), 2)))
    return [reshape(summed, dims_of(x))]


@register_gradient("pad")
def _pad_grad(op, grad):
    x = op.inputs[0]
    if op.attrs["mode"] == "CONSTANT":
        rank = x.type.rank
        attrs = {"begin": tuple(lo for lo, _ in op.attrs["paddings"]), "size": dims_of(x),
                 "strides": (1,) * rank}
        return [make_op("slice", [grad], attrs)]
    return [make_op("pad_grad", [grad], {"paddings": op.attrs["paddings"], "mode": op.attrs["mode"]})]


@register_gradient("pad_grad")
def _pad_grad_grad(op, grad):
    attrs = {"paddings": op.attrs["paddings"], "mode": op.attrs["mode"], "constant_values": 0}
    return [make_op("pad", [grad], attrs)]


@register_gradient("gather")
def _gather_grad(op, grad):
    """Scatter-add the gradient rows back: move the gathered axis to the front, segment-sum."""
    params, indices = op.inputs
    axis = op.attrs["axis"] % params.type.rank
    k, outer = indices.type.rank, list(range(axis))
    perm = [axis + i for i in range(k)] + outer + list(range(axis + k, grad.type.rank))
    moved = transpose(grad, perm) if perm != list(range(grad.type.rank)) else grad
    summed = make_op("unsorted_segment_sum", [moved, indices], {"num_segments": dims_of(params)[axis]})
    back = list(range(1, axis + 1)) + [0] + list(range(axis + 1, params.type.rank))
    return [transpose(summed, back) if back != list(range(params.type.rank)) else summed, None]


@register_gradient("update_row")
def _update_row_grad(op, grad):
    """``out = stack`` with row ``index`` replaced by ``value``: the stack's gradient is
    ``grad`` with that row zeroed, the value's is that row (reads neither input's value, so
    a while loop's gradient does not stack a buffer written with it)."""
    _, value, index = op.inputs
    return [make_op("update_row", [grad, zeros_like(value), index]),
            make_op("gather", [grad, index], {"axis": 0}), None]


@register_gradient("unsorted_segment_sum")
def _segment_sum_grad(op, grad):
    """Gather the gradient at each id; negative ids (dropped rows) get zero."""
    from ..ops.math_ops import greater_equal, maximum, where
    from ..ops.array_ops import broadcast_to, expand_dims

    data, ids = op.inputs
    picked = make_op("gather", [grad, maximum(ids, 0)], {"axis": 0})
    keep = greater_equal(ids, 0)
    for _ in range(data.type.rank - ids.type.rank):
        keep = expand_dims(keep, -1)
    return [where(broadcast_to(keep, dims_of(data)), picked, zeros_like(picked)), None]


@register_gradient("gather_nd")
def _gather_nd_grad(op, grad):
    params, indices = op.inputs
    return [make_op("scatter_nd", [indices, grad], {"shape": params.type.shape}), None]


@register_gradient("scatter_nd")
def _scatter_nd_grad(op, grad):
    indices, _ = op.inputs
    return [None, make_op("gather_nd", [grad, indices])]


@register_gradient("reverse_sequence")
def _reverse_sequence_grad(op, grad):
    """Reversing each row's first len_b steps is its own inverse: reverse the gradient alike."""
    return [make_op("reverse_sequence", [grad, op.inputs[1]], dict(op.attrs)), None]

"""tf.reverse_sequence: reverse the first ``seq_lengths[b]`` steps of each batch row.

Kiln builds it from ops it already differentiates: a per-row permutation matrix
``P[b, t, s] = (s == src(b, t))`` with ``src(b, t) = len_b - 1 - t`` for ``t < len_b``
(else ``t``), made by ``one_hot``, applied with a batched matmul over ``[batch, time,
rest]``.  Each output element is one input element times 1 plus zeros, so values (and
gradients, ``P^T g``) are exact; integer inputs go through float64 (exact below 2**53).
An inf or NaN in a row spreads NaN over that row's other steps (0 * inf), which TF's
kernel does not do.
"""
from __future__ import annotations

import numpy as np

from ..convert import convert_to_tensor
from ...ir.types import float64, int32
from ..ops import array_ops, math_ops
from ..ops.array_creation import one_hot, range as tf_range
from ..ops.array_slicing import normalize_axis


def _source_steps(lengths, steps):
    """``src[b, t]``: the input step that output step ``t`` of row ``b`` reads."""
    t = tf_range(steps, dtype=int32)
    lens = array_ops.expand_dims(lengths, 1)
    return math_ops.where_v2(math_ops.less(t, lens), lens - 1 - t, t)


def reverse_sequence(input, seq_lengths, seq_axis=None, batch_axis=None, name=None, seq_dim=None,  # noqa: A002
                     batch_dim=None):
    """tf.reverse_sequence(input, seq_lengths, seq_axis, batch_axis=0)."""
    x = convert_to_tensor(input)
    seq_axis = seq_axis if seq_axis is not None else seq_dim
    batch_axis = batch_axis if batch_axis is not None else (batch_dim if batch_dim is not None else 0)
    if seq_axis is None:
        raise ValueError("ReverseSequence: seq_axis (seq_dim) must be given")
    rank = x.type.rank
    seq_axis, batch_axis = normalize_axis(int(seq_axis), rank), normalize_axis(int(batch_axis), rank)
    if seq_axis == batch_axis:
        raise ValueError(f"ReverseSequence: seq_dim ({seq_axis}) and batch_dim ({batch_axis}) must differ")
    lengths = math_ops.cast(convert_to_tensor(seq_lengths), int32)
    if lengths.type.rank != 1 or lengths.type.shape[0] != x.type.shape[batch_axis]:
        raise ValueError(f"ReverseSequence: seq_lengths must be a vector of length input.dims(batch_dim) = "
                         f"{x.type.shape[batch_axis]}, got shape {lengths.shape} for input {x.name} of shape {x.shape}")
    steps = x.type.shape[seq_axis]
    if not isinstance(steps, (int, np.integer)):
        raise ValueError(f"ReverseSequence: the sequence dim of {x.name} (shape {x.shape}) must be static")
    perm = [batch_axis, seq_axis] + [a for a in range(rank) if a not in (batch_axis, seq_axis)]
    inverse = list(np.argsort(perm))
    with x.graph.name_scope(name or "ReverseSequence"):
        moved = array_ops.transpose(x, perm)
        rows = array_ops.reshape(moved, [-1, steps, int(np.prod(moved.type.shape[2:], dtype=np.int64))])
        work_dtype = x.dtype if x.dtype.is_floating else float64
        perm_matrix = one_hot(_source_steps(lengths, steps), steps, dtype=work_dtype)
        out = math_ops.matmul(perm_matrix, math_ops.cast(rows, work_dtype) if work_dtype != x.dtype else rows)
        if work_dtype != x.dtype:
            out = math_ops.cast(out, x.dtype)
        return array_ops.transpose(array_ops.reshape(out, moved.type.shape), inverse)

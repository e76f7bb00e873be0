"""Constant offsets out of buffer indices, so kernels that differ only in where inside a
buffer they start can share code (used by ``dedup.kernel_functions``).

The per-step slices of an unrolled RNN's input (``x[:, t, :]`` for every step ``t``) are
the same loop at different constant offsets.  ``split_constant(index)`` writes an index as
``rest + c`` (``c`` an integer, ``rest`` built only from additions and products of loop
variables, ``Batch()`` and non-negative constants, so ``rest >= 0``), or says it cannot.
When every access of a buffer in a kernel splits, the buffer is passed at an element
offset ``c0`` (the smallest ``c``, when positive: the pointer stays inside the buffer) and
each access reads ``rest + (c - c0)``: the same addresses, one form for every instance.
"""
from __future__ import annotations

from . import kernel_ir as K
from .indexing import add, const_value, i64, mul


def split_constant(e, loop_vars) -> tuple | None:
    """``(rest, c)`` with ``e == rest + c`` as above, or None."""
    c = const_value(e)
    if c is not None:
        return (None, c) if c >= 0 else None
    if isinstance(e, (K.Var, K.Batch)):
        return (e, 0) if isinstance(e, K.Batch) or e.name in loop_vars else None
    if not isinstance(e, K.Op) or e.kind not in ("add", "mul") or len(e.args) != 2:
        return None
    if e.kind == "add":
        parts = [split_constant(a, loop_vars) for a in e.args]
        if None in parts:
            return None
        (ra, ca), (rb, cb) = parts
        return (ra if rb is None else rb if ra is None else add(ra, rb)), ca + cb
    ka, kb = (const_value(a) for a in e.args)
    k, other = (ka, e.args[1]) if ka is not None else (kb, e.args[0])
    if k is None or k < 0:
        return None
    part = split_constant(other, loop_vars)
    if part is None:
        return None
    rest, c = part
    return (None if rest is None or k == 0 else mul(rest, k)), c * k


def buffer_offsets(accesses: dict, loop_vars) -> dict:
    """``{buffer: element offset}`` for the buffers whose every index (``accesses``: buffer ->
    index expressions) splits and whose smallest constant is positive."""
    out = {}
    for buf, indices in accesses.items():
        parts = [split_constant(i, loop_vars) for i in indices]
        if parts and None not in parts and min(c for _, c in parts) > 0:
            out[buf] = min(c for _, c in parts)
    return out


def shifted_index(index, offset: int, loop_vars):
    """``index - offset`` written as ``rest + (c - offset)`` (see ``split_constant``)."""
    rest, c = split_constant(index, loop_vars)
    return add(rest if rest is not None else i64(0), c - offset)

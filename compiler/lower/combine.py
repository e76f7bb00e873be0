"""The accumulator combines of the kernel IR: the one table every user reads.

``Accumulate(var, combine, value)`` computes ``var = combine(var, value)``.  This module
says, once, for lowering (which IR reduction uses which combine, where a sum starts), the
reference evaluator (``kernel_interp.py``) and every renderer (LLVM, CUDA C):

* ``COMBINES[name].op``: the elementwise ``Op`` kind that computes the combine, with the
  reference interpreter's semantics (``maximum``/``minimum`` propagate NaN);
* ``COMBINES[name].ufunc``: numpy's ufunc of that op (the evaluator folds SIMD lanes with it);
* ``identity(name, dtype)``: the neutral element ``e`` with ``combine(e, x) == x`` bit for bit
  for every ``x``.  Partial accumulators start from it (SIMD lanes, a CUDA block's
  threads) and are then combined into the real one.  For a float sum it is ``-0.0``: IEEE
  ``-0.0 + x`` is ``x`` for every ``x`` (``+0.0 + -0.0`` is ``+0.0``, so ``+0.0`` would turn
  a partial sum of ``-0.0`` values into ``+0.0``);
* ``reduction_init(kind, dtype)``: where an IR reduction (``reduce_sum``, ...) starts, i.e.
  the value of an empty reduction.  It is the identity, except that a float sum starts at
  ``+0.0`` as numpy's does (the reference interpreter is the oracle: ``np.sum`` of ``-0.0``
  values is ``+0.0``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.types import as_dtype
from .indexing import const_expr
from .kernel_ir import Const


@dataclass(frozen=True)
class Combine:
    """One accumulator combine: its name in ``Accumulate``, its op kind and numpy ufunc."""

    name: str
    op: str
    ufunc: np.ufunc


COMBINES = {c.name: c for c in (
    Combine("add", "add", np.add),
    Combine("mul", "mul", np.multiply),
    Combine("max", "maximum", np.maximum),
    Combine("min", "minimum", np.minimum),
    Combine("and", "logical_and", np.logical_and),
    Combine("or", "logical_or", np.logical_or),
)}

#: The combine of each IR reduction kind (``reduce_mean`` sums, then divides).
REDUCTION_COMBINE = {"reduce_sum": "add", "reduce_mean": "add", "reduce_prod": "mul",
                     "reduce_max": "max", "reduce_min": "min", "reduce_all": "and", "reduce_any": "or"}

_BY_OP = {c.op: c.name for c in COMBINES.values()}


def combine_op(combine: str) -> str:
    """The elementwise ``Op`` kind computing ``combine`` ("max" -> "maximum")."""
    return COMBINES[combine].op


def combine_of_op(kind: str):
    """The combine an elementwise ``Op`` kind computes ("maximum" -> "max"), else None."""
    return _BY_OP.get(kind)


def identity_value(combine: str, dtype):
    """The neutral element of ``combine`` for ``dtype`` as a Python scalar of the dtype's
    kind (float, int or bool): see the module docstring (``-0.0`` for a float sum)."""
    dtype = as_dtype(dtype)
    if combine in ("and", "or"):
        return combine == "and"
    if combine in ("add", "mul"):
        one = combine == "mul"
        if dtype.is_floating:
            return 1.0 if one else -0.0
        return bool(one) if dtype.is_bool else int(one)
    if combine not in ("max", "min"):
        raise KeyError(f"unknown combine {combine!r}")
    lowest = combine == "max"
    if dtype.is_floating:
        return float("-inf") if lowest else float("inf")
    if dtype.is_bool:
        return not lowest
    info = np.iinfo(dtype.np)
    return int(info.min if lowest else info.max)


def identity(combine: str, dtype) -> Const:
    """``identity_value`` as a kernel-IR constant of ``dtype``."""
    return const_expr(identity_value(combine, dtype), dtype)


def reduction_init(kind: str, dtype) -> Const:
    """The accumulator's start for IR reduction ``kind`` with accumulator ``dtype``: the
    identity, but ``+0.0`` for float sums (numpy's start, so results match the interpreter
    bit for bit)."""
    combine = REDUCTION_COMBINE[kind]
    if combine == "add" and as_dtype(dtype).is_floating:
        return const_expr(0.0, dtype)
    return identity(combine, dtype)

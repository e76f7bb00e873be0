"""Common subexpression elimination: identical non-stateful ops are computed once.

Two plain instrs are the same when they have the same kind, the same operands (after
earlier merges), equal attrs and the same result type.  Attrs compare exactly: a numpy
array by dtype, shape and bytes (so every ``constant`` holding the same literal — the many
scalar 0s and 1s gradients and optimizers create — merges into the first), a float by its
bits (``0.0`` and ``-0.0`` differ), and ``True`` differs from ``1``.  ``add``/``mul``
and the symmetric comparisons are commutative in IEEE arithmetic, so their operand order
does not matter.  The first occurrence (and its loc) is kept; later ones are dropped and
their uses read the first.  Stateful ops (random draws) and fused instrs are never merged.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops as _ops  # noqa: F401  (fills the registry)
from ..ir.function import Function
from ..ir.opdef import get_opdef
from .base import PassResult, replace_uses

NAME = "cse"
COMMUTATIVE = frozenset({"add", "mul", "equal", "not_equal", "logical_and", "logical_or", "logical_xor"})


def attr_key(x):
    """A hashable key equal for two attr values exactly when they mean the same thing."""
    if isinstance(x, np.ndarray):
        return ("ndarray", x.dtype.str, x.shape, np.ascontiguousarray(x).tobytes())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return ("float", x.hex())
    if isinstance(x, (bool, int, str)) or x is None:
        return (type(x).__name__, x)
    if isinstance(x, (list, tuple)):
        return (type(x).__name__,) + tuple(attr_key(e) for e in x)
    if isinstance(x, dict):
        return ("dict",) + tuple(sorted((str(k), attr_key(v)) for k, v in x.items()))
    return (type(x).__name__, x)  # DType, Sym, TensorType: frozen dataclasses, hashable


def instr_key(ins):
    """What makes two plain instrs interchangeable (operands by identity)."""
    operands = [id(v) for v in ins.operands]
    if ins.kind in COMMUTATIVE:
        operands.sort()
    attrs = tuple(sorted((k, attr_key(v)) for k, v in ins.attrs.items()))
    return (ins.kind, tuple(operands), attrs, ins.result.type.dtype, tuple(ins.result.type.shape))


def _mergeable(ins) -> bool:
    return ins.region is None and len(ins.results) == 1 and not get_opdef(ins.kind).stateful


def run(fn: Function) -> PassResult:
    """Merge duplicate instrs of ``fn`` in place."""
    first: dict = {}
    mapping: dict = {}
    body = []
    merged_constants = 0
    for ins in fn.body:
        ins.operands = [mapping.get(v, v) for v in ins.operands]
        if not _mergeable(ins):
            body.append(ins)
            continue
        key = instr_key(ins)
        if key in first:
            mapping[ins.result] = first[key]
            merged_constants += ins.kind == "constant"
        else:
            first[key] = ins.result
            body.append(ins)
    fn.body = body
    replace_uses(fn, mapping)
    stats = {"merged": len(mapping), "merged_constants": merged_constants}
    return PassResult(fn, f"merged {len(mapping)} duplicate ops ({merged_constants} constants)", stats)

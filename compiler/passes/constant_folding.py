"""Constant folding: ops whose operands are all constants become one ``constant``.

Each foldable instr is evaluated with the reference interpreter's semantics
(``opdef.evaluate_op``), so a folded function computes exactly what the unfolded one did.
The folded ``constant`` keeps the op's result value (same type, same uses) and its loc.

Not folded:
  * stateful kinds (random draws) — they must draw fresh numbers every step;
  * results whose shape holds the batch dim, or with more than ``MAX_FOLD_ELEMENTS``
    elements (a broadcast of a scalar to a big shape is cheaper to compute than to store);
  * ops whose evaluation fails (``check_range`` of a bad index, an integer division by
    zero): they stay, so the step fails at run time with the interpreter's message;
  * fused instrs (with a region) and loops.

An ``if`` whose predicate is a constant is replaced by a copy of the region it picks (its
block params bound to the operands; its results replaced by the yields).
``shape`` of a value with a static shape folds even when the operand is not a constant.
Instrs that only fed folded ops (their constant operands, mostly) are dropped.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops as _ops  # noqa: F401  (fills the registry)
from ..ir.function import Function, Instr
from ..ir.opdef import EvalContext, evaluate_op, get_opdef
from ..ir.types import has_sym, num_elements
from .base import PassResult, clone_instrs, replace_uses
from .pruning import remove_unused

NAME = "constant-folding"
MAX_FOLD_ELEMENTS = 65536


def is_constant(v) -> bool:
    """True when ``v`` is the result of a plain ``constant`` instr."""
    return isinstance(v.producer, Instr) and v.producer.kind == "constant"


def constant_value(v):
    """The array of a constant value, or None."""
    return v.producer.attrs["value"] if is_constant(v) else None


def make_constant(value, array, loc="") -> Instr:
    """A ``constant`` instr defining the existing Value ``value`` (its type is kept)."""
    array = np.array(array, dtype=value.type.dtype.np, copy=True)
    return Instr("constant", [], {"value": array}, value, loc)


def _fold_value(ins: Instr):
    """The folded array for ``ins``, or (None, reason) when it must stay as it is."""
    if ins.kind == "shape":
        shape = ins.operands[0].type.shape
        return (None, "batch") if has_sym(shape) else (np.array(shape), None)
    if not all(is_constant(v) for v in ins.operands):
        return None, "operands"
    try:
        with np.errstate(all="ignore"):
            out = evaluate_op(ins.kind, EvalContext(), [constant_value(v) for v in ins.operands], ins.attrs)
    except Exception:  # the step must fail at run time with the interpreter's message
        return None, "failed"
    out = np.asarray(out)
    if out.shape != tuple(ins.result.type.shape):
        return None, "failed"
    return out, None


def _inline_taken(ins: Instr, renamed: dict) -> list:
    """The instrs of the region a constant predicate picks, bound to the ``if``'s operands;
    ``renamed`` learns result -> yield."""
    region = ins.regions[0 if constant_value(ins.operands[0]) else 1]
    vmap = dict(zip(region.params, ins.operands[1:]))
    body = clone_instrs(region.body, vmap)
    renamed.update((r, vmap.get(y, y)) for r, y in zip(ins.results, region.yields))
    return body


def _skip_reason(ins: Instr, max_elements: int):
    """Why ``ins`` is not even tried (None when it is a folding candidate)."""
    if ins.region is not None or ins.kind == "constant" or get_opdef(ins.kind).stateful:
        return "kind"
    shape = ins.result.type.shape
    if has_sym(shape):
        return "batch"
    if num_elements(shape) > max_elements:
        return "too_large"
    return None


def run(fn: Function, *, max_elements: int = MAX_FOLD_ELEMENTS) -> PassResult:
    """Fold constant subexpressions of ``fn`` in place (results up to ``max_elements`` elements)."""
    stats = {"folded": 0, "too_large": 0, "failed": 0, "inlined_ifs": 0}
    body, dropped_operands, renamed = [], [], {}
    pending = list(reversed(fn.body))
    while pending:
        ins = pending.pop()
        if ins.kind == "if" and is_constant(ins.operands[0]):
            pending += reversed(_inline_taken(ins, renamed))  # folded in turn (a nested if too)
            dropped_operands.append(ins.operands[0].producer)
            stats["inlined_ifs"] += 1
            continue
        reason = _skip_reason(ins, max_elements)
        array = None
        if reason is None:
            array, reason = _fold_value(ins)
        if array is None:
            if reason in ("too_large", "failed") and all(is_constant(v) for v in ins.operands):
                stats[reason] += 1
            body.append(ins)
            continue
        body.append(make_constant(ins.result, array, ins.loc))
        dropped_operands.extend(v.producer for v in ins.operands if isinstance(v.producer, Instr))
        stats["folded"] += 1
    fn.body = body
    replace_uses(fn, renamed)
    stats["removed_constants"] = remove_unused(fn, dropped_operands)
    stats["constants"] = sum(1 for ins in fn.body if ins.kind == "constant")
    inlined = f", inlined {stats['inlined_ifs']} ifs" if stats["inlined_ifs"] else ""
    return PassResult(fn, f"folded {stats['folded']} ops ({stats['constants']} constants remain){inlined}", stats)

"""Algebraic simplification: apply the rules of ``simplify_rules`` until nothing changes.

Each sweep walks the body in order.  For every plain, non-stateful instr it reads operands
through the rewrites made so far and tries the rules for its kind (table order, first that
applies wins).  A rule either forwards the result to an existing value — the uses are
rewired; when that value has the same dtype but a smaller shape, a ``broadcast_to`` takes the
instr's place — or replaces the instr by new ones whose last one defines the *same* result
Value.  Either way every use sees exactly the type it saw before (Sym dims included).
Instrs that only fed rewritten ones and became unused are dropped after each sweep.
Sweeps repeat until one changes nothing (at most ``MAX_SWEEPS``), so the pass is idempotent.
"""
from __future__ import annotations

from ..ir.function import Function, Instr, Value
from ..ir.opdef import get_opdef
from .base import PassResult, replace_uses
from .pruning import remove_unused
from .simplify_rules import RULES, Reject, RewriteContext, rules_by_kind

NAME = "simplify"
MAX_SWEEPS = 50


def _same_type(a, b) -> bool:
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)


def _as_rewrite(ins: Instr, outcome, ctx: RewriteContext):
    """Check a rule's outcome: a Value with the result's exact type, or a list of instrs whose
    last one has it (a broadcast_to is added for a forwarded value of smaller shape)."""
    want = ins.result.type
    if isinstance(outcome, Value):
        if _same_type(outcome.type, want):
            return outcome
        if outcome.type.dtype != want.dtype:
            return None
        outcome = [ctx.op("broadcast_to", [outcome], shape=tuple(want.shape))]
    if not outcome or not _same_type(outcome[-1].result.type, want):
        return None
    return outcome


def _rewrite(ins: Instr, table: dict, ctx: RewriteContext):
    """(rule name, rewrite) for the first rule that applies to ``ins``, or (None, None)."""
    if ins.region is not None or get_opdef(ins.kind).stateful:
        return None, None
    for rule in table.get(ins.kind, ()):
        try:
            rewrite = _as_rewrite(ins, rule.apply(ins, ctx), ctx)
        except Reject:
            continue
        if rewrite is not None:
            return rule.name, rewrite
    return None, None


def _install(ins: Instr, new: list) -> list:
    """Make the last new instr define ``ins``'s result Value; all take ``ins``'s loc."""
    last = new[-1]
    last.results = [ins.result]
    ins.result.producer = last
    for n in new:
        n.loc = ins.loc
    return new


def _sweep(fn: Function, table: dict, ctx: RewriteContext, counts: dict) -> int:
    """One pass over the body, counting rewrites per rule in ``counts``; returns how many it made."""
    mapping: dict = {}
    body, touched, made = [], [], 0
    for ins in fn.body:
        ins.operands = [mapping.get(v, v) for v in ins.operands]
        name, rewrite = _rewrite(ins, table, ctx)
        if name is None:
            body.append(ins)
            continue
        counts[name] = counts.get(name, 0) + 1
        made += 1
        touched.extend(v.producer for v in ins.operands if isinstance(v.producer, Instr))
        if isinstance(rewrite, Value):
            mapping[ins.result] = rewrite
        else:
            body.extend(_install(ins, rewrite))
    fn.body = body
    replace_uses(fn, mapping)
    remove_unused(fn, touched)
    return made


def run(fn: Function) -> PassResult:
    """Simplify ``fn`` in place to a fixpoint of the rules."""
    table, ctx, counts = rules_by_kind(), RewriteContext(), {}
    for _ in range(MAX_SWEEPS):
        if not _sweep(fn, table, ctx, counts):
            break
    total = sum(counts.values())
    detail = ", ".join(f"{r.name}: {counts[r.name]}" for r in RULES if r.name in counts)
    summary = f"simplified {total} ops" + (f" ({detail})" if detail else "")
    return PassResult(fn, summary, {"simplified": total, "rules": counts})

"""Pruning: keep only what the entry point's fetches and state updates need (``Session.run``).

In order:

1. ``identity`` and ``stop_gradient`` are dropped and their uses read the operand instead
   (``stop_gradient`` only matters to autodiff, which has run by now).
2. A state output that writes back the unchanged state param (``state "w" = %w``) is dropped:
   a variable that is not written keeps its value anyway.
3. Dead code: every instr whose results reach no fetch and no state output is dropped —
   including an unused ``check_range`` (TF prunes it too) and unused random draws (they are
   keyed by (seed, step, op), so dropping one does not change the others).
4. ``state`` params nobody reads any more are dropped.  ``feed`` params always stay: they are
   the entry point's signature, and a fed-but-unused tensor is still accepted.

Control flow is pruned inside (``prune_regions.py``, after step 3, then dead code again):
unused ``if`` results and ``while`` loop values go, and so do region instrs nothing needs.
Fused instrs (with a region) are kept or dropped as a whole and never looked into.
"""
from __future__ import annotations

from ..ir.function import Function, Instr
from .base import PassResult, replace_uses, uses
from .prune_regions import prune_control_flow

NAME = "pruning"
IDENTITY_KINDS = ("identity", "stop_gradient")


def remove_identities(fn: Function) -> int:
    """Drop identity/stop_gradient instrs, rewiring their uses to the operand; returns the count."""
    mapping = {ins.result: ins.operands[0] for ins in fn.body
               if ins.kind in IDENTITY_KINDS and ins.region is None}
    if mapping:
        fn.body = [ins for ins in fn.body if ins.region is not None or ins.results[0] not in mapping]
        replace_uses(fn, mapping)
    return len(mapping)


def remove_unchanged_state_writes(fn: Function) -> int:
    """Drop ``state "k" = %k`` outputs (the new value is the state param of the same key)."""
    params = {p.key: p.value for p in fn.state_in()}
    kept = [(key, v) for key, v in fn.state_out if params.get(key) is not v]
    removed = len(fn.state_out) - len(kept)
    fn.state_out = kept
    return removed


def remove_dead_code(fn: Function) -> int:
    """Drop every instr none of whose results reaches an output; returns the count."""
    live = set(fn.outputs())
    kept = []
    for ins in reversed(fn.body):
        if any(v in live for v in ins.results):
            kept.append(ins)
            live.update(ins.operands)
    removed = len(fn.body) - len(kept)
    fn.body = kept[::-1]
    return removed


def remove_unused_state_params(fn: Function) -> list:
    """Drop state params that nothing reads; returns their keys."""
    counts = uses(fn)
    dropped = [p.key for p in fn.params if p.kind == "state" and not counts.get(p.value)]
    fn.params = [p for p in fn.params if not (p.kind == "state" and p.key in dropped)]
    return dropped


def remove_unused(fn: Function, candidates) -> int:
    """Drop the ``candidates`` instrs whose results are unused, and then, transitively, the
    producers of their operands that become unused.  Lets a rewriting pass clean up after
    itself without a full dead-code sweep.  Returns how many instrs were dropped."""
    counts = uses(fn)
    in_body = set(fn.body)
    removed: set = set()
    work = list(candidates)
    while work:
        ins = work.pop()
        if ins in removed or ins not in in_body or any(counts.get(v) for v in ins.results):
            continue
        removed.add(ins)
        for v in ins.operands:
            counts[v] -= 1
            if counts[v] == 0 and isinstance(v.producer, Instr):
                work.append(v.producer)
    if removed:
        fn.body = [ins for ins in fn.body if ins not in removed]
    return len(removed)


def run(fn: Function) -> PassResult:
    """Prune ``fn`` in place (see the module docstring for what goes)."""
    stats = {"identities": remove_identities(fn),
             "unchanged_state_writes": remove_unchanged_state_writes(fn),
             "dead_ops": remove_dead_code(fn)}
    inner = prune_control_flow(fn)
    if any(inner.values()):
        stats["dead_ops"] += remove_dead_code(fn)
    stats.update(inner)
    dropped = remove_unused_state_params(fn)
    stats["unused_state"] = len(dropped)
    summary = (f"removed {stats['dead_ops']} dead ops, {stats['identities']} identities, "
               f"{stats['unchanged_state_writes']} unchanged state writes, {len(dropped)} unused state")
    if dropped:
        summary += f" ({', '.join(dropped)})"
    if any(inner.values()):
        summary += (f"; in control flow {inner['loop_values']} loop values, {inner['if_results']} if results, "
                    f"{inner['region_ops']} region ops")
    return PassResult(fn, summary, stats)

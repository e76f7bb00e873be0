"""Pruning inside control flow (part of the pruning pass, pruning.py).

* An ``if`` result nothing reads is dropped, with its yield in both branches; so is an
  argument neither branch needs.
* A ``while`` loop value is dropped when its result is unused, the cond does not need it,
  and the body needs it only to compute its own next value (found as a fixpoint: dropping
  one value may free another).  That is how the stacks a loop keeps for its gradient
  (frontend/control_flow.py) disappear from a step that takes no gradient.
* Every region then keeps only the instrs its yields need.

Regions are isolated (docs/IR.md), so each one is pruned from its own yields.
"""
from __future__ import annotations

from ..ir.function import walk
from .base import uses


def prune_control_flow(fn) -> dict:
    """Prune ``fn``'s if/while instrs and regions in place; returns counts of what went."""
    stats = {"if_results": 0, "loop_values": 0, "region_ops": 0}
    changed = True
    while changed:
        counts = uses(fn)
        changed = any(_prune_if(ins, counts, stats) if ins.kind == "if" else _prune_while(ins, counts, stats)
                      for ins in walk(fn.body) if ins.kind in ("if", "while"))
        for ins in walk(fn.body):
            for region in ins.regions:
                removed = _dead_code(region)
                stats["region_ops"] += removed
                changed = changed or bool(removed)
    return stats


def _needed(region, roots) -> set:
    """The values of ``region`` (params included) that ``roots`` depend on."""
    needed = set(roots)
    for ins in reversed(region.body):
        if any(v in needed for v in ins.results):
            needed.update(ins.operands)
    return needed


def _dead_code(region) -> int:
    """Drop the region's instrs its yields do not need; returns how many."""
    needed = _needed(region, region.yields)
    kept = [ins for ins in region.body if any(v in needed for v in ins.results)]
    removed = len(region.body) - len(kept)
    region.body = kept
    return removed


def _drop(ins, positions: set, regions_params: bool) -> None:
    """Remove result ``i`` (and operand ``i``, params ``i`` for a loop) and yield ``i`` of every region."""
    def keep(items):
        return [x for i, x in enumerate(items) if i not in positions]

    ins.results = keep(ins.results)
    if regions_params:
        ins.operands = keep(ins.operands)
        for region in ins.regions:
            region.params = keep(region.params)
    for region in ins.regions:
        if ins.kind == "if" or region is ins.regions[1]:
            region.yields = keep(region.yields)


def _prune_if(ins, counts, stats) -> bool:
    dead = {i for i, v in enumerate(ins.results) if not counts.get(v)}
    if len(dead) == len(ins.results):  # all dead: dead-code removal drops the instr
        return False
    if dead:
        _drop(ins, dead, regions_params=False)
        stats["if_results"] += len(dead)
    needed = [_needed(r, r.yields) for r in ins.regions]
    unused = {j for j in range(len(ins.operands) - 1) if not any(r.params[j] in n for r, n in zip(ins.regions, needed))}
    if unused:
        ins.operands = [ins.operands[0]] + [v for j, v in enumerate(ins.operands[1:]) if j not in unused]
        for region in ins.regions:
            region.params = [p for j, p in enumerate(region.params) if j not in unused]
    return bool(dead or unused)


def _prune_while(ins, counts, stats) -> bool:
    cond, body = ins.regions
    removable = {i for i, v in enumerate(ins.results) if not counts.get(v)}
    while removable:
        kept_yields = [v for i, v in enumerate(body.yields) if i not in removable]
        need_body, need_cond = _needed(body, kept_yields), _needed(cond, cond.yields)
        blocked = {i for i in removable if cond.params[i] in need_cond or body.params[i] in need_body}
        if not blocked:
            break
        removable -= blocked
    if not removable or len(removable) == len(ins.results):
        return False
    _drop(ins, removable, regions_params=True)
    stats["loop_values"] += len(removable)
    return True

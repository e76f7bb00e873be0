"""What every pass returns, and small helpers passes share."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.function import Function


@dataclass
class PassResult:
    """The function after the pass (the same object mutated, or a new one) and what changed."""

    fn: Function
    summary: str
    stats: dict = field(default_factory=dict)


def count_ops(fn: Function) -> int:
    """Ops in the body, not counting ops inside fused regions."""
    return len(fn.body)


def uses(fn: Function) -> dict:
    """Value -> number of uses (operands in the body, inside regions, and outputs)."""
    counts: dict = {}

    def visit(body):
        for ins in body:
            for v in ins.operands:
                counts[v] = counts.get(v, 0) + 1
            for region in ins.regions:
                visit(region.body)
                for v in region.yields:
                    counts[v] = counts.get(v, 0) + 1

    visit(fn.body)
    for v in fn.outputs():
        counts[v] = counts.get(v, 0) + 1
    return counts


def replace_uses(fn: Function, mapping: dict) -> None:
    """Rewrite every operand/output that is a key of ``mapping`` to its value (follows chains)."""
    if not mapping:
        return

    def resolve(v):
        seen = 0
        while v in mapping and seen < 10000:
            v = mapping[v]
            seen += 1
        return v

    def visit(body):
        for ins in body:
            ins.operands = [resolve(v) for v in ins.operands]
            for region in ins.regions:
                visit(region.body)
                region.yields = [resolve(v) for v in region.yields]

    visit(fn.body)
    fn.state_out = [(k, resolve(v)) for k, v in fn.state_out]
    fn.fetches = [(k, resolve(v)) for k, v in fn.fetches]

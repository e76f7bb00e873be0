"""What every pass returns, and small helpers passes share."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.function import Function, Instr, Region, Value


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


def clone_instrs(body: list, vmap: dict) -> list:
    """Copies of ``body``'s instrs (regions included) with fresh result and block-param values.

    ``vmap`` maps old values to new ones: pre-fill it to rebind operands (e.g. a region's
    params to the values it is inlined on); it is extended with every value defined here.
    A value neither in ``vmap`` nor defined here is kept as is.  Attr dicts are copied one
    level deep (constant arrays are shared: passes replace attrs, never write into them).
    """
    def define(v):
        vmap[v] = Value(v.name, v.type)
        return vmap[v]

    out = []
    for ins in body:
        operands = [vmap.get(v, v) for v in ins.operands]
        regions = []
        for region in ins.regions:
            params = [define(p) for p in region.params]
            inner = clone_instrs(region.body, vmap)
            regions.append(Region(params, inner, [vmap.get(v, v) for v in region.yields]))
        buffers = list(ins.buffers) if ins.buffers is not None else None
        results = [define(v) for v in ins.results]
        out.append(Instr(ins.kind, operands, ins.attrs, results, ins.loc, buffers=buffers, regions=regions))
    return out

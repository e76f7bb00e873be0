"""Lower ``if``/``while`` instrs to control steps around kernels (kernel_ir ``IfStep``/``WhileStep``).

The decision of how control flow runs is made here, once; a backend renders the steps in
its step function (LLVM: branches and a loop around kernel calls; CUDA: host code that
reads the predicate byte back from the device).

* Every value defined inside a region gets its own scratch buffer (constants: a const
  buffer); region instrs are lowered one by one with the ordinary lowerings (regions are
  not fused).  Scratch is not reused inside one control-flow instr, so a value stays valid
  across iterations.
* ``if``: the then/else params are the operands' buffers; each branch ends by copying its
  yields into the instr's result buffers.
* ``while``: the results' buffers carry the loop values.  Before the loop the operands are
  copied into them; the cond and body params are those buffers (a loop-invariant value —
  the body yields its own param — is read from its operand's buffer instead).  The body's
  yields are copied back at the end of each iteration, after every new value has been
  computed; a yield that is another param is snapshotted first, so swaps stay correct.
  An ``update_row`` of a loop value that nothing else in the body reads, yielded back in
  its place, writes that loop value's buffer in place (one row per iteration, not a copy
  of the whole stack): the stacks of a loop's gradient cost O(row) per iteration.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..ir.function import walk
from .copies import emit_copy
from .kernel_ir import IfStep, WhileStep


@contextlib.contextmanager
def _into(ctx, steps: list):
    """Kernels emitted inside go to ``steps`` (a branch or loop body)."""
    saved, ctx.steps = ctx.steps, steps
    try:
        yield
    finally:
        ctx.steps = saved


def lower_control(ins, ctx, lower_instr) -> None:
    """Append the steps of one ``if``/``while``; ``lower_instr`` lowers the region instrs."""
    origin = f"{ins.kind} {ins.loc}".strip()
    if ins.kind == "if":
        step = IfStep(ctx.buffer(ins.operands[0]), [], [], origin)
        ctx.steps.append(step)
        for region, steps in zip(ins.regions, (step.then, step.orelse)):
            with _into(ctx, steps):
                for p, v in zip(region.params, ins.operands[1:]):
                    ctx.bind(p, ctx.buffer(v))
                _lower_body(region.body, ctx, lower_instr)
                _copy_yields(ctx, region, ins.results)
        return
    cond, body = ins.regions
    carried = [ctx.buffer(r) for r in ins.results]
    for src, dst in zip(ins.operands, carried):
        if ctx.buffer(src) != dst:
            emit_copy(ctx, dst, ctx.buffer(src), "loop_init")
    invariant = [y is p for y, p in zip(body.yields, body.params)]
    for region in (cond, body):
        for p, src, dst, fixed in zip(region.params, ins.operands, carried, invariant):
            ctx.bind(p, ctx.buffer(src) if fixed else dst)
    step = WhileStep([], "", [], origin)
    ctx.steps.append(step)
    with _into(ctx, step.cond):
        _lower_body(cond.body, ctx, lower_instr)
    step.pred = ctx.buffer(cond.yields[0])
    with _into(ctx, step.body):
        _lower_body(body.body, ctx, lower_instr, _in_place_rows(body, invariant))
        _copy_yields(ctx, body, ins.results, snapshot=True, skip=invariant)


def _lower_body(body: list, ctx, lower_instr, in_place=()) -> None:
    """The kernels of a region's instrs, each result in a fresh scratch (or const) buffer;
    an instr in ``in_place`` writes over its first operand's buffer."""
    saved = ctx.instr
    for sub in body:
        ctx.instr = sub
        if sub.kind == "constant":
            data = np.asarray(sub.attrs["value"])
            ctx.bind(sub.result, ctx.constant(data, sub.result.type.dtype, hint=f"const_{sub.result.name}"))
            continue
        for v in sub.results:
            if sub in in_place:
                ctx.bind(v, ctx.buffer(sub.operands[0]))
            else:
                ctx.bind(v, ctx.scratch(v.type.dtype, v.type.shape, hint=f"r{v.name}"))
        lower_instr(sub, ctx)
    ctx.instr = saved


def _in_place_rows(body, invariant) -> set:
    """The body's ``update_row`` instrs that may write their loop value in place: the stack is
    a (carried) block param read by nothing else, and the result is yielded in its place."""
    reads: dict = {}
    for ins in walk(body.body):
        for v in ins.operands:
            reads[v] = reads.get(v, 0) + 1
    for region_yields in [body.yields] + [r.yields for ins in walk(body.body) for r in ins.regions]:
        for v in region_yields:
            reads[v] = reads.get(v, 0) + 1
    found = set()
    for ins in body.body:
        if ins.kind != "update_row" or ins.operands[0] not in body.params:
            continue
        i = body.params.index(ins.operands[0])
        if not invariant[i] and reads[ins.operands[0]] == 1 and body.yields[i] is ins.result:
            found.add(ins)
    return found


def _copy_yields(ctx, region, results, snapshot: bool = False, skip=None) -> None:
    """Copy the region's yields into the result buffers (a yield already there is skipped,
    and so are the ``skip`` positions: loop invariants, already in place).

    With ``snapshot``, a yield living in another result's buffer (a loop param) is copied
    to scratch first, so no copy overwrites a value another copy still reads.
    """
    keep = [i for i in range(len(results)) if not (skip and skip[i])]
    targets = [ctx.buffer(results[i]) for i in keep]
    sources = [ctx.buffer(region.yields[i]) for i in keep]
    if snapshot:
        for i, src in enumerate(sources):
            if src in targets and src != targets[i]:
                decl = ctx.decl(src)
                tmp = ctx.scratch(decl.dtype, decl.shape, hint=f"swap_{i}")
                emit_copy(ctx, tmp, src, "loop_swap")
                sources[i] = tmp
    for dst, src in zip(targets, sources):
        if dst != src:
            emit_copy(ctx, dst, src, "yield")

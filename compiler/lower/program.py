"""Lower an optimized IR Function (after fusion and memory planning) into a kernel-IR Program.

Buffers first: feeds (by index, ``fn.feeds()`` order), fetches (by index, ``fn.fetches``
order), state variables (by key: params and outputs share one buffer per variable), arena
values (from ``ins.buffers``), constants (role "const" with their data; their arena slot is
not used).  A view shares its operand's buffer when memory planning put it on the same
bytes, else it becomes a copy kernel.  Then each body instr becomes one or more kernels, in
order, through ``lower_instr``; finally ``copies`` move fetched values into the fetch buffers
and state outputs not written in place into their variable.  ``if``/``while`` instrs become
control steps around the kernels of their regions (``control_flow.py``).
"""
from __future__ import annotations

import importlib

import numpy as np

from ..ir.function import Buffer, Function, Param
from ..ir.opdef import VIEW_KINDS
from ..ir.function import CONTROL_FLOW_KINDS
from .context import LowerContext
from .control_flow import lower_control
from .copies import emit_copy
from .kernel_ir import BufferDecl, Program

# fused pattern -> (module under compiler.lower, function): imported when first needed
FUSED_LOWERING = {
    "loop": ("loops", "lower_loop"),
    "reduce": ("loops", "lower_reduce"),
    "contraction": ("contraction", "lower_contraction"),
}
PLAIN_LOWERING = ("plain_ops", "lower_plain")


class LoweringError(ValueError):
    """The function cannot be lowered (no memory plan, an unknown pattern, ...)."""


def lower_function(fn: Function) -> Program:
    """The kernel-IR Program of one planned entry point (see the module doc)."""
    if not fn.memory:
        raise LoweringError(f"func @{fn.name} has no memory plan; run the memory-plan pass first")
    program = Program(fn.name, {}, [], static_bytes=int(fn.memory.get("static_bytes", 0)),
                      batch_bytes=int(fn.memory.get("batch_bytes", 0)),
                      feeds=[p.key for p in fn.feeds()], fetches=[k for k, _ in fn.fetches])
    ctx = LowerContext(program, fn)
    if any(ins.kind in CONTROL_FLOW_KINDS for ins in fn.body):
        program.steps = ctx.steps = []
    _declare_io(fn, ctx)
    where = {p.value: Buffer("state", 0, p.key) for p in fn.state_in()}
    for ins in fn.body:
        _declare_results(ins, ctx, where)
        ctx.begin_instr(ins)
        lower_instr(ins, ctx)
        ctx.end_instr()
    _final_copies(fn, ctx)
    return program


# ----------------------------------------------------------------------------- buffers
def state_buffer_name(key: str) -> str:
    return f"state_{key}"


def _declare_io(fn: Function, ctx: LowerContext) -> None:
    """Feed, fetch and state buffers; binds feed and state params to them."""
    for i, p in enumerate(fn.feeds()):
        name = ctx.fresh_name(f"feed_{p.key}")
        ctx.add_buffer(BufferDecl(name, p.value.type.dtype, p.value.type.shape, "feed", key=p.key, index=i))
        ctx.bind(p.value, name)
    for j, (key, v) in enumerate(fn.fetches):
        name = ctx.fresh_name(f"fetch_{key}")
        ctx.add_buffer(BufferDecl(name, v.type.dtype, v.type.shape, "fetch", key=key, index=j))
    ctx.state_buffers = {}
    variables = [(p.key, p.value) for p in fn.state_in()] + list(fn.state_out)
    for key, v in variables:
        if key not in ctx.state_buffers:
            name = ctx.fresh_name(state_buffer_name(key))
            ctx.add_buffer(BufferDecl(name, v.type.dtype, v.type.shape, "state", key=key))
            ctx.state_buffers[key] = name
    for p in fn.state_in():
        ctx.bind(p.value, ctx.state_buffers[p.key])


def _state_name(ctx: LowerContext, key: str, value) -> str:
    """The state buffer of variable ``key`` (declared on first use by an in-place result)."""
    if key not in ctx.state_buffers:
        name = ctx.fresh_name(state_buffer_name(key))
        ctx.add_buffer(BufferDecl(name, value.type.dtype, value.type.shape, "state", key=key))
        ctx.state_buffers[key] = name
    return ctx.state_buffers[key]


def _declare_results(ins, ctx: LowerContext, where: dict) -> None:
    """Give each result of ``ins`` a buffer: const data, a shared view, state, or its arena slot."""
    if ins.kind == "constant":
        data = np.asarray(ins.attrs["value"])
        ctx.bind(ins.result, ctx.constant(data, ins.result.type.dtype, hint=f"const_{ins.result.name}"))
        where[ins.result] = ins.buffers[0] if ins.buffers else None
        return
    if ins.buffers is None:
        raise LoweringError(f"{ins.kind} ({ins.loc}) has no buffers; run the memory-plan pass first")
    if _is_shared_view(ins, where):
        ctx.bind(ins.result, ctx.buffer(ins.operands[0]))
        where[ins.result] = ins.buffers[0]
        return
    for value, buf in zip(ins.results, ins.buffers):
        where[value] = buf
        if buf.space == "state":
            ctx.bind(value, _state_name(ctx, buf.key, value))
            continue
        name = ctx.fresh_name(f"v{value.name}")
        ctx.add_buffer(BufferDecl(name, value.type.dtype, value.type.shape, "arena",
                                  space=buf.space, offset=buf.offset))
        ctx.bind(value, name)


def _is_shared_view(ins, where: dict) -> bool:
    """A view placed on exactly its operand's bytes (a feed's view is a copy: feeds are not ours)."""
    if ins.kind not in VIEW_KINDS or len(ins.operands) != 1:
        return False
    src = ins.operands[0]
    if isinstance(src.producer, Param) and src.producer.kind == "feed":
        return False
    return where.get(src) is not None and where[src] == ins.buffers[0]


# ----------------------------------------------------------------------------- kernels
def lower_instr(ins, ctx: LowerContext) -> None:
    """Append the kernels of one body instr (constants and shared views have none)."""
    if ins.kind == "constant":
        return
    if ins.kind in CONTROL_FLOW_KINDS:
        lower_control(ins, ctx, lower_instr)
        return
    if ins.kind in VIEW_KINDS:
        if ctx.buffer(ins.result) != ctx.buffer(ins.operands[0]):
            emit_copy(ctx, ctx.buffer(ins.result), ctx.buffer(ins.operands[0]), f"copy_{ins.kind}")
        return
    if ins.kind == "fused":
        pattern = ins.attrs.get("pattern")
        if pattern not in FUSED_LOWERING:
            raise LoweringError(f"fused instr ({ins.loc}) has an unknown pattern {pattern!r}")
        _call(FUSED_LOWERING[pattern], f"fused {pattern!r}", ins, ctx)
        return
    _call(PLAIN_LOWERING, ins.kind, ins, ctx)


def _call(target, what: str, ins, ctx) -> None:
    module_name, func_name = target
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{module_name}":
            raise
        raise NotImplementedError(f"lowering of {what} ({ins.loc}) needs compiler/lower/{module_name}.py") from None
    getattr(module, func_name)(ins, ctx)


# ----------------------------------------------------------------------------- outputs
def _final_copies(fn: Function, ctx: LowerContext) -> None:
    """Fill ``program.copies``: fetches first, then state outputs not written in place.

    A state output whose source is another variable's buffer that a copy overwrites (a swap
    of two variables) is first snapshotted into scratch by a last kernel.
    """
    prog = ctx.program
    fetch_names = [n for n, d in prog.buffers.items() if d.role == "fetch"]
    for name, (_, v) in zip(fetch_names, fn.fetches):
        prog.copies.append((name, ctx.buffer(v)))
    state_copies = []
    for key, v in fn.state_out:
        dst, src = ctx.state_buffers[key], ctx.buffer(v)
        if dst != src:
            state_copies.append((dst, src))
    overwritten = {dst for dst, _ in state_copies}
    if any(src in overwritten for _, src in state_copies):
        ctx.begin_instr(None)
        for pos, (dst, src) in enumerate(state_copies):
            if src in overwritten:
                decl = ctx.decl(src)
                tmp = ctx.scratch(decl.dtype, decl.shape, hint=f"snapshot_{src}")
                emit_copy(ctx, tmp, src, "snapshot_state")
                state_copies[pos] = (dst, tmp)
        ctx.end_instr()
    prog.copies.extend(state_copies)

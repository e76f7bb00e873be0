"""Lower fused "loop" and "reduce" groups (compiler/passes/fusion.py rules L1, D1-D3) to loop nests.

"loop": one nest over the iteration space S.  Dims of size 1 are dropped and neighbouring
dims that every operand reads the same way (all full, or all broadcast) are merged, so an
elementwise chain over ``[N,256]`` with a ``[256]`` bias stays two loops while one over
``[N,256]`` alone is one flat loop.  Each member is an expression; values used more than
once and the group's results are bound with ``Let`` first, then the results are stored — so
every load of an iteration happens before its stores (in-place updates stay correct).

"reduce": by the reduced axes (size-1 dims ignored):

(a) reduced axes not all leading (the common case, e.g. softmax's sum over the last axis):
    outer loops over the kept dims (parallel); per output element one ``DeclareAcc`` per
    reduction, inner loops over the reduced dims (innermost vectorize) computing the prologue
    inline and ``Accumulate``-ing, then the epilogue and the stores.  Prologue results are
    stored inside the inner loop.
(b) reduced axes leading and kept axes trailing (a bias gradient: sum over the batch of
    ``[N,256]``): initialize one accumulator buffer per reduction (the result buffer itself,
    or scratch), loop over the reduced dims outside and the kept dims inside (vectorized,
    unit stride) accumulating with Load+Store, then an epilogue loop over the outputs.
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.math import reduction_axes
from ..ir.types import Sym, dim_mul, int64, num_elements
from ..passes.fusion_rules import region_parts
from .combine import REDUCTION_COMBINE, combine_op, reduction_init
from .context import sanitize
from .indexing import (
    INDEXED,
    broadcast_index,
    const_expr,
    elementwise_expr,
    flat_index,
    i64,
    imax,
    loop_nest,
    size_expr,
)
from .kernel_ir import (
    Accumulate,
    Block,
    Cast,
    Const,
    DeclareAcc,
    Let,
    Load,
    Op,
    Store,
    Var,
)

PARALLEL_MIN_ELEMENTS = 4096  # mark the outer loop parallel from this many elements (or with N)



# ----------------------------------------------------------------------------- shared
class _Group:
    """One fused instr being lowered: its parts, operand buffers and the buffers it touches."""

    def __init__(self, ins, ctx):
        self.ins, self.ctx = ins, ctx
        self.parts = region_parts(ins)
        self.outer = dict(zip(ins.region.params, ins.operands))
        self.result_of = dict(zip(ins.region.yields, ins.results))
        self.reads, self.writes = [], []
        self.shapes = {}  # value -> shape it is read with (coalesced loops)
        self.const_buffers = {}
        counts = {}
        for sub in ins.region.body:
            for v in sub.operands:
                counts[v] = counts.get(v, 0) + 1
        self.shared = {v for v, c in counts.items() if c > 1} | set(ins.region.yields)
        self.env0 = {}
        for sub in ins.region.body:
            if sub.kind == "constant":
                self._constant(sub)

    def _constant(self, sub):
        data = np.asarray(sub.attrs["value"])
        if data.size == 1:
            self.env0[sub.result] = const_expr(data.reshape(()), sub.result.type.dtype)
        else:
            self.const_buffers[sub.result] = self.ctx.constant(data, sub.result.type.dtype,
                                                               hint=f"const_{sub.result.name}")

    def members(self, part) -> list:
        return [sub for sub in self.ins.region.body if self.parts.get(sub) == part]

    def read(self, v, space, idx):
        """The element of region value ``v`` (a param or a constant) at ``idx`` of ``space``."""
        if v in self.env0:
            return self.env0[v]
        buf = self.const_buffers.get(v) or self.ctx.buffer(self.outer[v])
        self.reads.append(buf)
        shape = self.shapes.get(v, v.type.shape)
        return Load(buf, broadcast_index(idx, space, shape), v.type.dtype)

    def values(self, members, env, space, idx) -> list:
        """Statements computing ``members`` at ``idx``: shared values and results get a Let."""
        stmts = []
        for sub in members:
            args = [env[v] if v in env else self.read(v, space, idx) for v in sub.operands]
            index = flat_index(idx, space) if sub.kind in INDEXED else None
            self.bind(sub.result, elementwise_expr(sub, args, index_expr=index), env, stmts)
        return stmts

    def bind(self, value, expr, env, stmts) -> None:
        """env[value] = expr, through a Let when the value is read more than once or stored."""
        if value in self.shared and not isinstance(expr, (Var, Const)):
            var = self.ctx.scalar("t", value.type.dtype)
            stmts.append(Let(var, expr))
            expr = var
        env[value] = expr

    def stores(self, values, env, space, idx) -> list:
        """Stores of the results among ``values`` at ``idx`` of ``space``."""
        out = []
        for v in values:
            if v in self.result_of:
                buf = self.ctx.buffer(self.result_of[v])
                self.writes.append(buf)
                out.append(Store(buf, flat_index(idx, space), env[v]))
        return out

    def emit(self, body):
        name = f"{self.ins.attrs.get('pattern')}_{sanitize(self.ins.loc)}"[:48]
        return self.ctx.emit(name, self.reads, self.writes, body)


def _parallel(shape) -> bool:
    count = num_elements(tuple(shape))
    return isinstance(count, Sym) or count >= PARALLEL_MIN_ELEMENTS


# ----------------------------------------------------------------------------- loop groups
def coalesce(space, shapes) -> tuple:
    """Merge neighbouring dims of ``space`` that every operand shape reads the same way.

    Returns ``(new_space, new_shapes)``: size-1 dims are dropped; dims i, i+1 merge when each
    operand is full in both or broadcast in both (at most one batch dim per merged dim).
    Row-major flat indices over ``new_space`` equal those over ``space``.
    """
    rank = len(space)
    masks = []
    for shape in shapes:
        lead = rank - len(shape)
        masks.append([i >= lead and shape[i - lead] != 1 for i in range(rank)])
    groups = []
    for i in (i for i in range(rank) if space[i] != 1):
        prev = groups[-1] if groups else None
        if prev and all(m[prev[-1]] == m[i] for m in masks) and not (
                isinstance(space[i], Sym) and any(isinstance(space[j], Sym) for j in prev)):
            prev.append(i)
        else:
            groups.append([i])
    new_space = []
    for g in groups:
        d = 1
        for i in g:
            d = dim_mul(d, space[i])
        new_space.append(d)
    new_shapes = [tuple(new_space[k] if m[g[0]] else 1 for k, g in enumerate(groups)) for m in masks]
    return tuple(new_space), new_shapes


def lower_loop(ins, ctx):
    """One loop nest over the group's space computing and storing every result."""
    group = _Group(ins, ctx)
    members = group.members("loop")
    space = tuple(members[0].result.type.shape)
    inputs = list(ins.region.params) + list(group.const_buffers)
    new_space, new_shapes = coalesce(space, [v.type.shape for v in inputs])
    group.shapes = dict(zip(inputs, new_shapes))
    loop_vars = [ctx.var() for _ in new_space]
    env = dict(group.env0)
    body = group.values(members, env, new_space, loop_vars)
    body += group.stores(ins.region.yields, env, new_space, loop_vars)
    nest = loop_nest(loop_vars, new_space, body, parallel_outer=_parallel(space), work=len(members))
    return group.emit(nest)


# ----------------------------------------------------------------------------- reduce groups
class _Reduce:
    """The facts of a reduce group: S_in, axes, keepdims, S_out, its reductions."""

    def __init__(self, group):
        self.group = group
        self.reds = group.members("red")
        first = self.reds[0]
        self.s_in = tuple(first.operands[0].type.shape)
        self.axes = reduction_axes(len(self.s_in), first.attrs["axes"])
        self.keepdims = bool(first.attrs["keepdims"])
        self.s_out = tuple(first.result.type.shape)
        self.kept = [d for d in range(len(self.s_in)) if d not in self.axes]

    def leading(self) -> bool:
        """Reduced axes (size > 1) all before the kept axes (size > 1), both present."""
        red = [a for a in self.axes if self.s_in[a] != 1]
        kept = [d for d in self.kept if self.s_in[d] != 1]
        return bool(red and kept) and max(red) < min(kept)

    def out_index(self, idx) -> list:
        """S_out index of the S_in position ``idx`` (reduced dims dropped, or 0 with keepdims)."""
        if self.keepdims:
            return [i64(0) if d in self.axes else idx[d] for d in range(len(self.s_in))]
        return [idx[d] for d in self.kept]

    def acc_dtype(self, red):
        dtype = red.result.type.dtype
        return int64 if red.kind == "reduce_mean" and dtype.is_integer else dtype

    def init(self, red):
        return reduction_init(red.kind, self.acc_dtype(red))

    def operand(self, red, expr):
        dtype = self.acc_dtype(red)
        return expr if expr.dtype == dtype else Cast(expr, dtype)

    def finish(self, red, acc):
        """The reduction's value from its accumulator (reduce_mean divides by the count)."""
        if red.kind != "reduce_mean":
            return acc
        dtype = red.result.type.dtype
        count = size_expr([self.s_in[a] for a in self.axes])
        if dtype.is_floating:
            return Op("div", (acc, Cast(count, dtype)), dtype)
        quotient = Op("div", (Op("abs", (acc,), int64), imax(count, 1)), int64)
        return Cast(Op("mul", (Op("sign", (acc,), int64), quotient), int64), dtype)


def _axis_vars(ctx, shape, dims, idx) -> tuple:
    """Loop vars for ``dims`` of ``shape`` (size-1 dims are index 0, no loop); fills ``idx``."""
    loop_vars, loop_shape = [], []
    for d in dims:
        if shape[d] == 1:
            idx[d] = i64(0)
        else:
            v = ctx.var()
            idx[d] = v
            loop_vars.append(v)
            loop_shape.append(shape[d])
    return loop_vars, loop_shape


def lower_reduce(ins, ctx):
    """A fused reduce group: strategy (b) for leading reduced axes, else (a) (module doc)."""
    red = _Reduce(_Group(ins, ctx))
    return _lower_leading(red, ctx) if red.leading() else _lower_inner(red, ctx)


def _prologue(red, ctx, idx) -> tuple:
    """Prologue statements and stores at S_in position ``idx``; returns (stmts, env)."""
    group = red.group
    env = dict(group.env0)
    stmts = group.values(group.members("pro"), env, red.s_in, idx)
    stmts += group.stores([s.result for s in group.members("pro")], env, red.s_in, idx)
    return stmts, env


def _epilogue(red, ctx, env, out_idx, stored=()) -> list:
    """Epilogue statements and stores of reduction/epilogue results at S_out ``out_idx``
    (except the values in ``stored``, already in their result buffer)."""
    group = red.group
    stmts = group.values(group.members("epi"), env, red.s_out, out_idx)
    values = [r.result for r in red.reds if r.result not in stored] + [s.result for s in group.members("epi")]
    return stmts + group.stores(values, env, red.s_out, out_idx)


def _lower_inner(red, ctx):
    """(a): per output element, accumulators over inner loops on the reduced axes."""
    group = red.group
    idx = [None] * len(red.s_in)
    outer_vars, outer_shape = _axis_vars(ctx, red.s_in, red.kept, idx)
    inner_vars, inner_shape = _axis_vars(ctx, red.s_in, red.axes, idx)
    inner, env = _prologue(red, ctx, idx)
    accs = {}
    for r in red.reds:
        accs[r] = ctx.scalar("acc", red.acc_dtype(r))
        value = env[r.operands[0]] if r.operands[0] in env else group.read(r.operands[0], red.s_in, idx)
        inner.append(Accumulate(accs[r], REDUCTION_COMBINE[r.kind], red.operand(r, value)))
    body = [DeclareAcc(accs[r], red.init(r)) for r in red.reds]
    body.append(loop_nest(inner_vars, inner_shape, inner, parallel_outer=False, work=len(inner)))
    epi_env = dict(group.env0)
    for r in red.reds:
        group.bind(r.result, red.finish(r, accs[r]), epi_env, body)
    body += _epilogue(red, ctx, epi_env, red.out_index(idx))
    nest = loop_nest(outer_vars, outer_shape, body, parallel_outer=_parallel(red.s_in),
                     vectorize_inner=False, work=len(body))
    return group.emit(nest)


def _acc_buffer(red, ctx, r) -> str:
    """Where reduction ``r`` accumulates in (b): its result buffer when it has one, else scratch."""
    group = red.group
    result = group.result_of.get(r.result)
    if result is not None and red.acc_dtype(r) == r.result.type.dtype:
        return ctx.buffer(result)
    return ctx.scratch(red.acc_dtype(r), red.s_out, hint=f"acc_{r.result.name}")


def _out_loop(red, ctx):
    """Fresh loops over S_out: (loop vars, loop shape, S_out index)."""
    idx = [None] * len(red.s_in)
    loop_vars, loop_shape = _axis_vars(ctx, red.s_in, red.kept, idx)
    return loop_vars, loop_shape, red.out_index(idx)


def _lower_leading(red, ctx):
    """(b): init accumulator buffers, reduced axes outer / kept axes inner, epilogue loop."""
    group = red.group
    bufs = {r: _acc_buffer(red, ctx, r) for r in red.reds}
    group.writes += list(bufs.values())
    group.reads += list(bufs.values())
    ov, oshape, oidx = _out_loop(red, ctx)
    flat = flat_index(oidx, red.s_out)
    init = loop_nest(ov, oshape, [Store(bufs[r], flat, red.init(r)) for r in red.reds], parallel_outer=False)
    idx = [None] * len(red.s_in)
    red_vars, red_shape = _axis_vars(ctx, red.s_in, red.axes, idx)
    kept_vars, kept_shape = _axis_vars(ctx, red.s_in, red.kept, idx)
    inner, env = _prologue(red, ctx, idx)
    flat = flat_index(red.out_index(idx), red.s_out)
    for r in red.reds:
        value = env[r.operands[0]] if r.operands[0] in env else group.read(r.operands[0], red.s_in, idx)
        dtype = red.acc_dtype(r)
        combined = Op(combine_op(REDUCTION_COMBINE[r.kind]), (Load(bufs[r], flat, dtype), red.operand(r, value)), dtype)
        inner.append(Store(bufs[r], flat, combined))
    main = loop_nest(red_vars + kept_vars, red_shape + kept_shape, inner, parallel_outer=False,
                     work=len(inner))
    ev, eshape, eidx = _out_loop(red, ctx)
    flat = flat_index(eidx, red.s_out)
    epi, env, stored = [], dict(group.env0), set()
    for r in red.reds:
        acc = Load(bufs[r], flat, red.acc_dtype(r))
        value = red.finish(r, acc)
        if value is acc and r.result in group.result_of and bufs[r] == ctx.buffer(group.result_of[r.result]):
            env[r.result] = acc  # a plain reduction: its result buffer already holds it
            stored.add(r.result)
        else:
            group.bind(r.result, value, env, epi)
    epi += _epilogue(red, ctx, env, eidx, stored)
    stmts = [init, main]
    if epi:
        stmts.append(loop_nest(ev, eshape, epi, parallel_outer=_parallel(red.s_out), work=len(epi)))
    return group.emit(Block(stmts))


"""Lower fused "contraction" groups (fusion rules C1-C4): a matmul or convolution anchor, a
prologue per matmul operand, and an elementwise epilogue.

* ``matmul`` → one ``Gemm``.  Batch dims are flattened into ``bidx`` (an operand with no
  batch dims, or only size-1 ones, has batch stride 0; one that broadcasts partially is first
  copied to scratch at the full batch shape).  A broadcast right operand over a plain left
  one folds the batch into M (one big GEMM).  A prologue (C2) runs first as a loop kernel
  writing its operand to scratch.
* the convolution kinds → ``conv_lowering.py`` (im2col / col2im around a Gemm, or direct loops
  for depthwise convolutions).

The epilogue is one statement per output element: a ``Let`` per epilogue member, then a
``Store`` of every result of the group (the anchor's own value too when it is one).  All loads
come before all stores, so results written in place over a state operand stay correct.
Operands are read with numpy broadcasting through an ``IndexSpace`` over the anchor's result
shape, so ``bias[col]`` costs no division.
"""
from __future__ import annotations

import numpy as np

from ..ir.types import int64
from ..passes.fusion_rules import region_parts
from .indexing import (INDEXED, add, const_expr, dim_expr, elementwise_expr, flat_index, i64, mul, size_expr,
                       strides, unflatten)
from .kernel_ir import Block, Expr, Gemm, Let, Load, Operand, Store, Var
from .plain_ops import emit_kernel, kernel_hint, nest

ROW, COL, BIDX = Var("row", int64), Var("col", int64), Var("bidx", int64)


class IndexSpace:
    """An iteration space whose consecutive dims form parts, each indexed by one i64 expression:
    the row-major flat index inside the part.  A Gemm epilogue over ``[batch.., M-dims.., N-dims..]``
    has parts ``(bidx, row, col)``; a loop nest has one part per dim (``IndexSpace.of_loop``)."""

    def __init__(self, parts):
        self.parts = [(tuple(dims), expr) for dims, expr in parts]
        self.shape = tuple(d for dims, _ in self.parts for d in dims)

    @classmethod
    def of_loop(cls, shape, loop_vars):
        return cls([((d,), v) for d, v in zip(shape, loop_vars)])

    def flat(self) -> Expr:
        """Row-major flat index of the element in the whole space."""
        if all(len(dims) == 1 for dims, _ in self.parts):
            return flat_index([e for _, e in self.parts], self.shape)
        out = i64(0)
        for dims, e in self.parts:
            out = add(mul(out, size_expr(dims)), e)
        return out

    def index(self, shape) -> Expr:
        """Flat index into an operand of ``shape`` read with numpy broadcasting at this element.

        A part on which the operand is full contributes ``part index * stride``; one on which it
        is broadcast contributes nothing; a mixed part is split into its dims.
        """
        if tuple(shape) == self.shape:
            return self.flat()
        shape = (1,) * (len(self.shape) - len(shape)) + tuple(shape)
        st = strides(shape)
        out, pos = i64(0), 0
        for dims, e in self.parts:
            sub_shape, sub_st = shape[pos:pos + len(dims)], st[pos:pos + len(dims)]
            pos += len(dims)
            if all(d == 1 for d in sub_shape):
                continue
            if sub_shape == dims:
                out = add(out, mul(e, sub_st[-1]))
                continue
            for d, s, ix in zip(sub_shape, sub_st, unflatten(e, dims)):
                if d != 1:
                    out = add(out, mul(ix, s))
        return out


class RegionScope:
    """A fused instr's region seen from its kernels: where its params and copied constants
    live, and the statements computing elementwise members at one element of a space."""

    def __init__(self, ins, ctx):
        self.ins, self.ctx = ins, ctx
        self.parts = region_parts(ins)
        self.anchor = next(sub for sub, part in self.parts.items() if part == "anchor")
        self.outer = dict(zip(ins.region.params, ins.operands))
        self.results = list(zip(ins.region.yields, ins.results))
        self.consts = {sub.result: np.asarray(sub.attrs["value"]) for sub, part in self.parts.items()
                       if part == "const"}
        self.const_buffers = {}

    def members(self, part) -> list:
        return [sub for sub in self.ins.region.body if self.parts.get(sub) == part]

    def hint(self, what="") -> str:
        return f"{what or 'contraction'}_{kernel_hint(self.anchor)}"

    def buffer_of(self, v) -> str:
        """The buffer holding region value ``v``: an outer operand's, or a copied constant's."""
        if v in self.outer:
            return self.ctx.buffer(self.outer[v])
        if v not in self.const_buffers:
            self.const_buffers[v] = self.ctx.constant(self.consts[v], v.type.dtype, hint=f"const_{v.name}")
        return self.const_buffers[v]

    def read(self, v, space: IndexSpace):
        """Element of a param or constant ``v`` at the current element of ``space`` (broadcast)."""
        if v in self.consts and self.consts[v].size == 1:
            return const_expr(self.consts[v].reshape(()), v.type.dtype)
        return Load(self.buffer_of(v), space.index(v.type.shape), v.type.dtype)

    def compute(self, members, env: dict, space: IndexSpace) -> list:
        """``Let`` statements computing ``members`` in order; ``env`` maps values to expressions."""
        stmts = []
        for sub in members:
            args = [env[v] if v in env else self.read(v, space) for v in sub.operands]
            index = space.flat() if sub.kind in INDEXED else None
            var = self.ctx.scalar("e", sub.result.type.dtype)
            stmts.append(Let(var, elementwise_expr(sub, args, index_expr=index)))
            env[sub.result] = var
        return stmts

    def epilogue(self, acc, space: IndexSpace) -> list:
        """The epilogue members at one output element given the anchor's value ``acc``, then a
        store of every result of the group."""
        env = {self.anchor.result: acc}
        stmts = self.compute(self.members("epi"), env, space)
        flat = space.flat()
        return stmts + [Store(self.ctx.buffer(r), flat, env[y]) for y, r in self.results]

    def trivial(self) -> bool:
        """Nothing but the anchor, whose value is the only result: a plain GEMM store."""
        return not self.members("epi") and [y for y, _ in self.results] == [self.anchor.result]

    def c_operand(self, n, batch_stride=None) -> Operand:
        """The Gemm's C: the anchor's result buffer when it is a result, else another result of
        its shape and dtype that the group does not read, else scratch (a renderer may use it
        as raw C before the epilogue's stores)."""
        a = self.anchor.result
        read = {self.ctx.buffer(v) for v in self.ins.operands}
        same = [r for y, r in self.results if y is a] + [
            r for _, r in self.results if r.type == a.type and self.ctx.buffer(r) not in read]
        name = self.ctx.buffer(same[0]) if same else self.ctx.scratch(a.type.dtype, a.type.shape, hint="gemm_c")
        return Operand(name, i64(0), dim_expr(n), batch_stride=batch_stride)

    def gemm(self, m, k, a: Operand, b: Operand, rows, cols, batch=()):
        """Emit ``C[batch.., rows.., cols..] = A'·B'`` (M = prod(rows), N = prod(cols)) with the
        group's epilogue over the anchor's result shape ``batch + rows + cols``."""
        return emit_kernel(self.ctx, self.hint("gemm"), self.gemm_stmt(m, k, a, b, rows, cols, batch))

    def gemm_stmt(self, m, k, a: Operand, b: Operand, rows, cols, batch=(), split=None) -> Gemm:
        """The ``Gemm`` statement of ``gemm`` (not emitted), with an optional ``ItemSplit``."""
        n = size_expr(cols)
        stride = mul(size_expr(rows), n) if batch else None
        dtype = self.anchor.result.type.dtype
        if self.trivial():
            c, epilogue = self.c_operand(n, stride), None
        else:
            c = self.c_operand(n, stride)
            space = IndexSpace(([(batch, BIDX)] if batch else []) + [(rows, ROW), (cols, COL)])
            epilogue = Block(self.epilogue(Var("acc", dtype), space))
        return Gemm(m, n, k, a, b, c, batch=size_expr(batch) if batch else None, epilogue=epilogue, split=split)


# ----------------------------------------------------------------------------- entry point
def lower_contraction(ins, ctx) -> None:
    """Append the kernels of one fused contraction group."""
    scope = RegionScope(ins, ctx)
    if scope.anchor.kind == "matmul":
        _lower_matmul(scope)
        return
    from .conv_lowering import lower_conv

    lower_conv(scope)


# ----------------------------------------------------------------------------- matmul
def _lower_matmul(scope: RegionScope) -> None:
    anchor = scope.anchor
    a, b = anchor.operands
    ta, tb = bool(anchor.attrs["transpose_a"]), bool(anchor.attrs["transpose_b"])
    out = tuple(anchor.result.type.shape)
    batch, (m, n) = out[:-2], out[-2:]
    k = a.type.shape[-2] if ta else a.type.shape[-1]
    a_buf, a_stride = _operand(scope, a, 0, batch)
    b_buf, b_stride = _operand(scope, b, 1, batch)
    a_op = Operand(a_buf, i64(0), dim_expr(a.type.shape[-1]), ta)
    b_op = Operand(b_buf, i64(0), dim_expr(b.type.shape[-1]), tb)
    if batch and not ta and b_stride is None and a_stride is not None:
        # [batch.., M, K] x [K, N]: one GEMM with the batch folded into M
        scope.gemm(size_expr(batch + (m,)), dim_expr(k), a_op, b_op, batch + (m,), (n,))
        return
    if batch:
        zero = i64(0)
        a_op = Operand(a_buf, zero, a_op.ld, ta, a_stride if a_stride is not None else zero)
        b_op = Operand(b_buf, zero, b_op.ld, tb, b_stride if b_stride is not None else zero)
    scope.gemm(dim_expr(m), dim_expr(k), a_op, b_op, (m,), (n,), batch)


def _operand(scope: RegionScope, v, slot: int, batch) -> tuple:
    """(buffer, batch stride or None when broadcast) of matmul operand ``v``: its prologue's
    scratch, a broadcast copy at the full batch shape, or the param / constant buffer."""
    shape = tuple(v.type.shape)
    prologue = scope.members(f"pro{slot}")
    name = _prologue(scope, v, prologue) if prologue else scope.buffer_of(v)
    own = (1,) * (len(batch) - len(shape[:-2])) + shape[:-2]
    matrix = mul(dim_expr(shape[-2]), dim_expr(shape[-1]))
    if all(d == 1 for d in own):
        return name, None
    if own == tuple(batch):
        return name, matrix
    return _broadcast_copy(scope, name, v, tuple(batch) + shape[-2:]), matrix


def _prologue(scope: RegionScope, v, members) -> str:
    """A loop kernel computing prologue ``members`` over ``v``'s shape into scratch."""
    ctx, shape = scope.ctx, tuple(v.type.shape)
    dst = ctx.scratch(v.type.dtype, shape, hint=f"prologue_{v.name}")

    def body(loop_vars):
        space = IndexSpace.of_loop(shape, loop_vars)
        env = {}
        stmts = scope.compute(members, env, space)
        return stmts + [Store(dst, space.flat(), env[v])]

    emit_kernel(ctx, scope.hint("prologue"), nest(ctx, shape, body, work=len(members)))
    return dst


def _broadcast_copy(scope: RegionScope, src: str, v, shape) -> str:
    """Copy operand ``v`` (in ``src``) broadcast to ``shape`` into scratch."""
    ctx = scope.ctx
    dst = ctx.scratch(v.type.dtype, shape, hint=f"bcast_{v.name}")

    def body(loop_vars):
        space = IndexSpace.of_loop(shape, loop_vars)
        return [Store(dst, flat_index(loop_vars, shape), Load(src, space.index(v.type.shape), v.type.dtype))]

    emit_kernel(ctx, scope.hint("broadcast"), nest(ctx, shape, body))
    return dst

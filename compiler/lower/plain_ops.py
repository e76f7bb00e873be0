"""Lower the plain (unfused) instr kinds to loop kernels: array ops here, indexing, pooling and
the other NN kinds in ``plain_nn.py``.

Every kernel is a loop nest over its result (or, for scatters, over its input), written with
the helpers below: ``emit_kernel`` reads the kernel's buffers off its body, ``nest`` builds a
loop nest, ``clamp`` / ``all_of`` / ``select`` keep window loads inside their buffer (the
kernel IR evaluates both arms of a select, so an out-of-range position is loaded at a clamped
index and then masked).

Shapes may hold the batch dim (``Sym``): every size goes through ``indexing.dim_expr``.
"""
from __future__ import annotations

import dataclasses

from ..ir.function import Instr, Region, Value
from ..ir.types import Sym, bool_, int64, num_elements
from .context import sanitize
from .indexing import (add, broadcast_index, const_expr, dim_expr, flat_index, i64, imax, imin, imod, loop_nest,
                       mul, strides, sub)
from .kernel_ir import Accumulate, Block, Cast, Check, DeclareAcc, Expr, Gemm, Load, Op, Operand, Stmt, Store


# ----------------------------------------------------------------------------- shared helpers
def _collect(node, reads: list, writes: list) -> None:
    """Walk a statement/expression tree, listing the buffers it loads and stores."""
    if isinstance(node, (list, tuple)):
        for x in node:
            _collect(x, reads, writes)
        return
    if isinstance(node, Load):
        reads.append(node.buffer)
    elif isinstance(node, Store):
        writes.append(node.buffer)
    elif isinstance(node, Gemm):
        reads += [node.a.buffer, node.b.buffer] + ([node.c.buffer] if node.accumulate else [])
        writes.append(node.c.buffer)
    if isinstance(node, (Stmt, Expr, Operand)) and dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, (Stmt, Expr, Operand, list, tuple)):
                _collect(value, reads, writes)


def emit_kernel(ctx, hint: str, body):
    """Append a kernel whose ``reads``/``writes`` are every buffer its body loads/stores."""
    body = Block(list(body)) if isinstance(body, (list, tuple)) else body
    reads, writes = [], []
    _collect(body, reads, writes)
    return ctx.emit(hint[:48], reads, writes, body)


def kernel_hint(ins) -> str:
    return sanitize(f"{ins.kind}_{ins.loc}")


def nest(ctx, shape, make_body, parallel=True, vectorize=True, work=1) -> Stmt:
    """A loop nest over ``shape``; ``make_body(vars)`` gives the innermost statements."""
    loop_vars = [ctx.var() for _ in shape]
    return loop_nest(loop_vars, tuple(shape), make_body(loop_vars), parallel_outer=parallel,
                     vectorize_inner=vectorize, work=work)


def clamp(e, low, high) -> Expr:
    """``e`` limited to ``[low, high]`` (i64): a safe index for a masked load."""
    return imin(imax(e, low), high)


def cmp(kind: str, a, b) -> Expr:
    """A comparison of two i64 (or same-dtype) expressions, as bool."""
    a = i64(a) if isinstance(a, int) else a
    b = i64(b) if isinstance(b, int) else b
    return Op(kind, (a, b), bool_)


def all_of(*conds) -> Expr:
    """Logical and of bool expressions (True when there are none)."""
    conds = [c for c in conds if c is not None]
    if not conds:
        return const_expr(True, bool_)
    out = conds[0]
    for c in conds[1:]:
        out = Op("logical_and", (out, c), bool_)
    return out


def any_of(*conds) -> Expr:
    out = conds[0]
    for c in conds[1:]:
        out = Op("logical_or", (out, c), bool_)
    return out


def select(cond, a, b) -> Expr:
    return Op("select", (cond, a, b), a.dtype)


def as_i64(e) -> Expr:
    return e if e.dtype == int64 else Cast(e, int64)


def zero(dtype) -> Expr:
    return const_expr(0, dtype)


def fill(ctx, name: str, shape, value) -> Stmt:
    """A loop nest storing ``value`` into every element of buffer ``name`` (of ``shape``)."""
    return nest(ctx, [num_elements(tuple(shape))] if shape else [], lambda v: [Store(name, v[0] if v else i64(0), value)])


def check_message(ins, text: str) -> str:
    """A Check message in the interpreter's words: ``kind (loc) failed: text`` (braces escaped
    except the ``{value}`` placeholder)."""
    head = f"{ins.kind} ({ins.loc or '%' + ins.result.name}) failed: "
    return head.replace("{", "{{").replace("}", "}}") + text


# ----------------------------------------------------------------------------- entry point
def lower_plain(ins, ctx) -> None:
    """Append the kernels of one plain (unfused) instr."""
    from . import plain_nn

    kind = ins.kind
    if kind == "constant":
        return  # program.py gives constants their const buffer
    lower = ARRAY_KINDS.get(kind) or plain_nn.KINDS.get(kind)
    if lower is not None:
        lower(ins, ctx)
        return
    from ..passes.fusion_rules import classify

    cls = classify(ins)
    if cls in ("elementwise", "reduction", "contraction"):
        _lower_as_group(ins, ctx, cls)
        return
    raise NotImplementedError(f"no kernel lowering for op kind {kind!r} ({ins.loc})")


def _lower_as_group(ins, ctx, cls: str) -> None:
    """A fusible kind fusion left alone: lower it as a fused group of one member."""
    params = [Value(f"p{i}", v.type) for i, v in enumerate(ins.operands)]
    inner = [Value(f"r{i}", v.type) for i, v in enumerate(ins.results)]
    body = [Instr(ins.kind, params, ins.attrs, inner, ins.loc)]
    pattern = {"elementwise": "loop", "reduction": "reduce", "contraction": "contraction"}[cls]
    group = Instr("fused", ins.operands, {"pattern": pattern}, ins.results, ins.loc,
                  region=Region(params, body, inner), buffers=ins.buffers)
    for v in ins.results:  # Instr() claimed them: they still belong to ins
        v.producer = ins
    if pattern == "contraction":
        from .contraction import lower_contraction

        lower_contraction(group, ctx)
    else:
        from . import loops

        (loops.lower_loop if pattern == "loop" else loops.lower_reduce)(group, ctx)


# ----------------------------------------------------------------------------- array kinds
def out_nest(ins, ctx, make_body, vectorize=True, work=1):
    """One kernel: a loop nest over the result; ``make_body(vars)`` does the stores."""
    body = nest(ctx, ins.result.type.shape, make_body, vectorize=vectorize, work=work)
    return emit_kernel(ctx, kernel_hint(ins), body)


def store_out(ctx, ins, v, value) -> Store:
    """Store ``value`` as element ``v`` (loop vars) of the result."""
    return Store(ctx.buffer(ins.result), flat_index(v, ins.result.type.shape), value)


def _out_loop(ins, ctx, value_of, vectorize=True):
    """One kernel: a loop nest over the result storing ``value_of(loop vars)`` at each element."""
    return out_nest(ins, ctx, lambda v: [store_out(ctx, ins, v, value_of(v))], vectorize=vectorize)


def _load(ctx, value, index) -> Load:
    return Load(ctx.buffer(value), index, value.type.dtype)


def _transpose(ins, ctx):
    x, perm = ins.operands[0], list(ins.attrs["perm"])
    st = strides(x.type.shape)

    def value(v):
        index = i64(0)
        for i, p in enumerate(perm):
            index = add(index, mul(v[i], st[p]))
        return _load(ctx, x, index)

    _out_loop(ins, ctx, value, vectorize=not perm or perm[-1] == len(perm) - 1)


def slice_start(begin, dim) -> Expr:
    """The first element of a slice window along one axis (negative begins count from the end)."""
    if isinstance(begin, Sym):
        return dim_expr(begin)
    return add(dim_expr(dim), begin) if begin < 0 else i64(begin)


def _window_index(x_shape, begin, stride_attr, v) -> Expr:
    """Flat index in ``x_shape`` of window element ``v`` (begin + v*stride per axis)."""
    idx = [add(slice_start(b, d), mul(i, st)) for d, b, st, i in zip(x_shape, begin, stride_attr, v)]
    return flat_index(idx, x_shape)


def _slice(ins, ctx):
    x = ins.operands[0]
    a = ins.attrs
    _out_loop(ins, ctx, lambda v: _load(ctx, x, _window_index(x.type.shape, a["begin"], a["strides"], v)))


def _strided_slice_grad(ins, ctx):
    """Zeros of the result shape, then the gradient stored into the slice window."""
    g, out = ins.operands[0], ins.result
    shape, dst = tuple(out.type.shape), ctx.buffer(out)
    begin, st = ins.attrs["begin"], ins.attrs["strides"]
    scatter = nest(ctx, g.type.shape, lambda v: [
        Store(dst, _window_index(shape, begin, st, v), _load(ctx, g, flat_index(v, g.type.shape)))])
    emit_kernel(ctx, kernel_hint(ins), [fill(ctx, dst, shape, zero(out.type.dtype)), scatter])


def _concat(ins, ctx):
    """One loop nest per input, each storing at its offset along the axis."""
    out = ins.result
    shape, dst = tuple(out.type.shape), ctx.buffer(out)
    axis = ins.attrs["axis"] % len(shape)
    loops, offset = [], i64(0)
    for x in ins.operands:
        def body(v, x=x, offset=offset):
            at = list(v)
            at[axis] = add(v[axis], offset)
            return [Store(dst, flat_index(at, shape), _load(ctx, x, flat_index(v, x.type.shape)))]

        loops.append(nest(ctx, x.type.shape, body))
        offset = add(offset, dim_expr(x.type.shape[axis]))
    emit_kernel(ctx, kernel_hint(ins), loops)


def pad_source(j, d, mode: str):
    """Source index along one axis of unpadded position ``j`` (may be out of range for CONSTANT)."""
    if mode == "CONSTANT":
        return j
    shift = 0 if mode == "REFLECT" else 1
    j = select(cmp("less", j, 0), sub(i64(-shift), j), j)
    return select(cmp("greater_equal", j, dim_expr(d)), sub(i64(2 * (d - 1) + shift), j), j)


def _pad(ins, ctx):
    x, a = ins.operands[0], ins.attrs
    x_shape, mode = tuple(x.type.shape), a["mode"]
    fill_value = const_expr(a.get("constant_values", 0), x.type.dtype)
    if num_elements(x_shape) == 0:
        _out_loop(ins, ctx, lambda v: fill_value)
        return

    def value(v):
        idx, valid = [], []
        for i, d, (lo, hi) in zip(v, x_shape, a["paddings"]):
            j = sub(i, lo) if lo else i
            if (lo or hi) and mode == "CONSTANT":
                valid.append(all_of(cmp("greater_equal", j, 0), cmp("less", j, d)))
                j = clamp(j, 0, d - 1)
            elif lo or hi:
                j = pad_source(j, d, mode)
            idx.append(j)
        load = _load(ctx, x, flat_index(idx, x_shape))
        return select(all_of(*valid), load, fill_value) if valid else load

    _out_loop(ins, ctx, value)


def _pad_grad(ins, ctx):
    """Gather form of pad's adjoint: each element sums the padded positions copied from it
    (itself, and for REFLECT/SYMMETRIC its mirror in the left and right padding per axis)."""
    g, out, a = ins.operands[0], ins.result, ins.attrs
    g_shape, mode, dtype = tuple(g.type.shape), a["mode"], out.type.dtype
    padded = [(axis, lo, hi) for axis, (lo, hi) in enumerate(a["paddings"]) if lo or hi]
    shift = 0 if mode == "REFLECT" else 1

    def body(v):
        if mode == "CONSTANT" or not padded:
            idx = [add(i, lo) for i, (lo, _) in zip(v, a["paddings"])]
            return [Store(ctx.buffer(out), flat_index(v, out.type.shape), _load(ctx, g, flat_index(idx, g_shape)))]
        acc = ctx.scalar("acc", dtype)
        cands = [ctx.var("t") for _ in padded]
        idx, valid = [add(i, lo) for i, (lo, _) in zip(v, a["paddings"])], []
        for t, (axis, lo, hi) in zip(cands, padded):
            j, d = v[axis], out.type.shape[axis]
            left, right = sub(i64(-shift), j), sub(i64(2 * (d - 1) + shift), j)
            pos = select(cmp("equal", t, 0), j, select(cmp("equal", t, 1), left, right))
            valid.append(any_of(cmp("equal", t, 0),
                                all_of(cmp("equal", t, 1), cmp("greater_equal", left, -lo), cmp("less", left, 0)),
                                all_of(cmp("equal", t, 2), cmp("greater_equal", right, d),
                                       cmp("less", right, d + hi))))
            idx[axis] = clamp(add(pos, lo), 0, lo + d + hi - 1)
        term = select(all_of(*valid), _load(ctx, g, flat_index(idx, g_shape)), zero(dtype))
        inner = loop_nest(cands, (3,) * len(cands), [Accumulate(acc, "add", term)], parallel_outer=False,
                          vectorize_inner=False)
        return [DeclareAcc(acc, zero(dtype)), inner, Store(ctx.buffer(out), flat_index(v, out.type.shape), acc)]

    out_nest(ins, ctx, body, vectorize=mode == "CONSTANT" or not padded)


def _tile(ins, ctx):
    x = ins.operands[0]
    x_shape, mult = tuple(x.type.shape), ins.attrs["multiples"]
    _out_loop(ins, ctx, lambda v: _load(ctx, x, flat_index(
        [i if m == 1 else imod(i, dim_expr(d)) for i, d, m in zip(v, x_shape, mult)], x_shape)))


def _broadcast_to(ins, ctx):
    x, shape = ins.operands[0], tuple(ins.result.type.shape)
    _out_loop(ins, ctx, lambda v: _load(ctx, x, broadcast_index(v, shape, x.type.shape)))


def _shape(ins, ctx):
    """The operand's runtime shape (``Batch()`` for batch dims) as int32/int64."""
    out = ins.result
    dtype = out.type.dtype
    stores = [Store(ctx.buffer(out), i64(i), Cast(dim_expr(d), dtype)) for i, d in enumerate(ins.operands[0].type.shape)]
    emit_kernel(ctx, kernel_hint(ins), stores)


def _check_range(ins, ctx):
    """Fail with the interpreter's message on the first element outside [low, high), then copy."""
    x, out, a = ins.operands[0], ins.result, ins.attrs
    dtype, shape = x.type.dtype, tuple(x.type.shape)
    what = str(a["what"]).replace("{", "{{").replace("}", "}}")
    message = check_message(ins, f"{what}: received a value of {{value}} which is outside the valid range "
                                 f"of [{a['low']}, {a['high']})")

    def check(v):
        value = _load(ctx, x, flat_index(v, shape))
        bad = any_of(cmp("less", value, const_expr(a["low"], dtype)), cmp("greater_equal", value, const_expr(a["high"], dtype)))
        return [Check(bad, message, value)]

    stmts = [nest(ctx, shape, check, parallel=False, vectorize=False)]
    if ctx.buffer(out) != ctx.buffer(x):
        stmts.append(nest(ctx, shape, lambda v: [Store(ctx.buffer(out), flat_index(v, shape),
                                                       _load(ctx, x, flat_index(v, shape)))]))
    emit_kernel(ctx, kernel_hint(ins), stmts)


def _view(ins, ctx):
    """identity / reshape / stop_gradient whose result did not get its operand's bytes: a copy."""
    x = ins.operands[0]
    if ctx.buffer(x) == ctx.buffer(ins.result):
        return
    count = num_elements(tuple(x.type.shape))
    body = nest(ctx, [count], lambda v: [Store(ctx.buffer(ins.result), v[0], _load(ctx, x, v[0]))])
    emit_kernel(ctx, kernel_hint(ins), body)


ARRAY_KINDS = {
    "transpose": _transpose, "slice": _slice, "strided_slice_grad": _strided_slice_grad,
    "concat": _concat, "pad": _pad, "pad_grad": _pad_grad, "tile": _tile,
    "broadcast_to": _broadcast_to, "shape": _shape, "check_range": _check_range,
    "reshape": _view, "identity": _view, "stop_gradient": _view,
}

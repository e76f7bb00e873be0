"""Backend-neutral walks over kernel-IR trees: the statements inside a statement, the
expressions a statement evaluates (both backends' analyses start from these), and the
rough sizes the scheduling pass weighs (static trip counts, work)."""
from __future__ import annotations

import dataclasses

from . import kernel_ir as K


def sub_stmts(s):
    """The statements directly inside ``s``."""
    if isinstance(s, K.Block):
        return list(s.body)
    if isinstance(s, K.For):
        return [s.body]
    if isinstance(s, K.If):
        return [s.then]
    if isinstance(s, K.Gemm) and s.epilogue is not None:
        return [s.epilogue]
    return []


def iter_stmts(s):
    """``s`` and every statement inside it, depth first."""
    yield s
    for sub in sub_stmts(s):
        yield from iter_stmts(sub)


def stmt_exprs(s):
    """The expressions a statement evaluates itself (not those of nested statements)."""
    if isinstance(s, K.For):
        return [s.start, s.stop]
    if isinstance(s, (K.Let, K.Accumulate)):
        return [s.value]
    if isinstance(s, K.DeclareAcc):
        return [s.init]
    if isinstance(s, K.Store):
        return [s.index, s.value]
    if isinstance(s, K.If):
        return [s.cond]
    if isinstance(s, K.Check):
        return [s.cond, s.value]
    if isinstance(s, K.Gemm):
        out = [s.m, s.n, s.k] + ([s.batch] if s.batch is not None else [])
        for op in (s.a, s.b, s.c):
            out += [op.offset, op.ld] + ([op.batch_stride] if op.batch_stride is not None else [])
        return out
    return []


def iter_exprs(e):
    """``e`` and all its sub-expressions."""
    yield e
    if isinstance(e, K.Load):
        yield from iter_exprs(e.index)
    elif isinstance(e, K.Op):
        for a in e.args:
            yield from iter_exprs(a)
    elif isinstance(e, K.Cast):
        yield from iter_exprs(e.value)
    elif isinstance(e, K.Random):
        yield from iter_exprs(e.index)
        yield from iter_exprs(e.step)


def static_trip(loops):
    """The product of the trip counts, or None when it depends on N (or is not constant)."""
    total = 1
    for f in loops:
        if not (isinstance(f.start, K.Const) and isinstance(f.stop, K.Const)):
            return None
        total *= max(0, f.stop.value - f.start.value)
    return total


def stmt_work(s) -> int:
    """Rough scalar operations of one run of ``s`` (loops whose trip grows with N count once)."""
    if isinstance(s, K.Block):
        return sum(stmt_work(x) for x in s.body)
    if isinstance(s, K.For):
        return (static_trip([s]) or 1) * max(1, stmt_work(s.body))
    if isinstance(s, K.If):
        return 1 + stmt_work(s.then)
    return 1


def substitute(node, values: dict, buffer: str | None = None):
    """``node`` (a statement, expression or operand) with every ``Var`` named in ``values``
    replaced by its expression; with ``buffer``, only inside the indices of that buffer's
    loads and stores (e.g. an item's rows of a scratch matrix moved to a thread's slot)."""
    if isinstance(node, K.Var):
        return values.get(node.name, node) if buffer is None else node
    if isinstance(node, (list, tuple)):
        return type(node)(substitute(x, values, buffer) for x in node)
    if not isinstance(node, (K.Expr, K.Stmt, K.Operand)) or not dataclasses.is_dataclass(node):
        return node
    if buffer is not None and isinstance(node, (K.Load, K.Store)) and node.buffer == buffer:
        node = dataclasses.replace(node, index=substitute(node.index, values))
        return node if isinstance(node, K.Load) else dataclasses.replace(node, value=substitute(node.value, values, buffer))
    changes = {}
    for f in dataclasses.fields(node):
        old = getattr(node, f.name)
        new = substitute(old, values, buffer)
        if new is not old:
            changes[f.name] = new
    return dataclasses.replace(node, **changes) if changes else node

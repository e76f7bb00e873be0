"""The copy kernel: one buffer into another, element by element (program.py, control_flow.py)."""
from __future__ import annotations

from .indexing import i64, size_expr
from .kernel_ir import For, Load, Store


def emit_copy(ctx, dst: str, src: str, hint="copy"):
    """A kernel copying buffer ``src`` into ``dst`` element by element (same element count)."""
    decl = ctx.decl(src)
    i = ctx.var()
    body = Store(dst, i, Load(src, i, decl.dtype))
    loop = For(i, i64(0), size_expr(decl.shape), body, parallel=True, vectorize=True)
    return ctx.emit(hint, [src], [dst], loop)

"""Walks over kernel-IR trees: statements, their expressions, variables they read or bind.

The renderer asks these questions before emitting a loop: can it be vectorized (only
``Let``/``Store``/``Accumulate``/``DeclareAcc`` inside), which outer accumulators does it
combine into, which outer variables must an outlined (parallel) body or a GEMM epilogue
receive as arguments.
"""
from __future__ import annotations

from ...lower import kernel_ir as K
from ...lower.kernel_walk import iter_exprs, iter_stmts, stmt_exprs, sub_stmts  # noqa: F401 (re-exported)

GEMM_VARS = ("acc", "row", "col", "bidx")


def all_exprs(s):
    """Every expression (and sub-expression) evaluated anywhere inside statement ``s``."""
    for st in iter_stmts(s):
        for e in stmt_exprs(st):
            yield from iter_exprs(e)


def read_vars(s) -> set:
    """Names of the variables read anywhere inside ``s``."""
    return {e.name for e in all_exprs(s) if isinstance(e, K.Var)}


def accumulated(s) -> dict:
    """{accumulator name: combines used} for every ``Accumulate`` inside ``s``."""
    out = {}
    for st in iter_stmts(s):
        if isinstance(st, K.Accumulate):
            out.setdefault(st.var.name, set()).add(st.combine)
    return out


def declared_accs(s) -> set:
    """Names of the accumulators declared inside ``s``."""
    return {st.var.name for st in iter_stmts(s) if isinstance(st, K.DeclareAcc)}


def dtypes_used(s) -> set:
    """The short names of every dtype an expression inside ``s`` has."""
    return {e.dtype.short for e in all_exprs(s) if getattr(e, "dtype", None) is not None}

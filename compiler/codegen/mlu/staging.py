"""NRAM staging of a split loop's elementwise buffers (docs/codegen-mlu.md, "NRAM tiles").

A buffer every access of which, in the loop's body, is at exactly the loop's index (``x[i]``)
or at the loop's row (``x[i * C + j]``, the body holding one loop ``j`` over ``[0, C)``) is
*staged*: each task walks its contiguous span of iterations in tiles of about ``TILE``
elements (``TILE // C`` rows, at least one), copies the tile of every staged buffer GDRAM -> NRAM (``__memcpy(...,
GDRAM2NRAM)``), runs the iterations on the NRAM tiles (scalar code), and copies the tiles of
the staged buffers it stores back NRAM -> GDRAM.  Other buffers (broadcast operands,
gathers) stay scalar accesses to GDRAM.  ``staged_buffers`` picks them, ``retarget`` rewrites
their accesses to the tile-local index.  Bodies with an exact vector form run as
``__bang_*`` intrinsics instead of scalar code (``vector.py``, ``pipeline.py``).
"""
from __future__ import annotations

from dataclasses import replace

from ...ir.types import as_dtype
from ...lower import kernel_ir as K

TILE = 1024  # elements per NRAM tile (8 KiB at most; a multiple of the 128-byte vector length)
LOCAL = K.Var("kiln_t", as_dtype("int64"))  # the index inside the tile


def accesses(tree, out: list) -> list:
    """``(buffer, index, is_store)`` of every load and store under ``tree``."""
    if isinstance(tree, (list, tuple)):
        for t in tree:
            accesses(t, out)
        return out
    if isinstance(tree, (K.Load, K.Store)):
        out.append((tree.buffer, tree.index, isinstance(tree, K.Store)))
    if isinstance(tree, (K.Expr, K.Stmt)):
        for name in tree.__dataclass_fields__:
            value = getattr(tree, name)
            if isinstance(value, (K.Expr, K.Stmt, list, tuple)):
                accesses(value, out)
    return out


def index_forms(loop: K.For) -> dict:
    """Stageable index forms -> ``(elements per iteration, the form in the tile)``: ``x[i]``,
    and ``x[i * C + j]`` when the body holds one loop ``j`` over ``[0, C)`` (a row per
    iteration; other statements around it, e.g. an accumulator declared before it and the
    row's result stored after it)."""
    forms = {loop.var: (1, LOCAL)}
    body = loop.body.body if isinstance(loop.body, K.Block) else [loop.body]
    loops = [s for s in body if isinstance(s, K.For)]
    inner = loops[0] if len(loops) == 1 else None
    i64 = loop.var.dtype
    if isinstance(inner, K.For) and inner.start == K.Const(0, i64) and isinstance(inner.stop, K.Const) \
            and int(inner.stop.value) > 0:
        size = K.Const(int(inner.stop.value), i64)
        row = (lambda var: K.Op("add", (K.Op("mul", (var, size), i64), inner.var), i64))
        forms[row(loop.var)] = (int(size.value), row(LOCAL))
    return forms


def staged_buffers(loop: K.For, buffers: dict, nram_bytes: int) -> tuple:
    """``(units, stored, rows)``: the buffers every access of which has one stageable form
    (name -> elements per iteration), those of them the loop stores, and the iterations per
    tile; no buffers when their tiles would not fit ``nram_bytes``."""
    forms = index_forms(loop)
    found, stored = {}, set()
    for name, index, is_store in accesses(loop.body, []):
        found.setdefault(name, set()).add(index)
        if is_store:
            stored.add(name)
    units = {n: forms[next(iter(idx))][0] for n, idx in found.items() if len(idx) == 1 and next(iter(idx)) in forms}
    rows = max(1, TILE // max(units.values(), default=1))
    if sum(rows * u * buffers[n].dtype.np.itemsize for n, u in units.items()) > nram_bytes:
        return {}, set(), rows
    return units, stored & set(units), rows


def retarget(tree, staged: set, forms: dict):
    """``tree`` with the accesses of ``staged`` buffers at their form in the tile (``forms``:
    ``index_forms(loop)``)."""
    if isinstance(tree, list):
        return [retarget(t, staged, forms) for t in tree]
    if isinstance(tree, tuple):
        return tuple(retarget(t, staged, forms) for t in tree)
    if not isinstance(tree, (K.Expr, K.Stmt)):
        return tree
    if isinstance(tree, (K.Load, K.Store)) and tree.buffer in staged:
        tree = replace(tree, index=forms[tree.index][1])
    changes = {}
    for name in tree.__dataclass_fields__:
        value = getattr(tree, name)
        if isinstance(value, (K.Expr, K.Stmt, list, tuple)):
            new = retarget(value, staged, forms)
            if new != value:
                changes[name] = new
    return replace(tree, **changes) if changes else tree


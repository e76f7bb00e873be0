"""NRAM staging of a split loop's elementwise buffers (docs/codegen-mlu.md, "NRAM tiles").

A buffer every access of which, in the loop's body, is at exactly the loop's index (``x[i]``)
or at the loop's row (``x[i * C + j]``, the body being one loop ``j`` over ``[0, C)``) is
*staged*: each task walks its contiguous span of iterations in tiles of about ``TILE``
elements (``TILE // C`` rows, at least one), copies the tile of every staged buffer GDRAM -> NRAM (``__memcpy(...,
GDRAM2NRAM)``), runs the iterations on the NRAM tiles (scalar code), and copies the tiles of
the staged buffers it stores back NRAM -> GDRAM.  Other buffers (broadcast operands,
gathers) stay scalar accesses to GDRAM.  ``staged_buffers`` picks them, ``retarget`` rewrites
their accesses to the tile-local index.
"""
from __future__ import annotations

from dataclasses import replace

from ...ir.types import as_dtype
from ...lower import kernel_ir as K

TILE = 1024  # elements per NRAM tile (8 KiB at most; a multiple of the 128-byte vector length)
LOCAL = K.Var("kiln_t", as_dtype("int64"))  # the index inside the tile


def _accesses(tree, out: list) -> list:
    """``(buffer, index, is_store)`` of every load and store under ``tree``."""
    if isinstance(tree, (list, tuple)):
        for t in tree:
            _accesses(t, out)
        return out
    if isinstance(tree, (K.Load, K.Store)):
        out.append((tree.buffer, tree.index, isinstance(tree, K.Store)))
    if isinstance(tree, (K.Expr, K.Stmt)):
        for name in tree.__dataclass_fields__:
            value = getattr(tree, name)
            if isinstance(value, (K.Expr, K.Stmt, list, tuple)):
                _accesses(value, out)
    return out


def index_forms(loop: K.For) -> dict:
    """Stageable index forms -> ``(elements per iteration, the form in the tile)``: ``x[i]``,
    and ``x[i * C + j]`` when the body is one loop ``j`` over ``[0, C)`` (a row per iteration)."""
    forms = {loop.var: (1, LOCAL)}
    inner = loop.body.body[0] if isinstance(loop.body, K.Block) and len(loop.body.body) == 1 else loop.body
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
    for name, index, is_store in _accesses(loop.body, []):
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


# float32 ops whose __bang_* intrinsic rounds like the scalar op (IEEE add, sub, mul)
VECTOR_BINARY = {"add": "__bang_add", "sub": "__bang_sub", "mul": "__bang_mul"}
VECTOR_LANES = 128 // 4  # float32 elements of one 128-byte vector group


def vector_form(loop: K.For, staged: list):
    """``(intrinsic, dst, (src0, src1))`` when the loop's body is one float32 add / sub / mul
    of two staged loads stored to a staged buffer (``y[i] = a[i] op b[i]``, possibly through
    one ``Let``), so the tile is computed by one vector intrinsic; else None."""
    body = loop.body.body if isinstance(loop.body, K.Block) else [loop.body]
    if len(body) == 2 and isinstance(body[0], K.Let) and isinstance(body[1], K.Store) \
            and body[1].value == body[0].var:
        value, store = body[0].value, body[1]
    elif len(body) == 1 and isinstance(body[0], K.Store):
        value, store = body[0].value, body[0]
    else:
        return None
    f32 = as_dtype("float32")
    if not (isinstance(value, K.Op) and value.kind in VECTOR_BINARY and value.dtype == f32
            and store.buffer in staged and store.index == loop.var and len(value.args) == 2):
        return None
    if not all(isinstance(a, K.Load) and a.buffer in staged and a.index == loop.var and a.dtype == f32
               for a in value.args):
        return None
    return VECTOR_BINARY[value.kind], store.buffer, tuple(a.buffer for a in value.args)

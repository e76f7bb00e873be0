"""What a kernel costs, counted from the kernel IR at compile time: floating-point operations
and compulsory bytes, as polynomials in the batch size N (``kiln profile`` turns them into
GFLOP/s and GB/s, docs/performance.md).

A polynomial is a list of integer coefficients by power of N (``[c0, c1, ...]``: the value
is ``c0 + c1*N + ...``), so one compiled kernel's cost serves every batch size.

* FLOPs: a ``Gemm`` counts ``2*m*n*k`` per batch item, plus its epilogue per output
  element; a loop nest counts, per iteration, every scalar ``Op`` with a floating-point
  result (``select`` excluded: it moves, it does not compute) and every floating-point
  ``Accumulate``.  An ``If`` body counts as if taken.  A loop whose trip count is not a
  polynomial in N (bounds that depend on another loop, ``idiv``/``imin`` of N, ...) makes
  the kernel's FLOPs uncountable: ``None``.
* Bytes: every buffer the kernel reads, once, plus every buffer it stores to, once (the
  traffic no schedule avoids; re-reads that miss the cache are not counted).  A GEMM's C
  listed among the writes but replaced by its epilogue's stores is not counted.
"""
from __future__ import annotations

from . import kernel_ir as K
from .kernel_walk import iter_stmts


class Uncountable(Exception):
    """A trip count that is not a polynomial in N."""


def _add(a: list, b: list) -> list:
    out = [0] * max(len(a), len(b))
    for p, c in enumerate(a):
        out[p] += c
    for p, c in enumerate(b):
        out[p] += c
    return out


def _mul(a: list, b: list) -> list:
    out = [0] * (len(a) + len(b) - 1) if a and b else []
    for p, x in enumerate(a):
        for q, y in enumerate(b):
            out[p + q] += x * y
    return out


def _scale(a: list, k: int) -> list:
    return [c * k for c in a]


def poly(e) -> list:
    """The index expression ``e`` as a polynomial in N; :class:`Uncountable` otherwise."""
    if isinstance(e, K.Const) and float(e.value).is_integer():
        return [int(e.value)]
    if isinstance(e, K.Batch):
        return [0, 1]
    if isinstance(e, K.Op) and e.kind in ("add", "sub", "mul") and len(e.args) == 2:
        a, b = poly(e.args[0]), poly(e.args[1])
        return {"add": _add(a, b), "sub": _add(a, _scale(b, -1)), "mul": _mul(a, b)}[e.kind]
    raise Uncountable(repr(e))


def _is_float(dtype) -> bool:
    return dtype is not None and dtype.np.kind == "f"


def _expr_flops(e) -> int:
    """Floating-point scalar ops in one evaluation of ``e``."""
    if isinstance(e, K.Op):
        own = int(_is_float(e.dtype) and e.kind != "select")
        return own + sum(_expr_flops(a) for a in e.args)
    if isinstance(e, K.Cast):
        return _expr_flops(e.value)
    if isinstance(e, K.Load):
        return _expr_flops(e.index)
    return 0


def stmt_flops(s) -> list:
    """FLOPs of statement ``s`` as a polynomial in N (:class:`Uncountable` when not)."""
    if s is None:
        return []
    if isinstance(s, K.Block):
        total: list = []
        for t in s.body:
            total = _add(total, stmt_flops(t))
        return total
    if isinstance(s, K.For):
        trip = _add(poly(s.stop), _scale(poly(s.start), -1))
        return _mul(trip, stmt_flops(s.body))
    if isinstance(s, K.Gemm):
        items = poly(s.batch) if s.batch is not None else [1]
        outputs = _mul(items, _mul(poly(s.m), poly(s.n)))
        return _add(_scale(_mul(outputs, poly(s.k)), 2), _mul(outputs, stmt_flops(s.epilogue)))
    if isinstance(s, K.Accumulate):
        return [_expr_flops(s.value) + int(_is_float(s.value.dtype))]
    if isinstance(s, (K.Let, K.DeclareAcc)):
        return [_expr_flops(s.value if isinstance(s, K.Let) else s.init)]
    if isinstance(s, K.Store):
        return [_expr_flops(s.value)]
    if isinstance(s, K.If):
        return stmt_flops(s.then)
    return []  # Check: a comparison, no arithmetic worth counting


def _trim(p: list) -> list:
    while p and p[-1] == 0:
        p = p[:-1]
    return p


def kernel_flops(kernel: K.Kernel):
    """The kernel's FLOPs (polynomial in N), or None when not countable."""
    try:
        return _trim(stmt_flops(kernel.body))
    except Uncountable:
        return None


def stored_buffers(kernel: K.Kernel) -> set:
    """The buffers the kernel's statements store to: ``Store``s, and the C of a ``Gemm``
    without an epilogue (one with an epilogue stores only what the epilogue does)."""
    out = set()
    for s in iter_stmts(kernel.body):
        if isinstance(s, K.Store):
            out.add(s.buffer)
        elif isinstance(s, K.Gemm) and s.epilogue is None:
            out.add(s.c.buffer)
    return out


def kernel_bytes(kernel: K.Kernel, buffers: dict) -> list:
    """Bytes of every buffer the kernel reads plus every buffer it stores to (polynomial in N)."""
    total: list = []
    stored = stored_buffers(kernel)
    for name in list(kernel.reads) + [w for w in kernel.writes if w in stored]:
        size, power = buffers[name].byte_size()
        total = _add(total, [0] * power + [size])
    return _trim(total)


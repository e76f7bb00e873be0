"""Pure helpers that build kernel-IR expressions: index math, loop nests, elementwise ops.

Index expressions are i64 over loop ``Var``s, ``Const``s and ``Batch()``.  The builders
here fold constants and drop neutral terms (``x*1``, ``x+0``, ``x/1``) so the kernels a
reader sees in the ``ir/`` dump stay short.  Only i64 index math is folded: float
expressions are kept exactly as the IR wrote them (``x+0.0`` is not ``x`` for ``-0.0``).
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.math import ARITH, COMPARE, LOGICAL, UNARY
from ..ir.ops.random import FOLD_KEYS
from ..ir.types import Sym, as_dtype, int64
from .kernel_ir import Batch, Block, Cast, Const, Expr, For, Op, Random, Stmt

ELEMENTWISE_OPS = frozenset(UNARY) | frozenset(ARITH) | frozenset(COMPARE) | frozenset(LOGICAL)
RANDOM_DIST = {"random_uniform": "uniform", "random_normal": "normal", "truncated_normal": "truncated_normal"}
# elementwise kinds whose value is a function of the element's flat index
INDEXED = frozenset(RANDOM_DIST) | frozenset({"range"})
PASS_THROUGH = frozenset({"broadcast_to", "identity", "stop_gradient"})


# ----------------------------------------------------------------------------- i64 index math
def i64(value: int) -> Const:
    return Const(int(value), int64)


def const_value(e):
    """The Python value of an i64 constant expression, else None."""
    return e.value if isinstance(e, Const) and e.dtype == int64 else None


def _as_expr(x) -> Expr:
    return i64(x) if isinstance(x, (int, np.integer)) else x


def add(a, b) -> Expr:
    """a + b on i64, folded: constants combine, +0 vanishes, (x+c1)+c2 -> x+(c1+c2)."""
    a, b = _as_expr(a), _as_expr(b)
    ca, cb = const_value(a), const_value(b)
    if ca is not None and cb is not None:
        return i64(ca + cb)
    if ca == 0:
        return b
    if cb == 0:
        return a
    if ca is not None:  # keep the constant on the right
        a, b, cb = b, a, ca
    if cb is not None and isinstance(a, Op) and a.kind == "add" and const_value(a.args[1]) is not None:
        return add(a.args[0], const_value(a.args[1]) + cb)
    return Op("add", (a, b), int64)


def sub(a, b) -> Expr:
    a, b = _as_expr(a), _as_expr(b)
    ca, cb = const_value(a), const_value(b)
    if ca is not None and cb is not None:
        return i64(ca - cb)
    if cb is not None:
        return add(a, -cb)
    if a == b:
        return i64(0)
    return Op("sub", (a, b), int64)


def mul(a, b) -> Expr:
    """a * b on i64, folded: constants combine, *1 vanishes, *0 is 0, (x*c1)*c2 -> x*(c1*c2)."""
    a, b = _as_expr(a), _as_expr(b)
    ca, cb = const_value(a), const_value(b)
    if ca is not None and cb is not None:
        return i64(ca * cb)
    if ca is not None:
        a, b, cb = b, a, ca
    if cb == 0:
        return i64(0)
    if cb == 1:
        return a
    if cb is not None and isinstance(a, Op) and a.kind == "mul" and const_value(a.args[1]) is not None:
        return mul(a.args[0], const_value(a.args[1]) * cb)
    return Op("mul", (a, b), int64)


def idiv(a, b) -> Expr:
    """a // b for non-negative i64 operands."""
    a, b = _as_expr(a), _as_expr(b)
    ca, cb = const_value(a), const_value(b)
    if ca is not None and cb is not None:
        return i64(ca // cb)
    if cb == 1:
        return a
    if ca == 0:
        return a
    return Op("idiv", (a, b), int64)


def imod(a, b) -> Expr:
    """a % b for non-negative i64 operands."""
    a, b = _as_expr(a), _as_expr(b)
    ca, cb = const_value(a), const_value(b)
    if ca is not None and cb is not None:
        return i64(ca % cb)
    if cb == 1 or ca == 0:
        return i64(0)
    return Op("imod", (a, b), int64)


def imin(a, b) -> Expr:
    a, b = _as_expr(a), _as_expr(b)
    ca, cb = const_value(a), const_value(b)
    if ca is not None and cb is not None:
        return i64(min(ca, cb))
    return a if a == b else Op("imin", (a, b), int64)


def imax(a, b) -> Expr:
    a, b = _as_expr(a), _as_expr(b)
    ca, cb = const_value(a), const_value(b)
    if ca is not None and cb is not None:
        return i64(max(ca, cb))
    return a if a == b else Op("imax", (a, b), int64)


# ----------------------------------------------------------------------------- shapes
def dim_expr(dim) -> Expr:
    """A dim as an i64 expression: an int is a Const, ``Sym(k)`` is ``Batch()*k`` (an Expr stays)."""
    if isinstance(dim, Expr):
        return dim
    if isinstance(dim, Sym):
        return mul(Batch(int64), dim.coef)
    return i64(dim)


def size_expr(shape) -> Expr:
    """The element count of ``shape`` as an i64 expression."""
    out = i64(1)
    for d in shape:
        out = mul(out, dim_expr(d))
    return out


def strides(shape) -> list:
    """Row-major element strides of ``shape`` (i64 expressions)."""
    out, step = [], i64(1)
    for d in reversed(tuple(shape)):
        out.append(step)
        step = mul(step, dim_expr(d))
    return out[::-1]


def flat_index(index_exprs, shape) -> Expr:
    """Row-major flat element index of ``index_exprs`` in a dense array of ``shape``."""
    out = i64(0)
    for idx, stride in zip(index_exprs, strides(shape)):
        out = add(out, mul(idx, stride))
    return out


def broadcast_index(loop_vars, out_shape, in_shape) -> Expr:
    """Flat index into an operand of ``in_shape`` read at position ``loop_vars`` of ``out_shape``.

    numpy broadcasting: the operand's dims line up with the trailing dims of the output; a
    missing dim or a size-1 dim is read at index 0 (stride 0).
    """
    lead = len(out_shape) - len(in_shape)
    idx = [i64(0) if d == 1 else loop_vars[lead + j] for j, d in enumerate(in_shape)]
    return flat_index(idx, in_shape)


def unflatten(flat, shape) -> list:
    """Per-dim indices of element ``flat`` of a row-major ``shape`` (inverse of flat_index)."""
    return [idiv(flat, st) if j == 0 else imod(idiv(flat, st), dim_expr(d))
            for j, (d, st) in enumerate(zip(shape, strides(shape)))]


def _static(dim) -> int:
    return dim if isinstance(dim, int) else 1


def loop_nest(vars, shape, body, parallel_outer=True, vectorize_inner=True, work=1) -> Stmt:
    """``For`` loops over ``shape`` (``vars[i]`` runs over dim i), row-major, around ``body``.

    The outermost loop is marked parallel and the innermost vectorize (when asked); ``work``
    is the scalar ops of one innermost iteration, scaled up by the static inner trip counts
    so each loop carries the work of one of its iterations.
    """
    stmt = body if isinstance(body, Stmt) else Block(list(body))
    rank = len(shape)
    inner_work = work
    for pos in reversed(range(rank)):
        stmt = For(vars[pos], i64(0), dim_expr(shape[pos]), stmt,
                   parallel=parallel_outer and pos == 0,
                   vectorize=vectorize_inner and pos == rank - 1, work=max(1, inner_work))
        inner_work *= _static(shape[pos])
    return stmt


# ----------------------------------------------------------------------------- scalars
def const_expr(value, dtype) -> Const:
    """A scalar constant of ``dtype`` (the value rounded to the dtype, as a Python scalar)."""
    dtype = as_dtype(dtype)
    v = np.asarray(value).astype(dtype.np).reshape(())[()]
    if dtype.is_bool:
        return Const(bool(v), dtype)
    if dtype.is_integer:
        return Const(int(v), dtype)
    return Const(float(v), dtype)


def fold_expr(step, iteration) -> Expr:
    """ir/ops/random.py's ``rng_fold``: two Philox words of (iteration, step) as one 63-bit i64
    (the high word halved so that nothing overflows)."""
    hi, lo = (Random("bits", k0, k1, iteration, step, int64) for k0, k1 in FOLD_KEYS)
    return add(mul(idiv(hi, 2), 2 ** 32), lo)


def elementwise_expr(ins, operand_exprs, index_expr=None, step_expr=None) -> Expr:
    """The scalar Expr of one elementwise IR instr, given the Exprs of its operands' elements.

    ``index_expr`` is the row-major flat index of the element in the instr's result (random
    draws need it); ``step_expr`` the rng step (defaults to the draw's operand expression).
    ``broadcast_to`` (and the views) are reads: the caller's operand expression already
    indexes the operand with broadcasting.
    """
    kind = ins.kind
    dtype = ins.results[0].type.dtype
    args = tuple(operand_exprs)
    if kind in ELEMENTWISE_OPS or kind == "select":
        return Op(kind, args, dtype)
    if kind == "cast":
        return args[0] if args[0].dtype == dtype else Cast(args[0], dtype)
    if kind == "add_n":
        out = args[0]
        for x in args[1:]:
            out = Op("add", (out, x), dtype)
        return out
    if kind in PASS_THROUGH:
        return args[0]
    if kind == "range":
        if index_expr is None:
            raise ValueError("range needs the element index")
        step = Op("mul", (const_expr(ins.attrs["delta"], dtype), Cast(index_expr, dtype)), dtype)
        return Op("add", (const_expr(ins.attrs["start"], dtype), step), dtype)
    if kind == "rng_fold":
        return fold_expr(*args)
    if kind in RANDOM_DIST:
        if index_expr is None:
            raise ValueError(f"{kind} needs the element index")
        step = step_expr if step_expr is not None else args[0]
        return Random(RANDOM_DIST[kind], int(ins.attrs["seed"]), int(ins.attrs["seed2"]), index_expr, step, dtype)
    raise NotImplementedError(f"{kind} is not an elementwise kind")

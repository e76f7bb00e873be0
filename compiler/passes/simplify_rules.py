"""The algebraic rewrite rules of the ``simplify`` pass, one small function each.

A rule looks at one plain instr (operands already rewritten) and returns

  * ``None`` — it does not apply;
  * a ``Value`` — the instr's result equals that value *broadcast to the result's shape*
    (the pass forwards the value when the types are identical and inserts a
    ``broadcast_to`` when only the shape differs);
  * a list of new ``Instr`` (built with ``ctx.op`` / ``ctx.constant``) whose last one computes
    the result; the pass rejects it unless its type is exactly the replaced result's.

Every rule is exact (bit for bit) except where its docstring says otherwise.  Rules that are
*not* here on purpose: ``x*0 -> 0`` and ``x-x -> 0`` for floats (NaN/inf give NaN),
``pow(x, 0.5) -> sqrt(x)`` (pow(-inf, 0.5) is +inf, sqrt(-inf) is NaN), ``div(x, c) ->
mul(x, 1/c)`` unless 1/c is exact, ``exp(log(x))``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir.function import Instr, Value
from ..ir.opdef import infer_type
from ..ir.ops.math import REDUCE, reduction_axes
from ..ir.types import DType, TensorType, as_dtype
from .constant_folding import constant_value


class Reject(Exception):
    """Raised by ``RewriteContext.op`` when a new instr would not type-check; the rule is skipped."""


class RewriteContext:
    """What rules need: constant lookups and a way to build new, typed instrs."""

    def __init__(self):
        self.created = 0

    @staticmethod
    def splat(v):
        """The python scalar when ``v`` is a non-empty constant with all elements equal, else None."""
        array = constant_value(v)
        if array is None or array.size == 0:
            return None
        first = array.reshape(-1)[0]
        return first.item() if np.all(array == first) else None

    @staticmethod
    def producer(v, kind):
        """The plain instr of ``kind`` that defines ``v``, or None."""
        p = v.producer
        return p if isinstance(p, Instr) and p.kind == kind and p.region is None else None

    def _value(self, ttype) -> Value:
        self.created += 1
        return Value(f"simplify.{self.created}", ttype)

    def op(self, kind, operands, **attrs) -> Instr:
        """A new instr with a fresh result typed by the kind's rule (``Reject`` if it does not fit)."""
        try:
            ttype = infer_type(kind, [v.type for v in operands], attrs)
        except Exception as err:
            raise Reject(str(err)) from err
        return Instr(kind, operands, attrs, self._value(ttype))

    def constant(self, array) -> Instr:
        """A new ``constant`` instr holding ``array``."""
        array = np.asarray(array)
        return Instr("constant", [], {"value": array},
                     self._value(TensorType(as_dtype(array.dtype), tuple(array.shape))))

    def zeros(self, ttype: TensorType) -> list:
        """Instrs computing zeros of ``ttype``: a scalar constant, broadcast when not a scalar."""
        zero = self.constant(np.zeros((), ttype.dtype.np))
        if not ttype.shape:
            return [zero]
        return [zero, self.op("broadcast_to", [zero.result], shape=tuple(ttype.shape))]


def _other_if(ins, ctx, value, sides=(0, 1)):
    """The other operand of a binary op when operand ``side`` is a splat equal to ``value``."""
    for side in sides:
        s = ctx.splat(ins.operands[side])
        if s is not None and s == value:
            return ins.operands[1 - side]
    return None


def _is_int(v) -> bool:
    return v.type.dtype.is_integer


# ----------------------------------------------------------------------------- arithmetic
def mul_one(ins, ctx):
    """x*1, 1*x -> x."""
    return _other_if(ins, ctx, 1)


def mul_minus_one(ins, ctx):
    """x*-1, -1*x -> neg(x) (exact, the sign of zeros included)."""
    x = _other_if(ins, ctx, -1)
    return None if x is None else [ctx.op("neg", [x])]


def add_zero(ins, ctx):
    """x+0, 0+x -> x.  Not bitwise for x = -0.0 (-0.0 + 0.0 is +0.0); the two compare equal."""
    return _other_if(ins, ctx, 0)


def sub_zero(ins, ctx):
    """x-0 -> x."""
    return _other_if(ins, ctx, 0, sides=(1,))


def zero_sub(ins, ctx):
    """0-x -> neg(x).  For floats 0-0.0 is +0.0 and neg(0.0) is -0.0 (equal values)."""
    x = _other_if(ins, ctx, 0, sides=(0,))
    return None if x is None else [ctx.op("neg", [x])]


def div_one(ins, ctx):
    """x/1 -> x (true division for floats, floor division for integers)."""
    return _other_if(ins, ctx, 1, sides=(1,))


def div_power_of_two(ins, ctx):
    """x/c -> x*(1/c) for a float splat c = ±2^k whose reciprocal is exact: the same single rounding."""
    x, c = ins.operands
    s = ctx.splat(c)
    if not c.type.dtype.is_floating or s is None or not math.isfinite(s) or s == 0:
        return None
    if math.frexp(abs(s))[0] != 0.5:
        return None
    inv = np.asarray(1.0 / s, dtype=c.type.dtype.np)
    if inv == 0 or not np.isfinite(inv) or float(inv) * s != 1.0:
        return None
    recip = ctx.constant(np.full(tuple(c.type.shape), inv, dtype=c.type.dtype.np))
    return [recip, ctx.op("mul", [x, recip.result])]


def int_mul_zero(ins, ctx):
    """x*0, 0*x -> zeros for integers (for floats NaN*0 and inf*0 are NaN: not rewritten)."""
    if _is_int(ins.result) and _other_if(ins, ctx, 0) is not None:
        return ctx.zeros(ins.result.type)
    return None


def int_sub_self(ins, ctx):
    """x-x -> zeros for integers (for floats inf-inf is NaN: not rewritten)."""
    a, b = ins.operands
    return ctx.zeros(ins.result.type) if a is b and _is_int(a) else None


def mul_self(ins, ctx):
    """x*x -> square(x)."""
    a, b = ins.operands
    return [ctx.op("square", [a])] if a is b else None


def pow_two(ins, ctx):
    """pow(x, 2) -> square(x)."""
    x = _other_if(ins, ctx, 2, sides=(1,))
    return None if x is None else [ctx.op("square", [x])]


def neg_neg(ins, ctx):
    """neg(neg(x)) -> x."""
    inner = ctx.producer(ins.operands[0], "neg")
    return None if inner is None else inner.operands[0]


# ----------------------------------------------------------------------------- shapes and casts
def transpose_chain(ins, ctx):
    """transpose(x, identity) -> x; transpose(transpose(x, p), q) -> transpose(x, p∘q), or x."""
    perm = list(ins.attrs["perm"])
    x = ins.operands[0]
    inner = ctx.producer(x, "transpose")
    if inner is not None:
        x = inner.operands[0]
        perm = [list(inner.attrs["perm"])[i] for i in perm]
    if perm == list(range(len(perm))):
        return x
    if inner is None:
        return None
    return [ctx.op("transpose", [x], perm=type(ins.attrs["perm"])(perm))]


def reshape_chain(ins, ctx):
    """reshape(x) to x's own shape -> x; reshape(reshape(x)) -> one reshape of x."""
    x = ins.operands[0]
    if tuple(x.type.shape) == tuple(ins.result.type.shape):
        return x
    inner = ctx.producer(x, "reshape")
    return None if inner is None else [ctx.op("reshape", [inner.operands[0]], shape=ins.attrs["shape"])]


def broadcast_chain(ins, ctx):
    """broadcast_to(x) of x's own shape -> x; broadcast_to(broadcast_to(x)) -> one broadcast_to."""
    x = ins.operands[0]
    if tuple(x.type.shape) == tuple(ins.result.type.shape):
        return x
    inner = ctx.producer(x, "broadcast_to")
    return None if inner is None else [ctx.op("broadcast_to", [inner.operands[0]], shape=ins.attrs["shape"])]


# widening casts that keep every value exactly
_LOSSLESS = {
    "bool": {"i8", "u8", "i16", "u16", "i32", "i64", "f16", "f32", "f64"},
    "i8": {"i16", "i32", "i64", "f16", "f32", "f64"}, "u8": {"i16", "u16", "i32", "i64", "f16", "f32", "f64"},
    "i16": {"i32", "i64", "f32", "f64"}, "u16": {"i32", "i64", "f32", "f64"},
    "i32": {"i64", "f64"}, "f16": {"f32", "f64"}, "f32": {"f64"},
}


def _lossless(a: DType, b: DType) -> bool:
    return b.short in _LOSSLESS.get(a.short, ())


def cast_chain(ins, ctx):
    """cast to x's own dtype -> x; cast(cast(x, B), C) -> cast(x, C) (or x when C is x's dtype)
    when x -> B is lossless and the source is integer/bool or C is floating (so no
    out-of-range float-to-int conversion can differ)."""
    x = ins.operands[0]
    if x.type.dtype == ins.result.type.dtype:
        return x
    inner = ctx.producer(x, "cast")
    if inner is None:
        return None
    src, mid, dst = inner.operands[0].type.dtype, x.type.dtype, ins.result.type.dtype
    if not _lossless(src, mid) or not (src.is_integer or src.is_bool or dst.is_floating):
        return None
    if src == dst:
        return inner.operands[0]
    return [ctx.op("cast", [inner.operands[0]], dtype=ins.attrs["dtype"])]


def reduce_trivial(ins, ctx):
    """A reduction over no axes -> x; over axes that all have size 1 -> x (keepdims) or a reshape."""
    x = ins.operands[0]
    axes = reduction_axes(x.type.rank, ins.attrs["axes"])
    if not axes:
        return x
    if not all(x.type.shape[a] == 1 and isinstance(x.type.shape[a], int) for a in axes):
        return None
    if ins.attrs["keepdims"]:
        return x
    return [ctx.op("reshape", [x], shape=tuple(ins.result.type.shape))]


def add_n_single(ins, ctx):
    """add_n(x) -> x."""
    return ins.operands[0] if len(ins.operands) == 1 else None


def select_known(ins, ctx):
    """select(c, a, b) -> a when c is all true, b when all false, a when a is b (broadcast)."""
    cond, a, b = ins.operands
    if a is b:
        return a
    s = ctx.splat(cond)
    if s is None:
        return None
    return a if s else b


@dataclass(frozen=True)
class Rule:
    name: str  # how the summary counts it
    kinds: tuple  # the op kinds it looks at
    apply: Callable


RULES = (
    Rule("x*1", ("mul",), mul_one),
    Rule("x*-1", ("mul",), mul_minus_one),
    Rule("int-x*0", ("mul",), int_mul_zero),
    Rule("x*x", ("mul",), mul_self),
    Rule("x+0", ("add",), add_zero),
    Rule("x-0", ("sub",), sub_zero),
    Rule("0-x", ("sub",), zero_sub),
    Rule("int-x-x", ("sub",), int_sub_self),
    Rule("x/1", ("div",), div_one),
    Rule("x/2^k", ("div",), div_power_of_two),
    Rule("pow2", ("pow",), pow_two),
    Rule("neg-neg", ("neg",), neg_neg),
    Rule("transpose-chain", ("transpose",), transpose_chain),
    Rule("reshape-chain", ("reshape",), reshape_chain),
    Rule("broadcast-chain", ("broadcast_to",), broadcast_chain),
    Rule("cast-chain", ("cast",), cast_chain),
    Rule("trivial-reduce", tuple(REDUCE), reduce_trivial),
    Rule("add_n-single", ("add_n",), add_n_single),
    Rule("select-known", ("select",), select_known),
)


def rules_by_kind() -> dict:
    """kind -> the rules that look at it, in table order."""
    table: dict = {}
    for rule in RULES:
        for kind in rule.kinds:
            table.setdefault(kind, []).append(rule)
    return table

"""Kernel-IR ``Op`` kinds, ``Cast`` and accumulator combines as LLVM IR, scalar or vector.

Semantics are those of the reference interpreter (compiler/ir/ops/math.py, numpy):

* integer ``div``/``floordiv`` round toward -inf, ``mod`` is a floor modulo (sign of the
  divisor); a zero divisor gives 0 instead of trapping, and ``MIN / -1`` wraps like numpy;
* float ``mod`` is numpy's (``fmod`` moved to the divisor's sign), ``floordiv`` is
  ``floor(a / b)``; ``maximum``/``minimum`` propagate NaN; ``round`` is half-to-even;
  comparisons are ordered except ``not_equal``; ``sign``/``relu`` keep NaN;
* ``pow`` is libm's ``pow`` for floats and exponentiation by squaring (wrapping) for ints;
* float -> int casts truncate toward zero, and NaN or out-of-range values give the
  integer minimum (what numpy's ``astype`` gives on x86); float -> bool is ``x != 0``.

float16 is computed in float32 and rounded back after each op, as numpy does.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ...lower.combine import combine_op
from .gemm_kernel import counted_loop
from .mathfuncs import KINDS as MATH_KINDS
from .mathfuncs import emit_math, fmax_nan, fmin_nan
from .vals import F32, F64, I1, I32, call_intrinsic, cl, elem, like, scalar_type

_FCMP = {"equal": "==", "less": "<", "less_equal": "<=", "greater": ">", "greater_equal": ">="}
_ICMP = dict(_FCMP, not_equal="!=")
COMPARISONS = set(_ICMP)
INDEX_OPS = {"idiv", "imod", "imin", "imax"}


def emit_op(b: ir.IRBuilder, kind: str, args, dtypes, out_dtype):
    """The value of ``Op(kind, args)``; ``args`` are already broadcast to one lane count,
    ``dtypes`` are the operands' kernel-IR dtypes."""
    dt = dtypes[1] if kind == "select" else dtypes[0]
    if kind == "select":
        return b.select(*args)
    if dt.short == "f16":
        wide = [b.fpext(a, like(a, F32)) for a in args]
        out = _float_op(b, kind, *wide)
        return b.fptrunc(out, like(out, scalar_type(out_dtype))) if out_dtype.is_floating else out
    if dt.is_floating:
        return _float_op(b, kind, *args)
    if dt.is_bool:
        return _bool_op(b, kind, *args)
    return _int_op(b, kind, dt.is_unsigned, *args)


# ----------------------------------------------------------------------------- floats
def _float_op(b, kind, x, y=None):
    if kind in MATH_KINDS:
        return emit_math(b, kind, x)
    if kind in _FCMP:
        return b.fcmp_ordered(_FCMP[kind], x, y)
    simple = {
        "add": lambda: b.fadd(x, y), "sub": lambda: b.fsub(x, y), "mul": lambda: b.fmul(x, y),
        "div": lambda: b.fdiv(x, y), "not_equal": lambda: b.fcmp_unordered("!=", x, y),
        "floordiv": lambda: call_intrinsic(b, "llvm.floor", [b.fdiv(x, y)]),
        "mod": lambda: _float_mod(b, x, y), "pow": lambda: call_intrinsic(b, "llvm.pow", [x, y]),
        "maximum": lambda: fmax_nan(b, x, y), "minimum": lambda: fmin_nan(b, x, y),
        "neg": lambda: b.fneg(x), "abs": lambda: call_intrinsic(b, "llvm.fabs", [x]),
        "sign": lambda: _float_sign(b, x), "sqrt": lambda: call_intrinsic(b, "llvm.sqrt", [x]),
        "rsqrt": lambda: b.fdiv(cl(x, 1.0), call_intrinsic(b, "llvm.sqrt", [x])),
        "square": lambda: b.fmul(x, x), "reciprocal": lambda: b.fdiv(cl(x, 1.0), x),
        "relu": lambda: b.select(b.fcmp_ordered("<", x, cl(x, 0.0)), cl(x, 0.0), x),
        "floor": lambda: call_intrinsic(b, "llvm.floor", [x]),
        "ceil": lambda: call_intrinsic(b, "llvm.ceil", [x]),
        "round": lambda: call_intrinsic(b, "llvm.roundeven", [x]),
        "is_nan": lambda: b.fcmp_ordered("uno", x, x),
        "is_finite": lambda: b.fcmp_ordered(
            "<", call_intrinsic(b, "llvm.fabs", [x]), cl(x, float("inf"))),
    }
    if kind not in simple:
        raise NotImplementedError(f"op {kind!r} is not defined for floats")
    return simple[kind]()


def _float_mod(b, x, y):
    """numpy's float remainder: fmod, moved into the divisor's sign; zero takes y's sign."""
    r = b.frem(x, y)
    zero = cl(x, 0.0)
    wrong_sign = b.xor(b.fcmp_ordered("<", y, zero), b.fcmp_ordered("<", r, zero))
    fix = b.and_(b.fcmp_unordered("!=", r, zero), wrong_sign)
    r = b.select(fix, b.fadd(r, y), r)
    signed_zero = call_intrinsic(b, "llvm.copysign", [zero, y])
    return b.select(b.fcmp_ordered("==", r, zero), signed_zero, r)


def _float_sign(b, x):
    zero = cl(x, 0.0)
    neg = b.select(b.fcmp_ordered("<", x, zero), cl(x, -1.0), x)
    return b.select(b.fcmp_ordered(">", x, zero), cl(x, 1.0), neg)


# ----------------------------------------------------------------------------- integers
def _int_op(b, kind, unsigned, x, y=None):
    if kind in _ICMP:
        cmp = b.icmp_unsigned if unsigned else b.icmp_signed
        return cmp(_ICMP[kind], x, y)
    zero = cl(x, 0)
    simple = {
        "add": lambda: b.add(x, y), "sub": lambda: b.sub(x, y), "mul": lambda: b.mul(x, y),
        "div": lambda: _int_div(b, x, y, unsigned), "floordiv": lambda: _int_div(b, x, y, unsigned),
        "mod": lambda: _int_mod(b, x, y, unsigned), "pow": lambda: _int_pow(b, x, y),
        "maximum": lambda: _imax(b, x, y, unsigned), "minimum": lambda: _imin(b, x, y, unsigned),
        "neg": lambda: b.sub(zero, x), "abs": lambda: x if unsigned else _imax(b, x, b.sub(zero, x), False),
        "sign": lambda: _int_sign(b, x, unsigned), "square": lambda: b.mul(x, x),
        "relu": lambda: x if unsigned else _imax(b, x, zero, False),
        "round": lambda: _via_f64(b, x, unsigned, lambda v: v),  # numpy rounds through float64
        "reciprocal": lambda: _via_f64(b, x, unsigned, lambda v: b.fdiv(cl(v, 1.0), v)),
        "rsqrt": lambda: _via_f64(b, x, unsigned, lambda v: b.fdiv(
            cl(v, 1.0), call_intrinsic(b, "llvm.sqrt", [v]))),
        "idiv": lambda: b.sdiv(x, _nonzero(b, y)), "imod": lambda: b.srem(x, _nonzero(b, y)),
        "imin": lambda: _imin(b, x, y, False), "imax": lambda: _imax(b, x, y, False),
    }
    if kind not in simple:
        raise NotImplementedError(f"op {kind!r} is not defined for integers")
    return simple[kind]()


def _nonzero(b, y):
    """An index divisor with 0 replaced by 1: never trap, even in masked-off lanes."""
    return b.select(b.icmp_signed("==", y, cl(y, 0)), cl(y, 1), y)


def _imax(b, x, y, unsigned):
    cmp = b.icmp_unsigned if unsigned else b.icmp_signed
    return b.select(cmp(">=", x, y), x, y)


def _imin(b, x, y, unsigned):
    cmp = b.icmp_unsigned if unsigned else b.icmp_signed
    return b.select(cmp("<=", x, y), x, y)


def _int_sign(b, x, unsigned):
    zero, one = cl(x, 0), cl(x, 1)
    if unsigned:
        return b.select(b.icmp_unsigned("!=", x, zero), one, zero)
    neg = b.select(b.icmp_signed("<", x, zero), cl(x, -1), zero)
    return b.select(b.icmp_signed(">", x, zero), one, neg)


def _safe_divisor(b, y, unsigned):
    """(divisor with 0 and -1 replaced by 1, y == 0, y == -1) so sdiv never traps."""
    is_zero = b.icmp_signed("==", y, cl(y, 0))
    is_m1 = cl(y, 0, I1) if unsigned else b.icmp_signed("==", y, cl(y, -1))
    return b.select(b.or_(is_zero, is_m1), cl(y, 1), y), is_zero, is_m1


def _truncation_differs(b, r, d):
    """True where truncated division's remainder ``r`` (by ``d``) is non-zero and of the other
    sign than ``d``: there floor division is one less, and floor modulo is ``r + d``."""
    return b.and_(b.icmp_signed("!=", r, cl(r, 0)),
                  b.xor(b.icmp_signed("<", r, cl(r, 0)), b.icmp_signed("<", d, cl(d, 0))))


def _int_div(b, x, y, unsigned):
    """Floor division (0 for a zero divisor, wrapping negation for -1)."""
    d, is_zero, is_m1 = _safe_divisor(b, y, unsigned)
    if unsigned:
        q = b.udiv(x, d)
    else:
        q = b.sdiv(x, d)
        r = b.srem(x, d)
        adjust = _truncation_differs(b, r, d)
        q = b.select(adjust, b.sub(q, cl(q, 1)), q)
        q = b.select(is_m1, b.sub(cl(x, 0), x), q)
    return b.select(is_zero, cl(x, 0), q)


def _int_mod(b, x, y, unsigned):
    """Floor modulo: the result has the divisor's sign (0 for divisors 0 and -1)."""
    d, is_zero, is_m1 = _safe_divisor(b, y, unsigned)
    if unsigned:
        r = b.urem(x, d)
    else:
        r = b.srem(x, d)
        adjust = _truncation_differs(b, r, d)
        r = b.select(adjust, b.add(r, d), r)
    return b.select(b.or_(is_zero, is_m1), cl(x, 0), r)


def _int_pow(b, x, y):
    """x**y by squaring, one loop step per bit of y (wrapping; a negative y gives 0)."""
    bits = elem(y.type).width

    def step(b, _, carried):
        result, base, e = carried
        odd = b.icmp_unsigned("!=", b.and_(e, cl(e, 1)), cl(e, 0))
        return [b.select(odd, b.mul(result, base), result), b.mul(base, base), b.lshr(e, cl(e, 1))]
    result, _, _ = counted_loop(b, ir.Constant(I32, 0), ir.Constant(I32, bits), ir.Constant(I32, 1), step,
                                carry=[cl(x, 1), x, y], name="ipow")
    return b.select(b.icmp_signed("<", y, cl(y, 0)), cl(x, 0), result)


def _via_f64(b, x, unsigned, fn):
    """An int op numpy computes in float64 and casts back (reciprocal, rsqrt of ints)."""
    conv = b.uitofp if unsigned else b.sitofp
    v = fn(conv(x, like(x, F64)))
    return float_to_int(b, v, elem(x.type).width)


# ----------------------------------------------------------------------------- bools
def _bool_op(b, kind, x, y=None):
    ops = {
        "logical_and": lambda: b.and_(x, y), "logical_or": lambda: b.or_(x, y),
        "logical_xor": lambda: b.xor(x, y), "logical_not": lambda: b.xor(x, cl(x, 1)),
        "equal": lambda: b.icmp_unsigned("==", x, y), "not_equal": lambda: b.icmp_unsigned("!=", x, y),
    }
    if kind in ops:
        return ops[kind]()
    if kind in _ICMP:
        return b.icmp_unsigned(_ICMP[kind], x, y)
    raise NotImplementedError(f"op {kind!r} is not defined for bool")


# ----------------------------------------------------------------------------- casts
def float_to_int(b, v, bits: int):
    """Truncate toward zero into an int of ``bits`` (NaN/out of range -> INT_MIN, like numpy)."""
    wide = 64 if bits == 64 else 32
    ity = like(v, ir.IntType(wide))
    lim = 2.0 ** (wide - 1)
    ok = b.and_(b.fcmp_ordered(">=", v, cl(v, -lim)), b.fcmp_ordered("<", v, cl(v, lim)))
    out = b.select(ok, b.fptosi(v, ity), cl(v, -(2 ** (wide - 1)), ir.IntType(wide)))
    return out if bits == wide else b.trunc(out, like(v, ir.IntType(bits)))


def emit_cast(b: ir.IRBuilder, v, src, dst):
    """``Cast``: value ``v`` of dtype ``src`` as dtype ``dst``."""
    if src == dst:
        return v
    st, dt = scalar_type(src), scalar_type(dst)
    target = like(v, dt)
    if dst.is_bool:
        if src.is_floating:
            return b.fcmp_unordered("!=", v, cl(v, 0.0))
        return b.icmp_unsigned("!=", v, cl(v, 0))
    if src.is_bool:
        return b.uitofp(v, target) if dst.is_floating else b.zext(v, target)
    if src.is_floating and dst.is_floating:
        return b.fpext(v, target) if _fbits(dt) > _fbits(st) else b.fptrunc(v, target)
    if src.is_floating:
        if src.short == "f16":
            v = b.fpext(v, like(v, F32))
        return float_to_int(b, v, dt.width)
    if dst.is_floating:
        return b.uitofp(v, target) if src.is_unsigned else b.sitofp(v, target)
    if dt.width > st.width:
        return b.zext(v, target) if src.is_unsigned else b.sext(v, target)
    return b.trunc(v, target) if dt.width < st.width else v


def _fbits(t) -> int:
    return {"half": 16, "float": 32, "double": 64}[str(t)]


# ----------------------------------------------------------------------------- accumulators
def emit_combine(b: ir.IRBuilder, combine: str, acc, value, dtype, fast=False):
    """``acc = combine(acc, value)``; ``fast`` (vectorized reductions) allows reassociation
    and contraction of float adds/muls, never no-NaN/no-inf assumptions."""
    if fast and dtype.is_floating and dtype.short != "f16" and combine in ("add", "mul"):
        op = b.fadd if combine == "add" else b.fmul
        return op(acc, value, flags=("reassoc", "contract"))
    return emit_op(b, combine_op(combine), [acc, value], [dtype, dtype], dtype)

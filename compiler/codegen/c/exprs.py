"""Kernel-IR expressions and statements -> C-family text, shared by the C-style backends
(CUDA C today, BANG C next; docs/backends.md).

``Exprs`` renders one scalar expression, ``Stmts`` a statement tree as indented C lines;
both follow the scalar semantics of ``compiler/lower/kernel_ir.py`` (the reference is
``kernel_interp.py``) through the scalar helpers of ``templates/c/scalar.h.j2``.  What
differs between dialects is small and lives in a :class:`Dialect`: how a NaN/inf bit
pattern is spelled, and what a failed check does.  Global loads and stores go through
the ``KILN_LD``/``KILN_ST`` macros each target's prelude defines.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ...ir.types import Sym, as_dtype
from ...lower import kernel_ir as K
from ...lower.combine import combine_op

CTYPE = {"f32": "float", "f64": "double", "i8": "signed char", "i16": "short", "i32": "int",
         "i64": "long long", "u8": "unsigned char", "u16": "unsigned short", "bool": "unsigned char"}

_CMP = {"equal": "==", "not_equal": "!=", "less": "<", "less_equal": "<=", "greater": ">",
        "greater_equal": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_FLOAT_FN = {  # kind -> (float32 name, float64 name)
    "exp": ("expf", "exp"), "log": ("logf", "log"), "log1p": ("log1pf", "log1p"),
    "expm1": ("expm1f", "expm1"), "tanh": ("tanhf", "tanh"), "sqrt": ("sqrtf", "sqrt"),
    "abs": ("fabsf", "fabs"), "floor": ("floorf", "floor"), "ceil": ("ceilf", "ceil"),
    "round": ("rintf", "rint"), "erf": ("erff", "erf"), "sin": ("sinf", "sin"), "cos": ("cosf", "cos"),
    "pow": ("powf", "pow"), "tan": ("tanf", "tan"),
}
_HELPER_FN = {"sigmoid": "kiln_sigmoid", "softplus": "kiln_softplus", "elu": "kiln_elu",
              "maximum": "kiln_max", "minimum": "kiln_min", "relu": "kiln_relu"}


_F64 = as_dtype("float64")


class CRenderError(Exception):
    """A kernel-IR construct this renderer does not handle (yet)."""


@dataclass(frozen=True)
class Dialect:
    """What one C-family target spells its own way.

    ``f32_bits``/``f64_bits``: a float from its bit pattern (``{}`` is the hex literal);
    ``fail``: the statement recording a failed check (``{kind}`` ``f``/``i``, ``{cid}`` the
    check id, ``{value}`` the value cast to double / long long) and leaving the kernel;
    ``error``: the exception raised for constructs the target cannot render."""

    name: str
    f32_bits: str
    f64_bits: str
    fail: str
    error: type = CRenderError


def ident(name: str, prefix: str) -> str:
    """A C identifier for a kernel-IR name (buffers ``b_``, variables ``v_``, kernels ``k_``)."""
    return prefix + re.sub(r"[^0-9A-Za-z_]", "_", name)


def ctype(dtype) -> str:
    try:
        return CTYPE[dtype.short]
    except KeyError:
        raise CRenderError(f"dtype {dtype.short} is not supported by the C-family renderers") from None


# ----------------------------------------------------------------------------- expressions
def const(value, dtype, dialect: Dialect) -> str:
    """The C literal of a constant (NaN and inf as bit patterns, spelled by ``dialect``)."""
    short = dtype.short
    if short == "bool":
        return "1" if value else "0"
    if dtype.is_floating:
        v = float(np.asarray(value, dtype.np))
        suffix = "f" if short == "f32" else ""
        bits = dialect.f32_bits if short == "f32" else dialect.f64_bits
        if math.isnan(v):
            return bits.format("0x7fc00000" if short == "f32" else "0x7ff8000000000000LL")
        if math.isinf(v):
            inf = bits.format("0x7f800000" if short == "f32" else "0x7ff0000000000000LL")
            return inf if v > 0 else f"(-{inf})"
        text = repr(v)  # shortest float64 text of the (already rounded) value: reads back exactly
        if "e" not in text and "." not in text:
            text += ".0"
        return f"({text}{suffix})" if v < 0 else text + suffix
    v = int(np.asarray(value, dtype.np))
    if short == "i64":
        return "(-9223372036854775807LL - 1)" if v == -(2 ** 63) else (f"({v}LL)" if v < 0 else f"{v}LL")
    if short == "i32":
        return "(-2147483647 - 1)" if v == -(2 ** 31) else (f"({v})" if v < 0 else str(v))
    return f"(({ctype(dtype)}){v})"


@dataclass(frozen=True)
class _Raw(K.Expr):
    """Already-rendered C text posing as an expression (for accumulator combines)."""

    text: str
    dtype: object


class Exprs:
    """Renders expressions of one kernel (buffers as ``b_<name>`` pointers) in a dialect."""

    def __init__(self, program: K.Program, dialect: Dialect):
        self.program, self.dialect = program, dialect

    def const(self, value, dtype) -> str:
        return const(value, dtype, self.dialect)

    def __call__(self, e) -> str:
        if isinstance(e, _Raw):
            return e.text
        if isinstance(e, K.Const):
            return self.const(e.value, e.dtype)
        if isinstance(e, K.Var):
            return ident(e.name, "v_")
        if isinstance(e, K.Batch):
            return "N"
        if isinstance(e, K.Load):
            return f"KILN_LD({ident(e.buffer, 'b_')}, {self(e.index)})"
        if isinstance(e, K.Cast):
            return self.cast(self(e.value), e.value.dtype, e.dtype)
        if isinstance(e, K.Random):
            return self.random(e)
        if isinstance(e, K.Op):
            return self.op(e)
        raise self.dialect.error(f"unknown expression {type(e).__name__}")

    def cast(self, text, src, dst) -> str:
        if src.short == dst.short:
            return text
        if dst.short == "bool":
            return f"((unsigned char)(({text}) != 0))"
        if src.is_floating and dst.is_integer:
            if dst.short == "i64":
                return f"kiln_f2i64((double)({text}))"
            return f"(({ctype(dst)})kiln_f2i32((double)({text})))"  # narrow ints through int32, as numpy
        return f"(({ctype(dst)})({text}))"

    def random(self, e: K.Random) -> str:
        bits = (f"kiln_philox({e.seed & 0xFFFFFFFF}u, {e.seed2 & 0xFFFFFFFF}u, "
                f"(unsigned long long)({self(e.index)}), (unsigned long long)({self(e.step)}))")
        if e.dist == "bits":
            return f"((long long)({bits}))"
        if e.dist == "uniform":
            return f"(({ctype(e.dtype)})kiln_unit({bits}))"
        if e.dist in ("normal", "truncated_normal"):
            return f"(({ctype(e.dtype)})kiln_{e.dist}({bits}))"
        raise self.dialect.error(f"unknown random distribution {e.dist}")

    def op(self, e: K.Op) -> str:
        kind, args = e.kind, [self(a) for a in e.args]
        if kind in ("idiv", "imod", "imin", "imax"):
            return f"kiln_{kind}({args[0]}, {args[1]})"
        if kind == "select":
            return f"(({args[0]}) ? ({args[1]}) : ({args[2]}))"
        dt = e.args[0].dtype
        ct = ctype(dt)
        flt, short = dt.is_floating, dt.short
        if flt and short not in ("f32", "f64"):
            raise self.dialect.error(f"op {kind} on {short} is not supported")
        if kind in _CMP:
            return f"((unsigned char)(({args[0]}) {_CMP[kind]} ({args[1]})))"
        if kind in ("logical_and", "logical_or", "logical_xor"):
            sym = {"logical_and": "&&", "logical_or": "||", "logical_xor": "!="}[kind]
            return f"((unsigned char)((({args[0]}) != 0) {sym} (({args[1]}) != 0)))"
        if kind == "logical_not":
            return f"((unsigned char)(({args[0]}) == 0))"
        if kind in _ARITH:
            text = f"(({args[0]}) {_ARITH[kind]} ({args[1]}))"
            if not flt and short not in ("i32", "i64"):  # C promotes narrow ints; wrap back
                return f"(({ct}){text})"
            return text
        if kind == "neg":
            return f"(-({args[0]}))" if flt else f"(({ct})(0 - ({args[0]})))"
        if kind == "square":
            return f"(({args[0]}) * ({args[0]}))" if flt else f"(({ct})(({args[0]}) * ({args[0]})))"
        if kind == "div":
            return f"(({args[0]}) / ({args[1]}))" if flt else f"kiln_floordiv(({ct})({args[0]}), ({ct})({args[1]}))"
        if kind == "floordiv":
            fl = "floorf" if short == "f32" else "floor"
            return f"{fl}(({args[0]}) / ({args[1]}))" if flt else f"kiln_floordiv(({ct})({args[0]}), ({ct})({args[1]}))"
        if kind == "mod":
            return f"kiln_fmod({args[0]}, {args[1]})" if flt else f"kiln_floormod(({ct})({args[0]}), ({ct})({args[1]}))"
        if kind in ("maximum", "minimum", "relu"):
            return f"{_HELPER_FN[kind]}<{ct}>({', '.join(args)})"
        if kind == "sign":
            return f"kiln_{'f' if flt else 'i'}sign<{ct}>({args[0]})"
        if kind == "is_nan":
            return f"((unsigned char)(({args[0]}) != ({args[0]})))" if flt else "((unsigned char)0)"
        if kind == "is_finite":
            fa = "fabsf" if short == "f32" else "fabs"
            return f"((unsigned char)({fa}({args[0]}) < {self.const(float('inf'), dt)}))" if flt else "((unsigned char)1)"
        if flt:
            one = self.const(1.0, dt)
            if kind == "reciprocal":
                return f"({one} / ({args[0]}))"
            if kind == "rsqrt":
                return f"({one} / {_FLOAT_FN['sqrt'][short == 'f64']}({args[0]}))"
            if kind in _FLOAT_FN:
                return f"{_FLOAT_FN[kind][short == 'f64']}({', '.join(args)})"
            if kind in _HELPER_FN:
                return f"{_HELPER_FN[kind]}({', '.join(args)})"
        else:
            if kind == "pow":
                return f"kiln_ipow<{ct}>({args[0]}, {args[1]})"
            if kind == "abs":
                return f"(({ct})(({args[0]}) < 0 ? 0 - ({args[0]}) : ({args[0]})))"
            if kind in ("round", "floor", "ceil"):
                return args[0]
            if kind in ("reciprocal", "rsqrt"):  # numpy computes these in float64 and casts back
                inv = f"(1.0 / (double)({args[0]}))" if kind == "reciprocal" else f"(1.0 / sqrt((double)({args[0]})))"
                return self.cast(inv, _F64, dt)
        raise self.dialect.error(f"op {kind} on {short} is not supported by the {self.dialect.name} renderer")

    def combine(self, combine, acc, value, dtype) -> str:
        return self.op(K.Op(combine_op(combine), (_Raw(acc, dtype), _Raw(value, dtype)), dtype))


# ----------------------------------------------------------------------------- statements
class Stmts:
    """Renders a statement tree as indented C lines.

    ``add_check(message, dtype) -> id`` registers a failing ``Check``'s message (the host
    formats it after the step); the device only records the id and the value.
    """

    def __init__(self, exprs: Exprs, add_check):
        self.x, self.add_check = exprs, add_check

    def lines(self, s, depth) -> list:
        pad = "  " * depth
        x = self.x
        if isinstance(s, K.Block):
            return self.block(s.body, depth)
        if isinstance(s, K.For):
            v = ident(s.var.name, "v_")
            head = (f"{pad}for (long long {v} = {x(s.start)}, {v}_stop = {x(s.stop)}; "
                    f"{v} < {v}_stop; ++{v}) {{")
            return [head] + self.lines(s.body, depth + 1) + [pad + "}"]
        if isinstance(s, K.Let):
            ct = ctype(s.var.dtype)
            return [f"{pad}const {ct} {ident(s.var.name, 'v_')} = ({ct})({x(s.value)});"]
        if isinstance(s, K.DeclareAcc):
            ct = ctype(s.var.dtype)
            return [f"{pad}{ct} {ident(s.var.name, 'v_')} = ({ct})({x(s.init)});"]
        if isinstance(s, K.Accumulate):
            v = ident(s.var.name, "v_")
            value = self.x.combine(s.combine, v, f"(({ctype(s.var.dtype)})({x(s.value)}))", s.var.dtype)
            return [f"{pad}{v} = ({ctype(s.var.dtype)})({value});"]
        if isinstance(s, K.Store):
            dtype = self.x.program.buffers[s.buffer].dtype
            value = x(s.value)
            if dtype.is_bool:
                value = f"(({value}) != 0)"
            return [f"{pad}KILN_ST({ident(s.buffer, 'b_')}, {x(s.index)}, ({ctype(dtype)})({value}));"]
        if isinstance(s, K.If):
            return [f"{pad}if ({x(s.cond)}) {{"] + self.lines(s.then, depth + 1) + [pad + "}"]
        if isinstance(s, K.Check):
            cid = self.add_check(s.message, s.value.dtype)
            kind = "f" if s.value.dtype.is_floating else "i"
            cast = "double" if kind == "f" else "long long"
            fail = x.dialect.fail.format(kind=kind, cid=cid, value=f"({cast})({x(s.value)})")
            return [f"{pad}if ({x(s.cond)}) {{ {fail} }}"]
        if isinstance(s, K.Gemm):
            raise x.dialect.error("a Gemm nested inside loops is not supported yet")
        raise x.dialect.error(f"unknown statement {type(s).__name__}")

    def block(self, body, depth) -> list:
        """Statements of one block; a name bound twice opens a nested C scope."""
        out, names, opened = [], set(), 0
        for sub in body:
            if isinstance(sub, (K.Let, K.DeclareAcc)):
                if sub.var.name in names:
                    out.append("  " * (depth + opened) + "{")
                    opened += 1
                    names = set()
                names.add(sub.var.name)
            out += self.lines(sub, depth + opened)
        for i in reversed(range(opened)):
            out.append("  " * (depth + i) + "}")
        return out

"""Philox4x32-10 draws as LLVM IR (scalar or one draw per SIMD lane).

Exactly compiler/ir/ops/random.py: key ``(seed, seed2)`` (32 bits each), counter
``(index lo, index hi, step lo, step hi)``, ten rounds, output word 0.  The key schedule is
a compile-time constant, so only the counter words are computed at run time; each round is
two 32x32->64 multiplies (``zext``, ``mul``, high/low halves), which vectorize
(``vpmuludq``).

The word is mapped like the reference:

* ``uniform``: ``((bits >> 8) + 0.5) * 2^-24`` in float32 — bit-exact, in (0, 1);
* ``normal``: ``sqrt(2) * erfinv(2u - 1)`` and ``truncated_normal``:
  ``sqrt(2) * erfinv((2u - 1) * erf(sqrt 2))``, evaluated in float64 in the reference's
  operation order with Giles' polynomials (libm ``log`` for ``w``, so the result matches
  numpy up to libm's last-bit differences), then rounded to the draw's dtype.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir.ops.random import _ERF_SQRT2
from .vals import F32, F64, I32, I64, call_intrinsic, cl, like, scalar_type, unify

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF
# Giles' single-precision erfinv (compiler/ir/ops/random.py): highest degree first.
_P_SMALL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
            -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_P_LARGE = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
            -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def _mulhilo(b, m: int, x):
    """(hi, lo) 32-bit halves of the 64-bit product ``m * x``."""
    p = b.mul(b.zext(x, like(x, I64)), cl(x, m, I64))
    return b.trunc(b.lshr(p, cl(p, 32)), x.type), b.trunc(p, x.type)


def philox_word0(b: ir.IRBuilder, seed: int, seed2: int, index, step):
    """Word 0 (i32 lanes) of Philox4x32-10 at counter (index, step) with key (seed, seed2)."""
    index, step = unify(b, index, step)
    i32 = like(index, I32)
    c = [b.trunc(index, i32), b.trunc(b.lshr(index, cl(index, 32)), i32),
         b.trunc(step, i32), b.trunc(b.lshr(step, cl(step, 32)), i32)]
    k0, k1 = seed & MASK, seed2 & MASK
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        hi0, lo0 = _mulhilo(b, M0, c[0])
        hi1, lo1 = _mulhilo(b, M1, c[2])
        c = [b.xor(b.xor(hi1, c[1]), cl(hi1, k0)), lo1,
             b.xor(b.xor(hi0, c[3]), cl(hi0, k1)), lo0]
    return c[0]


def unit_float(b: ir.IRBuilder, bits):
    """float32 in (0, 1) from the top 24 bits: ``((bits >> 8) + 0.5) * 2^-24``."""
    top = b.uitofp(b.lshr(bits, cl(bits, 8)), like(bits, F32))
    return b.fmul(b.fadd(top, cl(top, 0.5)), cl(top, 2.0 ** -24))


def _horner(b, x, coeffs):
    p = cl(x, coeffs[0])
    for c in coeffs[1:]:
        p = b.fadd(cl(x, c), b.fmul(p, x))
    return p


def erfinv64(b: ir.IRBuilder, x):
    """Giles' erfinv of float64 lanes in the reference's operation order."""
    one = cl(x, 1.0)
    w = b.fneg(call_intrinsic(b, "llvm.log", [b.fmul(b.fsub(one, x), b.fadd(one, x))]))
    small = b.fcmp_ordered("<", w, cl(w, 5.0))
    p = _horner(b, b.fsub(w, cl(w, 2.5)), _P_SMALL)
    q = _horner(b, b.fsub(call_intrinsic(b, "llvm.sqrt", [w]), cl(w, 3.0)), _P_LARGE)
    return b.fmul(b.select(small, p, q), x)


def emit_random(b: ir.IRBuilder, dist: str, seed: int, seed2: int, index, step, dtype):
    """A draw of ``dist`` ("uniform", "normal", "truncated_normal", or "bits": the raw word as an
    i64 in [0, 2^32), for sort keys) as ``dtype`` lanes."""
    word = philox_word0(b, seed, seed2, index, step)
    if dist == "bits":
        return b.zext(word, like(word, ir.IntType(64)))
    u = unit_float(b, word)
    out_t = like(u, scalar_type(dtype))
    if dist == "uniform":
        return _round_to(b, u, out_t)
    if dist not in ("normal", "truncated_normal"):
        raise NotImplementedError(f"random distribution {dist!r}")
    x = b.fsub(b.fmul(cl(u, 2.0, F64), b.fpext(u, like(u, F64))), cl(u, 1.0, F64))
    if dist == "truncated_normal":
        x = b.fmul(x, cl(x, _ERF_SQRT2))
    return _round_to(b, b.fmul(cl(x, math.sqrt(2.0)), erfinv64(b, x)), out_t)


def _round_to(b, v, t):
    """A float value converted to float type ``t`` (no-op when equal)."""
    if v.type == t:
        return v
    order = {"half": 0, "float": 1, "double": 2}
    if order[str(t.element if isinstance(t, ir.VectorType) else t)] > order[
            str(v.type.element if isinstance(v.type, ir.VectorType) else v.type)]:
        return b.fpext(v, t)
    return b.fptrunc(v, t)

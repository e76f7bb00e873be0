"""Elementwise transcendental functions as LLVM IR that vectorizes (no libm call per lane).

Every function takes a float scalar or a ``<W x float>`` vector and emits straight-line
code (selects, no branches except a rare slow path), so the same code serves a SIMD main
loop and its scalar tail and both give bit-identical lanes.

float32 (accuracy measured in tests/test_llvm_render.py, over wide ranges, against float64
references):

* ``exp``: Cody-Waite reduction ``x = n ln2 + r`` (ln2 split so ``n*LN2_HI`` is exact),
  Taylor polynomial of degree 7 on ``|r| <= ln2/2``, scaling by ``2^n`` as two exponent
  factors so subnormal results round once.  ~1 ulp.
* ``log``: ``x = 2^e m`` with ``m`` in ``[sqrt(1/2), sqrt 2)``, ``f = m - 1``,
  ``s = f/(2+f)``, ``log(1+f) = f - (f²/2 - s (f²/2 + R(s²)))`` with the atanh series of R
  (the fdlibm arrangement); subnormal inputs scaled by 2^23 first.  ~1 ulp.
* ``log1p``: ``u = 1 + x``; ``log(u) * (x / (u - 1))`` (exact when ``u == 1``: ``x``).
* ``expm1``: Taylor polynomial (degree 9) for ``|x| < 0.5``, else ``exp(x) - 1``.
* ``tanh``: ``e/(e + 2)`` with ``e = expm1(2|x|)``, sign restored; ``|x|`` clamped at 9.1.
* ``sigmoid`` ``1/(1 + exp(-x))``, ``elu``, ``softplus``: the reference formulas of
  compiler/ir/ops/math.py over the functions above.
* ``sin``/``cos``: reduction by pi/2 in float64 (three-part Cody-Waite, exact for
  ``|x| <= 2^20``), float64 Taylor polynomials, rounded once to float.  Lanes with larger
  ``|x|``, inf or NaN take a slow path (libm ``sinf``/``cosf``) behind a branch.
* ``erf``: float64 polynomials fitted (least squares on Chebyshev nodes) to ``erf(x)/x`` on
  ``[0, 1]`` and to ``erfc(x) exp(x²)`` on ``[1, 4]``; 1 beyond 4.

float64 calls libm (``exp``, ``log``, ``log1p``, ``expm1``, ``tanh``, ``erf``, ``sin``,
``cos``; lane by lane in vector code).  Nothing here assumes no-NaN/no-inf: NaN inputs
give NaN, infinities give the IEEE limits.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .gemm_kernel import if_then_values
from .vals import F32, F64, I32, any_lane, call_intrinsic, cl, elem, lanewise_call, like

LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4  # LN2_HI has 9 bits: n*LN2_HI is exact
SQRT2 = 1.4142135623730951
TWO_OVER_PI = 0.6366197723675814
PIO2 = (float.fromhex("0x1.921fb544p+0"), float.fromhex("0x1.0b4611a6p-34"),
        float.fromhex("0x1.3198a2e037073p-69"))  # pi/2 = sum; the first two have 33 bits
SINCOS_LIMIT = 2.0 ** 20  # |x| up to here reduces exactly with PIO2 (j < 2^20)
_FACT = [1.0]
for _k in range(1, 14):
    _FACT.append(_FACT[-1] * _k)
ERF_SMALL = (1.1283791670801049, -0.376126385528275, 0.11283783443883552, -0.0268654755149085,
             0.005221138696071468, -0.0008485438914831176, 0.00011274737914165779,
             -9.689740990720697e-06)  # erf(x)/x as a polynomial in x², x in [0, 1]
ERFC_SCALED = (0.2108063642327629, -0.07434734623628275, 0.024937989240683116,
               -0.008001575141700617, 0.0024670943983531434, -0.0007335767512899863,
               0.00021086357232423566, -5.887552300975398e-05, 1.6160783635710522e-05,
               -4.228102618744611e-06, 9.579326329919495e-07, -2.551931350581435e-07,
               1.0575159952407696e-07, -2.3459190843850793e-08)  # erfc(x) e^(x²), in x - 2.5

KINDS = ("exp", "log", "log1p", "expm1", "tanh", "sigmoid", "elu", "softplus", "erf", "sin", "cos")
_LIBM64 = {"exp": "llvm.exp", "log": "llvm.log", "sin": "llvm.sin", "cos": "llvm.cos"}


def emit_math(b: ir.IRBuilder, kind: str, x):
    """``kind`` (one of KINDS) of the float32/float64 (vector) value ``x``."""
    return _Math(b)(kind, x)


def fmax_nan(b, x, y):
    """numpy's maximum: ``x`` if ``x >= y`` or ``x`` is NaN, else ``y`` (NaN propagates)."""
    keep = b.or_(b.fcmp_ordered(">=", x, y), b.fcmp_ordered("uno", x, x))
    return b.select(keep, x, y)


def fmin_nan(b, x, y):
    """numpy's minimum (NaN propagates)."""
    keep = b.or_(b.fcmp_ordered("<=", x, y), b.fcmp_ordered("uno", x, x))
    return b.select(keep, x, y)


class _Math:
    """The emitters; ``self.b`` is the builder, values are scalars or vectors."""

    def __init__(self, b: ir.IRBuilder):
        self.b = b

    def __call__(self, kind, x):
        if kind in ("sigmoid", "elu", "softplus"):
            return getattr(self, kind)(x)
        if isinstance(elem(x.type), ir.DoubleType):
            if kind in _LIBM64:
                return call_intrinsic(self.b, _LIBM64[kind], [x])
            return lanewise_call(self.b, kind, x)
        return getattr(self, kind + "_f32")(x)

    # ------------------------------------------------------------------ helpers
    def c(self, x, v):
        return cl(x, v)

    def horner(self, x, coeffs):
        """coeffs[0] + x*(coeffs[1] + x*(...)) (no fused multiply-add: reproducible)."""
        b = self.b
        p = self.c(x, coeffs[-1])
        for k in reversed(coeffs[:-1]):
            p = b.fadd(b.fmul(p, x), self.c(x, k))
        return p

    def clamp_hi(self, x, hi):
        return self.b.select(self.b.fcmp_ordered(">", x, self.c(x, hi)), self.c(x, hi), x)

    def clamp_lo(self, x, lo):
        return self.b.select(self.b.fcmp_ordered("<", x, self.c(x, lo)), self.c(x, lo), x)

    def isnan(self, x):
        return self.b.fcmp_ordered("uno", x, x)

    def pow2i(self, n):
        """2^n (float) for an i32 (vector) n in [-126, 127]."""
        b = self.b
        bits = b.shl(b.add(n, cl(n, 127)), cl(n, 23))
        return b.bitcast(bits, like(n, F32))

    # ------------------------------------------------------------------ float32
    def exp_f32(self, x):
        b = self.b
        nan = self.isnan(x)
        xc = self.clamp_lo(self.clamp_hi(x, 89.0), -104.0)
        xc = b.select(nan, self.c(x, 0.0), xc)
        n = call_intrinsic(b, "llvm.roundeven", [b.fmul(xc, self.c(x, LOG2E))])
        r = b.fsub(b.fsub(xc, b.fmul(n, self.c(x, LN2_HI))), b.fmul(n, self.c(x, LN2_LO)))
        p = self.horner(r, [1.0 / _FACT[k] for k in range(8)])
        ni = b.fptosi(n, like(x, I32))
        n1 = b.ashr(ni, cl(ni, 1))
        res = b.fmul(b.fmul(p, self.pow2i(n1)), self.pow2i(b.sub(ni, n1)))
        return b.select(nan, x, res)

    def log_f32(self, x):
        b = self.b
        ity = like(x, I32)
        tiny = b.fcmp_ordered("<", x, self.c(x, 2.0 ** -126))
        xs = b.select(tiny, b.fmul(x, self.c(x, 2.0 ** 23)), x)
        bits = b.bitcast(xs, ity)
        e = b.sub(b.lshr(bits, cl(bits, 23)), b.select(tiny, cl(bits, 127 + 23), cl(bits, 127)))
        m = b.bitcast(b.or_(b.and_(bits, cl(bits, 0x7FFFFF)), cl(bits, 0x3F800000)), x.type)
        big = b.fcmp_ordered(">", m, self.c(x, SQRT2))
        m = b.select(big, b.fmul(m, self.c(x, 0.5)), m)
        e = b.select(big, b.add(e, cl(e, 1)), e)
        f = b.fsub(m, self.c(x, 1.0))
        s = b.fdiv(f, b.fadd(f, self.c(x, 2.0)))
        z = b.fmul(s, s)
        r = b.fmul(z, self.horner(z, [2.0 / 3, 2.0 / 5, 2.0 / 7, 2.0 / 9]))
        hfsq = b.fmul(self.c(x, 0.5), b.fmul(f, f))
        dk = b.sitofp(e, x.type)
        inner = b.fadd(b.fmul(s, b.fadd(hfsq, r)), b.fmul(dk, self.c(x, LN2_LO)))
        res = b.fsub(b.fmul(dk, self.c(x, LN2_HI)), b.fsub(b.fsub(hfsq, inner), f))
        res = b.select(b.fcmp_ordered("==", x, self.c(x, float("inf"))), x, res)
        res = b.select(b.fcmp_ordered("==", x, self.c(x, 0.0)), self.c(x, float("-inf")), res)
        res = b.select(b.fcmp_ordered("<", x, self.c(x, 0.0)), self.c(x, float("nan")), res)
        return b.select(self.isnan(x), x, res)

    def log1p_f32(self, x):
        b = self.b
        u = b.fadd(x, self.c(x, 1.0))
        um1 = b.fsub(u, self.c(x, 1.0))
        res = b.fmul(self.log_f32(u), b.fdiv(x, um1))
        res = b.select(b.fcmp_ordered("==", um1, self.c(x, 0.0)), x, res)
        return b.select(b.fcmp_ordered("==", x, self.c(x, float("inf"))), x, res)

    def expm1_f32(self, x):
        b = self.b
        q = b.fmul(x, self.horner(x, [1.0 / _FACT[k] for k in range(2, 10)]))
        small = b.fadd(x, b.fmul(x, q))
        large = b.fsub(self.exp_f32(x), self.c(x, 1.0))
        absx = call_intrinsic(b, "llvm.fabs", [x])
        return b.select(b.fcmp_ordered("<", absx, self.c(x, 0.5)), small, large)

    def tanh_f32(self, x):
        b = self.b
        a = self.clamp_hi(call_intrinsic(b, "llvm.fabs", [x]), 9.1)
        e = self.expm1_f32(b.fmul(a, self.c(x, 2.0)))
        t = b.fdiv(e, b.fadd(e, self.c(x, 2.0)))
        return call_intrinsic(b, "llvm.copysign", [t, x])

    def erf_f32(self, x):
        b = self.b
        a = call_intrinsic(b, "llvm.fabs", [b.fpext(x, like(x, F64))])
        small = b.fmul(a, self.horner(b.fmul(a, a), ERF_SMALL))
        e = self.exp_f32(b.fptrunc(b.fneg(b.fmul(a, a)), x.type))
        tail = b.fmul(b.fpext(e, a.type), self.horner(b.fsub(a, self.c(a, 2.5)), ERFC_SCALED))
        v = b.select(b.fcmp_ordered("<", a, self.c(a, 1.0)), small,
                     b.fsub(self.c(a, 1.0), tail))
        v = b.select(b.fcmp_ordered(">=", a, self.c(a, 4.0)), self.c(a, 1.0), v)
        return call_intrinsic(b, "llvm.copysign", [b.fptrunc(v, x.type), x])

    def sin_f32(self, x):
        return self._sincos_f32(x, 0)

    def cos_f32(self, x):
        return self._sincos_f32(x, 1)

    def _sincos_f32(self, x, shift):
        """sin (shift 0) or cos (shift 1: cos x = sin(x + pi/2)) of float32 lanes."""
        b = self.b
        y = b.fpext(x, like(x, F64))
        ok = b.fcmp_ordered("<=", call_intrinsic(b, "llvm.fabs", [y]), self.c(y, SINCOS_LIMIT))
        y = b.select(ok, y, self.c(y, 0.0))
        j = call_intrinsic(b, "llvm.roundeven", [b.fmul(y, self.c(y, TWO_OVER_PI))])
        r = y
        for part in PIO2:
            r = b.fsub(r, b.fmul(j, self.c(y, part)))
        q = b.add(b.fptosi(j, like(x, I32)), cl(ok, shift, I32))
        z = b.fmul(r, r)
        s = b.fadd(r, b.fmul(b.fmul(r, z), self.horner(
            z, [(-1) ** (k + 1) / _FACT[2 * k + 3] for k in range(6)])))
        c = b.fadd(b.fsub(self.c(y, 1.0), b.fmul(self.c(y, 0.5), z)), b.fmul(b.fmul(z, z), self.horner(
            z, [(-1) ** k / _FACT[2 * k + 4] for k in range(5)])))
        odd = b.icmp_unsigned("!=", b.and_(q, cl(q, 1)), cl(q, 0))
        neg = b.icmp_unsigned("!=", b.and_(q, cl(q, 2)), cl(q, 0))
        v = b.select(odd, c, s)
        res = b.fptrunc(b.select(neg, b.fneg(v), v), x.type)
        slow = "llvm.sin" if shift == 0 else "llvm.cos"
        bad = b.not_(ok)
        (res,) = if_then_values(b, any_lane(b, bad), lambda vals: [
            b.select(bad, call_intrinsic(b, slow, [x]), vals[0])], [res])
        return res

    # ------------------------------------------------------------------ composites
    def sigmoid(self, x):
        b = self.b
        one = self.c(x, 1.0)
        return b.fdiv(one, b.fadd(one, self("exp", b.fneg(x))))

    def elu(self, x):
        b = self.b
        neg = self("expm1", fmin_nan(b, x, self.c(x, 0.0)))
        return b.select(b.fcmp_ordered(">", x, self.c(x, 0.0)), x, neg)

    def softplus(self, x):
        b = self.b
        absx = call_intrinsic(b, "llvm.fabs", [x])
        tail = self("log1p", self("exp", b.fneg(absx)))
        return b.fadd(fmax_nan(b, x, self.c(x, 0.0)), tail)


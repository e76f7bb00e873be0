"""Small width-agnostic helpers shared by the LLVM renderer's modules.

A rendered kernel-IR value is an LLVM scalar or a ``<W x T>`` vector (one element per SIMD
lane).  Helpers here build constants of the same shape as a value, broadcast scalars,
declare overloaded intrinsics (``llvm.fabs.v16f32``...) and map kernel-IR dtypes to LLVM
types (bool is ``i1`` in registers and one byte in memory).
"""
from __future__ import annotations

import llvmlite.ir as ir

from .gemm_kernel import intrinsic, splat

I1, I8, I16, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F16, F32, F64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()

_SCALAR = {"f16": F16, "f32": F32, "f64": F64, "i8": I8, "u8": I8, "i16": I16, "u16": I16, "i32": I32,
           "i64": I64, "bool": I1}


def scalar_type(dtype) -> ir.Type:
    """The register type of a kernel-IR dtype."""
    try:
        return _SCALAR[dtype.short]
    except KeyError:
        raise NotImplementedError(f"the LLVM renderer does not support dtype {dtype.name}") from None


def memory_type(dtype) -> ir.Type:
    """The in-memory element type (bool is stored as one byte 0/1)."""
    return I8 if dtype.is_bool else scalar_type(dtype)


def width(v) -> int:
    """Lanes of a value (1 for a scalar)."""
    return v.type.count if isinstance(v.type, ir.VectorType) else 1


def elem(t: ir.Type) -> ir.Type:
    """The element type of a (vector) type."""
    return t.element if isinstance(t, ir.VectorType) else t


def shaped(t: ir.Type, w: int) -> ir.Type:
    """``t`` as a scalar (w == 1) or a ``<w x t>`` vector."""
    return ir.VectorType(t, w) if w > 1 else t


def like(v, t: ir.Type) -> ir.Type:
    """Type ``t`` with the lanes of value ``v``."""
    return shaped(elem(t), width(v))


def const(t: ir.Type, value) -> ir.Constant:
    """A constant of (vector) type ``t``: every lane ``value`` (ints wrap to the width)."""
    e = elem(t)
    if isinstance(e, ir.IntType) and not isinstance(value, float):
        bits = e.width
        value = int(value) & ((1 << bits) - 1)
        if bits > 1 and value >= 1 << (bits - 1):
            value -= 1 << bits
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(t.element, value)] * t.count)
    return ir.Constant(t, value)


def cl(v, value, t: ir.Type | None = None) -> ir.Constant:
    """A constant shaped like value ``v`` (element type ``t`` or v's own)."""
    return const(like(v, t or v.type), value)


def broadcast(b: ir.IRBuilder, v, w: int):
    """``v`` with ``w`` lanes (a scalar is splat; a vector must already have them)."""
    if w == 1 or isinstance(v.type, ir.VectorType):
        return v
    return splat(b, v, w)


def unify(b: ir.IRBuilder, *vals):
    """The values broadcast to a common lane count."""
    w = max(width(v) for v in vals)
    return [broadcast(b, v, w) for v in vals]


def suffix(t: ir.Type) -> str:
    """LLVM's overloaded-intrinsic suffix of a type: f32, v16f32, i64, v8i64, p0..."""
    e = elem(t)
    if isinstance(e, ir.FloatType):
        s = "f32"
    elif isinstance(e, ir.DoubleType):
        s = "f64"
    elif isinstance(e, ir.HalfType):
        s = "f16"
    elif isinstance(e, ir.PointerType):
        s = "p0"
    else:
        s = f"i{e.width}"
    return f"v{t.count}{s}" if isinstance(t, ir.VectorType) else s


def call_intrinsic(b: ir.IRBuilder, base: str, args, ret=None, over=None):
    """Call ``base.<suffix>`` (overloaded on ``over`` types, default the first argument's)."""
    module = b.module
    over = over or [args[0].type]
    name = base + "".join("." + suffix(t) for t in over)
    fn = intrinsic(module, name, ret or args[0].type, [a.type for a in args])
    return b.call(fn, list(args))


def lane_iota(w: int) -> ir.Constant:
    """``<0, 1, ..., w-1>`` as i64 lanes."""
    return ir.Constant(ir.VectorType(I64, w), list(range(w)))


def extract(b: ir.IRBuilder, v, lane: int):
    """Lane ``lane`` of a vector (a scalar is returned as is)."""
    if not isinstance(v.type, ir.VectorType):
        return v
    return b.extract_element(v, ir.Constant(I32, lane))


def any_lane(b: ir.IRBuilder, mask):
    """An i1 that is true when any lane of an i1 (vector) is true."""
    if not isinstance(mask.type, ir.VectorType):
        return mask
    bits = b.bitcast(mask, ir.IntType(mask.type.count))
    return b.icmp_unsigned("!=", bits, ir.Constant(bits.type, 0))


def declare(module: ir.Module, name: str, ret, args, var_arg=False) -> ir.Function:
    """Declare (once) an external C function."""
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args, var_arg=var_arg), name)
    return fn


def lanewise_call(b: ir.IRBuilder, name: str, x, ret_elem=None):
    """Call the scalar C function ``name`` on every lane of ``x`` (libm for float64)."""
    e = elem(x.type)
    fn = declare(b.module, name, ret_elem or e, [e])
    if width(x) == 1:
        return b.call(fn, [x])
    out = ir.Constant(like(x, ret_elem or e), ir.Undefined)
    for lane in range(width(x)):
        y = b.call(fn, [extract(b, x, lane)])
        out = b.insert_element(out, y, ir.Constant(I32, lane))
    return out

"""Kernel-IR expressions and memory accesses as LLVM IR, scalar or SIMD.

``Emitter`` holds what one LLVM function needs to evaluate expressions: the builder, the
buffer pointers (``bufs[i]`` loaded once, in the function's prologue block), the batch size,
the environment of variables (loop indices, ``Let`` values, accumulator slots) and, inside a
vectorized loop, the ``Lanes`` being computed.

Vector mode: values that do not depend on the vectorized variable stay scalar (uniform) and
are broadcast only where they meet a vector.  A ``Load``/``Store`` index is classified with
``affine.lane_stride``: stride 0 -> one scalar access (a store keeps the last lane, as the
sequential loop would), stride 1 -> one contiguous vector access (``llvm.masked.load`` /
``store`` when ``Lanes.mask`` is set: a loop's last, partial vector or a GEMM edge tile),
anything else ->
``llvm.masked.gather`` / ``llvm.masked.scatter`` (lanes in order, so a repeated index keeps
the last lane's value).  Element alignment only: feed/state memory may be unaligned.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from .affine import lane_stride
from .ops import INDEX_OPS, emit_cast, emit_op
from .philox import emit_random
from .vals import (I1, I8, I32, I64, PTR, broadcast, call_intrinsic, const, extract, lane_iota,
                   memory_type, scalar_type, splat, unify, width)


@dataclass
class Lanes:
    """The SIMD lanes of a vectorized loop: variable ``var`` runs over ``width`` consecutive
    values; ``mask`` (an ``<width x i1>`` or None) marks the lanes that exist; ``active``
    (an i64, or None) counts them when they are a prefix (a loop's partial last vector)."""

    var: str
    width: int
    mask: object = None
    active: object = None


@dataclass
class AccSlot:
    """A mutable accumulator: an alloca holding a scalar or a vector of ``dtype``."""

    ptr: object
    type: ir.Type
    dtype: object


class Emitter:
    """Evaluates kernel-IR expressions into one LLVM function (see the module doc)."""

    def __init__(self, module, fn, builder, program, bufs, batch, prologue=None):
        self.module, self.fn, self.b, self.program = module, fn, builder, program
        self.bufs, self.batch, self.pro = bufs, batch, prologue
        self.env = {}
        self.lanes = None
        self.lets = {}  # Let definitions of the current vector body (index analysis)
        self.extra_buffers = {}  # name -> (pointer, dtype) of renderer-made temporaries
        self._ptrs = {}
        self._index = {name: i for i, name in enumerate(program.buffers)}

    # ------------------------------------------------------------------ expressions
    def emit(self, e):
        """The LLVM value of expression ``e`` (a scalar, or a vector in vector mode)."""
        method = getattr(self, "e_" + type(e).__name__, None)
        if method is None:
            raise NotImplementedError(f"cannot render expression {type(e).__name__}")
        return method(e)

    def e_Const(self, e):
        value = e.value
        if e.dtype.is_bool:
            value = int(bool(value))
        elif e.dtype.is_floating:
            value = float(value)
        return const(scalar_type(e.dtype), value)

    def e_Var(self, e):
        try:
            v = self.env[e.name]
        except KeyError:
            raise KeyError(f"variable {e.name!r} is not bound") from None
        if isinstance(v, AccSlot):
            return self.b.load(v.ptr, typ=v.type)
        return v

    def e_Batch(self, e):
        return self.batch

    def e_Load(self, e):
        return self.load(e.buffer, e.index)

    def e_Op(self, e):
        args = unify(self.b, *[self.emit(a) for a in e.args])
        if e.kind in INDEX_OPS:
            return emit_op(self.b, e.kind, args, [e.dtype] * len(args), e.dtype)
        return emit_op(self.b, e.kind, args, [a.dtype for a in e.args], e.dtype)

    def e_Cast(self, e):
        return emit_cast(self.b, self.emit(e.value), e.value.dtype, e.dtype)

    def e_Random(self, e):
        return emit_random(self.b, e.dist, e.seed, e.seed2, self.emit(e.index), self.emit(e.step),
                           e.dtype)

    # ------------------------------------------------------------------ buffers
    def buffer(self, name):
        """(pointer, dtype) of a buffer, its pointer loaded from ``bufs`` once."""
        if name in self.extra_buffers:
            return self.extra_buffers[name]
        decl = self.program.buffers[name]
        if name not in self._ptrs:
            b = self.pro or self.b
            slot = b.gep(self.bufs, [ir.Constant(I64, self._index[name])], source_etype=PTR)
            self._ptrs[name] = b.load(slot, typ=PTR, name="buf." + name[:40])
        return self._ptrs[name], decl.dtype

    def buffer_slot(self, name) -> int:
        """The index of buffer ``name`` in ``bufs``."""
        return self._index[name]

    def preload(self, names):
        """Load the pointers of ``names`` now (where they dominate all later uses)."""
        for name in names:
            self.buffer(name)

    def _mode(self, index, idx):
        """'scalar', 'vector' or 'gather' for an access with index expr/value (see doc)."""
        if self.lanes is None or width(idx) == 1:
            return "scalar"
        varying = [n for n, v in self.env.items() if n not in self.lets and n != self.lanes.var
                   and _is_vector(v)]
        stride = lane_stride(index, self.lanes.var, self.lets, varying)
        return {0: "scalar", 1: "vector"}.get(stride, "gather")

    def _mask(self, w):
        if self.lanes is not None and self.lanes.mask is not None:
            return self.lanes.mask
        return const(ir.VectorType(I1, w), 1)

    def load(self, name, index):
        """Element(s) ``name[index]`` as register values (bool -> i1)."""
        b = self.b
        ptr, dtype = self.buffer(name)
        mty, align = memory_type(dtype), dtype.np.itemsize
        idx = self.emit(index)
        mode = self._mode(index, idx)
        if mode == "scalar":
            v = b.load(b.gep(ptr, [extract(b, idx, 0)], source_etype=mty), typ=mty, align=align)
        elif mode == "vector":
            w = self.lanes.width
            vty = ir.VectorType(mty, w)
            p = b.gep(ptr, [extract(b, idx, 0)], source_etype=mty)
            if self.lanes.mask is None:
                v = b.load(p, typ=vty, align=align)
            else:
                v = call_intrinsic(b, "llvm.masked.load", [p, ir.Constant(I32, align), self.lanes.mask,
                                                           const(vty, 0)], ret=vty, over=[vty, PTR])
        else:
            w = width(idx)
            vty = ir.VectorType(mty, w)
            v = call_intrinsic(b, "llvm.masked.gather", [self._lane_ptrs(ptr, mty, idx), ir.Constant(I32, align),
                                                         self._mask(w), const(vty, 0)],
                               ret=vty, over=[vty, ir.VectorType(PTR, w)])
        if dtype.is_bool:
            return b.icmp_unsigned("!=", v, const(v.type, 0))
        return v

    def store(self, name, index, value):
        """``name[index] = value`` (value an LLVM value; bool stored as one byte)."""
        b = self.b
        ptr, dtype = self.buffer(name)
        mty, align = memory_type(dtype), dtype.np.itemsize
        if dtype.is_bool:
            value = b.zext(value, ir.VectorType(I8, width(value)) if width(value) > 1 else I8)
        idx = self.emit(index)
        mode = self._mode(index, idx)
        if mode == "scalar":
            value = self._last_lane(value)
            b.store(value, b.gep(ptr, [extract(b, idx, 0)], source_etype=mty), align=align)
            return
        w = self.lanes.width
        value = broadcast(b, value, w)
        if mode == "vector":
            p = b.gep(ptr, [extract(b, idx, 0)], source_etype=mty)
            if self.lanes.mask is None:
                b.store(value, p, align=align)
            else:
                call_intrinsic(b, "llvm.masked.store", [value, p, ir.Constant(I32, align), self.lanes.mask],
                               ret=ir.VoidType(), over=[value.type, PTR])
            return
        ptrs = self._lane_ptrs(ptr, mty, broadcast(b, idx, w))
        call_intrinsic(b, "llvm.masked.scatter", [value, ptrs, ir.Constant(I32, align), self._mask(w)],
                       ret=ir.VoidType(), over=[value.type, ptrs.type])

    def _last_lane(self, value):
        """The value of the last existing lane (what the sequential loop stores last)."""
        if width(value) == 1:
            return value
        if self.lanes.active is None:
            return extract(self.b, value, width(value) - 1)
        last = self.b.trunc(self.b.sub(self.lanes.active, ir.Constant(I64, 1)), I32)
        return self.b.extract_element(value, last)

    def _lane_ptrs(self, ptr, mty, idx):
        """``<W x ptr>``: the address of every lane's element."""
        p = self.b.gep(ptr, [idx], source_etype=mty)
        p.type = ir.VectorType(PTR, width(idx))  # llvmlite types a vector GEP as a scalar ptr
        return p

    # ------------------------------------------------------------------ lanes
    def lane_values(self, first):
        """The vectorized variable's lanes ``first + <0..W-1>`` (i64 vector)."""
        return self.b.add(splat(self.b, first, self.lanes.width), lane_iota(self.lanes.width))


def _is_vector(v) -> bool:
    if isinstance(v, AccSlot):
        return isinstance(v.type, ir.VectorType)
    return isinstance(getattr(v, "type", None), ir.VectorType)


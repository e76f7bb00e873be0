"""Shared by the LLVM renderer tests: a tiny kernel-IR builder and a registry of one-kernel
programs that a test module renders into one LLVM module, compiles once and calls through
ctypes with the kernel ABI ``i32 f(ptr bufs, i64 N, ptr err)``."""
import ctypes

import llvmlite.ir as ir
import numpy as np

from compiler.codegen.llvm import build, render
from compiler.ir.types import as_dtype, int64
from compiler.lower import kernel_ir as K

I = int64
N = K.Batch(I)


def V(name, dtype=I):
    return K.Var(name, dtype)


def C(value, dtype=I):
    return K.Const(value, dtype)


def O(kind, *args, dtype=None):
    return K.Op(kind, tuple(args), dtype or args[0].dtype)


def loop(var, stop, *body, start=0, **flags):
    return K.For(V(var), C(start), stop, K.Block(list(body)), **flags)


class Cases(dict):
    """case name -> Program with one kernel."""

    def add(self, name, buffers, *body):
        """Register a one-kernel program; ``buffers`` maps name -> dtype (in bufs order)."""
        decls = {n: K.BufferDecl(n, as_dtype(d), (), "arena") for n, d in buffers.items()}
        kernel = K.Kernel(name, list(decls), list(decls), K.Block(list(body)))
        self[name] = K.Program(name, decls, [kernel])
        return name

    def build(self, tmp_path_factory):
        """Render every case into one module, compile it, load it."""
        module = ir.Module(name="render_tests")
        for name, program in self.items():
            render.render_kernel(module, program.kernels[0], program, f"t_{name}")
        out = tmp_path_factory.mktemp("render")
        res = build.compile_module(module, str(out / "kernels.so"))
        dll = ctypes.CDLL(res.path)
        dll.ir_text = str(module)
        return dll

    def build_avx2(self, tmp_path_factory, names):
        """Render the cases ``names`` for an AVX2-only target (8 float lanes, the 6x16 GEMM),
        compile, load; the library's ``ir_text`` and ``asm`` hold the IR and the assembly.
        Skips the test where the host has no AVX2 and FMA."""
        import pytest

        from compiler.codegen.llvm import target
        tgt = target.create_target(features=target.without_avx512(target.host_features()))
        if not tgt.has("avx2") or not tgt.has("fma"):
            pytest.skip("host has no AVX2/FMA")
        opts = render.options_for(tgt)
        assert opts.lanes32 == 8
        module = ir.Module(name="render_avx2")
        for name in names:
            program = self[name]
            render.render_kernel(module, program.kernels[0], program, f"t_{name}", options=opts)
        out = tmp_path_factory.mktemp("render_avx2")
        res = build.compile_module(module, str(out / "k.so"), target=tgt, asm_path=str(out / "k.s"))
        dll = ctypes.CDLL(res.path)
        dll.ir_text, dll.asm = str(module), (out / "k.s").read_text()
        return dll

    def run(self, lib, name, n, **arrays):
        """Call case ``name`` at batch size ``n``; returns (status, error message)."""
        program = self[name]
        ptrs = (ctypes.c_void_p * len(program.buffers))(*[arrays[b].ctypes.data for b in program.buffers])
        err = ctypes.create_string_buffer(256)
        fn = getattr(lib, f"t_{name}")
        fn.restype, fn.argtypes = ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        status = fn(ctypes.addressof(ptrs), n, ctypes.addressof(err))
        return status, err.value.decode()


def ulp_diff(a, b):
    """Per-element distance in units in the last place (NaN == NaN, -0 == +0)."""
    a, b = np.asarray(a), np.asarray(b)
    bits = 8 * a.dtype.itemsize

    def ordered(x):
        i = x.view(np.int32 if bits == 32 else np.int64).astype(np.int64)
        return np.where(i >= 0, i, -(i & np.int64(2 ** (bits - 1) - 1)))
    oa, ob = ordered(a), ordered(b)
    far = np.abs(oa.astype(np.float64)) + np.abs(ob.astype(np.float64))
    with np.errstate(over="ignore"):
        d = np.where((oa >= 0) == (ob >= 0), np.abs(oa - ob).astype(np.float64), far)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    d[nan_a & nan_b] = 0
    d[nan_a != nan_b] = np.inf
    return d


def ulp_error(got, ref64):
    """|got - ref| in float32 ulps of the reference (fractional; equal values count 0)."""
    ref32 = ref64.astype(np.float32)
    spacing = np.maximum(np.spacing(np.abs(ref32)).astype(np.float64), 2.0 ** -149)
    with np.errstate(invalid="ignore"):
        err = np.abs(got.astype(np.float64) - ref64) / spacing
    same = (got == ref32) | (np.isnan(got) & np.isnan(ref64))
    err[same] = 0.0
    return err

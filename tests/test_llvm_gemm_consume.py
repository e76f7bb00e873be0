"""GEMM epilogues that consume the tile (the LLVM backend): an optimizer update fused into a
weight gradient whose C is scratch.  The engine must not write C (only partial sums when K
spans several K blocks), the epilogue prefetches its operands a tile ahead, and the result
matches the kernel-IR interpreter at edge-tile shapes, batch 1 and K over the K block."""
import ctypes
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from compiler.codegen.llvm import build, render
from compiler.codegen.llvm.affine import constant_step
from compiler.codegen.llvm.render_epilogue import streams
from compiler.ir.types import Sym, float32
from compiler.lower import kernel_ir as K

from tests.llvm_kit import C, I, N, O, V

F = float32
row, col, acc = V("row"), V("col"), V("acc", F)
SHAPES = [(37, 45), (28, 64), (1, 70), (200, 33)]  # (M, N): edge tiles, full tiles, one row
SENTINEL = 12345.0


def _adam(n_cols, s):
    """Adam's update of state ``m{s}, v{s}, p{s}`` from the gradient ``acc`` (the kernel IR the
    lowering fuses into the fc1 weight gradient)."""
    at = O("add", O("mul", row, C(n_cols)), col)
    lr, m, v, p = K.Load("lr", C(0), F), V("m_new", F), V("v_new", F), V("delta", F)
    return K.Block([
        K.Let(m, O("add", O("mul", K.Load(f"m{s}", at, F), C(0.9, F)), O("mul", acc, C(0.1, F)))),
        K.Let(v, O("add", O("mul", K.Load(f"v{s}", at, F), C(0.999, F)),
                   O("mul", O("square", acc), C(0.001, F)))),
        K.Let(p, O("div", O("mul", lr, m), O("add", O("sqrt", v), C(1e-8, F)))),
        K.Store(f"m{s}", at, m), K.Store(f"v{s}", at, v),
        K.Store(f"p{s}", at, O("sub", K.Load(f"p{s}", at, F), p))])


def _program():
    """One kernel per shape: ``gradient = x{s}ᵀ @ dy{s}`` (K = the batch) into scratch C, Adam
    on the state in the epilogue."""
    bufs = {"lr": K.BufferDecl("lr", F, (1,), "const", data=np.array([0.01], np.float32))}
    kernels, offset = [], 0
    for s, (m, n) in enumerate(SHAPES):
        bufs[f"x{s}"] = K.BufferDecl(f"x{s}", F, (Sym(1), m), "feed", key=f"x{s}:0", index=2 * s)
        bufs[f"dy{s}"] = K.BufferDecl(f"dy{s}", F, (Sym(1), n), "feed", key=f"dy{s}:0", index=2 * s + 1)
        for st in "mvp":
            bufs[f"{st}{s}"] = K.BufferDecl(f"{st}{s}", F, (m, n), "state", key=f"{st}{s}")
        bufs[f"c{s}"] = K.BufferDecl(f"c{s}", F, (m, n), "scratch", space="static", offset=offset)
        offset += -(-m * n * 4 // 64) * 64
        gemm = K.Gemm(C(m), C(n), N,
                      K.Operand(f"x{s}", C(0), C(m), transposed=True), K.Operand(f"dy{s}", C(0), C(n)),
                      K.Operand(f"c{s}", C(0), C(n)), epilogue=_adam(n, s))
        names = [f"x{s}", f"dy{s}", f"m{s}", f"v{s}", f"p{s}", "lr", f"c{s}"]
        kernels.append(K.Kernel(f"grad_adam{s}", names, [f"m{s}", f"v{s}", f"p{s}", f"c{s}"], gemm))
    feeds = [f"{t}{s}:0" for s in range(len(SHAPES)) for t in ("x", "dy")]
    return K.Program("adam", bufs, kernels, scratch_static_bytes=offset, feeds=feeds)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    program = _program()
    module = ir.Module(name="consume")
    names = render.render_program_kernels(module, program, prefix="k_")
    out = tmp_path_factory.mktemp("consume")
    lib = ctypes.CDLL(build.compile_module(module, str(out / "k.so")).path)
    return program, lib, names, str(module)


def _state(rng):
    out = {}
    for s, (m, n) in enumerate(SHAPES):
        out |= {f"m{s}": rng.normal(size=(m, n)), f"v{s}": rng.uniform(0.1, 1, (m, n)),
                f"p{s}": rng.normal(size=(m, n))}
    return {k: v.astype(np.float32) for k, v in out.items()}


@pytest.mark.parametrize("batch", [1, 7, 600])  # 600: K over the K block (partial sums in C)
def test_consuming_epilogue_matches_the_interpreter(compiled, batch, two_threads):
    from compiler.lower import kernel_interp
    program, lib, names, _ = compiled
    rng = np.random.default_rng(batch)
    state = _state(rng)
    feeds = {}
    for s, (m, n) in enumerate(SHAPES):
        feeds[f"x{s}:0"] = rng.normal(size=(batch, m)).astype(np.float32)
        feeds[f"dy{s}:0"] = rng.normal(size=(batch, n)).astype(np.float32)
    want, _ = kernel_interp.run_program(program, state, feeds, batch)
    mem = {k: v.copy() for k, v in state.items()}
    mem |= {k[:-2]: v for k, v in feeds.items()}
    mem["lr"] = program.buffers["lr"].data
    mem |= {f"c{s}": np.full((m, n), SENTINEL, np.float32) for s, (m, n) in enumerate(SHAPES)}
    ptrs = (ctypes.c_void_p * len(program.buffers))(*[mem[b].ctypes.data for b in program.buffers])
    for name in names:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        assert fn(ctypes.addressof(ptrs), batch, None) == 0
    atol = 1e-6 * (1 + np.sqrt(batch))  # float32 sums of `batch` products in another order
    for key, value in want.items():
        np.testing.assert_allclose(mem[key], value, rtol=2e-5, atol=atol, err_msg=key)
    assert all(not np.array_equal(mem[k], state[k]) for k in want)  # the update ran
    if batch <= 256:  # one K block: the engine never touched C
        for s in range(len(SHAPES)):
            assert np.all(mem[f"c{s}"] == SENTINEL), f"C of shape {SHAPES[s]} was written"


def test_consuming_epilogue_tells_the_engine_and_prefetches(compiled):
    program, _, names, text = compiled
    calls = re.findall(r'call i32 @"?kiln_sgemm_epilogue"?\((.*)\)', text)
    assert len(calls) == len(SHAPES) and all(c.endswith("i32 0") for c in calls), calls  # CONSUME_C
    epilogues = re.findall(r'define internal void @"?k_[^"(]*\.epilogue[^(]*\(.*?\n}', text, re.S)
    assert len(epilogues) == 2 * len(SHAPES)  # full and edge tiles
    for body in epilogues:  # m, v, p of the next tile down, for writing
        prefetches = re.findall(r'call void @"llvm\.prefetch\.p0"\(ptr [^,]+, i32 1, i32 3, i32 1\)', body)
        assert len(prefetches) == 3


def test_streams_are_the_row_major_operands():
    at = O("add", O("mul", row, C(45)), col)
    epi = K.Block([K.Let(V("t", F), O("add", acc, K.Load("bias", col, F))),
                   K.Store("out", at, V("t", F)), K.Store("c", at, acc),
                   K.Store("tr", O("add", O("mul", col, C(7)), row), acc),
                   K.Store("sq", O("add", O("mul", row, row), col), acc),
                   K.Store("acc_", at, O("add", K.Load("acc_", at, F), acc))])
    g = K.Gemm(C(7), C(45), C(3), K.Operand("a", C(0), C(3)), K.Operand("b", C(0), C(45)),
               K.Operand("c", C(0), C(45)), epilogue=epi)
    # not C (the engine's), not bias (no row step), not a transposed or non-affine store
    assert [(b, w) for b, _, w in streams(g)] == [("out", True), ("acc_", True)]


def test_constant_step():
    r, c = V("row"), V("col")
    assert constant_step(O("add", O("mul", r, C(1024)), c), "row") == 1024
    assert constant_step(O("add", O("mul", O("add", r, C(2)), C(3)), O("mul", r, C(4))), "row") == 7
    assert constant_step(c, "row") == 0
    assert constant_step(O("mul", r, N), "row") is None  # a batch-dependent step
    assert constant_step(O("mul", r, r), "row") is None
    assert constant_step(K.Load("idx", r, I), "row") is None

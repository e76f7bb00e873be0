"""The LLVM renderer: loops and access patterns, reductions, threads, checks, Philox draws,
agreement with the kernel-IR evaluator, the AVX2 code path.  GEMM statements and their
epilogues: tests/test_llvm_render_gemm.py."""
import ctypes
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from compiler.codegen.llvm import build, render
from compiler.ir.ops.random import bits_to_unit, random_bits
from compiler.ir.types import (as_dtype, bool_, float32, float64, int32)
from compiler.lower import kernel_ir as K
from tests.llvm_kit import C, Cases, I, loop, N, O, ulp_error, V

CASES = Cases()
case = CASES.add


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """Every case of this module, rendered into one module and compiled once."""
    return CASES.build(tmp_path_factory)


def run(lib, name, n, **arrays):
    return CASES.run(lib, name, n, **arrays)


# ----------------------------------------------------------------------------- loops, access patterns
F = float32
i_ = V("i")
case("access", {"x": F, "s": F, "idx": int32, "perm": I, "y": F, "g": F, "st": F, "sc": F, "md": F},
     loop("i", N,
          K.Let(V("j", I), O("add", O("mul", i_, C(3)), C(1))),           # strided, through a Let
          K.Let(V("t", F), O("add", K.Load("x", i_, F), K.Load("s", C(0), F))),  # broadcast
          K.Store("y", i_, V("t", F)),
          K.Store("g", i_, K.Load("x", K.Cast(K.Load("idx", i_, int32), I), F)),  # gather
          K.Store("st", i_, K.Load("x", V("j"), F)),
          K.Store("sc", K.Load("perm", i_, I), V("t", F)),                # scatter
          K.Store("md", i_, K.Load("x", O("imod", i_, C(5)), F)),
          vectorize=True))
case("not_vectorizable", {"x": F, "y": F},
     loop("i", N, K.If(O("greater", K.Load("x", i_, F), C(0.0, F), dtype=bool_), K.Store("y", i_, K.Load("x", i_, F))),
          vectorize=True))
case("last_lane_store", {"x": F, "y": F},
     loop("i", N, K.Store("y", C(0), K.Load("x", i_, F)), vectorize=True))


@pytest.mark.parametrize("n", [1, 7, 16, 17, 100])
def test_vector_loop_access_patterns(lib, n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=3 * n + 1).astype(np.float32)
    s = np.array([0.25], np.float32)
    idx = rng.integers(0, 3 * n + 1, n).astype(np.int32)
    perm = rng.permutation(n).astype(np.int64)
    outs = {k: np.zeros(n, np.float32) for k in ("y", "g", "st", "sc", "md")}
    assert run(lib, "access", n, x=x, s=s, idx=idx, perm=perm, **outs)[0] == 0
    t = x[:n] + s[0]
    np.testing.assert_array_equal(outs["y"], t)
    np.testing.assert_array_equal(outs["g"], x[idx])
    np.testing.assert_array_equal(outs["st"], x[3 * np.arange(n) + 1])
    sc = np.zeros(n, np.float32)
    sc[perm] = t
    np.testing.assert_array_equal(outs["sc"], sc)
    np.testing.assert_array_equal(outs["md"], x[np.arange(n) % 5])
    y = np.full(n, -1.0, np.float32)
    assert run(lib, "not_vectorizable", n, x=x, y=y)[0] == 0
    np.testing.assert_array_equal(y, np.where(x[:n] > 0, x[:n], -1.0))
    last = np.zeros(1, np.float32)
    run(lib, "last_lane_store", n, x=x, y=last)
    assert last[0] == x[n - 1]  # the sequential loop's last write wins


def test_vector_loop_uses_vector_instructions(lib):
    text = lib.ir_text
    body = text[text.index('define i32 @"t_access"'):]
    body = body[:body.index("\n}")]
    assert "llvm.masked.gather" in body and "llvm.masked.scatter" in body
    assert re.search(r"load <\d+ x float>", body) and re.search(r"store <\d+ x float>", body)


# ----------------------------------------------------------------------------- reductions
ROWS = 3


def _reduction_case(name, dtype, combines):
    dt = as_dtype(dtype)
    r, j = V("r"), V("j")
    x = K.Load("x", O("add", O("mul", r, N), j), dt)
    body = []
    for comb, init in combines:
        body.append(K.DeclareAcc(V(f"a_{comb}", dt), C(init, dt)))
    body.append(loop("j", N, *[K.Accumulate(V(f"a_{comb}", dt), comb, x) for comb, _ in combines], vectorize=True))
    body += [K.Store(f"o_{comb}", r, V(f"a_{comb}", dt)) for comb, _ in combines]
    bufs = {"x": dt, **{f"o_{comb}": dt for comb, _ in combines}}
    return case(name, bufs, loop("r", C(ROWS), *body))


_reduction_case("reduce_f32", "float32", [("add", 0.0), ("max", -np.inf), ("min", np.inf), ("mul", 1.0)])
_reduction_case("reduce_i32", "int32", [("add", 0), ("max", np.iinfo(np.int32).min), ("min", np.iinfo(np.int32).max)])
_reduction_case("reduce_bool", "bool", [("and", True), ("or", False)])


@pytest.mark.parametrize("n", [1, 7, 16, 17, 100])
def test_vectorized_reductions(lib, n):
    rng = np.random.default_rng(n + 100)
    x = rng.uniform(0.5, 1.5, (ROWS, n)).astype(np.float32)
    x[1, n // 2] = np.nan  # max/min/sum propagate NaN like numpy
    outs = {f"o_{c}": np.zeros(ROWS, np.float32) for c in ("add", "max", "min", "mul")}
    assert run(lib, "reduce_f32", n, x=x, **outs)[0] == 0
    np.testing.assert_allclose(outs["o_add"], x.sum(1), rtol=1e-5)
    np.testing.assert_array_equal(outs["o_max"], x.max(1))
    np.testing.assert_array_equal(outs["o_min"], x.min(1))
    np.testing.assert_allclose(outs["o_mul"], x.prod(1), rtol=1e-5)
    xi = rng.integers(-1000, 1000, (ROWS, n)).astype(np.int32)
    outs = {f"o_{c}": np.zeros(ROWS, np.int32) for c in ("add", "max", "min")}
    assert run(lib, "reduce_i32", n, x=xi, **outs)[0] == 0
    np.testing.assert_array_equal(outs["o_add"], xi.sum(1))
    np.testing.assert_array_equal(outs["o_max"], xi.max(1))
    np.testing.assert_array_equal(outs["o_min"], xi.min(1))
    xb = rng.random((ROWS, n)) < 0.9
    xb[0] = True
    xb[2] = False
    outs = {f"o_{c}": np.zeros(ROWS, bool) for c in ("and", "or")}
    assert run(lib, "reduce_bool", n, x=xb, **outs)[0] == 0
    np.testing.assert_array_equal(outs["o_and"], xb.all(1))
    np.testing.assert_array_equal(outs["o_or"], xb.any(1))


# ----------------------------------------------------------------------------- parallel loops
case("par_affine", {"x": F, "y": F},
     loop("i", N, K.Store("y", i_, O("add", O("mul", K.Load("x", i_, F), C(2.0, F)), C(1.0, F))),
          parallel=True, vectorize=True))
COLS = 24


def _softmax_rows():
    r, c = V("r"), V("c")
    at = O("add", O("mul", r, C(COLS)), c)
    x = K.Load("x", at, F)
    m, s = V("m", F), V("s", F)
    return case("par_softmax", {"x": F, "y": F},
                loop("r", N, K.DeclareAcc(m, C(-np.inf, F)),
                     loop("c", C(COLS), K.Accumulate(m, "max", x), vectorize=True),
                     K.DeclareAcc(s, C(0.0, F)),
                     loop("c", C(COLS), K.Accumulate(s, "add", O("exp", O("sub", x, m))), vectorize=True),
                     loop("c", C(COLS), K.Store("y", at, O("div", O("exp", O("sub", x, m)), s)), vectorize=True),
                     parallel=True, work=3 * COLS))


_softmax_rows()
case("par_check", {"x": int32, "y": int32},
     loop("i", N, K.Check(O("greater_equal", K.Load("x", i_, int32), C(10, int32), dtype=bool_),
                          "label {value} is out of range", K.Load("x", i_, int32)),
          K.Store("y", i_, K.Load("x", i_, int32)), parallel=True, work=64))


def test_parallel_loop_large_trip_count(lib, two_threads):
    n = 300_001
    x = np.random.default_rng(3).normal(size=n).astype(np.float32)
    y = np.zeros(n, np.float32)
    assert run(lib, "par_affine", n, x=x, y=y)[0] == 0
    np.testing.assert_array_equal(y, x * np.float32(2) + np.float32(1))
    assert re.search(r'@"?GOMP_parallel', lib.ir_text) and re.search(r'@"?t_par_affine\.par', lib.ir_text)


@pytest.mark.parametrize("rows", [3, 5000])
def test_parallel_rows_with_inner_reductions(lib, rows, two_threads):
    x = np.random.default_rng(rows).normal(size=(rows, COLS)).astype(np.float32) * 5
    y = np.zeros_like(x)
    assert run(lib, "par_softmax", rows, x=x, y=y)[0] == 0
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("n", [50, 100_000])
def test_check_in_parallel_loop(lib, n, two_threads):
    x = np.arange(n, dtype=np.int32) % 10
    y = np.zeros(n, np.int32)
    assert run(lib, "par_check", n, x=x, y=y) == (0, "")
    np.testing.assert_array_equal(y, x)
    x[n // 3] = 12
    status, message = run(lib, "par_check", n, x=x, y=y)
    assert (status, message) == (3, "label 12 is out of range")


# ----------------------------------------------------------------------------- checks
case("check_float", {"x": F, "y": F},
     K.DeclareAcc(V("tot", F), C(0.0, F)),
     loop("i", N, K.Accumulate(V("tot", F), "add", K.Load("x", i_, F)), vectorize=True),
     K.Check(O("logical_not", O("is_finite", V("tot", F), dtype=bool_)), "loss is {value} (100% {{bad}})",
             V("tot", F)),
     K.Store("y", C(0), V("tot", F)))


def test_check_formats_message_and_returns_3(lib):
    x = np.ones(20, np.float32)
    y = np.zeros(1, np.float32)
    assert run(lib, "check_float", 20, x=x, y=y) == (0, "")
    assert y[0] == 20
    x[3] = np.inf
    y[0] = -1
    assert run(lib, "check_float", 20, x=x, y=y) == (3, "loss is inf (100% {bad})")
    assert y[0] == -1  # nothing after the failed check ran


# ----------------------------------------------------------------------------- philox
SEED, SEED2 = 1234, 0xFEDCBA98
case("rand", {"base": I, "step": I, "u": F, "nrm": F, "tn": float64},
     loop("i", N,
          K.Let(V("k"), O("add", K.Load("base", C(0), I), i_)),
          K.Store("u", i_, K.Random("uniform", SEED, SEED2, V("k"), K.Load("step", C(0), I), F)),
          K.Store("nrm", i_, K.Random("normal", SEED, SEED2, V("k"), K.Load("step", C(0), I), F)),
          K.Store("tn", i_, K.Random("truncated_normal", SEED, SEED2, V("k"), K.Load("step", C(0), I), float64)),
          vectorize=True))


@pytest.mark.parametrize("base,step", [(0, 0), (2 ** 32 - 20, 7), (5, 2 ** 40 + 3)])
def test_philox_draws_match_reference(lib, base, step):
    from compiler.ir.ops.random import _ERF_SQRT2, erfinv, philox4x32
    n = 37
    u, nrm, tn = np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float64)
    assert run(lib, "rand", n, base=np.array([base], np.int64), step=np.array([step], np.int64),
               u=u, nrm=nrm, tn=tn)[0] == 0
    k = np.arange(base, base + n, dtype=np.uint64)
    m32 = np.uint64(0xFFFFFFFF)
    counter = np.stack([k & m32, k >> np.uint64(32), np.full(n, step & 0xFFFFFFFF, np.uint64),
                        np.full(n, step >> 32, np.uint64)], -1)
    bits = philox4x32(counter, (SEED, SEED2))[:, 0].astype(np.uint32)
    want_u = bits_to_unit(bits)
    np.testing.assert_array_equal(u, want_u)  # bit-exact
    if base == 0:
        np.testing.assert_array_equal(bits, random_bits(n, SEED, SEED2, step))
    u64 = want_u.astype(np.float64)
    np.testing.assert_allclose(nrm, (np.sqrt(2.0) * erfinv(2.0 * u64 - 1.0)).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(tn, np.sqrt(2.0) * erfinv((2.0 * u64 - 1.0) * _ERF_SQRT2), rtol=1e-12)
    assert np.all(np.abs(tn) < 2)


# ----------------------------------------------------------------------------- against kernel_interp
def _interp_program():
    """A small step: matmul + bias + tanh (fused epilogue), a dropout-like random mask with
    a per-row sum (parallel rows, vectorized inner loop), a check, the rng step update."""
    from compiler.ir.types import Sym
    rng = np.random.default_rng(21)
    w, bias = rng.normal(size=(8, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    bufs = {
        "x": K.BufferDecl("x", F, (Sym(1), 8), "feed", key="x:0", index=0),
        "w": K.BufferDecl("w", F, (8, 8), "const", data=w),
        "bias": K.BufferDecl("bias", F, (8,), "const", data=bias),
        "h": K.BufferDecl("h", F, (Sym(1), 8), "arena", space="batch", offset=0),
        "u": K.BufferDecl("u", F, (Sym(1), 8), "fetch", key="u:0", index=0),
        "y": K.BufferDecl("y", F, (Sym(1),), "fetch", key="y:0", index=1),
        "step": K.BufferDecl("step", I, (), "state", key="kiln/rng_step"),
    }
    r, c = V("r"), V("c")
    row, col, acc = V("row"), V("col"), V("acc", F)  # the GEMM epilogue's variables
    at = O("add", O("mul", r, C(8)), c)
    keep = O("greater", K.Random("uniform", 3, 4, at, K.Load("step", C(0), I), F), C(0.5, F), dtype=bool_)
    s = V("s", F)
    k1 = K.Kernel("dense", ["x", "w", "bias"], ["h"], K.Gemm(
        N, C(8), C(8), K.Operand("x", C(0), C(8)), K.Operand("w", C(0), C(8)), K.Operand("h", C(0), C(8)),
        epilogue=K.Store("h", O("add", O("mul", row, C(8)), col),
                         O("tanh", O("add", acc, K.Load("bias", col, F))))))
    k2 = K.Kernel("dropout_sum", ["h", "step"], ["u", "y"], loop(
        "r", N, K.DeclareAcc(s, C(0.0, F)),
        loop("c", C(8), K.Let(V("t", F), O("select", keep, O("mul", K.Load("h", at, F), C(2.0, F)), C(0.0, F), dtype=F)),
             K.Store("u", at, V("t", F)), K.Accumulate(s, "add", V("t", F)), vectorize=True),
        K.Check(O("greater", s, C(100.0, F), dtype=bool_), "row sum {value} too large", s),
        K.Store("y", r, s), parallel=True, work=16))
    k3 = K.Kernel("step", ["step"], ["step"], K.Store("step", C(0), O("add", K.Load("step", C(0), I), C(1))))
    return K.Program("step", bufs, [k1, k2, k3], batch_bytes=32, feeds=["x:0"], fetches=["u:0", "y:0"])


def test_matches_kernel_interpreter(tmp_path):
    kernel_interp = pytest.importorskip("compiler.lower.kernel_interp")
    program = _interp_program()
    module = ir.Module(name="interp_check")
    names = render.render_program_kernels(module, program, prefix="p_")
    lib = ctypes.CDLL(build.compile_module(module, str(tmp_path / "p.so")).path)
    n = 37
    x = np.random.default_rng(2).normal(size=(n, 8)).astype(np.float32)
    mem = {"x": x, "w": program.buffers["w"].data, "bias": program.buffers["bias"].data,
           "h": np.zeros((n, 8), np.float32), "u": np.zeros((n, 8), np.float32),
           "y": np.zeros(n, np.float32), "step": np.array([5], np.int64)}
    ptrs = (ctypes.c_void_p * len(mem))(*[mem[b].ctypes.data for b in program.buffers])
    for name in names:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        assert fn(ctypes.addressof(ptrs), n, None) == 0
    new_state, fetches = kernel_interp.run_program(program, {"kiln/rng_step": np.int64(5)}, {"x:0": x}, n)
    np.testing.assert_allclose(mem["u"], fetches["u:0"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mem["u"] == 0, fetches["u:0"] == 0)  # same random mask
    np.testing.assert_allclose(mem["y"], fetches["y:0"], rtol=1e-5, atol=1e-5)
    assert mem["step"][0] == new_state["kiln/rng_step"] == 6


# ----------------------------------------------------------------------------- AVX2 code path
for _kind in ("exp", "sin"):  # two math cases for the AVX2 build
    case(f"ew_{_kind}_f32", {"x": F, "y": F, "z": F},
         loop("i", N, K.Store("z", V("i"), K.Op(_kind, (K.Load("x", V("i"), F),), F)), vectorize=True))
AVX2_CASES = ("access", "last_lane_store", "not_vectorizable", "reduce_f32", "reduce_i32", "reduce_bool",
              "rand", "ew_exp_f32", "ew_sin_f32")


@pytest.fixture(scope="module")
def lib_avx2(tmp_path_factory):
    """A subset of the cases rendered for an AVX2-only target (8 float lanes)."""
    return CASES.build_avx2(tmp_path_factory, AVX2_CASES)


def test_avx2_target(lib_avx2):
    assert "zmm" not in lib_avx2.asm and "ymm" in lib_avx2.asm
    for n in (1, 7, 17, 100):
        test_vector_loop_access_patterns(lib_avx2, n)
        test_vectorized_reductions(lib_avx2, n)
    test_philox_draws_match_reference(lib_avx2, 2 ** 32 - 20, 7)
    x = np.linspace(-50, 50, 101).astype(np.float32)
    for kind, ref in (("exp", np.exp), ("sin", np.sin)):
        z = np.zeros_like(x)
        assert run(lib_avx2, f"ew_{kind}_f32", x.size, x=x, y=x, z=z)[0] == 0
        assert ulp_error(z, ref(x.astype(np.float64))).max() <= 1.5


def test_unbound_variable_is_a_render_error():
    program = K.Program("bad", {"y": K.BufferDecl("y", F, (), "arena")},
                        [K.Kernel("oops", [], ["y"], K.Store("y", C(0), V("nowhere", F)), origin="add loc(x)")])
    with pytest.raises(render.RenderError, match=r"kernel oops \(add loc\(x\)\).*nowhere"):
        render.render_program_kernels(ir.Module(), program)

"""CUDA C rendering of the kernel IR (compiler/codegen/cuda, docs/codegen-cuda.md).

There is no GPU here: the tests check the rendered text and that nvcc compiles it (the
four training-step models, and a program holding every elementwise kind on every dtype).
Nothing is run on a device.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from compiler.codegen.cuda import CudaRenderError, global_functions, program_variables, render_module
from compiler.ir.opdef import get_opdef
from compiler.ir.ops.math import ARITH, COMPARE, LOGICAL, UNARY
from compiler.ir.types import N, ShapeError, TensorType, as_dtype
from compiler.lower import kernel_ir as K
from compiler.lower.program import lower_function
from compiler.passes.manager import run_pipeline
from tests import models

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not on PATH: cannot compile the .cu")

I64, F32 = as_dtype("int64"), as_dtype("float32")
MODELS = ("linear_regression_step", "mlp_train_step", "cnn_train_step", "lenet_train_step")
ELEM_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool", "int8")


def _var(name):
    return K.Var(name, I64)


def _c(v, dtype=I64):
    return K.Const(v, dtype)


def _mul(a, b):
    return K.Op("mul", (a, b), I64)


def relu_program() -> K.Program:
    """y[i] = relu(x[i]) over N*3 elements: one parallel, vectorized loop."""
    bufs = {"feed_x_0": K.BufferDecl("feed_x_0", F32, (N, 3), "feed", index=0, key="x:0"),
            "fetch_y_0": K.BufferDecl("fetch_y_0", F32, (N, 3), "fetch", index=0, key="y:0")}
    i = _var("i0")
    body = K.For(i, _c(0), _mul(K.Batch(I64), _c(3)),
                 K.Store("fetch_y_0", i, K.Op("relu", (K.Load("feed_x_0", i, F32),), F32)),
                 parallel=True, vectorize=True)
    kernel = K.Kernel("loop_relu", ["feed_x_0"], ["fetch_y_0"], body, origin="fused[loop] relu")
    return K.Program("relu", bufs, [kernel], feeds=["x:0"], fetches=["y:0"])


def all_ops_program() -> K.Program:
    """One kernel per dtype storing every elementwise kind its type rule accepts, plus
    select, casts, random draws, a reduction and a check."""
    bufs, kernels = {}, []
    i = _var("i")
    for d in ELEM_DTYPES:
        dt = as_dtype(d)
        x, y = f"x_{dt.short}", f"y_{dt.short}"
        for name in (x, y):
            bufs[name] = K.BufferDecl(name, dt, (N,), "feed", index=sum(b.role == "feed" for b in bufs.values()))
        stmts = []
        t = TensorType(dt, ())
        for table, arity in ((UNARY, 1), (ARITH, 2), (COMPARE, 2), (LOGICAL, 2)):
            for kind in table:
                try:
                    out = get_opdef(kind).infer([t] * arity).dtype
                except ShapeError:
                    continue
                z = f"z_{kind}_{dt.short}"
                bufs[z] = K.BufferDecl(z, out, (N,), "arena")
                args = (K.Load(x, i, dt), K.Load(y, i, dt))[:arity]
                stmts.append(K.Store(z, i, K.Op(kind, args, out)))
        for to in ELEM_DTYPES:
            tdt = as_dtype(to)
            z = f"cast_{dt.short}_{tdt.short}"
            bufs[z] = K.BufferDecl(z, tdt, (N,), "arena")
            stmts.append(K.Store(z, i, K.Cast(K.Load(x, i, dt), tdt)))
        kernels.append(K.Kernel(f"ops_{dt.short}", [x, y], [], K.For(i, _c(0), K.Batch(I64), K.Block(stmts),
                                                                    parallel=True)))
    # select, random draws, a sequential reduction, a check
    bufs["r"] = K.BufferDecl("r", F32, (N, 4), "arena")
    bufs["bits"] = K.BufferDecl("bits", I64, (N,), "arena")
    bufs["step"] = K.BufferDecl("step", I64, (), "state", key="kiln/rng_step")
    bufs["sum"] = K.BufferDecl("sum", F32, (), "fetch", index=0)
    step = K.Load("step", _c(0), I64)
    draws = [K.Store("r", K.Op("add", (_mul(i, _c(4)), _c(j)), I64), K.Random(dist, 7, 11, i, step, F32))
             for j, dist in enumerate(("uniform", "normal", "truncated_normal"))]
    draws.append(K.Store("bits", i, K.Random("bits", 7, 11, i, step, I64)))
    draws.append(K.Store("r", K.Op("add", (_mul(i, _c(4)), _c(3)), I64),
                         K.Op("select", (K.Load("x_bool", i, as_dtype("bool")), K.Load("x_f32", i, F32),
                                         _c(float("nan"), F32)), F32)))
    kernels.append(K.Kernel("draws", ["step", "x_bool", "x_f32"], ["r", "bits"],
                            K.For(i, _c(0), K.Batch(I64), K.Block(draws), parallel=True)))
    acc = K.Var("acc", F32)
    j = _var("j")
    reduce = K.Block([
        K.DeclareAcc(acc, _c(float("-inf"), F32)),
        K.For(j, _c(0), K.Batch(I64), K.Block([
            K.Check(K.Op("less", (K.Load("x_i64", j, I64), _c(0)), as_dtype("bool")),
                    "label {value} out of range", K.Load("x_i64", j, I64)),
            K.Accumulate(acc, "max", K.Load("x_f32", j, F32))]), vectorize=True),
        K.Let(K.Var("out", F32), K.Op("mul", (acc, _c(0.5, F32)), F32)),
        K.Store("sum", _c(0), K.Var("out", F32))])
    kernels.append(K.Kernel("reduce", ["x_f32", "x_i64"], ["sum"], reduce))
    # a perfect nest of independent loops: flattened into one grid-stride space
    idx = K.Op("add", (_mul(i, _c(4)), j), I64)
    nest = K.For(i, _c(0), K.Batch(I64), K.Block([K.For(j, _c(0), _c(4), K.Block([
        K.Store("r", idx, K.Op("exp", (K.Load("r", idx, F32),), F32))]), vectorize=True)]), parallel=True)
    kernels.append(K.Kernel("nest", ["r"], ["r"], nest))
    return K.Program("all_ops", bufs, kernels, batch_bytes=_place_arena(bufs))


def _place_arena(bufs) -> int:
    """Give every arena buffer (all shaped (N, ...)) its own batch-space offset; returns the
    arena's bytes per batch element."""
    per = 0
    for name, b in bufs.items():
        if b.role == "arena":
            bufs[name] = K.BufferDecl(b.name, b.dtype, b.shape, "arena", space="batch", offset=per)
            per += -(-b.dtype.np.itemsize * int(np.prod([int(getattr(d, "coef", d)) for d in b.shape])) // 64) * 64
    return per


def render_program(program: K.Program) -> str:
    """The CUDA module of one program (entry point named like the program)."""
    return render_module({program.name: program}, program_variables([program]))


def model_program(name) -> K.Program:
    fn, _state, _feeds = getattr(models, name)()
    return lower_function(run_pipeline(fn).fn)


def _nvcc(src: str, path) -> subprocess.CompletedProcess:
    cu = path.with_suffix(".cu")
    cu.write_text(src)
    return subprocess.run([NVCC, "-arch=sm_90", "-Xcompiler", "-fPIC", "-shared", str(cu), "-o", str(path)],
                          check=False, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- rendered text
def test_elementwise_text():
    src = render_program(relu_program())
    assert "__global__ void __launch_bounds__(KILN_BLOCK) k_relu__loop_relu_s0(KilnBufs bufs, long long N)" in src
    # the loop becomes a grid-stride loop over the flattened iteration space
    assert "for (long long kiln_f = (long long)blockIdx.x * blockDim.x + threadIdx.x; kiln_f < kiln_trip;" in src
    assert "kiln_f += (long long)gridDim.x * blockDim.x)" in src
    assert "const long long v_i0 = (0LL) + kiln_f;" in src
    assert "KILN_ST(b_fetch_y_0, v_i0, (float)(kiln_relu<float>(KILN_LD(b_feed_x_0, v_i0))));" in src
    assert "float* __restrict__ b_feed_x_0 = (float*)bufs.p[0];" in src
    assert "KILN_EXPORT int32_t kiln_entry_relu(kiln_state* s, int64_t batch, const void* const* feeds, void* const* fetches)" in src
    assert "KILN_LAUNCH(k_relu__loop_relu_s0, kiln_blocks(trip), KILN_BLOCK, stream, a, N);" in src
    assert "cudaGetLastError()" in src


def test_semantic_helpers_text():
    src = render_program(all_ops_program())
    # integer floor division / modulo, NaN-propagating max, casts, Philox, checks
    assert "kiln_floordiv((int)(KILN_LD(b_x_i32, v_i)), (int)(KILN_LD(b_y_i32, v_i)))" in src
    assert "kiln_floormod((long long)(KILN_LD(b_x_i64, v_i)), (long long)(KILN_LD(b_y_i64, v_i)))" in src
    assert "kiln_max<float>(KILN_LD(b_x_f32, v_i), KILN_LD(b_y_f32, v_i))" in src
    assert "kiln_f2i64((double)(KILN_LD(b_x_f32, v_i)))" in src
    assert "kiln_unit(kiln_philox(7u, 11u, (unsigned long long)(v_i)" in src
    assert "kiln_fail_i(bufs.err, 0, (long long)(KILN_LD(b_x_i64, v_j))); return;" in src
    assert '{ "reduce: label %1$lld out of range", \'i\' },' in src
    assert "__int_as_float(0x7f800000)" in src  # -inf accumulator start
    # the reduction shares an accumulator: one sequential launch
    assert "KILN_LAUNCH(k_all_ops__reduce_s0, 1, 1, stream, a, N);" in src
    # the (N x 4) nest is one flattened iteration space
    assert "const long long v_i = (0LL) + kiln_f / (((4LL) - (0LL)));" in src
    assert "const long long v_j = (0LL) + v_i_rest;" in src
    assert "const long long trip = ((N) - (0LL)) * ((4LL) - (0LL)); if (trip > 0) KILN_LAUNCH(k_all_ops__nest_s0," in src


def test_philox_constants_match_reference():
    from compiler.ir.ops import random as R
    src = render_program(relu_program())
    for c in (R._M0, R._M1, R._W0, R._W1):
        assert f"0x{int(c):X}u" in src


def test_unsupported_is_an_error():
    prog = relu_program()
    f16 = as_dtype("float16")
    prog.buffers["h"] = K.BufferDecl("h", f16, (N,), "arena")
    prog.kernels[0].body.body = K.Store("h", _var("i0"), K.Const(1.0, f16))
    with pytest.raises(CudaRenderError):
        render_program(prog)


# ----------------------------------------------------------------------------- nvcc
@pytest.fixture(scope="module")
def programs():
    progs = {name: model_program(name) for name in MODELS}
    progs["all_ops"] = all_ops_program()
    return progs


def test_every_kernel_gets_global_functions(programs):
    for name, prog in programs.items():
        src = render_program(prog)
        funcs = global_functions(prog, prog.name)
        assert set(funcs) == {k.name for k in prog.kernels}, name
        for kernel, names in funcs.items():
            assert names, (name, kernel)
            for fn in names:
                assert re.search(rf"__global__ void __launch_bounds__\([A-Z_ *]+\) {fn}\(", src), (name, fn)
                assert re.search(rf"KILN_LAUNCH(_SYNC)?\({fn}, ", src), (name, fn)
        if any(isinstance(_only_stmt(k.body), K.Gemm) for k in prog.kernels):
            assert "__shared__ float As[KILN_TILE][KILN_TILE + 1];" in src


def _only_stmt(s):
    while isinstance(s, K.Block) and len(s.body) == 1:
        s = s.body[0]
    return s


@needs_nvcc
def test_nvcc_compiles(programs, tmp_path):
    with ThreadPoolExecutor(max_workers=len(programs)) as pool:
        results = {name: pool.submit(_nvcc, render_program(prog), tmp_path / f"{name}.so")
                   for name, prog in programs.items()}
        for name, fut in results.items():
            r = fut.result()
            assert r.returncode == 0, f"{name}: nvcc failed\n{r.stderr[-4000:]}"
            assert (tmp_path / f"{name}.so").stat().st_size > 0
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, "-D", str(tmp_path / "mlp_train_step.so")], check=False, capture_output=True, text=True).stdout
        for sym in ("kiln_create", "kiln_destroy", "kiln_entry_train_step", "kiln_read_variable", "kiln_create_error"):
            assert sym in syms


# ----------------------------------------------------------------------------- helpers, on the host
HOST_MAIN = r"""
#include <stdio.h>
int main() {
  unsigned long long idx[] = {0ull, 1ull, 5ull, 4294967295ull, 4294967296ull, 123456789012ull};
  unsigned long long steps[] = {0ull, 7ull, 4294967301ull};
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < 6; ++i) {
      unsigned int bits = kiln_philox(7u, 11u, idx[i], steps[s]);
      printf("philox %llu %llu %u %.9e %.17e\n", idx[i], steps[s], bits, (double)kiln_unit(bits),
             kiln_normal(bits));
    }
  long long xs[] = {-7, -6, -1, 0, 1, 6, 7, (-9223372036854775807LL - 1), 9223372036854775807LL};
  for (int a = 0; a < 9; ++a)
    for (int b = 0; b < 9; ++b)
      printf("idiv %lld %lld %lld %lld\n", xs[a], xs[b], kiln_floordiv(xs[a], xs[b]), kiln_floormod(xs[a], xs[b]));
  float fs[] = {-1.5f, 0.0f, 2.5f, NAN, INFINITY};
  for (int a = 0; a < 5; ++a)
    for (int b = 0; b < 5; ++b)
      printf("fmax %.9e %.9e %.9e %.9e %.9e\n", fs[a], fs[b], kiln_max(fs[a], fs[b]), kiln_min(fs[a], fs[b]),
             kiln_fmod(fs[a], fs[b]));
  double ds[] = {-2.7, 2.7, 1e30, -1e30, (double)NAN};
  for (int a = 0; a < 5; ++a) printf("f2i %.17e %lld %d\n", ds[a], kiln_f2i64(ds[a]), kiln_f2i32(ds[a]));
  return 0;
}
"""


@needs_nvcc
def test_prelude_helpers_match_reference_on_host(tmp_path):
    """The prelude's helpers are __host__ __device__: built as host code they must agree with
    the reference (numpy / compiler/ir/ops/random.py) — Philox bit for bit."""
    import numpy as np

    from compiler.codegen.cuda.module import environment
    from compiler.ir.ops import random as R

    src = environment().get_template("cuda/prelude.cu.j2").render(nbufs=1) + HOST_MAIN
    cu, exe = tmp_path / "prelude.cu", tmp_path / "prelude"
    cu.write_text(src)
    r = subprocess.run([NVCC, "-arch=sm_90", str(cu), "-o", str(exe)], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    out = subprocess.run([str(exe)], check=False, capture_output=True, text=True, timeout=60).stdout.splitlines()
    rows = [line.split() for line in out]
    philox = [r_ for r_ in rows if r_[0] == "philox"]
    assert len(philox) == 18
    assert [sum(r_[0] == k for r_ in rows) for k in ("idiv", "fmax", "f2i")] == [81, 25, 5]
    for _, i, s, bits, unit, normal in philox:
        i, s = np.uint64(int(i)), np.uint64(int(s))
        counter = np.array([[i & R._MASK, i >> np.uint64(32), s & R._MASK, s >> np.uint64(32)]], np.uint64)
        ref = int(R.philox4x32(counter, (7, 11))[0, 0])
        assert int(bits) == ref
        ref_unit = R.bits_to_unit(np.array([ref], np.uint32))[0]
        assert np.float32(float(unit)) == ref_unit
        ref_normal = np.sqrt(2.0) * R.erfinv(2.0 * np.float64(ref_unit) - 1.0)
        assert float(normal) == pytest.approx(float(ref_normal), rel=1e-12, abs=1e-15)
    with np.errstate(all="ignore"):
        for _, a, b, q, m in (r_ for r_ in rows if r_[0] == "idiv"):
            a, b = np.int64(int(a)), np.int64(int(b))
            if b == 0:
                assert (int(q), int(m)) == (0, 0)
                continue
            assert int(q) == int(np.floor_divide(a, b)), (a, b)
            assert int(m) == int(np.mod(a, b)), (a, b)
        for _, a, b, mx, mn, md in (r_ for r_ in rows if r_[0] == "fmax"):
            a, b = np.float32(float(a)), np.float32(float(b))
            for got, ref in ((mx, np.maximum(a, b)), (mn, np.minimum(a, b)), (md, np.mod(a, b))):
                got = np.float32(float(got))
                assert (np.isnan(got) and np.isnan(ref)) or got == ref, (a, b, got, ref)
        for _, d, i64, i32 in (r_ for r_ in rows if r_[0] == "f2i"):
            d = np.float64(float(d))
            assert int(i64) == int(np.array(d).astype(np.int64)), d
            assert int(i32) == int(np.array(d).astype(np.int32)), d


# ----------------------------------------------------------------------------- finding nvcc
def test_find_nvcc_order_and_clear_error(tmp_path, monkeypatch, capsys):
    """$KILN_NVCC, then PATH, then $CUDA_HOME/bin...; without any, `kiln compile --target
    cuda` exits 2 with a message saying what to install or set."""
    from compiler import cli
    from compiler.codegen.cuda import build

    fake = tmp_path / "cuda" / "bin" / "nvcc"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    monkeypatch.setattr(build, "STANDARD_ROOTS", ())
    monkeypatch.delenv("KILN_NVCC", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    assert build.find_nvcc() == str(fake)
    monkeypatch.setenv("KILN_NVCC", str(tmp_path / "missing-nvcc"))
    with pytest.raises(build.CudaToolchainError, match="KILN_NVCC=.*missing-nvcc is not an executable"):
        build.find_nvcc()
    monkeypatch.delenv("KILN_NVCC")
    monkeypatch.delenv("CUDA_HOME")
    with pytest.raises(build.CudaToolchainError, match="nvcc not found: .* set CUDA_HOME"):
        build.find_nvcc()
    sample = Path(__file__).resolve().parents[1] / "samples" / "linear_regression.py"
    code = cli.main(["compile", str(sample), "-o", str(tmp_path / "out"), "--target", "cuda", "--no-dump-ir"])
    assert code == 2
    assert "nvcc not found" in capsys.readouterr().err

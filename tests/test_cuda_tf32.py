"""TF32 tensor-core GEMMs of the CUDA backend (``kiln compile --cuda-tf32``,
``compile_entries(..., tf32=True)``; templates/cuda/gemm.cu.j2 "wmma64"/"wmma32").

Float32 GEMMs then run on ``nvcuda::wmma`` m16n16k8 TF32 fragments: inputs rounded to 10
mantissa bits (round to nearest, ties away from zero: ``cvt.rna.tf32.f32``), products summed
in fp32.  The host emulator (templates/cuda/kiln_cuda_emulate.h) implements the same
arithmetic, so emulated results are checked against numpy with TF32-rounded inputs (tight)
and against exact fp32 products (loose: TF32's ~1e-3 relative error must show).
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.codegen.cuda import program_variables, render_module
from compiler.frontend.compile_graph import compile_entries
from compiler.ir.from_graph import lower_graph
from compiler.ir.interpreter import run_function
from compiler.ir.types import N, as_dtype
from compiler.lower import kernel_ir as K
from tests import models
from tests.cuda_kit import RawAbiLib, needs_emulator

NVCC = shutil.which("nvcc")
I64, F32, F64 = as_dtype("int64"), as_dtype("float32"), as_dtype("float64")


def tf32(x) -> np.ndarray:
    """numpy's cvt.rna.tf32.f32: float32 rounded to 10 mantissa bits, ties away from zero."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    finite = (u & 0x7F800000) != 0x7F800000
    return np.where(finite, (u + np.uint32(0x1000)) & np.uint32(0xFFFFE000), u).view(np.float32)


def _c(v):
    return K.Const(v, I64)


# ----------------------------------------------------------------------------- a program of GEMMs
# name: (m, n, k, batch, a transposed, b transposed, b broadcast over the batch, output):
# output "relu" = relu(acc + bias[col]) (an epilogue), "acc" = C += A'B' (accumulate), "plain".
# m = None: m is the batch size N (the launch picks the tile at run time).
CASES = {
    "nn_relu": (None, 70, 29, 1, False, False, False, "relu"),     # m = N: 64x64 tiles at N = 1000, 32x32 at 5
    "nt_big": (300, 400, 70, 1, False, True, False, "plain"),      # 64x64 tiles
    "tn_acc": (37, 50, 40, 3, True, False, False, "acc"),          # 32x32 tiles, batched, accumulate
    "tt_bcast": (33, 17, 100, 2, True, True, True, "plain"),       # batched, B broadcast over the batch
    "tt_big_relu": (260, 200, 21, 2, True, True, False, "relu"),   # 64x64 tiles, batched, epilogue
}


def _dims(name, batch_n):
    m, n, k, nb, a_t, b_t, bcast, out = CASES[name]
    return (batch_n if m is None else m), n, k, nb, a_t, b_t, bcast, out


def _operand_shapes(name, batch_n):
    m, n, k, nb, a_t, b_t, bcast, _ = _dims(name, batch_n)
    a = (nb, k, m) if a_t else (nb, m, k)
    b = (k, n) if not b_t else (n, k)
    b = b if bcast else (nb,) + b
    return a, b, (nb, m, n)


def _gemm_program() -> K.Program:
    """Every case as one kernel (plus the copy of C's start value for "acc"), one entry."""
    bufs, kernels, feeds, fetches = {}, [], [], []

    def buf(name, shape, role):
        keys = feeds if role == "feed" else fetches
        bufs[name] = K.BufferDecl(name, F32, shape, role, index=len(keys), key=f"{name}:0")
        keys.append(f"{name}:0")

    for name, (m, n, k, nb, a_t, b_t, bcast, out) in CASES.items():
        assert m is not None or (nb == 1 and not a_t)  # an N-sized m: only as the rows of a plain A
        a_shape, b_shape, c_shape = (tuple(N if d is None else d for d in s) for s in _operand_shapes(name, None))
        buf(f"{name}_a", a_shape, "feed")
        buf(f"{name}_b", b_shape, "feed")
        m_e = K.Batch(I64) if m is None else _c(m)
        batched = (lambda stride: None if nb == 1 else _c(stride))
        a = K.Operand(f"{name}_a", _c(0), _c(m if a_t else k), a_t, batched((m or 0) * k))
        b = K.Operand(f"{name}_b", _c(0), _c(k if b_t else n), b_t, batched(0 if bcast else n * k))
        c = K.Operand(f"{name}_c", _c(0), _c(n), False, batched((m or 0) * n))
        buf(f"{name}_c", c_shape, "fetch")
        epilogue, reads = None, [f"{name}_a", f"{name}_b"]
        if out == "relu":
            buf(f"{name}_bias", (n,), "feed")
            reads.append(f"{name}_bias")
            acc, row, col, bidx = K.Var("acc", F32), K.Var("row", I64), K.Var("col", I64), K.Var("bidx", I64)
            v = K.Var("e0", F32)
            index = K.Op("add", (K.Op("mul", (K.Op("add", (K.Op("mul", (bidx, m_e), I64), row), I64), _c(n)), I64), col), I64)
            epilogue = K.Block([K.Let(v, K.Op("relu", (K.Op("add", (acc, K.Load(f"{name}_bias", col, F32)), F32),), F32)),
                                K.Store(f"{name}_c", index, v)])
        if out == "acc":
            buf(f"{name}_c0", c_shape, "feed")
            i = K.Var("i", I64)
            copy = K.For(i, _c(0), _c(int(np.prod(c_shape))), K.Store(f"{name}_c", i, K.Load(f"{name}_c0", i, F32)),
                         parallel=True)
            kernels.append(K.Kernel(f"{name}_start", [f"{name}_c0"], [f"{name}_c"], K.Block([copy])))
            reads.append(f"{name}_c")
        g = K.Gemm(m_e, _c(n), _c(k), a, b, c, batch=None if nb == 1 else _c(nb), accumulate=out == "acc",
                   epilogue=epilogue)
        kernels.append(K.Kernel(f"gemm_{name}", reads, [f"{name}_c"], K.Block([g]), origin=f"gemm {name}"))
    return K.Program("gemms", bufs, kernels, feeds=feeds, fetches=fetches)


def _gemm_inputs(batch_n, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (*_, out) in CASES.items():
        a_shape, b_shape, c_shape = _operand_shapes(name, batch_n)
        feeds[f"{name}_a"] = rng.standard_normal(a_shape).astype(np.float32)
        feeds[f"{name}_b"] = rng.standard_normal(b_shape).astype(np.float32)
        if out == "relu":
            feeds[f"{name}_bias"] = rng.standard_normal(c_shape[-1]).astype(np.float32)
        if out == "acc":
            feeds[f"{name}_c0"] = rng.standard_normal(c_shape).astype(np.float32)
    return feeds


def _reference(name, feeds, rounding):
    """(C, scale): C in float64 from inputs passed through ``rounding``; scale = |A'|.|B'| (+ |bias| / |C0|),
    the size errors are measured against."""
    *_, a_t, b_t, bcast, out = CASES[name]
    a = rounding(feeds[f"{name}_a"]).astype(np.float64)
    b = rounding(feeds[f"{name}_b"]).astype(np.float64)
    a = np.swapaxes(a, -1, -2) if a_t else a
    b = np.swapaxes(b, -1, -2) if b_t else b
    c, scale = a @ b, np.abs(a) @ np.abs(b)
    if out == "relu":
        c = np.maximum(c + feeds[f"{name}_bias"], 0.0)
        scale = scale + np.abs(feeds[f"{name}_bias"])
    if out == "acc":
        c, scale = c + feeds[f"{name}_c0"], scale + np.abs(feeds[f"{name}_c0"])
    return c, scale


def _run_gemms(lib, program, feeds, batch_n) -> dict:
    """The GEMM program on ``feeds``: ``"<case>_c" -> C``."""
    ins = [np.ascontiguousarray(feeds[key[:-2]], np.float32) for key in program.feeds]
    outs = {key[:-2]: np.zeros(_operand_shapes(key[:-4], batch_n)[2], np.float32) for key in program.fetches}
    code, message = lib.run("gemms", ins, list(outs.values()), batch_n)
    assert code == 0, message
    return outs


def _render(program, tf32_on):
    return render_module({program.name: program}, program_variables([program]), tf32=tf32_on)


def _mlp_program() -> K.Program:
    from compiler.lower.program import lower_function
    from compiler.passes.manager import run_pipeline

    fn, _state, _feeds = models.mlp_train_step()
    return lower_function(run_pipeline(fn).fn)


# ----------------------------------------------------------------------------- rendering
def test_wmma_only_with_tf32():
    """tf32 off: no trace of wmma (the text is the plain fp32 module); on: every float32 GEMM
    of the MLP step is a wmma kernel pair picked at run time, <mma.h> only for nvcc; a
    float64 GEMM and a k-split one (few outputs, long k) keep the fp32 kernels."""
    program = _mlp_program()
    off, on = _render(program, False), _render(program, True)
    assert "wmma" not in off and "mma.h" not in off and "tf32" not in off
    assert "#ifndef KILN_CUDA_EMULATE\n#include <mma.h>" in on
    for needle in ("wmma::precision::tf32", "wmma::__float_to_tf32(", "wmma::fragment<wmma::accumulator, 16, 16, 8, float>",
                   "wmma::mma_sync(", "wmma::store_matrix_sync("):
        assert needle in on, needle
    gemm_launches = [line for line in on.splitlines() if "_g0" in line and "KILN_LAUNCH_SYNC" in line]
    assert gemm_launches and all("_g0w, " in line or "_g0v, " in line for line in gemm_launches)
    assert not re.search(r"_g0b?\(", on)  # the fp32 big / small tiles are not emitted
    # batch-sized GEMMs choose at run time, like the fp32 tiles
    assert any("if (kiln_gemm_big(m, n, nb)) KILN_LAUNCH_SYNC(" in line and "else KILN_LAUNCH_SYNC(" in line
               and "dim3(KILN_WMMA_THREADS)" in line for line in gemm_launches)

    bufs = {"a": K.BufferDecl("a", F64, (64, 64), "feed", index=0, key="a:0"),
            "p": K.BufferDecl("p", F32, (4096, 8), "feed", index=1, key="p:0"),
            "c": K.BufferDecl("c", F64, (64, 64), "fetch", index=0, key="c:0"),
            "q": K.BufferDecl("q", F32, (8, 8), "fetch", index=1, key="q:0")}
    sq = K.Operand("a", _c(0), _c(64))
    kernels = [K.Kernel("f64", ["a"], ["c"], K.Block([K.Gemm(_c(64), _c(64), _c(64), sq, sq, K.Operand("c", _c(0), _c(64)))])),
               K.Kernel("ks", ["p"], ["q"], K.Block([K.Gemm(_c(8), _c(8), _c(4096), K.Operand("p", _c(0), _c(8), True),
                                                           K.Operand("p", _c(0), _c(8)), K.Operand("q", _c(0), _c(8)))]))]
    text = _render(K.Program("other", bufs, kernels, feeds=["a:0", "p:0"], fetches=["c:0", "q:0"]), True)
    assert "wmma" not in text and "k_other__f64_g0, " in text and "k_other__ks_g0k, " in text


@pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not on PATH")
def test_nvcc_compiles_tf32_modules(tmp_path):
    """The MLP step and every GEMM case (both tiles, all transposes, batch, epilogue,
    accumulate) compile for sm_90, and the PTX holds TF32 wmma instructions."""
    programs = {"train": _mlp_program(), "gemms": _gemm_program()}
    cu = tmp_path / "m.cu"
    cu.write_text(render_module(programs, program_variables(list(programs.values())), tf32=True))
    proc = subprocess.run([NVCC, "-arch=sm_90", "-std=c++17", "-c", str(cu), "-o", str(tmp_path / "m.o"), "--keep",
                           "--keep-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ptx = "\n".join(p.read_text() for p in tmp_path.glob("*.ptx"))
    assert "wmma.mma.sync.aligned.row.row.m16n16k8.f32.tf32.tf32.f32" in ptx
    assert "wmma.mma.sync.aligned.col.col.m16n16k8.f32.tf32.tf32.f32" in ptx
    assert "cvt.rna.tf32.f32" in ptx


# ----------------------------------------------------------------------------- emulated
@pytest.fixture(scope="module")
def gemm_lib(tmp_path_factory):
    from compiler.codegen.cuda.build import compile_cuda

    program = _gemm_program()
    path = tmp_path_factory.mktemp("tf32") / "gemms.so"
    text = _render(program, True)
    tiles = {name: "".join(sorted(set(re.findall(rf"k_gemms__gemm_{name}_g0([a-z]*)\(", text)))) for name in CASES}
    assert tiles == {"nn_relu": "vw", "nt_big": "w", "tn_acc": "v", "tt_bcast": "v", "tt_big_relu": "w"}
    compile_cuda(text, path, emulate=True)
    lib = RawAbiLib(path, race=True)  # the epilogues' KILN_LD / KILN_ST
    yield program, lib
    lib.close()


@needs_emulator
@pytest.mark.parametrize("batch_n", [1000, 5])
def test_emulated_gemms_are_tf32(gemm_lib, batch_n):
    """Each case matches TF32-rounded inputs with fp32 sums (1e-5 of |A'|.|B'|) and is off
    the exact products by TF32's error (~1e-4 to 1e-3 relative)."""
    program, lib = gemm_lib
    feeds = _gemm_inputs(batch_n, seed=batch_n)
    got = _run_gemms(lib, program, feeds, batch_n)
    for name in CASES:
        c = got[f"{name}_c"].astype(np.float64)
        want, scale = _reference(name, feeds, tf32)
        exact, _ = _reference(name, feeds, lambda x: x)
        err_tf32 = np.max(np.abs(c - want) / scale)
        rel_exact = np.linalg.norm(c - exact) / np.linalg.norm(exact)
        print(f"{name} (N={batch_n}): max |C - C_tf32| / (|A||B|) = {err_tf32:.2e}, "
              f"||C - C_fp32|| / ||C_fp32|| = {rel_exact:.2e}")
        assert err_tf32 < 1e-5, name
        assert 5e-5 < rel_exact < 3e-3, name


@needs_emulator
def test_emulated_mlp_trains_with_tf32(tmp_path):
    """Ten Adam steps on one batch: the loss falls, and follows fp32 (the reference
    interpreter) to 1e-2 relative without being bit-equal to it."""
    graph = tf.Graph()
    with graph.as_default():
        t = models.mlp_tensors(seed=0)
        inputs = [t["x"], t["labels"]]
        fn = lower_graph([t["loss"]], [t["train"]], inputs, name="train")
    artifact = runtime.load_artifact(compile_entries(graph, {"train": ([t["loss"]], [t["train"]], inputs)}, tmp_path,
                                                     target="cuda", emulate=True, tf32=True, dump_ir=False))
    assert artifact.manifest["target"].get("tf32") is True
    rng = np.random.default_rng(0)
    feeds = {"x:0": rng.random((64, 784), dtype=np.float32), "labels:0": rng.integers(0, 10, 64).astype(np.int64)}
    got, want = [], []
    with artifact.new_state() as state:
        ref = state.variables()
        for _ in range(10):
            got.append(float(state.run("train", feeds)["loss:0"]))
            ref, fetches = run_function(fn, ref, feeds)
            want.append(float(fetches["loss:0"]))
    print("tf32 losses:", " ".join(f"{v:.5f}" for v in got))
    print("fp32 losses:", " ".join(f"{v:.5f}" for v in want))
    assert got[-1] < 0.8 * got[0]
    np.testing.assert_allclose(got, want, rtol=1e-2)
    assert got != want


@needs_emulator
def test_session_option_selects_tf32():
    """tf.ConfigProto(kiln_cuda_tf32=True) makes a GPU session's matmul TF32: within TF32's
    rounding of the fp32 result, and not equal to it."""
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((50, 40)).astype(np.float32)
    w0 = rng.standard_normal((40, 70)).astype(np.float32)
    out = {}
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 40])
        y = tf.matmul(x, tf.Variable(w0))
        for tf32 in (False, True):
            config = tf.ConfigProto(kiln_backend="cuda", kiln_cuda_emulate=True, kiln_cuda_tf32=tf32)
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                out[tf32] = sess.run(y, {x: xs})
    exact = xs.astype(np.float64) @ w0.astype(np.float64)
    np.testing.assert_allclose(out[False], exact, rtol=1e-5, atol=1e-4)
    scale = np.abs(xs).max() * np.abs(w0).max() * 40
    assert 0 < np.abs(out[True] - exact).max() < 2e-3 * scale

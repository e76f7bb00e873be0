"""Kernel-IR GEMMs on the MLU backend (compiler/codegen/mlu/gemm.py), run on the emulator:
NRAM/WRAM tiles and ``__bang_matmul``, filter tiles shared through cluster SRAM, against
numpy (float64) and the kernel-IR interpreter across odd sizes (none a multiple of a tile or
of the intrinsic's alignment), several K and N tiles, batches with broadcast operands,
every transpose combination, leading dimensions and offsets, accumulate and an epilogue,
under the forward, reverse and shuffled task schedules; one module holds every case so it
is built once per schedule.  Convolutions (im2col/col2im around a GEMM) forward and
backward against the interpreter, and the generated text uses the idioms it should."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from compiler.codegen.cuda.module import program_variables
from compiler.codegen.mlu.build import compile_mlu
from compiler.codegen.mlu.gemm import plan_tiles
from compiler.codegen.mlu.module import render_module
from compiler.ir.types import N, as_dtype
from compiler.lower import kernel_ir as K
from tests.cuda_kit import RawAbiLib

I64, F32, F64 = as_dtype("int64"), as_dtype("float32"), as_dtype("float64")
BATCH = 7  # N: the rows of the dynamic-m cases


def i64(v):
    return K.Const(v, I64)


# name: (m, n, k, transpose a, transpose b, batch, extra ld, epilogue) -- m None: m = N
CASES = {
    "nn_odd": (45, 70, 37, False, False, 1, 0, False),
    "nt_big": (150, 300, 301, False, True, 1, 0, False),  # 3 K tiles, 2 N tiles, cluster-shared filter
    "tn": (33, 65, 17, True, False, 1, 3, False),
    "tt": (9, 129, 70, True, True, 1, 5, False),
    "tiny": (1, 1, 1, False, False, 1, 0, False),
    "rows3": (3, 5, 200, False, False, 1, 0, False),  # below the shared threshold: private tiles
    "batched": (20, 9, 17, False, True, 3, 0, False),
    "dyn_relu": (None, 70, 37, False, False, 1, 2, True),  # m = N: private tiles, epilogue
    "dyn_t": (None, 64, 129, True, False, 1, 0, False),
}
ACCUMULATED = ("nn_odd", "nt_big", "dyn_t", "batched")  # a second Gemm accumulates onto C


def _operand(name, rows, cols, transposed, extra, batch, offset=0):
    """Operand ``name`` of logical shape rows x cols (stored transposed when asked), row
    stride ``cols + extra`` (stored), ``offset`` elements in; its buffer's element count."""
    stored_r, stored_c = (cols, rows) if transposed else (rows, cols)
    ld = stored_c + extra
    stride = stored_r * ld
    size = offset + (batch - 1) * stride + stored_r * ld if batch > 1 else offset + stored_r * ld
    bs = i64(stride) if batch > 1 else None
    return K.Operand(name, i64(offset), i64(ld), transposed, bs), size


def _a_operand(name, case):
    """A's operand and buffer shape; a dynamic m (None) gives A N rows (ld N when transposed)."""
    m, n, k, ta, tb, batch, extra, epi = case
    if m is not None:
        a, size = _operand(f"{name}_a", m, k, ta, extra, batch, offset=2)
        return a, (size,)
    if ta:
        return K.Operand(f"{name}_a", i64(0), K.Batch(I64), True), (k, N)
    return K.Operand(f"{name}_a", i64(0), i64(k + extra), False), (N, k + extra)


def _case_program(name, case):
    """Buffer shapes and the kernel of one case: C = A'B' (then C += A'B' again for some), or
    the epilogue's 2 relu(acc + 0.5) stored at C[row, col]."""
    m, n, k, ta, tb, batch, extra, epi = case
    a, ashape = _a_operand(name, case)
    broadcast = name == "batched"  # B shared by every batch item (batch stride 0)
    b, bsize = _operand(f"{name}_b", k, n, tb, extra, 1 if broadcast else batch)
    if broadcast:
        b = K.Operand(b.buffer, b.offset, b.ld, b.transposed, i64(0))
    c = K.Operand(f"{name}_c", i64(0), i64(n), False, i64(m * n) if batch > 1 else None)
    shapes = {a.buffer: ashape, b.buffer: (bsize,), c.buffer: (N, n) if m is None else (batch * m * n,)}
    epilogue = None
    if epi:
        acc, row, col = K.Var("acc", F32), K.Var("row", I64), K.Var("col", I64)
        value = K.Op("mul", (K.Op("relu", (K.Op("add", (acc, K.Const(0.5, F32)), F32),), F32), K.Const(2.0, F32)), F32)
        epilogue = K.Store(c.buffer, K.Op("add", (K.Op("mul", (row, i64(n)), I64), col), I64), value)
    rows = K.Batch(I64) if m is None else i64(m)
    g = K.Gemm(rows, i64(n), i64(k), a, b, c, batch=i64(batch) if batch > 1 else None, epilogue=epilogue)
    stmts = [g]
    if name in ACCUMULATED:
        stmts.append(K.Gemm(rows, i64(n), i64(k), a, b, c, batch=g.batch, accumulate=True))  # C = 2 A'B'
    return shapes, K.Kernel(f"gemm_{name}", [a.buffer, b.buffer], [c.buffer], K.Block(stmts))


def _program(names=tuple(CASES)):
    """One entry ``g``: the cases' A and B fed, C fetched."""
    bufs, kernels, feeds, fetches = {}, [], [], []
    for name in names:
        shapes, kernel = _case_program(name, CASES[name])
        for buf, shape in shapes.items():
            role = "fetch" if buf.endswith("_c") else "feed"
            keys = fetches if role == "fetch" else feeds
            bufs[buf] = K.BufferDecl(buf, F32, shape, role, index=len(keys), key=f"{buf}:0")
            keys.append(f"{buf}:0")
        kernels.append(kernel)
    return K.Program("g", bufs, kernels, feeds=feeds, fetches=fetches)


def _shape(shape):
    return tuple(BATCH if d is N else d for d in shape)


def _inputs(program, seed=3):
    """Random feeds of the program's buffer shapes (N = BATCH)."""
    rng = np.random.default_rng(seed)
    return {d.name: rng.standard_normal(_shape(d.shape)).astype(np.float32)
            for d in program.buffers.values() if d.role == "feed"}


def _logical(flat, operand, rows, cols, item):
    """The rows x cols matrix operand ``operand`` holds for batch item ``item`` (numpy)."""
    off = int(operand.offset.value) + item * (int(operand.batch_stride.value) if operand.batch_stride else 0)
    ld = BATCH if isinstance(operand.ld, K.Batch) else int(operand.ld.value)
    sr, sc = (cols, rows) if operand.transposed else (rows, cols)
    flat = flat.ravel()
    mat = np.stack([flat[off + r * ld: off + r * ld + sc] for r in range(sr)]).astype(np.float64)
    return mat.T if operand.transposed else mat


def _expected(program, inputs):
    """Every case's C from numpy (float64)."""
    out = {}
    for kernel in program.kernels:
        name = kernel.name[len("gemm_"):]
        m, n, k, ta, tb, batch, extra, epi = CASES[name]
        g = kernel.body.body[0]
        rows = BATCH if m is None else m
        prods = [_logical(inputs[g.a.buffer], g.a, rows, k, i) @ _logical(inputs[g.b.buffer], g.b, k, n, i)
                 for i in range(batch)]
        c = np.concatenate(prods)
        if epi:
            c = 2 * np.maximum(c + 0.5, 0)
        elif name in ACCUMULATED:
            c = 2 * c
        out[f"{name}_c"] = c.reshape(-1)
    return out


@pytest.fixture(scope="module")
def gemm_module(tmp_path_factory):
    """The cases' program and its MLU module source (rendered once)."""
    program = _program()
    return program, render_module({"g": program}, program_variables([program]))


def _run(program, source, path):
    """Build the module and run entry ``g`` on random feeds: (feeds, fetches)."""
    compile_mlu(source, path)
    inputs = _inputs(program)
    outputs = {d.name: np.full(_shape(d.shape), np.nan, np.float32)
               for d in program.buffers.values() if d.role == "fetch"}
    lib = RawAbiLib(path)
    try:
        code, message = lib.run("g", [inputs[k.split(":")[0]] for k in program.feeds],
                                [outputs[k.split(":")[0]] for k in program.fetches], BATCH)
    finally:
        lib.close()
    assert code == 0, message
    return inputs, outputs


@pytest.mark.parametrize("schedule", ["forward", "reverse", "shuffle:5"])
def test_gemm_cases_match_numpy(gemm_module, tmp_path, monkeypatch, schedule):
    monkeypatch.setenv("KILN_MLU_SCHEDULE", schedule)
    program, source = gemm_module
    inputs, outputs = _run(program, source, tmp_path / "g.so")
    want = _expected(program, inputs)
    for name in want:
        np.testing.assert_allclose(outputs[name].ravel(), want[name], rtol=2e-5, atol=2e-4, err_msg=name)


def test_cases_against_the_kernel_interpreter(gemm_module):
    """The same program on the kernel-IR interpreter gives the numpy results the MLU gives."""
    from compiler.lower.kernel_interp import run_program
    program, _ = gemm_module
    inputs = _inputs(program)
    _, got = run_program(program, {}, {f"{k}:0": v for k, v in inputs.items()}, BATCH)
    want = _expected(program, inputs)
    for name in want:
        np.testing.assert_allclose(np.ravel(got[f"{name}:0"]), want[name], rtol=2e-5, atol=2e-4, err_msg=name)


def test_generated_gemm_uses_the_tiles_and_the_intrinsic(gemm_module):
    """Shared cases stage the filter through SRAM between two barriers; private ones go
    NRAM -> WRAM; no scalar dot product is left for float32."""
    program, source = gemm_module
    shared = [k for k in program.kernels if plan_tiles(k.body.body[0]).shared]
    assert {k.name for k in shared} >= {"gemm_nn_odd", "gemm_nt_big", "gemm_batched"}
    assert not plan_tiles(next(k for k in program.kernels if k.name == "gemm_rows3").body.body[0]).shared
    for needle in ("__bang_matmul(", "__bang_reshape_filter(", "GDRAM2NRAM", "NRAM2SRAM", "SRAM2WRAM",
                   "NRAM2WRAM", "__sync_cluster();", "KILN_WRAM(float", "KILN_SRAM(float"):
        assert needle in source, needle
    assert "acc_ +=" not in source


def test_conv2d_forward_and_gradients_match_interpreter():
    """A strided, padded conv2d (im2col -> GEMM) and its input/filter gradients (GEMMs with
    transposed operands, col2im) on the MLU emulator against the interpreter."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 9, 8, 3])
        w = tf.constant(rng.standard_normal((3, 3, 3, 5)).astype(np.float32))
        y = tf.nn.relu(tf.nn.conv2d(x, w, strides=[1, 2, 2, 1], padding="SAME") + 0.1)
        z = tf.nn.conv2d(y, tf.constant(rng.standard_normal((2, 2, 5, 4)).astype(np.float32)), [1, 1, 1, 1], "VALID")
        loss = tf.reduce_sum(z * z)
        outs = {"y": y, "z": z, "dx": tf.gradients(loss, x)[0], "dw": tf.gradients(loss, w)[0]}
        feed = {x: rng.standard_normal((3, 9, 8, 3)).astype(np.float32)}
        with tf.Session(config={"backend": "mlu"}) as sess:
            got = sess.run(outs, feed)
        with tf.Session(config={"backend": "interpreter"}) as sess:
            want = sess.run(outs, feed)
    for name in outs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-3, err_msg=name)


def test_float64_gemm_keeps_scalar_dot_products():
    """A float64 matmul (no float64 matrix intrinsic: scalar dot products) matches numpy."""
    rng = np.random.default_rng(1)
    wv = rng.standard_normal((5, 3))
    with tf.Graph().as_default():
        a = tf.placeholder(tf.float64, [None, 5])
        y = tf.matmul(a, tf.constant(wv))
        av = rng.standard_normal((4, 5))
        with tf.Session(config={"backend": "mlu"}) as sess:
            got = sess.run(y, {a: av})
    np.testing.assert_allclose(got, av @ wv, rtol=1e-12)


def test_generated_gemm_with_one_sram_buffer_is_a_sram_race(tmp_path):
    """SRAM holds two filter tiles so that one barrier per K step suffices (a buffer is
    refilled two steps later): a module whose K steps all use one buffer is refused by the
    emulator's SRAM race rule, in the generated kernel."""
    program = _program(("nt_big",))
    source = render_module({"g": program}, program_variables([program]))
    alternating = "kiln_s + (kiln_step++ & 1) * "
    assert alternating in source
    compile_mlu(source.replace(alternating, "kiln_s + 0 * "), tmp_path / "race.so")
    lib = RawAbiLib(tmp_path / "race.so")
    try:
        inputs = _inputs(program)
        out = np.zeros(_shape(program.buffers["nt_big_c"].shape), np.float32)
        code, message = lib.run("g", [inputs["nt_big_a"], inputs["nt_big_b"]], [out], BATCH)
    finally:
        lib.close()
    assert code != 0 and "kernel k_g__gemm_nt_big_g0: SRAM race: " in message, message

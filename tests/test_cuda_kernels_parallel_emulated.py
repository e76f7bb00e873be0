"""Differential runs of the CUDA backend's parallel kernels on the host emulator, with race
checking on (two threads touching one element fail the launch): every op and gradient of
tests/op_table.py at batch sizes below and above a reduction block, integer / bool
reductions, the GEMM variants (k-split, both tiles, every transpose combination, batched,
with an epilogue) and one training step of the MLP and the CNN, all against the IR
interpreter.  Launch geometry: test_cuda_kernels_parallel.py; check loops:
test_cuda_kernels_parallel_checks.py.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.frontend.compile_graph import compile_entries
from compiler.ir.from_graph import lower_graph
from compiler.ir.interpreter import run_function
from tests import models
from tests.cuda_kit import needs_emulator
from tests.op_table import assert_op_matches, op_names, op_results


@pytest.fixture
def race_check(monkeypatch):
    """Libraries loaded in the test check every launch for races (kiln_cuda_emulate.h)."""
    monkeypatch.setenv("KILN_EMU_RACECHECK", "1")


@needs_emulator
def test_op_table_matches_interpreter(race_check):
    """Batch 3 (blocks mostly idle) and 300 (reductions over N wrap around the block)."""
    results = op_results({"backend": "cuda", "cuda_emulate": True}, (3, 300))
    for batch in (3, 300):
        for op in op_names():
            assert_op_matches(results, op, batch, rtol=3e-5)


@needs_emulator
def test_integer_and_bool_reductions(race_check):
    rng = np.random.default_rng(1)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.int32, [None, 5], name="x")
        big = tf.cast(x, tf.int64) * 3000000000
        pos = x > 2
        outs = {"max0": tf.reduce_max(x, 0), "min0": tf.reduce_min(big, 0), "sum_all": tf.reduce_sum(big),
                "any0": tf.reduce_any(pos, 0), "all0": tf.reduce_all(pos, 0), "any_all": tf.reduce_any(pos),
                "prod0": tf.reduce_prod(tf.cast(x, tf.float32) * 0.01 + 1.0, 0), "max_all": tf.reduce_max(x)}
        feed = {x: rng.integers(-50, 50, (300, 5)).astype(np.int32)}
        with tf.Session(config={"backend": "cuda", "cuda_emulate": True}) as sess:
            got = sess.run(outs, feed)
        with tf.Session(config={"backend": "interpreter"}) as sess:
            want = sess.run(outs, feed)
    for name in outs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
        assert got[name].dtype == want[name].dtype, name


def _model_step(tmp_path, model, batch, race):
    graph = tf.Graph()
    with graph.as_default():
        t = getattr(models, f"{model}_tensors")(seed=0)
        inputs = [t["x"], t["labels"]] if model == "mlp" else [t["x"], t["y"], t["keep_prob"]]
        fn = lower_graph([t["loss"]], [t["train"]], inputs, name="train")
    feeds = models.train_feeds(model, batch, 3)
    path = compile_entries(graph, {"train": ([t["loss"]], [t["train"]], inputs)}, tmp_path, target="cuda",
                           emulate=True, dump_ir=False)
    artifact = runtime.load_artifact(path)
    artifact.library.lib.kiln_emu_set_race_check.argtypes = [ctypes.c_int]
    artifact.library.lib.kiln_emu_set_race_check(1 if race else 0)
    with artifact.new_state() as state:
        start = state.variables()
        loss = state.run("train", feeds)["loss:0"]
        after = state.variables()
    ref_state, ref_fetches = run_function(fn, start, feeds)
    np.testing.assert_allclose(loss, ref_fetches["loss:0"], rtol=1e-4)
    for name, value in ref_state.items():
        _assert_state_close(name, after[name], value)


def _assert_state_close(name, got, want, rtol=1e-4, atol=1e-5):
    """Adam moves a weight by about its learning rate whatever its gradient's size, in the
    gradient's direction: where a gradient is ~0 (a GEMM over N rows cancelling) float
    rounding can flip that step.  A handful of weights (1e-5 of them) may differ by up to
    two steps (2e-3); everything else, moments included, agrees to ``rtol``/``atol``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bad = np.abs(got - want) > atol + rtol * np.abs(want)
    if "Adam" in name or bad.sum() > max(1, 1e-5 * want.size):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_allclose(got, want, atol=2e-3, err_msg=name)


@needs_emulator
def test_mlp_step_matches_interpreter(tmp_path):
    _model_step(tmp_path, "mlp", 300, race=True)


@needs_emulator
def test_cnn_step_matches_interpreter(tmp_path):
    # race checking the CNN's 3.2M-element Adam updates would take ~10 s: the op table covers
    # the same kernel shapes (conv, pooling and their gradients) with it
    _model_step(tmp_path, "cnn", 3, race=False)


@needs_emulator
def test_gemm_ksplit_matches_interpreter(race_check):
    """pᵀ.q over k = N rows with few outputs: the k-split kernel from N = 2048 on, with an
    epilogue (bias, relu) and with a plain store."""
    rng = np.random.default_rng(4)
    with tf.Graph().as_default():
        p = tf.placeholder(tf.float32, [None, 20], name="p")
        q = tf.placeholder(tf.float32, [None, 30], name="q")
        outs = {"relu": tf.nn.relu(tf.matmul(p, q, transpose_a=True) - 1.0), "plain": tf.matmul(q, p, transpose_a=True)}
        for batch in (3000, 7):
            feed = {p: rng.standard_normal((batch, 20)).astype(np.float32), q: rng.standard_normal((batch, 30)).astype(np.float32)}
            with tf.Session(config={"backend": "cuda", "cuda_emulate": True}) as sess:
                got = sess.run(outs, feed)
            with tf.Session(config={"backend": "interpreter"}) as sess:
                want = sess.run(outs, feed)
            for name in outs:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-3, err_msg=f"{name} at {batch}")


@needs_emulator
def test_gemm_variants_match_interpreter(race_check):
    """Both GEMM tiles, every transpose combination, partial tiles, a batched GEMM and an
    epilogue; batch 400 picks the 64x64 tile for the N-sized GEMMs, batch 5 the 16x16 one."""
    rng = np.random.default_rng(2)
    with tf.Graph().as_default():
        a = tf.placeholder(tf.float32, [None, 97], name="a")
        p = tf.placeholder(tf.float32, [None, 333], name="p")
        b3 = tf.placeholder(tf.float32, [None, 70, 50], name="b3")
        w, v, pp, r, c3 = (tf.Variable(rng.standard_normal(s).astype(np.float32))
                           for s in ((97, 333), (333, 97), (450, 333), (321, 450), (50, 90)))
        outs = {"nn_relu": tf.nn.relu(tf.matmul(a, w) + 0.5), "nt": tf.matmul(a, v, transpose_b=True),
                "tn": tf.matmul(p, p * 0.5, transpose_a=True), "tt": tf.matmul(pp, r, transpose_a=True, transpose_b=True),
                "batched": tf.matmul(b3, tf.matmul(b3, c3), transpose_a=True)}
        init = tf.global_variables_initializer()
        sessions = [tf.Session(config={"backend": "cuda", "cuda_emulate": True}), tf.Session(config={"backend": "interpreter"})]
        for batch in (400, 5):
            feed = {a: rng.standard_normal((batch, 97)).astype(np.float32),
                    p: rng.standard_normal((batch, 333)).astype(np.float32),
                    b3: rng.standard_normal((batch, 70, 50)).astype(np.float32)}
            got, want = [], []
            for sess, out in zip(sessions, (got, want)):
                sess.run(init)
                out.append(sess.run(outs, feed))
            for name in outs:
                np.testing.assert_allclose(got[0][name], want[0][name], rtol=2e-4, atol=2e-4, err_msg=f"{name} at {batch}")


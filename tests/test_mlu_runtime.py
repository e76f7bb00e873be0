"""The MLU backend through the runtime: an emulator violation planted in a generated kernel
comes back as the step's error naming the kernel and the rule; a graph the backend cannot
render yet (control flow between kernels) runs on the interpreter with a RuntimeWarning."""
import re
from dataclasses import replace
import warnings

import numpy as np
import pytest

import runtime
from runtime.abi import KilnRuntimeError
from compiler import tf
from compiler.codegen import registry
from compiler.codegen.mlu.backend import BACKEND
from compiler.frontend.compile_graph import compile_entries


def _artifact(tmp_path, name):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        y = tf.nn.relu(x * 2.0, name="y")
    return compile_entries(graph, {"predict": ([y], [], [x])}, tmp_path / name, target="mlu", dump_ir=False)


PLANTED = "  { KILN_NRAM(float, t, 8); __bang_active_relu(t, t, 8); }  // 32 bytes: not a 128-byte multiple\n"


def test_generated_module_runs_and_a_planted_violation_is_surfaced(tmp_path, monkeypatch):
    feed = {"x:0": np.array([[1, -2, 3]], np.float32)}
    with runtime.load_artifact(_artifact(tmp_path, "clean")).new_state() as state:
        np.testing.assert_array_equal(state.run("predict", feed)["y:0"], [[2, 0, 6]])
    planted = {}

    def render(programs, variables, target):
        """The backend's source with a violating statement at the top of its first kernel."""
        source = BACKEND.render(programs, variables, target)
        first = re.search(r"__mlu_entry__ void (\w+)\(KilnBufs bufs, long long N\) \{\n", source)
        planted["kernel"] = first.group(1)
        return source[:first.end()] + PLANTED + source[first.end():]

    monkeypatch.setitem(registry._registered, "mlu", replace(BACKEND, render=render))
    with runtime.load_artifact(_artifact(tmp_path, "planted")).new_state() as state:
        with pytest.raises(KilnRuntimeError, match=rf"MLU emulator: kernel {planted['kernel']}: vector length: "
                                                   r"__bang_active_relu: 8 elements of 4 bytes"):
            state.run("predict", feed)


def test_control_flow_falls_back_to_the_interpreter():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 3])
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
        feed = {x: np.array([[1, 2, 3]], np.float32)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with tf.Session(config={"backend": "mlu"}) as sess:
                got = sess.run(y, feed)
    assert any(issubclass(w.category, RuntimeWarning) and "reference interpreter" in str(w.message) for w in caught)
    np.testing.assert_array_equal(got, [[2, 4, 6]])


def test_elementwise_over_several_nram_tiles_per_task():
    """50,000 elements over 32 tasks: each task's span (1563) takes two NRAM tiles, the last
    one partial (a flat elementwise loop: its buffers are staged, docs/codegen-mlu.md)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None])
        y = tf.tanh(x * 1.5) - x
        feed = {x: np.random.default_rng(5).standard_normal(50000).astype(np.float32)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with tf.Session(config={"backend": "mlu"}) as sess:
                got = sess.run(y, feed)
        with tf.Session(config={"backend": "interpreter"}) as sess:
            want = sess.run(y, feed)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 31, 50000])
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_vector_intrinsic_tiles_match_numpy(n, op):
    """y = a op b on flat float32 vectors runs as one __bang_* intrinsic per NRAM tile, over
    the tile rounded up to 128 bytes (lengths 1, 31: one partial group; 50,000: two tiles per
    task); IEEE add/sub/mul give numpy's values exactly."""
    rng = np.random.default_rng(n)
    a_val, b_val = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    graph = tf.Graph()
    with graph.as_default():
        a, b = tf.placeholder(tf.float32, [None]), tf.placeholder(tf.float32, [None])
        y = {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply}[op](a, b)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with tf.Session(config={"backend": "mlu"}) as sess:
                got = sess.run(y, {a: a_val, b: b_val})
    np.testing.assert_array_equal(got, {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](a_val, b_val))

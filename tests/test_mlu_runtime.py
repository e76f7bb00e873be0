"""The MLU backend through the runtime: an emulator violation planted in a generated kernel
comes back as the step's error naming the kernel and the rule; control flow between kernels;
NRAM tiles and vector intrinsics over several tiles."""
import re
import warnings
from dataclasses import replace

import numpy as np
import pytest

import runtime
from runtime.abi import KilnRuntimeError
from compiler import tf
from compiler.codegen import registry
from compiler.codegen.mlu.backend import BACKEND
from compiler.frontend.compile_graph import compile_entries
from tests.test_control_flow_backends import BATCHES, _feeds, _rnn_graph
from tests.mlu_kit import compiled_and_interpreted


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


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_control_flow_between_kernels_matches_interpreter(sign):
    """tf.cond and tf.while_loop run as host control steps (the predicate read back from
    GDRAM after the queued kernels), both branches and several iterations."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 3])
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
        _, z = tf.while_loop(lambda i, v: i < 5, lambda i, v: (i + 1, v * 1.5 + y), [tf.constant(0), x])
        feed = {x: sign * np.array([[1, 2, 3], [0.5, -1, 2]], np.float32)}
        got, want = compiled_and_interpreted([y, z], feed)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_elementwise_over_several_nram_tiles_per_task():
    """50,000 elements over 32 tasks: each task's span (1563) takes two NRAM tiles, the last
    one partial (a flat elementwise loop: its buffers are staged, docs/codegen-mlu.md)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None])
        y = tf.tanh(x * 1.5) - x
        feed = {x: np.random.default_rng(5).standard_normal(50000).astype(np.float32)}
        got, want = compiled_and_interpreted(y, feed)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 31, 50000])
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_vector_intrinsic_tiles_match_numpy(n, op):
    """y = a op b on flat float32 vectors runs as one __bang_* intrinsic per 1024-lane NRAM tile
    (lengths 1, 31: lanes past the end computed on garbage, never stored; 50,000: two
    double-buffered tiles per task); IEEE add/sub/mul give numpy's values exactly."""
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


def test_rnn_with_loops_trains_like_the_cpu(tmp_path):
    """The control-flow RNN of test_control_flow_backends.py (while + cond in the body, SGD)
    on the MLU emulator gives the CPU artifact's losses and outputs, step after step."""
    graph, t = _rnn_graph()
    inputs = [t["x"], t["steps"]]
    entries = {"train": ([t["loss"]], [t["train"]], inputs), "predict": ([t["h"]], [], inputs)}
    arts = {target: runtime.load_artifact(compile_entries(graph, entries, tmp_path / target, target=target,
                                                          dump_ir=False)) for target in ("cpu", "mlu")}
    assert "for (;;) {" in (tmp_path / "mlu" / "src" / "model.mlu").read_text()
    with arts["cpu"].new_state() as c, arts["mlu"].new_state() as m:
        for step, (n, k) in enumerate(BATCHES):
            feeds = {name.name: v for name, v in _feeds(t, n, step, k).items()}
            feeds["steps:0"] = np.array(k, np.int32)
            np.testing.assert_allclose(m.run("train", feeds)["loss:0"], c.run("train", feeds)["loss:0"],
                                       rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
            key = t["h"].name
            np.testing.assert_allclose(m.run("predict", feeds)[key], c.run("predict", feeds)[key], rtol=1e-5, atol=1e-6)


def test_states_on_two_threads_run_concurrently(tmp_path):
    """Each host thread drives its own emulated core (NRAM, task ids), GDRAM is shared: two
    states of one artifact stepping at once on two threads both give the right values."""
    from concurrent.futures import ThreadPoolExecutor

    art = runtime.load_artifact(_artifact(tmp_path, "threads"))

    def run(seed):
        x = np.random.default_rng(seed).standard_normal((100000, 3)).astype(np.float32)
        with art.new_state() as state:
            return all(np.array_equal(state.run("predict", {"x:0": x})["y:0"], np.maximum(x * 2, 0))
                       for _ in range(5))

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert all(pool.map(run, range(4)))


@pytest.mark.parametrize("rows, cols", [(2000, 50), (40, 5000)])
def test_row_loops_are_staged_in_nram_tiles(rows, cols):
    """x[i * C + j] rows staged in NRAM tiles (20 rows of 50 per tile, several tiles per task;
    or one 5000-element row per tile), the broadcast bias staying a GDRAM access."""
    rng = np.random.default_rng(rows)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, cols])
        bias = tf.constant(rng.standard_normal(cols).astype(np.float32))
        y = tf.tanh(x + bias) * 0.5
        feed = {x: rng.standard_normal((rows, cols)).astype(np.float32)}
        got, want = compiled_and_interpreted(y, feed)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_a_check_never_lands_in_a_multi_task_kernel():
    """The error record is written without atomics, which is safe only while every check runs
    on one task: the scheduled checks program renders one-task kernels, and a loop marked
    parallel by hand around a check is refused by the renderer instead of racing."""
    from compiler.codegen.mlu.kernels import MluKernels
    from compiler.lower import kernel_ir as K
    from tests.kernel_ir_kit import ordered_checks_program

    program = ordered_checks_program()
    kernels = MluKernels(program, "train", lambda *a: 0)
    kernels.kernel(program.kernels[0])
    assert kernels.launches and all("CNRT_FUNC_TYPE_BLOCK" in line for line in kernels.launches)
    loop = program.kernels[0].body.body[0]
    forced = replace(program.kernels[0], body=K.Block([replace(loop, parallel=True)]))
    with pytest.raises(NotImplementedError, match="runtime check inside a multi-task kernel"):
        MluKernels(program, "train", lambda *a: 0).kernel(forced)

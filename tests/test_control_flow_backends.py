"""Control flow on the compiled backends: the LLVM CPU session and the CUDA backend (host
emulator; a GPU when there is one) against the reference interpreter."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.compile import finish_entry
from compiler.frontend.compile_graph import compile_entries
from compiler.ir.from_graph import lower_graph
from compiler.lower import kernel_ir as K
from compiler.lower.kernel_interp import run_program
from compiler.lower.kernel_printer import print_program
from compiler.codegen.cuda.module import program_variables, render_module
from tests.cuda_kit import MODES, compile_cuda
from tests.emu_kit import needs_nvcc, nvcc_compile

COMPILED = {"backend": "compiled"}


def _rnn_graph():
    """A small RNN over a fed sequence (while + cond in the body), its loss, SGD on its weights."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 5, 3], name="x")
        steps = tf.placeholder(tf.int32, [], name="steps")
        w = tf.Variable(np.linspace(-0.5, 0.5, 12, dtype=np.float32).reshape(3, 4), name="w")
        u = tf.Variable(np.linspace(0.3, -0.3, 16, dtype=np.float32).reshape(4, 4), name="u")

        def body(t, h):
            xt = tf.reshape(tf.gather(tf.transpose(x, [1, 0, 2]), t), [-1, 3])
            pre = tf.matmul(xt, w) + tf.matmul(h, u)
            h = tf.cond(tf.equal(tf.mod(t, 2), 0), lambda: tf.tanh(pre), lambda: tf.nn.relu(pre) * 0.5)
            return t + 1, h

        h0 = tf.zeros_like(tf.matmul(x[:, 0, :], w))
        _, h = tf.while_loop(lambda t, h: t < steps, body, (tf.constant(0), h0), maximum_iterations=5)
        loss = tf.reduce_mean(tf.square(h - 0.25), name="loss")
        train = tf.train.GradientDescentOptimizer(0.5).minimize(loss)
    return graph, {"x": x, "steps": steps, "loss": loss, "train": train, "h": h, "w": w, "u": u}


def _feeds(t, n, seed, steps=5):
    return {t["x"]: np.random.default_rng(seed).standard_normal((n, 5, 3)).astype(np.float32), t["steps"]: steps}


def _train(config, batches):
    graph, t = _rnn_graph()
    with graph.as_default(), tf.Session(config=config) as sess:
        sess.run(tf.global_variables_initializer())
        losses = [sess.run([t["loss"], t["train"]], _feeds(t, n, s, k))[0] for s, (n, k) in enumerate(batches)]
        return losses, sess.run([t["w"], t["u"]])


BATCHES = [(4, 5), (7, 3), (4, 0), (2, 5)]


def test_llvm_session_trains_through_loops_natively_like_the_interpreter():
    want_losses, want_vars = _train({"backend": "interpreter"}, BATCHES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the interpreter
        got_losses, got_vars = _train(COMPILED, BATCHES)
    np.testing.assert_allclose(got_losses, want_losses, rtol=2e-5, atol=1e-6)
    for g, w in zip(got_vars, want_vars):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
    assert want_vars[0].std() > 0 and abs(want_losses[0] - want_losses[-1]) > 0


def test_kernel_program_has_control_steps_and_matches_the_interpreter():
    graph, t = _rnn_graph()
    with graph.as_default():
        fn = lower_graph([t["loss"]], [t["train"]], [t["x"], t["steps"]], name="train")
    lowered = finish_entry("train", fn)
    text = print_program(lowered.program)
    assert "steps:" in text and "while:" in text and "if " in text  # a loop with a branch in it
    from compiler.ir.interpreter import run_function

    feeds = {"x:0": np.random.default_rng(0).standard_normal((3, 5, 3)).astype(np.float32),
             "steps:0": np.array(4, np.int32)}
    state = {"w": np.linspace(-0.5, 0.5, 12, dtype=np.float32).reshape(3, 4),
             "u": np.linspace(0.3, -0.3, 16, dtype=np.float32).reshape(4, 4)}
    want_state, want = run_function(fn, state, feeds)
    got_state, got = run_program(lowered.program, state, feeds, 3)
    np.testing.assert_allclose(got["loss:0"], want["loss:0"], rtol=1e-5)
    for key in want_state:
        np.testing.assert_allclose(got_state[key], want_state[key], rtol=1e-5, atol=1e-7)


def test_swapping_loop_values_and_nested_loops_compile():
    graph = tf.Graph()
    with graph.as_default():
        n = tf.placeholder(tf.int32, [], name="n")
        _, a, b = tf.while_loop(lambda k, a, b: k < n, lambda k, a, b: (k + 1, b, a),
                                (0, tf.constant(1.0), tf.constant(2.0)))

        def outer(i, s):
            inner = tf.while_loop(lambda j, t: j < i, lambda j, t: (j + 1, t + tf.cast(j, tf.float32)), (0, 0.0))[1]
            return i + 1, s + inner

        _, s = tf.while_loop(lambda i, s: i < n, outer, (0, 0.0))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            with tf.Session(config=COMPILED) as sess:
                for k in (0, 3, 4):
                    got = sess.run([a, b, s], {n: k})
                    want_s = sum(j for i in range(k) for j in range(i))
                    assert got == ([2.0, 1.0] if k % 2 else [1.0, 2.0]) + [want_s], k


@pytest.mark.parametrize("mode", MODES)
def test_cuda_backend_runs_control_flow_like_the_cpu(mode, tmp_path):
    graph, t = _rnn_graph()
    inputs = [t["x"], t["steps"]]
    entries = {"train": ([t["loss"]], [t["train"]], inputs), "predict": ([t["h"]], [], inputs)}
    cpu = runtime.load_artifact(compile_entries(graph, entries, tmp_path / "cpu", dump_ir=False))
    gpu = runtime.load_artifact(compile_cuda(graph, entries, tmp_path / "cuda", mode))
    source = (tmp_path / "cuda" / "src" / "model.cu").read_text()
    assert "cudaMemcpyDeviceToHost, stream)) != cudaSuccess) return e;" in source and "for (;;) {" in source
    with cpu.new_state() as c, gpu.new_state() as g:
        for step, (n, k) in enumerate(BATCHES):
            feeds = {name.name: v for name, v in _feeds(t, n, step, k).items()}
            feeds["steps:0"] = np.array(k, np.int32)
            lc, lg = c.run("train", feeds)["loss:0"], g.run("train", feeds)["loss:0"]
            np.testing.assert_allclose(lg, lc, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
            key = t["h"].name
            np.testing.assert_allclose(g.run("predict", feeds)[key], c.run("predict", feeds)[key], rtol=1e-5, atol=1e-6)


@needs_nvcc
def test_nvcc_compiles_the_control_flow_step(tmp_path):
    graph, t = _rnn_graph()
    with graph.as_default():
        fns = {"train": lower_graph([t["loss"]], [t["train"]], [t["x"], t["steps"]], name="train"),
               "predict": lower_graph([t["h"]], [], [t["x"], t["steps"]], name="predict")}
    programs = {name: finish_entry(name, fn).program for name, fn in fns.items()}
    source = render_module(programs, program_variables(programs.values()))
    assert source.count("for (;;) {") >= 3  # the forward loop, the stacks loop and the backward loop
    nvcc_compile(tmp_path, {"control_flow": source})
    assert (tmp_path / "control_flow.so").stat().st_size > 0


def test_llvm_session_assigns_only_on_the_taken_branch_and_runs_case():
    def run(config):
        graph = tf.Graph()
        with graph.as_default():
            v = tf.Variable(np.array([1.0, 2.0], np.float32), name="v")
            x = tf.placeholder(tf.float32, [2], name="x")
            k = tf.placeholder(tf.int32, [], name="k")
            upd = tf.cond(tf.reduce_sum(x) > 0.0, lambda: tf.assign_add(v, x), lambda: tf.assign(v, v * x))
            pick = tf.case([(k < 0, lambda: x * 10.0), (k < 5, lambda: x + upd)], default=lambda: -x)
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                out = [sess.run(pick, {x: xv, k: kv}) for xv, kv in
                       (([1.0, 2.0], 1), ([-1.0, 0.5], 7), ([-2.0, 1.0], 2), ([3.0, -1.0], -3))]
                return out, sess.run(v)

    want = run({"backend": "interpreter"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = run(COMPILED)
    for g, w in zip(got[0], want[0]):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got[1], want[1])
    # v: [1,2] +[1,2] -> [2,4]; *[-1,.5] -> [-2,2]; *[-2,1] -> [4,2]; +[3,-1] -> [7,1]
    np.testing.assert_array_equal(want[1], [7.0, 1.0])


def _loop_kernels(program, steps, in_loop=False):
    """The kernels run inside loops (cond or body, at any depth)."""
    for s in steps:
        if isinstance(s, K.WhileStep):
            yield from _loop_kernels(program, s.cond + s.body, True)
        elif isinstance(s, K.IfStep):
            yield from _loop_kernels(program, s.then + s.orelse, in_loop)
        elif in_loop:
            yield program.kernels[s]


def test_gradient_stacks_are_written_one_row_per_iteration_in_place():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [4], name="x")
        _, y = tf.while_loop(lambda i, y: i < 50, lambda i, y: (i + 1, tf.sin(y) * x), (0, x), maximum_iterations=64)
        g = tf.gradients(tf.reduce_sum(y), x)[0]
        fn = lower_graph([g], feed_tensors=[x])
    program = finish_entry("f", fn).program
    in_loops = list(_loop_kernels(program, program.steps))
    pushes = [k for k in in_loops if k.origin.startswith("update_row")]
    # each writes the loop's carried stack (an arena buffer), without reading or copying it
    assert pushes and all(program.buffers[k.writes[0]].role == "arena" and k.writes[0] not in k.reads for k in pushes)
    stack_sized = [k.name for k in in_loops for w in k.writes if program.buffers[w].shape[:1] == (64,)]
    assert sorted(stack_sized) == sorted(k.name for k in pushes)  # no copy of a whole stack in a loop
    xv = np.array([0.3, -0.2, 0.9, 1.4], np.float32)
    from compiler.ir.interpreter import run_function

    want = run_function(fn, {}, {"x:0": xv})[1]
    got = run_program(program, {}, {"x:0": xv}, 1)[1]
    np.testing.assert_allclose(got[g.name], want[g.name], rtol=1e-5)


def test_llvm_session_carries_variables_assigned_in_a_loop():
    def run(config):
        graph = tf.Graph()
        with graph.as_default():
            v = tf.Variable(np.array([1.0, -1.0], np.float32), name="v")
            x = tf.placeholder(tf.float32, [2], name="x")

            def body(i, s):
                new_v = tf.assign(v, v * 0.5 + x)
                return i + 1, s + tf.reduce_sum(new_v)

            _, s = tf.while_loop(lambda i, s: i < 3, body, (0, tf.constant(0.0)))
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                out = [sess.run(s, {x: np.array(xv, np.float32)}) for xv in ([1.0, 2.0], [0.5, -4.0])]
                return out, sess.run(v)

    want = run({"backend": "interpreter"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = run(COMPILED)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    v = np.array([1.0, -1.0])
    for xv in ([1.0, 2.0], [0.5, -4.0]):
        for _ in range(3):
            v = v * 0.5 + np.array(xv)
    np.testing.assert_allclose(want[1], v, rtol=1e-6)

"""Random ops inside tf.while_loop: fresh draws each iteration (keyed by ``rng_fold(step,
iteration)``, compiler/ir/ops/random.py), the same on the interpreter, the LLVM session and
the CUDA backend (host emulator), and replayed exactly by the loop's gradient."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.compile import finish_entry
from compiler.codegen.cuda.module import program_variables, render_module
from compiler.frontend.compile_graph import compile_entries
from compiler.ir.from_graph import RNG_STATE, lower_graph
from compiler.ir.interpreter import run_function
from compiler.ir.ops.random import bits_to_unit, random_bits
from compiler.ir.opdef import get_opdef
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from compiler.ir.verifier import verify
from tests.cuda_kit import MODES, compile_cuda
from tests.emu_kit import needs_nvcc, nvcc_compile

COMPILED = {"backend": "compiled"}


def _shift_in(acc, row):
    """``acc`` with its first row dropped and ``row`` appended: after k iterations the last k
    rows are the k draws, in order."""
    return tf.concat([acc[1:], tf.expand_dims(row, 0)], 0)


def _draw_graph():
    """A loop drawing a uniform row per iteration, nested loops drawing one per (outer, inner)
    pair, and one draw outside any loop."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(11)
        n = tf.placeholder(tf.int32, [], name="n")
        _, rows = tf.while_loop(lambda i, a: i < n, lambda i, a: (i + 1, _shift_in(a, tf.random_uniform([5], seed=1))),
                                (0, tf.zeros([4, 5])))

        def outer(i, a):
            inner = tf.while_loop(lambda j, b: j < 2, lambda j, b: (j + 1, _shift_in(b, tf.random_uniform([3], seed=2))),
                                  (0, tf.zeros([2, 3])))[1]
            return i + 1, _shift_in(a, inner)

        _, grid = tf.while_loop(lambda i, a: i < 3, outer, (0, tf.zeros([3, 2, 3])))
        outside = tf.random_uniform([5], seed=1, name="outside")
    return graph, {"n": n, "rows": rows, "grid": grid, "outside": outside}


def _fold(step, iteration):
    return int(get_opdef("rng_fold").evaluate(None, np.int64(step), np.int64(iteration)))


def _uniform(size, seed2, step):
    """What random_uniform([size], seed=seed2) under graph seed 11 draws at ``step``."""
    return bits_to_unit(random_bits(size, 11, seed2, step))


def _session_draws(config, runs=2):
    graph, t = _draw_graph()
    with graph.as_default(), tf.Session(config=config) as sess:
        return [sess.run([t["rows"], t["grid"], t["outside"]], {t["n"]: 4}) for _ in range(runs)]


def test_each_iteration_and_each_nested_pair_draws_fresh_numbers():
    for step, (rows, grid, outside) in enumerate(_session_draws({"backend": "interpreter"})):
        # outside any loop: keyed by the plain step, as before loops existed
        np.testing.assert_array_equal(outside, _uniform(5, 1, step))
        # iteration k of the loop: keyed by rng_fold(step, k)
        for k in range(4):
            np.testing.assert_array_equal(rows[k], _uniform(5, 1, _fold(step, k)))
        for i in range(3):
            for j in range(2):
                np.testing.assert_array_equal(grid[i, j], _uniform(3, 2, _fold(_fold(step, i), j)))
        assert len(np.unique(rows[:, 0])) == 4 and len(np.unique(grid[:, :, 0])) == 6


def test_llvm_session_draws_what_the_interpreter_draws():
    want = _session_draws({"backend": "interpreter"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the interpreter
        got = _session_draws(COMPILED)
    for g_run, w_run in zip(got, want):
        for g, w in zip(g_run, w_run):
            np.testing.assert_array_equal(g, w)
    assert not np.array_equal(want[0][0], want[1][0])  # and fresh numbers each run


@pytest.mark.parametrize("mode", MODES)
def test_cuda_backend_draws_what_the_cpu_draws(mode, tmp_path):
    graph, t = _draw_graph()
    entries = {"draw": ([t["rows"], t["grid"], t["outside"]], [], [t["n"]])}
    cpu = runtime.load_artifact(compile_entries(graph, entries, tmp_path / "cpu", dump_ir=False))
    gpu = runtime.load_artifact(compile_cuda(graph, entries, tmp_path / "cuda", mode))
    with cpu.new_state() as c, gpu.new_state() as g:
        for run in range(2):
            feeds = {"n:0": np.array(4, np.int32)}
            want, got = c.run("draw", feeds), g.run("draw", feeds)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key}, run {run}")
            rows = want[t["rows"].name]
            assert len(np.unique(rows[:, 0])) == 4


@needs_nvcc
def test_nvcc_compiles_random_draws_in_loops(tmp_path):
    graph, t = _draw_graph()
    with graph.as_default():
        fn = lower_graph([t["rows"], t["grid"]], [], [t["n"]], name="draw")
    programs = {"draw": finish_entry("draw", fn).program}
    nvcc_compile(tmp_path, {"random_loops": render_module(programs, program_variables(programs.values()))})
    assert (tmp_path / "random_loops.so").stat().st_size > 0


# ----------------------------------------------------------------------------- gradients
def _lowered_gradient(shape, make_h):
    """loss = weighted sum of ``make_h(x, w)`` and d loss / d w, float64, lowered (x, w fed)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(3)
        x = tf.placeholder(tf.float64, shape, name="x")
        w = tf.placeholder(tf.float64, [shape[1], shape[1]], name="w")
        h = make_h(x, w)
        loss = tf.reduce_sum(h * np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape))
        grad = tf.gradients(loss, w)[0]
        return lower_graph([loss, grad], [], [x, w], name="f"), loss.name, grad.name


def _check_at_a_fixed_step(lowered, shape):
    """Same step (rng state) for every evaluation: the draws are fixed, so central differences
    of the loss must match the gradient, which only holds if the backward loop rebuilds each
    iteration with the numbers that iteration drew."""
    fn, loss_key, grad_key = lowered
    rng = np.random.default_rng(0)
    xv, wv = rng.standard_normal(shape), rng.standard_normal((shape[1], shape[1])) * 0.7
    state = {RNG_STATE: np.array(9, np.int64)}

    def run(w):
        return run_function(fn, state, {"x:0": xv, "w:0": w})[1]

    grad, eps = run(wv)[grad_key], 1e-6
    numeric = np.zeros_like(wv)
    for idx in np.ndindex(*wv.shape):
        up, down = wv.copy(), wv.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (run(up)[loss_key] - run(down)[loss_key]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(grad).max() > 1e-3


def _dropout_step(w):
    return lambda h: tf.tanh(tf.matmul(tf.nn.dropout(h, keep_prob=0.5), w))


def test_dropout_gradient_in_a_loop_replays_the_forward_masks():
    """h <- tanh(dropout(h) @ w) three times."""
    _check_at_a_fixed_step(_lowered_gradient(
        (2, 4), lambda x, w: tf.while_loop(lambda h: True, _dropout_step(w), x, maximum_iterations=3)), (2, 4))


def test_gradient_through_nested_loops_replays_every_pair_of_iterations():
    """An inner dropout loop inside an outer loop that also draws (a random scale)."""
    def make_h(x, w):
        def outer(h):
            h = tf.while_loop(lambda h: True, _dropout_step(w), h, maximum_iterations=2)
            return h * tf.random_uniform([2, 3], dtype=tf.float64) + 0.1

        return tf.while_loop(lambda h: True, outer, x, maximum_iterations=3)

    _check_at_a_fixed_step(_lowered_gradient((2, 3), make_h), (2, 3))


def test_dropout_gradient_in_a_loop_on_the_llvm_backend_matches_the_interpreter():
    def run(config):
        graph = tf.Graph()
        with graph.as_default():
            tf.set_random_seed(3)
            x = tf.constant(np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4))
            w = tf.Variable(np.linspace(0.5, -0.5, 16, dtype=np.float32).reshape(4, 4), name="w")
            h = tf.while_loop(lambda h: True, lambda h: tf.tanh(tf.matmul(tf.nn.dropout(h, rate=0.5), w)), x,
                              maximum_iterations=4)
            loss = tf.reduce_sum(tf.square(h))
            grad = tf.gradients(loss, w)[0]
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                return [sess.run([loss, grad]) for _ in range(2)]

    want = run({"backend": "interpreter"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = run(COMPILED)
    for g_run, w_run in zip(got, want):
        np.testing.assert_allclose(g_run[0], w_run[0], rtol=1e-5)
        np.testing.assert_allclose(g_run[1], w_run[1], rtol=1e-4, atol=1e-6)
    assert not np.allclose(want[0][1], want[1][1])  # new masks each run


def test_loops_under_a_graph_seed_get_their_own_op_seeds():
    """Body ops take ids from the outermost graph's counter (as in TF1), so op seeds derived
    from ``tf.set_random_seed`` differ between two loops, a branch and the ops outside."""
    with tf.Graph().as_default():
        tf.set_random_seed(5)
        before = tf.random_uniform([4])
        loops = [tf.while_loop(lambda i, x: i < 2, lambda i, x: (i + 1, _shift_in(x, tf.random_uniform([4]))),
                               (0, tf.zeros([2, 4])))[1] for _ in range(2)]
        branch = tf.cond(tf.constant(True), lambda: tf.random_uniform([4]), lambda: tf.zeros([4]))
        with tf.Session() as sess:
            draws = sess.run([before, branch] + loops)
    rows = np.concatenate([draws[0][None], draws[1][None]] + draws[2:])
    assert len(np.unique(rows[:, 0])) == 6


def test_only_loops_that_draw_carry_an_iteration_counter_through_the_ir_text():
    graph, t = _draw_graph()
    with graph.as_default():
        plain = tf.while_loop(lambda i: i < 3, lambda i: i + 1, 0)
        fn = lower_graph([t["rows"], plain], [], [t["n"]], name="draw")
    verify(fn)
    text = print_function(fn)
    assert print_function(parse_function(text)) == text
    loops = [ins for ins in fn.body if ins.kind == "while"]
    drawing = [ins for ins in loops if any(sub.kind == "rng_fold" for sub in ins.regions[1].body)]
    assert len(loops) == 2 and len(drawing) == 1
    counter = drawing[0].operands[-1]  # after the captures: i64 0, yielded plus one
    assert counter.type.dtype.name == "int64" and int(counter.producer.attrs["value"]) == 0
    body = drawing[0].regions[1]
    step = body.yields[-1].producer
    assert step.kind == "add" and step.operands[0] is body.params[-1]

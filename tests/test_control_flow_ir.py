"""The IR's if/while instrs: text form (golden + round trip), verifier, interpreter, passes."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from compiler.ir.from_graph import lower_graph
from compiler.ir.interpreter import run_function
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from compiler.ir.verifier import IRVerifyError, verify
from compiler.passes.manager import run_pipeline

# x ** n by repeated multiplication (while), then |.| by an if on the sign of the sum.
GOLDEN = """\
func @power {
  %0 : f32[N,2] = feed "x:0"
  %1 : i32[] = feed "n:0"
  %2 : i32[] = constant() {value=dense<i32[]>(0)}
  %3 : f32[N,2] = div(%0, %0)
  %4, %5, %6, %7 : i32[], f32[N,2], f32[N,2], i32[] = while(%2, %3, %0, %1) {maximum_iterations=16} {
    ^(%8 : i32[], %9 : f32[N,2], %10 : f32[N,2], %11 : i32[]):
    %12 : bool[] = less(%8, %11)
    yield %12
  } {
    ^(%13 : i32[], %14 : f32[N,2], %15 : f32[N,2], %16 : i32[]):
    %17 : i32[] = constant() {value=dense<i32[]>(1)}
    %18 : i32[] = add(%13, %17)
    %19 : f32[N,2] = mul(%14, %15)  loc("while/mul")
    yield %18, %19, %15, %16
  }  loc("while")
  %20 : f32[] = reduce_sum(%5) {axes=(0, 1), keepdims=false}
  %21 : f32[] = constant() {value=dense<f32[]>(0.0)}
  %22 : bool[] = less(%20, %21)
  %23 : f32[N,2] = if(%22, %5) {
    ^(%24 : f32[N,2]):
    %25 : f32[N,2] = neg(%24)
    yield %25
  } {
    ^(%26 : f32[N,2]):
    yield %26
  }  loc("cond")
  fetch "y:0" = %23
  fetch "count:0" = %4
}
"""

X = np.array([[1.5, -2.0], [0.5, -1.0], [3.0, 2.0]], np.float32)


def test_golden_parses_verifies_prints_back_and_runs():
    fn = parse_function(GOLDEN)
    verify(fn)
    assert print_function(fn) == GOLDEN
    _, out = run_function(fn, {}, {"x:0": X, "n:0": np.array(3, np.int32)})
    want = X ** 3
    np.testing.assert_allclose(out["y:0"], -want if want.sum() < 0 else want)
    assert out["count:0"] == 3
    _, out = run_function(fn, {}, {"x:0": -X, "n:0": np.array(3, np.int32)})
    np.testing.assert_allclose(out["y:0"], X ** 3 if (X ** 3).sum() > 0 else -(X ** 3))


def _lowered():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        v = tf.Variable(np.ones(3, np.float32), name="v")
        p = tf.reduce_sum(x) > 0.0
        y = tf.cond(p, lambda: tf.assign(v, v * 2.0), lambda: tf.identity(v))
        _, z = tf.while_loop(lambda i, z: i < 4, lambda i, z: (i + 1, tf.cond(
            tf.reduce_sum(z) > 100.0, lambda: z * 0.5, lambda: z * 3.0 + x)), (0, x + y), maximum_iterations=6)
        fn = lower_graph([z], feed_tensors=[x], name="step")
    return fn


def test_lowered_control_flow_round_trips_and_nests():
    fn = _lowered()
    verify(fn)
    text = print_function(fn)
    assert text.count("= while(") == 1 and text.count("= if(") == 2  # one if is nested in the body
    again = parse_function(text)
    verify(again)
    assert print_function(again) == text
    assert [k for k, _ in fn.state_out] == ["v"]  # the cond's branch assigns v


def _state():
    return {"v": np.array([1.0, -2.0, 0.5], np.float32)}


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pipeline_keeps_semantics_and_plans_memory_around_regions(sign):
    fn = _lowered()
    feeds = {"x:0": sign * np.linspace(0.5, 2, 6, dtype=np.float32).reshape(2, 3)}
    want_state, want = run_function(fn, _state(), feeds)
    opt = run_pipeline(fn).fn
    assert any(ins.kind == "while" for ins in opt.body)
    got_state, got = run_function(opt, _state(), feeds, check_memory_plan=True)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got_state["v"], want_state["v"])
    np.testing.assert_array_equal(want_state["v"], _state()["v"] * (2.0 if sign > 0 else 1.0))


def _mutate_if_pred(fn):
    ins = next(i for i in fn.body if i.kind == "if")
    ins.operands[0] = fn.params[0].value


def _mutate_cond_yield(fn):
    ins = next(i for i in fn.body if i.kind == "while")
    ins.regions[0].yields = [ins.regions[0].params[1]]


def _mutate_capture(fn):
    ins = next(i for i in fn.body if i.kind == "if")
    ins.regions[0].yields = [fn.params[0].value]


def _mutate_result_count(fn):
    ins = next(i for i in fn.body if i.kind == "while")
    ins.results = ins.results[:-1]


def _mutate_one_region(fn):
    ins = next(i for i in fn.body if i.kind == "if")
    ins.regions = ins.regions[:1]


@pytest.mark.parametrize("mutate, message", [
    (_mutate_if_pred, r"first operand of if must be a bool scalar predicate, got f32\[N,2\]"),
    (_mutate_cond_yield, "the cond region must yield one bool scalar"),
    (_mutate_capture, r"the region uses %0, defined outside it"),
    (_mutate_result_count, "a while instr has one result per operand: 4 operands, 3 results"),
    (_mutate_one_region, r"a if instr needs two regions \(then and else\), got 1"),
])
def test_verifier_catches(mutate, message):
    fn = parse_function(GOLDEN)
    mutate(fn)
    with pytest.raises(IRVerifyError, match=message):
        verify(fn)


def test_constant_predicate_inlines_the_taken_branch_with_its_assign():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [3], name="x")
        v = tf.Variable(np.zeros(3, np.float32), name="v")
        y = tf.cond(tf.constant(False), lambda: x * 2.0,
                    lambda: tf.cond(tf.constant(True), lambda: tf.assign(v, x - 1.0), lambda: x))
        fn = lower_graph([y], feed_tensors=[x])
    feeds = {"x:0": np.array([1.0, 2.0, 4.0], np.float32)}
    state = {"v": np.full(3, 7.0, np.float32)}
    want_state, want = run_function(fn, dict(state), feeds)
    result = run_pipeline(fn)
    assert "inlined 2 ifs" in result.stages[1].summary
    assert not any(ins.regions and ins.kind != "fused" for ins in result.fn.body)
    got_state, got = run_function(result.fn, dict(state), feeds, check_memory_plan=True)
    np.testing.assert_array_equal(got["cond:0"], want["cond:0"])
    np.testing.assert_array_equal(got_state["v"], [0.0, 1.0, 3.0])
    np.testing.assert_array_equal(want_state["v"], got_state["v"])


def test_dot_view_shows_control_flow_as_one_node():
    from compiler.passes.dot import to_dot

    text = to_dot(parse_function(GOLDEN))
    assert 'label="while\\ni32[], f32[N,2], f32[N,2], i32[]"' in text and 'label="if\\nf32[N,2]"' in text
    assert "cluster" not in text and "neg" not in text  # only fused kernels are opened up


def test_session_cache_fingerprint_sees_every_region():
    from compiler.frontend.session_cache import fingerprint

    other = GOLDEN.replace("%25 : f32[N,2] = neg(%24)", "%25 : f32[N,2] = abs(%24)")
    body_changed = GOLDEN.replace("%19 : f32[N,2] = mul(%14, %15)", "%19 : f32[N,2] = add(%14, %15)")
    prints = {fingerprint(parse_function(t)) for t in (GOLDEN, other, body_changed)}
    assert len(prints) == 3


def test_update_row_type_rule_and_semantics():
    from compiler.ir.interpreter import InterpreterError
    from compiler.ir.opdef import EvalContext, evaluate_op, infer_type
    from compiler.ir.types import N, ShapeError, TensorType, float32, int32

    stack, row, idx = TensorType(float32, (5, N, 2)), TensorType(float32, (N, 2)), TensorType(int32, ())
    assert infer_type("update_row", [stack, row, idx], {}) == stack
    with pytest.raises(ShapeError, match=r"a row of shape \[N,3\] does not fit a stack of shape \[5,N,2\]"):
        infer_type("update_row", [stack, TensorType(float32, (N, 3)), idx], {})
    s = np.zeros((3, 2), np.float32)
    out = evaluate_op("update_row", EvalContext(), [s, np.array([1.0, 2.0], np.float32), np.array(2, np.int32)], {})
    np.testing.assert_array_equal(out, [[0, 0], [0, 0], [1, 2]])
    assert not s.any()  # a new array: the operand is not written
    fn = parse_function("""\
func @f {
  %0 : f32[3,2] = feed "s:0"
  %1 : f32[2] = feed "r:0"
  %2 : i32[] = feed "k:0"
  %3 : f32[3,2] = update_row(%0, %1, %2)
  fetch "out:0" = %3
}
""")
    verify(fn)
    with pytest.raises(InterpreterError, match=r"update_row index 3 is not in \[0, 3\)"):
        run_function(fn, {}, {"s:0": s, "r:0": np.ones(2, np.float32), "k:0": np.array(3, np.int32)})


PRUNABLE = """\
func @p {
  %0 : f32[2] = feed "x:0"
  %1 : i32[] = constant() {value=dense<i32[]>(0)}
  %2, %3, %4, %5 : i32[], f32[2], f32[2], f32[2] = while(%1, %0, %0, %0) {
    ^(%6 : i32[], %7 : f32[2], %8 : f32[2], %9 : f32[2]):
    %10 : i32[] = constant() {value=dense<i32[]>(3)}
    %11 : bool[] = less(%6, %10)
    yield %11
  } {
    ^(%12 : i32[], %13 : f32[2], %14 : f32[2], %15 : f32[2]):
    %16 : i32[] = constant() {value=dense<i32[]>(1)}
    %17 : i32[] = add(%12, %16)
    %18 : f32[2] = add(%13, %14)
    %19 : f32[2] = mul(%14, %14)
    %20 : f32[2] = exp(%15)
    yield %17, %18, %19, %20
  }
  %28 : bool[] = constant() {value=dense<bool[]>(true)}
  %21, %22 : f32[2], f32[2] = if(%28, %3, %5) {
    ^(%23 : f32[2], %24 : f32[2]):
    %25 : f32[2] = neg(%24)
    yield %23, %25
  } {
    ^(%26 : f32[2], %27 : f32[2]):
    yield %26, %27
  }
  fetch "y:0" = %21
}
"""


def test_pruning_drops_dead_loop_values_and_if_results():
    from compiler.passes import pruning

    fn = parse_function(PRUNABLE)
    verify(fn)
    feeds = {"x:0": np.array([0.5, 2.0], np.float32)}
    want = run_function(fn, {}, feeds)[1]
    stats = pruning.run(fn).stats
    verify(fn)
    loop = next(ins for ins in fn.body if ins.kind == "while")
    # %5 (exp chain) is dead; %4 (mul chain) feeds the kept %3, so it stays; the if loses a result
    assert len(loop.results) == 3 and stats["loop_values"] == 1 and stats["if_results"] == 1
    assert "exp" not in print_function(fn) and "neg" not in print_function(fn)
    np.testing.assert_array_equal(run_function(fn, {}, feeds)[1]["y:0"], want["y:0"])


def test_forward_loop_keeps_stacks_only_when_a_gradient_reads_them():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [3], name="x")
        _, y = tf.while_loop(lambda i, y: i < 5, lambda i, y: (i + 1, tf.tanh(y) * x), (0, x), maximum_iterations=8)
        loss = tf.reduce_sum(y)
        g = tf.gradients(loss, x)[0]
        forward_only = run_pipeline(lower_graph([loss], feed_tensors=[x])).fn
        both = run_pipeline(lower_graph([loss, g], feed_tensors=[x])).fn
    loops = [ins for ins in forward_only.body if ins.kind == "while"]
    assert len(loops) == 1 and "update_row" not in print_function(forward_only)
    # counter, i, y and the captured limit and x: the three [8, ...] stacks were pruned
    assert [str(v.type) for v in loops[0].results] == ["i32[]", "i32[]", "f32[3]", "i32[]", "f32[3]"]
    loops = [ins for ins in both.body if ins.kind == "while"]
    # one forward loop (with its stacks) and one backward loop: the forward runs once
    # and only y's stack is left: the backward loop reads no other (the counter's and i's went)
    assert len(loops) == 2 and print_function(both).count("update_row(") == 1

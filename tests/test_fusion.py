"""Fusion: golden IR for small graphs, the legality rules as code, and the model steps'
numbers through the interpreter before and after (plus determinism, idempotence, speed)."""
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from compiler import tf
from compiler.ir.from_graph import lower_graph
from compiler.ir.function import Function, Instr, Param, Region, Value
from compiler.ir.interpreter import run_function
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from compiler.ir.types import TensorType, float32
from compiler.ir.verifier import verify
from compiler.passes import fusion
from compiler.passes.fusion_rules import FusionRuleError, classify, region_parts
from compiler.passes.manager import clone_function, run_pipeline
from tests import models
from tests.test_pipeline_random_graphs import random_step


def fuse(fetches, feeds, targets=(), state=None, feed_values=None):
    """Lower, fuse, verify; check the numbers against the unfused function; return (text, result)."""
    fn = lower_graph(fetches, list(targets), feeds, name="f")
    before = clone_function(fn)
    result = fusion.run(fn)
    verify(result.fn)
    for ins in result.fn.body:
        if ins.kind == "fused":
            region_parts(ins)  # raises if a group breaks the documented rules
    rng = np.random.default_rng(0)
    if feed_values is None:
        feed_values = {p.key: rng.standard_normal([3 if not isinstance(d, int) else d for d in p.value.type.shape])
                       .astype(np.float32) for p in before.feeds()}
    state = state or {}
    _assert_same_numbers(before, result.fn, state, feed_values)
    return print_function(result.fn), result


def _assert_same_numbers(a, b, state, feeds):
    new_a, out_a = run_function(a, state, feeds)
    new_b, out_b = run_function(b, state, feeds)
    assert new_a.keys() == new_b.keys() and out_a.keys() == out_b.keys()
    for key in new_a:
        np.testing.assert_allclose(new_b[key], new_a[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for key in out_a:
        np.testing.assert_allclose(out_b[key], out_a[key], rtol=1e-5, atol=1e-6, err_msg=key)


# ----------------------------------------------------------------------------- golden
def test_dense_bias_relu_is_one_contraction():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w = tf.Variable(tf.ones([3, 4]), name="w")
    b = tf.Variable(tf.zeros([4]), name="b")
    y = tf.nn.relu(tf.matmul(x, w) + b, name="y")
    state = {"w": np.full((3, 4), 0.5, np.float32), "b": np.array([1, -1, 0, 2], np.float32)}
    text, result = fuse([y], [x], state=state)
    assert text == '''func @f {
  %0 : f32[N,3] = feed "x:0"
  %1 : f32[3,4] = state "w"
  %2 : f32[4] = state "b"
  %3 : f32[N,4] = fused(%0, %1, %2) {pattern="contraction"} {
    ^(%4 : f32[N,3], %5 : f32[3,4], %6 : f32[4]):
    %7 : f32[N,4] = matmul(%4, %5) {transpose_a=false, transpose_b=false}  loc("MatMul")
    %8 : f32[N,4] = add(%7, %6)  loc("Add")
    %9 : f32[N,4] = relu(%8)  loc("y")
    yield %9
  }  loc("MatMul")
  fetch "y:0" = %3
}
'''
    assert result.summary == "fused 3 ops into 1 kernel (loop 0, reduce 0, contraction 1)"
    assert result.stats["kernels"] == 1 and result.stats["kernels_before"] == 3


def test_elementwise_chain_is_one_loop_with_constants_copied_in():
    x = tf.placeholder(tf.float32, [4], name="x")
    y = tf.tanh(tf.exp(x) * 2.0 + 1.0, name="y")
    text, result = fuse([y], [x])
    assert text == '''func @f {
  %0 : f32[4] = feed "x:0"
  %1 : f32[4] = fused(%0) {pattern="loop"} {
    ^(%2 : f32[4]):
    %3 : f32[] = constant() {value=dense<f32[]>(2.0)}  loc("Const")
    %4 : f32[] = constant() {value=dense<f32[]>(1.0)}  loc("Const_1")
    %5 : f32[4] = exp(%2)  loc("Exp")
    %6 : f32[4] = mul(%5, %3)  loc("Mul")
    %7 : f32[4] = add(%6, %4)  loc("Add")
    %8 : f32[4] = tanh(%7)  loc("y")
    yield %8
  }  loc("Exp")
  fetch "y:0" = %1
}
'''
    assert result.stats["copied_constants"] == 2 and result.stats["fused_ops"] == 4


def test_siblings_reading_one_input_become_one_kernel_with_two_results():
    x = tf.placeholder(tf.float32, [4], name="x")
    text, _ = fuse([tf.exp(x, name="a"), tf.negative(x, name="b")], [x])
    assert text == '''func @f {
  %0 : f32[4] = feed "x:0"
  %1, %2 : f32[4], f32[4] = fused(%0) {pattern="loop"} {
    ^(%3 : f32[4]):
    %4 : f32[4] = exp(%3)  loc("a")
    %5 : f32[4] = neg(%3)  loc("b")
    yield %4, %5
  }  loc("a")
  fetch "a:0" = %1
  fetch "b:0" = %2
}
'''


def test_reduction_with_prologue_and_epilogue():
    x = tf.placeholder(tf.float32, [None, 8], name="x")
    text, result = fuse([tf.reduce_mean(tf.square(x - 1.0), axis=1) * 0.5], [x])
    assert text == '''func @f {
  %0 : f32[N,8] = feed "x:0"
  %1 : f32[N] = fused(%0) {pattern="reduce"} {
    ^(%2 : f32[N,8]):
    %3 : f32[] = constant() {value=dense<f32[]>(1.0)}  loc("Const")
    %4 : f32[] = constant() {value=dense<f32[]>(0.5)}  loc("Const_1")
    %5 : f32[N,8] = sub(%2, %3)  loc("Sub")
    %6 : f32[N,8] = square(%5)  loc("Square")
    %7 : f32[N] = reduce_mean(%6) {axes=(1,), keepdims=false}  loc("Mean")
    %8 : f32[N] = mul(%7, %4)  loc("Mul")
    yield %8
  }  loc("Mean")
  fetch "Mul:0" = %1
}
'''
    parts = region_parts(result.fn.body[0])
    assert [p for p in parts.values()] == ["const", "const", "pro", "pro", "red", "epi"]


def test_no_cycle_through_an_outside_op():
    """a = exp(x); b = a + transpose(a): b may not join a's kernel (the transpose sits between)."""
    x = tf.placeholder(tf.float32, [4, 4], name="x")
    a = tf.exp(x, name="a")
    text, result = fuse([a + tf.transpose(a, name="t")], [x])
    assert text == '''func @f {
  %0 : f32[4,4] = feed "x:0"
  %1 : f32[4,4] = fused(%0) {pattern="loop"} {
    ^(%2 : f32[4,4]):
    %3 : f32[4,4] = exp(%2)  loc("a")
    yield %3
  }  loc("a")
  %4 : f32[4,4] = transpose(%1) {perm=(1, 0)}  loc("t")
  %5 : f32[4,4] = fused(%1, %4) {pattern="loop"} {
    ^(%6 : f32[4,4], %7 : f32[4,4]):
    %8 : f32[4,4] = add(%6, %7)  loc("Add")
    yield %8
  }  loc("Add")
  fetch "Add:0" = %5
}
'''
    assert result.stats["loop"] == 2 and result.stats["kernels"] == 3


def test_adam_update_of_one_variable_is_one_multi_output_loop():
    g = tf.placeholder(tf.float32, [4], name="g")
    w = tf.Variable(tf.zeros([4]), name="w")
    train = tf.train.AdamOptimizer(0.1).apply_gradients([(g, w)], name="train")
    rng = np.random.default_rng(1)
    state = {"w": rng.standard_normal(4).astype(np.float32), "w/Adam": rng.random(4).astype(np.float32),
             "w/Adam_1": rng.random(4).astype(np.float32),
             "beta1_power": np.float32(0.9), "beta2_power": np.float32(0.999)}
    text, result = fuse([], [g], [train], state=state)
    assert text.endswith('''  %29, %30, %31 : f32[4], f32[4], f32[4] = fused(%3, %0, %7, %4, %8, %6, %5) {pattern="loop"} {
    ^(%32 : f32[4], %33 : f32[4], %34 : f32[], %35 : f32[4], %36 : f32[], %37 : f32[], %38 : f32[4]):
    %39 : f32[] = constant() {value=dense<f32[]>(0.9)}  loc("train/beta1")
    %40 : f32[] = constant() {value=dense<f32[]>(0.999)}  loc("train/beta2")
    %41 : f32[] = constant() {value=dense<f32[]>(1e-08)}  loc("train/epsilon")
    %42 : f32[4] = mul(%32, %39)  loc("train/update_w/Mul_1")
    %43 : f32[4] = mul(%33, %34)  loc("train/update_w/Mul_2")
    %44 : f32[4] = add(%42, %43)  loc("train/update_w/Add")
    %45 : f32[4] = mul(%35, %40)  loc("train/update_w/Mul_3")
    %46 : f32[4] = mul(%33, %33)  loc("train/update_w/Mul_4")
    %47 : f32[4] = mul(%46, %36)  loc("train/update_w/Mul_5")
    %48 : f32[4] = add(%45, %47)  loc("train/update_w/Add_1")
    %49 : f32[4] = mul(%37, %44)  loc("train/update_w/Mul_6")
    %50 : f32[4] = sqrt(%48)  loc("train/update_w/Sqrt_1")
    %51 : f32[4] = add(%50, %41)  loc("train/update_w/Add_2")
    %52 : f32[4] = div(%49, %51)  loc("train/update_w/truediv_1")
    %53 : f32[4] = sub(%38, %52)  loc("train/update_w/AssignSub")
    yield %44, %48, %53
  }  loc("train/update_w/Mul_1")
  state "w/Adam" = %29
  state "w/Adam_1" = %30
  state "w" = %31
  state "beta1_power" = %9
  state "beta2_power" = %10
}
''')
    # the scalar work (lr_t, 1-beta1, 1-beta2, the beta powers) is one more kernel
    assert result.summary == "fused 21 ops into 2 kernels (loop 2, reduce 0, contraction 0)"


def test_matmul_prologue_when_its_operand_has_no_other_use():
    a = tf.placeholder(tf.float32, [None, 3], name="a")
    b = tf.placeholder(tf.float32, [3, 5], name="b")
    text, result = fuse([tf.matmul(a, tf.nn.relu(b), name="y")], [a, b])
    assert text == '''func @f {
  %0 : f32[N,3] = feed "a:0"
  %1 : f32[3,5] = feed "b:0"
  %2 : f32[N,5] = fused(%1, %0) {pattern="contraction"} {
    ^(%3 : f32[3,5], %4 : f32[N,3]):
    %5 : f32[3,5] = relu(%3)  loc("Relu")
    %6 : f32[N,5] = matmul(%4, %5) {transpose_a=false, transpose_b=false}  loc("y")
    yield %6
  }  loc("y")
  fetch "y:0" = %2
}
'''
    assert list(region_parts(result.fn.body[0]).values()) == ["pro1", "anchor"]


def test_no_prologue_when_the_operand_is_used_elsewhere():
    a = tf.placeholder(tf.float32, [None, 3], name="a")
    b = tf.placeholder(tf.float32, [3, 5], name="b")
    r = tf.nn.relu(b, name="r")
    _, result = fuse([tf.matmul(a, r, name="y"), r], [a, b])
    assert result.stats["loop"] == 1 and result.stats["contraction"] == 1


def test_dropout_mask_is_drawn_inside_the_loop():
    x = tf.placeholder(tf.float32, [None, 6], name="x")
    kp = tf.placeholder(tf.float32, [], name="kp")
    y = tf.nn.dropout(tf.nn.relu(x), kp, seed=1)
    feeds = {"x:0": np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 6), "kp:0": np.float32(0.5)}
    _, result = fuse([y], [x, kp], state={"kiln/rng_step": np.int64(7)}, feed_values=feeds)
    kinds = [ins.kind for ins in result.fn.body[0].region.body]
    assert kinds == ["relu", "random_uniform", "add", "floor", "div", "mul"]
    assert result.summary == "fused 7 ops into 2 kernels (loop 2, reduce 0, contraction 0)"  # + rng_step += 1


def test_large_constants_stay_operands_and_kinds_do_not_mix():
    x = tf.placeholder(tf.float32, [None, 20], name="x")
    w = tf.placeholder(tf.float32, [20, 20], name="w")
    big = tf.constant(np.arange(20, dtype=np.float32), name="big")
    y = tf.reduce_sum(tf.matmul(x + big, w), axis=0, name="y")
    _, result = fuse([y], [x, w])
    body = result.fn.body
    assert [ins.kind for ins in body] == ["constant", "fused", "fused"]
    # x + big is the matmul's prologue; the reduction over its result is a kernel of its own
    assert [ins.attrs["pattern"] for ins in body[1:]] == ["contraction", "reduce"]
    assert list(region_parts(body[1]).values()) == ["pro0", "anchor"]
    assert body[0].result in body[1].operands  # 20 elements: an operand, not copied


# ----------------------------------------------------------------------------- rules as code
def _region_fn(pattern, build):
    """One fused instr over a feed x f32[4,3]: ``build(param) -> [Instr]`` makes its region."""
    x = Param("feed", "x:0", Value("x", TensorType(float32, (4, 3))))
    p = Value("p", x.value.type)
    body = build(p)
    out = Value("out", body[-1].result.type)
    fused = Instr("fused", [x.value], {"pattern": pattern}, [out], "bad",
                  region=Region([p], body, [body[-1].result]))
    return Function("bad", [x], [fused], [], [("y", out)])


def test_region_parts_rejects_groups_that_break_the_rules():
    def reduce_in_loop(p):
        return [Instr("reduce_sum", [p], {"axes": (1,), "keepdims": False}, Value("s", TensorType(float32, (4,))))]

    fn = _region_fn("loop", reduce_in_loop)
    verify(fn)  # well-typed IR ...
    with pytest.raises(FusionRuleError, match="L1"):
        region_parts(fn.body[0])  # ... but no loop kernel
    with pytest.raises(FusionRuleError, match="C1"):
        region_parts(_region_fn("contraction", reduce_in_loop).body[0])


# ----------------------------------------------------------------------------- model steps
@pytest.fixture(scope="module", params=["mlp_train_step", "cnn_train_step"])
def step(request):
    fn, state, feeds = getattr(models, request.param)()
    optimized = run_pipeline(fn, ["constant_folding", "simplify", "cse", "pruning"]).fn
    return request.param, fn, optimized, state, feeds


def test_model_steps_keep_their_numbers(step):
    _, raw, optimized, state, feeds = step
    for before in (raw, optimized):
        result = fusion.run(clone_function(before))
        verify(result.fn)
        _assert_same_numbers(before, result.fn, state, feeds)
        kernels = [ins for ins in result.fn.body if ins.kind == "fused"]
        assert len(kernels) == result.stats["groups"] and result.stats["kernels"] < result.stats["kernels_before"] / 3
        for ins in kernels:
            region_parts(ins)


def test_model_steps_fuse_deterministically_and_idempotently(step):
    name, _, optimized, _, _ = step
    start = time.perf_counter()
    first = fusion.run(clone_function(optimized))
    elapsed = time.perf_counter() - start
    text = print_function(first.fn)
    assert print_function(fusion.run(clone_function(optimized)).fn) == text
    again = fusion.run(parse_function(text))
    assert print_function(again.fn) == text and again.stats["fused_ops"] == 0
    assert elapsed < 0.5, f"fusion took {elapsed:.3f} s on {name}"


# anchor kind -> kinds some contraction kernel on that anchor must hold; bias Adam updates (loops of 3 results)
EXPECTED_KERNELS = {
    "mlp_train_step": ({"matmul": ["add", "relu", "greater", "select", "sqrt"]}, 3),
    "cnn_train_step": ({"conv2d": ["add", "relu"], "matmul": ["relu", "random_uniform", "floor", "select", "sqrt"],
                        "conv2d_backprop_filter": ["sqrt"]}, 4),
}


def test_model_steps_fuse_epilogues_dropout_and_adam(step):
    """Bias+relu after each matmul/conv, the relu-grad mask after dx, dropout inside the dense
    kernel, each weight's Adam update after its gradient's contraction, each bias's as one loop."""
    name, _, optimized, _, _ = step
    fn = fusion.run(clone_function(optimized)).fn
    held = {}
    for ins in fn.body:
        if ins.kind == "fused" and ins.attrs["pattern"] == "contraction":
            parts = region_parts(ins)
            anchor = next(sub.kind for sub, part in parts.items() if part == "anchor")
            held.setdefault(anchor, set()).update(sub.kind for sub, part in parts.items() if part == "epi")
    wanted, bias_updates = EXPECTED_KERNELS[name]
    for anchor, kinds in wanted.items():
        assert set(kinds) <= held[anchor], (anchor, sorted(held[anchor]))
    loops = [ins for ins in fn.body if ins.kind == "fused" and ins.attrs["pattern"] == "loop"]
    assert sum(1 for ins in loops if len(ins.results) == 3 and ins.results[0].type.shape != ()
               and "sqrt" in [sub.kind for sub in ins.region.body]) == bias_updates


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_step())
def test_random_graphs_fuse_by_the_rules_and_keep_their_numbers(fn):
    before = clone_function(fn)
    result = fusion.run(fn)
    verify(result.fn)
    for ins in result.fn.body:
        if ins.kind == "fused":
            region_parts(ins)
    # every elementwise, reduction and contraction instr now sits inside a fused kernel
    assert not [ins.kind for ins in result.fn.body if classify(ins) in ("elementwise", "reduction", "contraction")]
    assert result.stats["fused_ops"] == sum(1 for ins in before.body if classify(ins) in
                                            ("elementwise", "reduction", "contraction"))
    state = {"v": np.linspace(0.5, 1.5, 4).astype(np.float32)}
    feeds = {"x:0": np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)}
    _assert_same_numbers(before, result.fn, state, feeds)
    text = print_function(result.fn)
    assert print_function(fusion.run(parse_function(text)).fn) == text

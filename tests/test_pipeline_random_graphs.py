"""Differential test of the whole pass pipeline on hypothesis-generated graphs.

Random graphs of elementwise, broadcasting, reduction and matmul ops (plus their
gradients) are lowered to IR, optimized by the full pipeline, and run by the interpreter
before and after: the results must agree to float32 tolerance.
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import tf
from compiler.ir.from_graph import lower_graph
from compiler.ir.interpreter import run_function
from compiler.passes.manager import run_pipeline

WIDTH = 4
UNARY = [tf.tanh, tf.sigmoid, tf.nn.relu, tf.square, tf.negative, tf.abs, lambda t: tf.exp(tf.tanh(t))]
BINARY = [tf.add, tf.subtract, tf.multiply, tf.maximum, tf.minimum, lambda a, b: a * 1.0 + b * 0.0]


def _grow(draw, pool):
    """Add one random op over tensors of the pool; returns the new tensor."""
    choice = draw(st.sampled_from(["unary", "binary", "scalar", "reduce", "matmul", "bias"]))
    x = draw(st.sampled_from(pool))
    if choice == "unary":
        return draw(st.sampled_from(UNARY))(x)
    if choice == "scalar":
        return x * draw(st.sampled_from([0.5, 1.0, 2.0, -1.0])) + draw(st.sampled_from([0.0, 1.0, -0.25]))
    same = [t for t in pool if t.shape.as_list() == x.shape.as_list()]
    if choice == "binary":
        return draw(st.sampled_from(BINARY))(x, draw(st.sampled_from(same)))
    if choice == "bias":
        return tf.nn.bias_add(x, tf.constant(np.linspace(-1, 1, WIDTH, dtype=np.float32)))
    if choice == "reduce":
        reduce = draw(st.sampled_from([tf.reduce_sum, tf.reduce_mean, tf.reduce_max]))
        return reduce(x, axis=1, keepdims=True) + x  # broadcast back to keep the pool's shape
    w = tf.constant(np.random.default_rng(len(pool)).standard_normal((WIDTH, WIDTH)).astype(np.float32) * 0.5)
    return tf.matmul(x, w, transpose_b=draw(st.booleans()))


@st.composite
def random_step(draw):
    """A graph over x [None, 4] and a trainable v [4]; fetches a few tensors and grad wrt v."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, WIDTH], name="x")
        v = tf.Variable(np.linspace(0.5, 1.5, WIDTH).astype(np.float32), name="v")
        pool = [x, x * v]
        for _ in range(draw(st.integers(2, 9))):
            pool.append(_grow(draw, pool))
        outs = [pool[-1]] + draw(st.lists(st.sampled_from(pool[2:]), max_size=2))
        loss = tf.add_n([tf.reduce_sum(o) for o in outs])
        grad = tf.gradients(loss, v)[0]
        fetches = [loss] + ([grad] if grad is not None else [])
        fn = lower_graph(fetches, [], [x], name="random")
    return fn


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_step(), st.integers(1, 5))
def test_pipeline_keeps_numerics_on_random_graphs(fn, batch):
    state = {"v": np.linspace(0.5, 1.5, WIDTH).astype(np.float32)}
    feeds = {"x:0": np.random.default_rng(batch).standard_normal((batch, WIDTH)).astype(np.float32)}
    _, before = run_function(fn, state, feeds)
    optimized = run_pipeline(fn).fn
    _, after = run_function(optimized, state, feeds)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=2e-4, atol=2e-4, err_msg=key)

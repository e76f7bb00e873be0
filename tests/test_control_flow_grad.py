"""Gradients through tf.cond / tf.case / tf.while_loop vs central finite differences (float64)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from tests.helpers import check_gradients

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("flag", [True, False])
def test_cond_gradient_flows_only_through_the_taken_branch(flag):
    def fn(x, w):
        return tf.cond(tf.constant(flag), lambda: tf.tanh(tf.matmul(x, w)), lambda: x[:, :2] * tf.reduce_sum(w))

    grads = check_gradients(fn, RNG.standard_normal((3, 4)), RNG.standard_normal((4, 2)))
    assert np.any(grads[1] != 0)


def test_case_gradient():
    def fn(x):
        s = tf.reduce_sum(x)
        return tf.case([(s < -1.0, lambda: x * x), (s < 1.0, lambda: tf.sin(x))], default=lambda: tf.exp(x) * s)

    for scale in (-3.0, 0.0, 3.0):
        check_gradients(fn, np.full(3, scale / 3) + RNG.standard_normal(3) * 0.01)


def test_while_gradient_wrt_init_and_captured_tensors():
    def fn(x, w, b):
        def body(i, h):
            return i + 1, tf.tanh(tf.matmul(h, w) + b)

        return tf.while_loop(lambda i, h: i < 5, body, (tf.constant(0), x), maximum_iterations=8)[1]

    check_gradients(fn, RNG.standard_normal((2, 3)), RNG.standard_normal((3, 3)) * 0.5, RNG.standard_normal(3))


def test_gradient_of_a_loop_whose_trip_count_depends_on_data():
    def fn(x):
        return tf.while_loop(lambda y: tf.reduce_sum(y * y) < 50.0, lambda y: y * 1.5 + 0.1, [x],
                             maximum_iterations=20)

    check_gradients(fn, np.array([0.3, -0.2, 0.5]))


def test_nested_loops_and_cond_in_loop_gradient():
    def fn(x):
        def outer(i, s):
            inner = tf.while_loop(lambda j, t: j < i, lambda j, t: (j + 1, t * x), (0, tf.ones_like(x)),
                                  maximum_iterations=3)[1]
            s = tf.cond(tf.equal(tf.mod(i, 2), 0), lambda: s + inner, lambda: s * tf.cos(x))
            return i + 1, s

        return tf.while_loop(lambda i, s: i < 3, outer, (0, tf.zeros_like(x)), maximum_iterations=3)[1]

    check_gradients(fn, np.array([0.7, -1.1]))


@pytest.fixture
def graph():
    with tf.Graph().as_default() as g:
        yield g


def test_gradient_reaches_a_variable_read_inside_the_loop(graph):
    w = tf.Variable(np.array([0.5, -0.25]), name="w")
    x = tf.placeholder(tf.float64, [2])
    y = tf.while_loop(lambda k, y: k < 3, lambda k, y: (k + 1, y * w + x), (0, x), maximum_iterations=3)[1]
    g = tf.gradients(tf.reduce_sum(y), w)[0]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        xv = np.array([1.0, 2.0])
        wv = np.array([0.5, -0.25])
        # y3 = x w^3 + x w^2 + x w + x  ->  dy/dw = x (3w^2 + 2w + 1)
        np.testing.assert_allclose(sess.run(g, {x: xv}), xv * (3 * wv ** 2 + 2 * wv + 1))

"""Control-flow graphs built the same way with Kiln's ``tf`` and TensorFlow's ``tf.compat.v1``.

Each case is ``build(tf) -> (feeds, fetches)``: ``feeds`` maps placeholders to arrays (float64
inputs, fixed here), ``fetches`` is a list of tensors: forward values and gradients.
``record_control_flow.py`` runs them under TensorFlow and writes ``control_flow.npz``;
tests/test_control_flow_goldens.py runs them under Kiln and compares.  No Kiln import here.
"""
import numpy as np

X3 = np.array([0.5, -1.25, 2.0])
W3 = np.array([1.0, 2.0, -0.5])
A = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]])


def cond_grad(tf):
    x = tf.placeholder(tf.float64, [3])
    p = tf.placeholder(tf.bool, [])
    w = tf.constant(W3)
    y = tf.cond(p, lambda: tf.reduce_sum(x * x * w), lambda: tf.reduce_sum(tf.sin(x) * w))
    g = tf.gradients(y, x)[0]
    return [({x: X3, p: True}, [y, g]), ({x: X3, p: False}, [y, g])]


def case_grad(tf):
    x = tf.placeholder(tf.float64, [])
    y = tf.case([(x < 0.0, lambda: -2.0 * x), (x < 1.0, lambda: x * x * x)], default=lambda: tf.exp(x))
    g = tf.gradients(y, x)[0]
    return [({x: np.array(v)}, [y, g]) for v in (-1.5, 0.5, 2.0)]


def while_poly(tf):
    x = tf.placeholder(tf.float64, [3])
    w = tf.constant(W3)
    _, acc = tf.while_loop(lambda i, a: i < 4, lambda i, a: (i + 1, a * x + w),
                           (tf.constant(0), tf.ones([3], tf.float64)), maximum_iterations=10)
    loss = tf.reduce_sum(acc * w)
    return [({x: X3}, [acc, tf.gradients(loss, x)[0]])]


def power_iteration(tf):
    a = tf.placeholder(tf.float64, [3, 3])
    v0 = tf.constant(np.ones((3, 1)) / np.sqrt(3.0))

    def body(k, v):
        u = tf.matmul(a, v)
        return k + 1, u / tf.sqrt(tf.reduce_sum(u * u))

    _, v = tf.while_loop(lambda k, v: tf.constant(True), body, (tf.constant(0), v0), maximum_iterations=6)
    lam = tf.reduce_sum(v * tf.matmul(a, v))
    return [({a: A}, [v, lam, tf.gradients(lam, a)[0]])]


def nested_cond_in_while(tf):
    x = tf.placeholder(tf.float64, [3])

    def body(i, acc):
        acc = tf.cond(tf.equal(tf.mod(i, 2), 0), lambda: acc * x, lambda: acc + tf.sin(x))
        return i + 1, acc

    _, out = tf.while_loop(lambda i, acc: i < 5, body, (tf.constant(0), tf.ones([3], tf.float64)),
                           maximum_iterations=5)
    return [({x: X3}, [out, tf.gradients(tf.reduce_sum(out), x)[0]])]


def nested_while(tf):
    x = tf.placeholder(tf.float64, [])

    def outer(i, s):
        _, t = tf.while_loop(lambda j, t: j < i, lambda j, t: (j + 1, t * x), (tf.constant(0), s * 0.0 + 1.0),
                             maximum_iterations=4)
        return i + 1, s + t

    _, s = tf.while_loop(lambda i, s: i < 4, outer, (tf.constant(0), tf.constant(0.0, tf.float64)),
                         maximum_iterations=4)
    return [({x: np.array(1.5)}, [s, tf.gradients(s, x)[0]])]


def fibonacci(tf):
    n = tf.placeholder(tf.int32, [])
    _, a, b = tf.while_loop(lambda k, a, b: k < n, lambda k, a, b: (k + 1, b, a + b),
                            (tf.constant(0), tf.constant(0), tf.constant(1)))
    return [({n: np.array(v, np.int32)}, [a, b]) for v in (0, 1, 10)]


def max_iterations_cut(tf):
    x = tf.placeholder(tf.float64, [])
    i, s = tf.while_loop(lambda i, s: s < 1000.0, lambda i, s: (i + 1, s * x), (tf.constant(0), x),
                         maximum_iterations=3)
    return [({x: np.array(2.0)}, [i, s, tf.gradients(s, x)[0]])]


def structured_loop_vars(tf):
    x = tf.placeholder(tf.float64, [2])

    def body(i, state):
        return i + 1, {"h": tf.tanh(state["h"] * x + state["c"]), "c": state["c"] + 0.5 * state["h"]}

    _, out = tf.while_loop(lambda i, s: i < 3, body, (tf.constant(0), {"h": x, "c": tf.zeros([2], tf.float64)}),
                           maximum_iterations=3)
    loss = tf.reduce_sum(out["h"]) + tf.reduce_sum(out["c"] * out["c"])
    return [({x: np.array([0.3, -0.7])}, [out["h"], out["c"], tf.gradients(loss, x)[0]])]


CASES = {f.__name__: f for f in (cond_grad, case_grad, while_poly, power_iteration, nested_cond_in_while,
                                 nested_while, fibonacci, max_iterations_cut, structured_loop_vars)}

"""tf.cond / tf.case / tf.while_loop: forward results vs numpy, captures, variables, errors."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from compiler.frontend import errors
from tests.helpers import ev


@pytest.fixture(autouse=True)
def _graph():
    with tf.Graph().as_default() as g:
        yield g


def test_cond_picks_branch_and_captures_outer_tensors():
    x = tf.placeholder(tf.float32, [None, 3])
    p = tf.placeholder(tf.bool, [])
    w = tf.constant(np.arange(3, dtype=np.float32))
    y = tf.cond(p, lambda: tf.matmul(x, tf.ones([3, 2])) + 1.0, lambda: tf.matmul(x * w, tf.ones([3, 2])))
    assert y.shape.as_list() == [None, 2] and y.name == "cond:0"
    xv = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(ev(y, {x: xv, p: True}), xv.sum(1, keepdims=True).repeat(2, 1) + 1, rtol=1e-6)
    np.testing.assert_allclose(ev(y, {x: xv, p: False}), (xv * np.arange(3)).sum(1, keepdims=True).repeat(2, 1),
                               rtol=1e-6)


def test_cond_nested_structures_and_strict():
    p = tf.placeholder(tf.bool, [])
    out = tf.cond(p, lambda: {"a": tf.constant(1.0), "b": (tf.constant(2), tf.constant(3.0))},
                  lambda: {"a": tf.constant(-1.0), "b": (tf.constant(-2), tf.constant(-3.0))})
    got = ev(out, {p: False})
    assert got["a"] == -1.0 and tuple(got["b"]) == (-2, -3.0)
    single = tf.cond(p, lambda: [tf.constant(1.0)], lambda: [tf.constant(2.0)])
    strict = tf.cond(p, lambda: [tf.constant(1.0)], lambda: [tf.constant(2.0)], strict=True)
    assert not isinstance(single, list) and isinstance(strict, list)
    assert ev(single, {p: True}) == 1.0


def test_nested_cond_reads_only_the_taken_path():
    x = tf.placeholder(tf.float64, [])
    y = tf.cond(x > 0.0, lambda: tf.cond(x > 10.0, lambda: x * 100.0, lambda: tf.sqrt(x)),
                lambda: -x)
    for v in (-4.0, 4.0, 25.0):
        want = -v if v <= 0 else (v * 100 if v > 10 else np.sqrt(v))
        assert ev(y, {x: v}) == want


def test_assign_happens_only_on_the_taken_branch():
    v = tf.Variable(1.0, name="v")
    u = tf.Variable(10.0, name="u")
    p = tf.placeholder(tf.bool, [])
    out = tf.cond(p, lambda: tf.assign(v, v + 5.0), lambda: tf.assign_add(u, 1.0) * 2.0)
    with tf.control_dependencies([out]):
        after = tf.identity(v) + tf.identity(u)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        assert sess.run(out, {p: True}) == 6.0
        assert sess.run([v, u]) == [6.0, 10.0]
        assert sess.run(out, {p: False}) == 22.0
        assert sess.run([v, u]) == [6.0, 11.0]
        assert sess.run(after, {p: True}) == 11.0 + 11.0  # a read after the cond sees its assign


def test_case_first_true_default_and_exclusive():
    x = tf.placeholder(tf.int32, [])
    fns = [(tf.less(x, 0), lambda: tf.constant(-1)), (tf.less(x, 10), lambda: tf.constant(1))]
    y = tf.case(fns, default=lambda: tf.constant(100))
    assert [ev(y, {x: v}) for v in (-5, 5, 50)] == [-1, 1, 100]
    no_default = tf.case(fns)  # the last fn is the default, and one predicate must be true (TF1)
    assert [ev(no_default, {x: v}) for v in (-5, 5)] == [-1, 1]
    with pytest.raises(errors.InvalidArgumentError, match="None of conditions evaluated as True"):
        ev(no_default, {x: 50})
    excl = tf.case(fns, default=lambda: tf.constant(100), exclusive=True)
    assert ev(excl, {x: 5}) == 1
    with pytest.raises(errors.InvalidArgumentError, match="exclusive=True"):
        ev(excl, {x: -5})  # both predicates are true


def test_while_sum_and_fibonacci():
    n = tf.placeholder(tf.int32, [])
    i, s = tf.while_loop(lambda i, s: i <= n, lambda i, s: (i + 1, s + i), (tf.constant(1), tf.constant(0)))
    assert ev([i, s], {n: 100}) == [101, 5050]
    _, a, _ = tf.while_loop(lambda k, a, b: k < n, lambda k, a, b: (k + 1, b, a + b),
                            [tf.constant(0), tf.constant(0, tf.int64), tf.constant(1, tf.int64)])
    assert ev(a, {n: 50}) == 12586269025


def test_while_power_iteration_matches_numpy():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((5, 5))
    m = m @ m.T
    a = tf.constant(m)

    def body(k, v):
        u = tf.matmul(a, v)
        return k + 1, u / tf.sqrt(tf.reduce_sum(u * u))

    _, v = tf.while_loop(lambda k, v: k < 200, body, (0, tf.ones([5, 1], tf.float64)))
    got = ev(v)[:, 0]
    w, vecs = np.linalg.eigh(m)
    np.testing.assert_allclose(np.abs(got), np.abs(vecs[:, -1]), atol=1e-6)


def test_while_maximum_iterations_and_captured_variable():
    w = tf.Variable(np.float32(2.0), name="w")
    x = tf.placeholder(tf.float32, [2])
    i, y = tf.while_loop(lambda i, y: tf.reduce_sum(y) < 1e6, lambda i, y: (i + 1, y * w + x),
                         [tf.constant(0), x], maximum_iterations=4, shape_invariants=[tf.TensorShape([]),
                                                                                      tf.TensorShape([None])])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        got_i, got_y = sess.run([i, y], {x: [1.0, 0.5]})
        want = np.array([1.0, 0.5], np.float32)
        for _ in range(4):
            want = want * 2 + np.array([1.0, 0.5], np.float32)
        assert got_i == 4
        np.testing.assert_allclose(got_y, want)
        sess.run(tf.assign(w, 0.5))
        assert sess.run(i, {x: [1.0, 0.5]}) == 4  # the loop reads the variable's current value


def test_accumulation_over_a_batch_without_tensorarray():
    x = tf.placeholder(tf.float32, [6, 3])

    def body(t, acc):
        row = tf.gather(x, t)
        return t + 1, acc + tf.expand_dims(row * tf.cast(t, tf.float32), 0)

    _, acc = tf.while_loop(lambda t, acc: t < 6, body, (tf.constant(0), tf.zeros([1, 3])))
    xv = np.arange(18, dtype=np.float32).reshape(6, 3)
    np.testing.assert_allclose(ev(acc, {x: xv})[0], (xv * np.arange(6)[:, None]).sum(0))


def test_loop_body_with_random_dropout_keeps_shape():
    x = tf.placeholder(tf.float32, [4])
    _, y = tf.while_loop(lambda k, y: k < 3, lambda k, y: (k + 1, tf.nn.dropout(y, rate=0.0) + 1.0), (0, x))
    np.testing.assert_allclose(ev(y, {x: np.zeros(4, np.float32)}), np.full(4, 3.0))


@pytest.mark.parametrize("build, message", [
    (lambda: tf.cond(tf.constant(1.0), lambda: 1.0, lambda: 2.0), "pred must be a scalar bool tensor"),
    (lambda: tf.cond(tf.constant(True), lambda: tf.zeros([2]), lambda: tf.zeros([3])),
     r"output 0 of true_fn has shape \[2\] but false_fn returns \[3\]"),
    (lambda: tf.cond(tf.constant(True), lambda: tf.constant(1.0), lambda: tf.constant(1)),
     "output 0 of true_fn has dtype float32 but false_fn returns int32"),
    (lambda: tf.while_loop(lambda x: tf.reduce_sum(x) < 5.0, lambda x: tf.concat([x, x], 0), [tf.zeros([1])]),
     r"enters the loop as float32\[1\] but the body returns float32\[2\]"),
    (lambda: tf.while_loop(lambda x: x, lambda x: x + 1.0, [tf.zeros([])]), "cond must return a scalar bool"),
    (lambda: tf.while_loop(lambda x: x < 1.0, lambda x: (x, x), [tf.zeros([])]),
     "body returned 2 tensors for 1 loop variables"),
])
def test_bad_input_is_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_assigns_inside_a_loop_body_carry_the_variable():
    v = tf.Variable(np.float32(1.0), name="v")
    u = tf.Variable(np.float32(0.0), name="u")
    x = tf.placeholder(tf.float32, [])

    def body(i, s):
        new_v = tf.assign(v, v * 2.0)
        with tf.control_dependencies([new_v]):
            grown = tf.cond(tf.equal(tf.mod(i, 2), 0), lambda: tf.assign_add(u, x), lambda: tf.identity(u))
        return i + 1, s + new_v + grown

    _, s = tf.while_loop(lambda i, s: i < 4, body, (0, tf.constant(0.0)), maximum_iterations=4)
    with tf.control_dependencies([s]):
        after = tf.identity(v)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        # v: 2, 4, 8, 16; u after each iteration: x, x, 2x, 2x (assigned on even i)
        assert sess.run([s, after], {x: 10.0}) == [2 + 4 + 8 + 16 + 10 + 10 + 20 + 20, 16.0]
        assert sess.run([v, u]) == [16.0, 20.0]
    with pytest.raises(ValueError, match=r"whose body assigns variables \(.*Assign.*\) is not supported"):
        tf.gradients(s, x)
    with pytest.raises(ValueError, match="in the loop condition; assign in the body instead"):
        tf.while_loop(lambda i: tf.assign_add(v, 1.0) < 3.0, lambda i: i + 1, [0])


def test_variables_created_in_a_loop_body_live_in_the_outer_graph():
    x = tf.placeholder(tf.float32, [2, 3])

    def body(t, h):
        with tf.variable_scope("cell", reuse=tf.AUTO_REUSE):
            w = tf.get_variable("w", [3, 3], initializer=tf.constant_initializer(0.5))
            b = tf.Variable(lambda: tf.fill([3], 0.25), name="b")
        return t + 1, tf.tanh(tf.matmul(h, w) + x + b)

    _, h = tf.while_loop(lambda t, h: t < 3, body, (0, tf.zeros([2, 3])), maximum_iterations=3)
    assert sorted(v.name for v in tf.global_variables()) == ["cell/w:0", "while/cell/b:0"]
    assert all(v.graph is tf.get_default_graph() for v in tf.global_variables())
    grads = tf.gradients(tf.reduce_sum(h), tf.trainable_variables())
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        xv = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
        got, *g = sess.run([h] + grads, {x: xv})
    want = np.zeros((2, 3), np.float32)
    for _ in range(3):
        want = np.tanh(want @ np.full((3, 3), 0.5, np.float32) + xv + 0.25)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert all(np.all(np.isfinite(a)) and np.any(a != 0) for a in g)
    with pytest.raises(ValueError, match="is from inside a control-flow construct.*use a lambda as the initializer"):
        tf.cond(tf.constant(True), lambda: tf.Variable(tf.ones([2]) * 2.0) * 1.0, lambda: tf.zeros([2]))


def test_gradient_of_unbounded_loop_asks_for_maximum_iterations():
    x = tf.placeholder(tf.float32, [])
    y = tf.while_loop(lambda y: y < 10.0, lambda y: y * 2.0, [x])
    with pytest.raises(ValueError, match="needs maximum_iterations"):
        tf.gradients(y, x)
    z = tf.while_loop(lambda z: z < 10.0, lambda z: z * 2.0, [x], back_prop=False, maximum_iterations=5)
    assert tf.gradients(z, x) == [None]


def test_fetching_a_tensor_inside_a_branch_is_a_clear_error():
    inner = []
    p = tf.placeholder(tf.bool, [])
    tf.cond(p, lambda: inner.append(tf.constant(1.0) * 2.0) or inner[0], lambda: tf.constant(0.0))
    with pytest.raises(ValueError, match=r"cond/Mul:0.* is not an element of this graph"):
        ev(inner[0], {p: True})  # TF's wording
    from compiler.ir.from_graph import LoweringError, lower_graph

    with pytest.raises(LoweringError, match=r"cond/Mul:0 is inside the body of cond/true_fn"):
        lower_graph([inner[0]], feed_tensors=[p])


def test_namedtuple_and_single_dict_loop_vars():
    import collections

    State = collections.namedtuple("State", "k total")
    out = tf.while_loop(lambda k, total: k < 4, lambda k, total: State(k + 1, total + tf.cast(k, tf.float32)),
                        State(tf.constant(0), tf.constant(0.5)))
    assert isinstance(out, State) and ev(list(out)) == [4, 6.5]
    d = tf.while_loop(lambda s: s["a"] < 10.0, lambda s: {"a": s["a"] * 2.0, "n": s["n"] + 1},
                      {"a": tf.constant(1.0), "n": tf.constant(0)})
    assert ev(d) == {"a": 16.0, "n": 4}

"""Variables (state semantics, scopes, reuse, collections), initializers and random ops."""
import numpy as np
import pytest

from compiler import tf
from compiler.ir.ops.random import erfinv, philox4x32


def test_uninitialized_variable_read_is_an_error():
    w = tf.Variable(tf.zeros([2]), name="w")
    with tf.Session() as sess:
        with pytest.raises(ValueError, match="uninitialized value w"):
            sess.run(w)


def test_variable_names_collections_and_trainable_flag():
    a = tf.Variable(1.0, name="a")
    b = tf.Variable(2.0, name="b", trainable=False)
    assert a.name == "a:0" and a.op.name == "a"
    assert tf.global_variables() == [a, b]
    assert tf.trainable_variables() == [a]
    with tf.name_scope("scope"):
        c = tf.Variable(3.0, name="a")
    assert c.op.name == "scope/a"
    d = tf.Variable(3.0, name="a")
    assert d.op.name == "a_1"


def test_assign_ops_and_their_outputs():
    v = tf.Variable([1.0, 2.0], name="v")
    with tf.Session() as sess:
        sess.run(v.initializer)
        np.testing.assert_allclose(sess.run(v.assign([5.0, 6.0])), [5.0, 6.0])
        np.testing.assert_allclose(sess.run(tf.assign_sub(v, [1.0, 1.0])), [4.0, 5.0])
        np.testing.assert_allclose(sess.run(v), [4.0, 5.0])
    with pytest.raises(ValueError, match=r"assign.*does not match"):
        tf.assign(v, [1.0, 2.0, 3.0])


def test_reads_see_step_start_values_unless_they_depend_on_the_assign():
    v = tf.Variable(1.0, name="v")
    before = v * 10.0
    inc = tf.assign_add(v, 1.0)
    with tf.control_dependencies([inc]):
        after = v * 10.0
    with tf.Session() as sess:
        sess.run(v.initializer)
        b, a, i = sess.run([before, after, inc])
        assert (b, a, i) == (10.0, 20.0, 2.0)
        assert sess.run(v) == 2.0


def test_two_assign_adds_in_one_run_both_count():
    v = tf.Variable(0, name="v")
    step = tf.group(tf.assign_add(v, 1), tf.assign_add(v, 10))
    with tf.Session() as sess:
        sess.run(v.initializer)
        sess.run(step)
        assert sess.run(v) == 11


def test_variable_load_and_initialized_value():
    v = tf.Variable(tf.ones([2, 2]), name="v")
    u = tf.Variable(v.initialized_value() * 2.0, name="u")
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_allclose(sess.run(u), 2 * np.ones((2, 2)))
        v.load(np.full((2, 2), 7.0), sess)
        np.testing.assert_allclose(sess.run(v), np.full((2, 2), 7.0))
        with pytest.raises(ValueError, match="Cannot load value of shape"):
            v.load(np.zeros(3), sess)


def test_get_variable_scopes_and_reuse_rules():
    with tf.variable_scope("layer"):
        w = tf.get_variable("w", [2, 3], initializer=tf.zeros_initializer())
        assert w.op.name == "layer/w"
        with pytest.raises(ValueError, match="Variable layer/w already exists, disallowed"):
            tf.get_variable("w", [2, 3])
    with tf.variable_scope("layer", reuse=True):
        assert tf.get_variable("w", [2, 3]) is w
        with pytest.raises(ValueError, match="Variable layer/nope does not exist"):
            tf.get_variable("nope", [1])
        with pytest.raises(ValueError, match="Trying to share variable layer/w, but specified shape"):
            tf.get_variable("w", [3, 3])
    with tf.variable_scope("layer") as scope:
        scope.reuse_variables()
        assert tf.get_variable("w") is w
    with tf.variable_scope("auto", reuse=tf.AUTO_REUSE):
        first = tf.get_variable("b", [1])
    with tf.variable_scope("auto", reuse=tf.AUTO_REUSE):
        assert tf.get_variable("b", [1]) is first


def test_variable_scope_default_name_and_nested_names():
    with tf.variable_scope(None, default_name="block"):
        a = tf.get_variable("v", [1])
    with tf.variable_scope(None, default_name="block"):
        b = tf.get_variable("v", [1])
    with tf.variable_scope("outer"):
        with tf.variable_scope("inner"):
            c = tf.get_variable("v", [1])
            d = tf.constant(1.0, name="c")
    assert (a.op.name, b.op.name, c.op.name) == ("block/v", "block_1/v", "outer/inner/v")
    assert d.op.name == "outer/inner/c"


def test_get_variable_regularizer_and_scope_initializer():
    with tf.variable_scope("s", initializer=tf.constant_initializer(3.0)):
        w = tf.get_variable("w", [2], regularizer=lambda t: tf.reduce_sum(t * t))
    losses = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
    assert len(losses) == 1
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_allclose(sess.run(w), [3.0, 3.0])
        assert sess.run(losses[0]) == pytest.approx(18.0)


def test_philox_matches_known_answer_vectors():
    zero = philox4x32(np.zeros((1, 4), np.uint64), (0, 0))[0]
    assert [int(v) for v in zero] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    pi = philox4x32(np.array([[0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]], np.uint64), (0xA4093822, 0x299F31D0))[0]
    assert [int(v) for v in pi] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_erfinv_inverts_erf():
    from math import erf

    xs = np.linspace(-0.999, 0.999, 41)
    back = np.array([erf(v) for v in erfinv(xs)])
    np.testing.assert_allclose(back, xs, atol=2e-6)


def test_random_draws_are_seeded_reproducible_and_fresh_each_run():
    def draws():
        with tf.Graph().as_default():
            tf.set_random_seed(42)
            u = tf.random_uniform([1000], seed=3)
            with tf.Session() as sess:
                return sess.run(u), sess.run(u)

    first, second = draws()
    again, _ = draws()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    assert 0.0 < first.min() and first.max() < 1.0


def test_random_distributions_have_the_right_moments():
    tf.set_random_seed(7)
    n = tf.random_normal([20000], mean=2.0, stddev=3.0)
    t = tf.truncated_normal([20000], stddev=1.0)
    u = tf.random_uniform([20000], -1.0, 1.0)
    i = tf.random_uniform([20000], 0, 10, dtype=tf.int32)
    with tf.Session() as sess:
        n_v, t_v, u_v, i_v = sess.run([n, t, u, i])
    assert abs(n_v.mean() - 2.0) < 0.1 and abs(n_v.std() - 3.0) < 0.1
    assert np.abs(t_v).max() <= 2.0 and abs(t_v.std() - 0.8796) < 0.03
    assert -1.0 <= u_v.min() and u_v.max() < 1.0 and abs(u_v.mean()) < 0.03
    assert i_v.dtype == np.int32 and set(np.unique(i_v)) == set(range(10))


def test_random_ops_follow_the_batch_dim():
    x = tf.placeholder(tf.float32, [None, 4])
    u = tf.random_uniform(x.type.shape, seed=1)
    with tf.Session() as sess:
        assert sess.run(u, {x: np.zeros((3, 4))}).shape == (3, 4)
        assert sess.run(u, {x: np.zeros((5, 4))}).shape == (5, 4)


def test_random_shuffle_permutes_rows():
    data = np.arange(20).reshape(10, 2)
    s = tf.random_shuffle(tf.constant(data), seed=5)
    with tf.Session() as sess:
        out = sess.run(s)
    assert sorted(map(tuple, out)) == sorted(map(tuple, data))
    assert not np.array_equal(out, data)


def test_variance_scaling_initializers_have_tf_scale():
    tf.set_random_seed(1)
    glorot = tf.get_variable("g", [400, 600], initializer=tf.glorot_uniform_initializer())
    he = tf.get_variable("h", [3, 3, 64, 128], initializer=tf.initializers.he_normal())
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        g, h = sess.run([glorot, he])
    limit = np.sqrt(6.0 / (400 + 600))
    assert np.abs(g).max() <= limit and abs(g.std() - limit / np.sqrt(3)) < 0.002
    assert abs(h.std() - np.sqrt(2.0 / (3 * 3 * 64))) < 0.005


def test_get_variable_accepts_tensor_and_array_initializers():
    a = tf.get_variable("a", initializer=tf.constant([1.0, 2.0]))
    b = tf.get_variable("b", initializer=np.array([[3, 4]], np.int32))
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_allclose(sess.run(a), [1.0, 2.0])
        assert sess.run(b).dtype == np.int32 and b.shape.as_list() == [1, 2]

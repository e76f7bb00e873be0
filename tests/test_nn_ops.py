"""tf.nn pools, activations, softmax, bias_add, dropout and normalization (convolutions:
tests/test_nn_conv_ops.py)."""
import numpy as np
import pytest

from compiler import tf
from tests.helpers import check_gradients, run_fn
from tests.nn_kit import np_pool

RNG = np.random.default_rng(7)


# ----------------------------------------------------------------------------- pooling
def test_max_pool_seed_example():
    x = np.array([1, 3, 2, 1, 2, 9, 1, 1, 1, 3, 2, 3, 5, 6, 1, 2], np.float32).reshape(1, 4, 4, 1)
    out = run_fn(lambda a: tf.nn.max_pool(a, [1, 2, 2, 1], [1, 2, 2, 1], "VALID"), x)
    np.testing.assert_array_equal(out[0, :, :, 0], [[9, 2], [6, 3]])


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("k,s,padding", [(2, 2, "VALID"), (3, 2, "SAME"), (3, 1, "SAME"), (2, 1, "VALID")])
def test_pools_match_numpy(op, k, s, padding):
    x = RNG.standard_normal((2, 5, 6, 3)).astype(np.float32)
    fn = tf.nn.max_pool if op == "max" else tf.nn.avg_pool
    out = run_fn(lambda a: fn(a, [1, k, k, 1], [1, s, s, 1], padding), x)
    np.testing.assert_allclose(out, np_pool(x, k, s, padding, op), rtol=1e-5, atol=1e-6)


def test_avg_pool_same_divides_by_valid_count():
    out = run_fn(lambda a: tf.nn.avg_pool(a, [1, 2, 2, 1], [1, 2, 2, 1], "SAME"), np.ones((1, 3, 3, 1), np.float32))
    np.testing.assert_array_equal(out[0, :, :, 0], np.ones((2, 2)))


@pytest.mark.parametrize("k,s,padding", [(2, 2, "VALID"), (3, 2, "SAME"), (2, 1, "SAME")])
def test_pool_gradients(k, s, padding):
    x = RNG.permutation(50).reshape(1, 5, 5, 2) / 7.0  # distinct values: the max is unique
    check_gradients(lambda a: tf.nn.max_pool(a, [1, k, k, 1], [1, s, s, 1], padding), x)
    check_gradients(lambda a: tf.nn.avg_pool(a, [1, k, k, 1], [1, s, s, 1], padding), x)


def test_max_pool_grad_routes_to_first_max():
    x = np.array([[1, 5], [5, 2]], np.float32).reshape(1, 2, 2, 1)
    with tf.Graph().as_default():
        xt = tf.constant(x)
        g, = tf.gradients(tf.nn.max_pool(xt, 2, 2, "VALID"), [xt])
        with tf.Session() as sess:
            np.testing.assert_array_equal(sess.run(g)[0, :, :, 0], [[0, 1], [0, 0]])


def test_avg_pool_grad_is_differentiable():
    """Second order: the gradient of avg_pool's gradient is avg_pool."""
    def fn(a):
        y = tf.nn.avg_pool(a, [1, 3, 3, 1], [1, 2, 2, 1], "SAME")
        return tf.gradients(tf.reduce_sum(y * y), [a])[0]

    check_gradients(fn, RNG.standard_normal((1, 4, 4, 1)))


def test_pool_batch_dim_and_errors():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 6, 6, 2])
        y = tf.nn.max_pool(x, [1, 2, 2, 1], [1, 2, 2, 1], "SAME")
        z = tf.nn.avg_pool(x, ksize=3, strides=2, padding="SAME")
        g = tf.gradients(tf.reduce_sum(y) + tf.reduce_sum(z), [x])[0]
        with tf.Session() as sess:
            for n in (1, 3):
                xv = RNG.standard_normal((n, 6, 6, 2)).astype(np.float32)
                a, b, c = sess.run([y, z, g], {x: xv})
                np.testing.assert_allclose(a, np_pool(xv, 2, 2, "SAME", "max"), rtol=1e-6)
                np.testing.assert_allclose(b, np_pool(xv, 3, 2, "SAME", "avg"), rtol=1e-5, atol=1e-6)
                assert c.shape == (n, 6, 6, 2)
        with pytest.raises(ValueError, match=r"max_pool.*does not fit input \[N,6,6,2\]"):
            tf.nn.max_pool(x, [1, 7, 7, 1], [1, 1, 1, 1], "VALID")
        with pytest.raises(ValueError, match="height and width only"):
            tf.nn.max_pool(x, [2, 2, 2, 1], [1, 1, 1, 1], "VALID")
        with pytest.raises(ValueError, match="NHWC"):
            tf.nn.avg_pool(x, [1, 2, 2, 1], [1, 1, 1, 1], "VALID", data_format="NCHW")
        with pytest.raises(ValueError, match=r"avg_pool.*floating"):
            tf.nn.avg_pool(tf.zeros([1, 4, 4, 1], tf.int32), [1, 2, 2, 1], [1, 1, 1, 1], "VALID")


# ----------------------------------------------------------------------------- activations
def test_relu_seed_example():
    out = run_fn(tf.nn.relu, np.array([1, -2, 0, 4, -5, 6], np.float32))
    np.testing.assert_array_equal(out, [1, 0, 0, 4, 0, 6])


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
ACTIVATIONS = {
    "relu6": (tf.nn.relu6, lambda x: np.clip(x, 0, 6)),
    "leaky_relu": (tf.nn.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x)),
    "leaky_relu_alpha": (lambda x: tf.nn.leaky_relu(x, alpha=0.01), lambda x: np.where(x > 0, x, 0.01 * x)),
    "elu": (tf.nn.elu, lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    "selu": (tf.nn.selu, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1))),
    "softplus": (tf.nn.softplus, lambda x: np.log(1 + np.exp(x))),
    "softsign": (tf.nn.softsign, lambda x: x / (1 + np.abs(x))),
    "sigmoid": (tf.nn.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (tf.nn.tanh, np.tanh),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_numpy_and_gradients(name):
    fn, ref = ACTIVATIONS[name]
    x = np.array([-7.5, -3.0, -0.7, -0.2, 0.3, 1.1, 4.0, 6.5, 9.0])
    np.testing.assert_allclose(run_fn(fn, x), ref(x), rtol=1e-12)
    check_gradients(fn, x)


def test_activation_errors():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r"relu6.*floating.*int32"):
            tf.nn.relu6(tf.constant([1, 2]))
        with pytest.raises(ValueError, match=r"softmax.*floating"):
            tf.nn.softmax(tf.constant([1, 2]))


# ----------------------------------------------------------------------------- softmax
def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_softmax_seed_example():
    out = run_fn(tf.nn.softmax, np.array([1, 2, 3], np.float32))
    np.testing.assert_allclose(out, [0.09003057, 0.24472848, 0.66524094], rtol=1e-6)


def test_softmax_axis_dim_and_log_softmax():
    x = RNG.standard_normal((3, 4, 5)) * 3
    for axis in (-1, 0, 1):
        np.testing.assert_allclose(run_fn(lambda a: tf.nn.softmax(a, axis=axis), x), np_softmax(x, axis), rtol=1e-12)
        np.testing.assert_allclose(run_fn(lambda a: tf.nn.log_softmax(a, dim=axis), x),
                                   np.log(np_softmax(x, axis)), rtol=1e-12)
    big = np.array([[1000.0, 0.0, -1000.0]])
    np.testing.assert_allclose(run_fn(tf.nn.softmax, big), [[1, 0, 0]])
    np.testing.assert_allclose(run_fn(tf.nn.log_softmax, big), [[0, -1000, -2000]])
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r"softmax: axis 3 is out of range for \[3,4\]"):
            tf.nn.softmax(tf.zeros([3, 4]), axis=3)
        with pytest.raises(ValueError, match="not both"):
            tf.nn.softmax(tf.zeros([3, 4]), axis=0, dim=1)


def test_softmax_gradients():
    x = RNG.standard_normal((2, 4))
    check_gradients(tf.nn.softmax, x)
    check_gradients(lambda a: tf.nn.softmax(a, axis=0), x)
    check_gradients(tf.nn.log_softmax, x)


def test_softmax_batch_dim():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5])
        y = tf.nn.softmax(x)
        with tf.Session() as sess:
            for n in (1, 6):
                xv = RNG.standard_normal((n, 5)).astype(np.float32)
                np.testing.assert_allclose(sess.run(y, {x: xv}), np_softmax(xv), rtol=1e-5)


# ----------------------------------------------------------------------------- bias_add
def test_bias_add_seed_example_and_error():
    a = np.array([[1, 2]] * 3, np.float32)
    np.testing.assert_array_equal(run_fn(lambda t: tf.nn.bias_add(t, [2.0, 1.0]), a), [[3, 3]] * 3)
    np.testing.assert_array_equal(run_fn(lambda t: tf.add(t, [1.0]), a), a + 1)
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r"bias_add.*f32\[3,2\].*f32\[1\]"):
            tf.nn.bias_add(tf.constant(a), [1.0])
        with pytest.raises(ValueError, match="bias_add.*at least rank 2"):
            tf.nn.bias_add(tf.constant([1.0, 2.0]), [1.0, 2.0])
        with pytest.raises(ValueError, match="NHWC"):
            tf.nn.bias_add(tf.constant(a), [1.0, 2.0], data_format="NCHW")


def test_bias_add_lowers_to_add_with_gradient_and_batch():
    check_gradients(tf.nn.bias_add, RNG.standard_normal((2, 3, 4)), RNG.standard_normal(4))
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3])
        y = tf.nn.bias_add(x, tf.constant([1.0, 2.0, 3.0]))
        assert y.op.type == "add"
        with tf.Session() as sess:
            for n in (1, 4):
                np.testing.assert_array_equal(sess.run(y, {x: np.zeros((n, 3))}), np.tile([1, 2, 3], (n, 1)))
        z = tf.nn.xw_plus_b(x, tf.ones([3, 2]), tf.constant([0.5, -0.5]))
        with tf.Session() as sess:
            np.testing.assert_allclose(sess.run(z, {x: np.ones((2, 3))}), [[3.5, 2.5]] * 2)


# ----------------------------------------------------------------------------- dropout
def test_dropout_values_scale_and_gradient():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 1000])
        keep = tf.placeholder(tf.float32, [])
        y = tf.nn.dropout(x, keep, seed=3)
        g, = tf.gradients(tf.reduce_sum(y), [x])
        with tf.Session() as sess:
            for n in (1, 3):
                out, grad = sess.run([y, g], {x: np.ones((n, 1000)), keep: 0.5})
                assert out.shape == (n, 1000)
                assert set(np.unique(out)) <= {0.0, 2.0}
                assert 0.4 < np.mean(out == 2.0) < 0.6
                np.testing.assert_array_equal(grad, out)  # d(x/keep*mask)/dx = mask/keep = out for x == 1
            np.testing.assert_array_equal(sess.run(y, {x: np.ones((2, 1000)), keep: 1.0}), np.ones((2, 1000)))
            first, second = sess.run(y, {x: np.ones((1, 1000)), keep: 0.5}), sess.run(y, {x: np.ones((1, 1000)), keep: 0.5})
            assert not np.array_equal(first, second)  # a fresh mask every step


def test_dropout_rate_noise_shape_and_errors():
    with tf.Graph().as_default():
        x = tf.ones([4, 50])
        y = tf.nn.dropout(x, rate=0.25, noise_shape=[4, 1], seed=1)
        assert tf.nn.dropout(x, 1.0) is x
        with tf.Session() as sess:
            out = sess.run(y)
        for row in out:  # one draw per row
            assert len(np.unique(row)) == 1 and row[0] in (0.0, np.float32(1 / 0.75))
        with pytest.raises(ValueError, match="both"):
            tf.nn.dropout(x, 0.5, rate=0.5)
        with pytest.raises(ValueError, match=r"range \(0, 1\]"):
            tf.nn.dropout(x, 1.5)
        with pytest.raises(ValueError, match="noise_shape"):
            tf.nn.dropout(x, 0.5, noise_shape=[4, 3])
        with pytest.raises(ValueError, match="provide a rate"):
            tf.nn.dropout(x)


# ----------------------------------------------------------------------------- normalization
def test_moments_and_batch_normalization():
    x = RNG.standard_normal((4, 3, 5))
    mean, var = run_fn(lambda a: list(tf.nn.moments(a, [0, 1])), x)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1)))
    np.testing.assert_allclose(var, x.var(axis=(0, 1)))
    kept = run_fn(lambda a: tf.nn.moments(a, [1], keep_dims=True)[1], x)
    np.testing.assert_allclose(kept, x.var(axis=1, keepdims=True))
    check_gradients(lambda a: tf.nn.moments(a, [0])[1], RNG.standard_normal((4, 3)))

    m, v, off, sc = (RNG.standard_normal(5), RNG.random(5) + 0.5, RNG.standard_normal(5), RNG.standard_normal(5))
    bn = run_fn(lambda a, b, c, d, e: tf.nn.batch_normalization(a, b, c, d, e, 1e-3), x, m, v, off, sc)
    np.testing.assert_allclose(bn, (x - m) / np.sqrt(v + 1e-3) * sc + off, rtol=1e-10)
    bare = run_fn(lambda a: tf.nn.batch_normalization(a, 1.0, 4.0, None, None, 0.0), x)
    np.testing.assert_allclose(bare, (x - 1.0) / 2.0)
    check_gradients(lambda a, b, c, d, e: tf.nn.batch_normalization(a, b, c, d, e, 1e-3), x, m, v, off, sc)


def test_moments_batch_dim_and_error():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3])
        mean, var = tf.nn.moments(x, [0])
        assert mean.shape.as_list() == [3]
        with tf.Session() as sess:
            for n in (2, 5):
                xv = RNG.standard_normal((n, 3)).astype(np.float32)
                a, b = sess.run([mean, var], {x: xv})
                np.testing.assert_allclose(a, xv.mean(0), rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(b, xv.var(0), rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match=r"moments: axis 2 is out of range for \[N,3\]"):
            tf.nn.moments(x, [2])


def test_l2_normalize():
    x = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(run_fn(lambda a: tf.nn.l2_normalize(a, 1), x),
                               x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(run_fn(lambda a: tf.nn.l2_normalize(a, dim=0), x),
                               x / np.linalg.norm(x, axis=0, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(run_fn(lambda a: tf.nn.l2_normalize(a, 0), np.zeros(3)), np.zeros(3))
    check_gradients(lambda a: tf.nn.l2_normalize(a, 1), x)

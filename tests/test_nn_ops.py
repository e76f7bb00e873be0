"""tf.nn convolutions, pools, activations, softmax, bias_add, dropout and normalization."""
import numpy as np
import pytest

from compiler import tf
from tests.helpers import check_gradients, run_fn

RNG = np.random.default_rng(7)


# ----------------------------------------------------------------------------- numpy references
def np_pads(size, k, s, d, padding):
    eff = (k - 1) * d + 1
    if padding == "VALID":
        return 0, 0, (size - eff) // s + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2, out


def np_conv2d(x, w, s=1, padding="VALID", d=1, depthwise=False):
    """Direct loops over output pixels (fine for the small test shapes)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    t, _, oh = np_pads(h, kh, s, d, padding)
    left, _, ow = np_pads(wd, kw, s, d, padding)
    xp = np.zeros((n, h + 2 * kh * d, wd + 2 * kw * d, c), x.dtype)
    xp[:, t:t + h, left:left + wd] = x
    outc = c * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((n, oh, ow, outc), np.float64)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * s:i * s + (kh - 1) * d + 1:d, j * s:j * s + (kw - 1) * d + 1:d, :]
            if depthwise:
                out[:, i, j] = np.einsum("nhwc,hwcm->ncm", win, w).reshape(n, -1)
            else:
                out[:, i, j] = np.einsum("nhwc,hwco->no", win, w)
    return out


def np_pool(x, k, s, padding, op):
    n, h, w, c = x.shape
    t, _, oh = np_pads(h, k, s, 1, padding)
    left, _, ow = np_pads(w, k, s, 1, padding)
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - t, j * s - left
            win = x[:, max(r0, 0):r0 + k, max(c0, 0):c0 + k, :]
            out[:, i, j] = win.max(axis=(1, 2)) if op == "max" else win.mean(axis=(1, 2))
    return out


SEED_IMAGE = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0],
                      np.float32).reshape(1, 5, 5, 1)
SEED_FILTER = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1], np.float32).reshape(3, 3, 1, 1)


# ----------------------------------------------------------------------------- conv2d
@pytest.mark.parametrize("padding,expected", [("VALID", [[4, 4], [2, 4]]),
                                              ("SAME", [[2, 3, 1], [1, 4, 3], [0, 2, 1]])])
def test_conv2d_seed_examples_stride2(padding, expected):
    out = run_fn(lambda x, w: tf.nn.conv2d(x, w, strides=[1, 2, 2, 1], padding=padding), SEED_IMAGE, SEED_FILTER)
    np.testing.assert_array_equal(out[0, :, :, 0], expected)


def test_conv2d_seed_image_example():
    image = np.array([[4, 3, 1, 0], [2, 1, 0, 1], [1, 2, 4, 1], [3, 1, 0, 2]], np.float32).reshape(1, 4, 4, 1)
    kernel = np.array([[1, 0, 1], [2, 1, 0], [0, 0, 1]], np.float32).reshape(3, 3, 1, 1)
    out = run_fn(lambda x, w: tf.nn.conv2d(x, w, [1, 1, 1, 1], "VALID"), image, kernel)
    np.testing.assert_array_equal(out[0, :, :, 0], [[14, 6], [6, 12]])


@pytest.mark.parametrize("stride,padding,dilation", [(1, "SAME", 1), (2, "SAME", 1), (1, "VALID", 1),
                                                     (2, "VALID", 1), (1, "SAME", 2), (3, "SAME", 1)])
def test_conv2d_matches_numpy(stride, padding, dilation):
    x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    w = RNG.standard_normal((3, 2, 3, 4)).astype(np.float32)
    out = run_fn(lambda a, b: tf.nn.conv2d(a, b, [1, stride, stride, 1], padding, dilations=[1, dilation, dilation, 1]),
                 x, w)
    np.testing.assert_allclose(out, np_conv2d(x, w, stride, padding, dilation), rtol=1e-5, atol=1e-5)


def test_conv2d_same_puts_extra_padding_bottom_right():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    w = np.ones((2, 2, 1, 1), np.float32)
    out = run_fn(lambda a, b: tf.nn.conv2d(a, b, [1, 1, 1, 1], "SAME"), x, w)
    # a 2x2 window with SAME pads only the bottom/right: the last row/col sums two values
    assert out[0, 0, 0, 0] == 0 + 1 + 4 + 5
    assert out[0, 3, 3, 0] == 15


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "SAME"), (1, "VALID"), (2, "VALID")])
def test_conv2d_gradients(stride, padding):
    check_gradients(lambda x, w: tf.nn.conv2d(x, w, [1, stride, stride, 1], padding),
                    RNG.standard_normal((1, 5, 5, 2)), RNG.standard_normal((3, 3, 2, 3)))


def test_conv2d_dilated_gradients():
    check_gradients(lambda x, w: tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME", dilations=[1, 2, 2, 1]),
                    RNG.standard_normal((1, 5, 5, 1)), RNG.standard_normal((2, 2, 1, 2)))


def test_conv2d_batch_dim_two_sizes_and_gradient():
    w = RNG.standard_normal((3, 3, 2, 3)).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5, 5, 2])
        y = tf.nn.conv2d(x, w, [1, 2, 2, 1], "SAME")
        assert y.shape.as_list() == [None, 3, 3, 3]
        gx, = tf.gradients(tf.reduce_sum(y * y), [x])
        with tf.Session() as sess:
            for n in (1, 4):
                xv = RNG.standard_normal((n, 5, 5, 2)).astype(np.float32)
                out, g = sess.run([y, gx], {x: xv})
                np.testing.assert_allclose(out, np_conv2d(xv, w, 2, "SAME"), rtol=1e-4, atol=1e-4)
                assert g.shape == (n, 5, 5, 2)


def test_conv2d_errors():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5, 5, 2])
        with pytest.raises(ValueError, match=r"conv2d.*depth 2.*in-channels 3"):
            tf.nn.conv2d(x, tf.zeros([3, 3, 3, 4]), [1, 1, 1, 1], "SAME")
        with pytest.raises(ValueError, match="NHWC"):
            tf.nn.conv2d(x, tf.zeros([3, 3, 2, 4]), [1, 1, 1, 1], "SAME", data_format="NCHW")
        with pytest.raises(ValueError, match="padding"):
            tf.nn.conv2d(x, tf.zeros([3, 3, 2, 4]), [1, 1, 1, 1], "FULL")
        with pytest.raises(ValueError, match=r"does not fit input \[N,5,5,2\]"):
            tf.nn.conv2d(x, tf.zeros([7, 7, 2, 4]), [1, 1, 1, 1], "VALID")
        with pytest.raises(ValueError, match="rank 4"):
            tf.nn.conv2d(tf.zeros([5, 5, 2]), tf.zeros([3, 3, 2, 4]), [1, 1, 1, 1], "SAME")


def test_conv2d_backprop_ops_exported():
    x = RNG.standard_normal((1, 5, 5, 2))
    w = RNG.standard_normal((3, 3, 2, 3))
    dy = RNG.standard_normal((1, 3, 3, 3))
    with tf.Graph().as_default():
        xt, wt, dyt = tf.constant(x), tf.constant(w), tf.constant(dy)
        y = tf.nn.conv2d(xt, wt, [1, 2, 2, 1], "SAME")
        gx, gw = tf.gradients(y, [xt, wt], grad_ys=dyt)
        bx = tf.nn.conv2d_backprop_input([1, 5, 5, 2], wt, dyt, [1, 2, 2, 1], "SAME")
        bw = tf.nn.conv2d_backprop_filter(xt, [3, 3, 2, 3], dyt, [1, 2, 2, 1], "SAME")
        with tf.Session() as sess:
            a, b, c, d = sess.run([gx, gw, bx, bw])
    np.testing.assert_allclose(a, c)
    np.testing.assert_allclose(b, d)
    # the adjoint identity <conv(x, w), dy> == <x, backprop_input(w, dy)>
    np.testing.assert_allclose(np.sum(np_conv2d(x, w, 2, "SAME") * dy), np.sum(x * c))


def test_conv2d_backprop_ops_gradients():
    check_gradients(lambda w, dy: tf.nn.conv2d_backprop_input([1, 5, 5, 2], w, dy, [1, 2, 2, 1], "SAME"),
                    RNG.standard_normal((3, 3, 2, 3)), RNG.standard_normal((1, 3, 3, 3)))
    check_gradients(lambda x, dy: tf.nn.conv2d_backprop_filter(x, [3, 3, 2, 3], dy, [1, 1, 1, 1], "VALID"),
                    RNG.standard_normal((1, 5, 5, 2)), RNG.standard_normal((1, 3, 3, 3)))


# ----------------------------------------------------------------------------- transpose / depthwise
def test_conv2d_transpose_is_adjoint_and_differentiable():
    v = RNG.standard_normal((2, 3, 3, 3))
    w = RNG.standard_normal((3, 3, 2, 3))  # [h, w, out_channels, in_channels]
    out = run_fn(lambda a, b: tf.nn.conv2d_transpose(a, b, [2, 5, 5, 2], [1, 2, 2, 1], "SAME"), v, w)
    x = RNG.standard_normal((2, 5, 5, 2))
    np.testing.assert_allclose(np.sum(out * x), np.sum(np_conv2d(x, w, 2, "SAME") * v), rtol=1e-10)
    check_gradients(lambda a, b: tf.nn.conv2d_transpose(a, b, [1, 5, 5, 2], [1, 2, 2, 1], "VALID"),
                    RNG.standard_normal((1, 2, 2, 3)), RNG.standard_normal((3, 3, 2, 3)))


def test_conv2d_transpose_batch_none_and_errors():
    w = RNG.standard_normal((3, 3, 2, 4)).astype(np.float32)
    with tf.Graph().as_default():
        v = tf.placeholder(tf.float32, [None, 4, 4, 4])
        y = tf.nn.conv2d_transpose(v, w, [None, 8, 8, 2], [1, 2, 2, 1], "SAME")
        assert y.shape.as_list() == [None, 8, 8, 2]
        y2 = tf.nn.conv2d_transpose(v, w, tf.stack([tf.shape(v)[0], 8, 8, 2]), [1, 2, 2, 1], "SAME")
        assert y2.shape.as_list() == [None, 8, 8, 2]
        with tf.Session() as sess:
            for n in (1, 3):
                assert sess.run(y, {v: np.ones((n, 4, 4, 4), np.float32)}).shape == (n, 8, 8, 2)
        with pytest.raises(ValueError, match=r"input channels.*4 != 3"):
            tf.nn.conv2d_transpose(v, tf.zeros([3, 3, 2, 3]), [None, 8, 8, 2], [1, 2, 2, 1], "SAME")
        with pytest.raises(ValueError, match=r"output_shape's last dimension.*5 != 2"):
            tf.nn.conv2d_transpose(v, w, [None, 8, 8, 5], [1, 2, 2, 1], "SAME")
        with pytest.raises(ValueError, match="does not match"):
            tf.nn.conv2d_transpose(v, w, [None, 5, 5, 2], [1, 1, 1, 1], "SAME")


def test_depthwise_conv2d_matches_numpy_and_gradients():
    x = RNG.standard_normal((2, 6, 5, 3))
    w = RNG.standard_normal((3, 3, 3, 2))
    for stride, padding in ((1, "SAME"), (2, "VALID")):
        out = run_fn(lambda a, b: tf.nn.depthwise_conv2d(a, b, [1, stride, stride, 1], padding), x, w)
        np.testing.assert_allclose(out, np_conv2d(x, w, stride, padding, depthwise=True), rtol=1e-10)
    rate = run_fn(lambda a, b: tf.nn.depthwise_conv2d(a, b, [1, 1, 1, 1], "SAME", rate=[2, 2]), x, w)
    np.testing.assert_allclose(rate, np_conv2d(x, w, 1, "SAME", 2, depthwise=True), rtol=1e-10)
    check_gradients(lambda a, b: tf.nn.depthwise_conv2d(a, b, [1, 2, 2, 1], "SAME"),
                    RNG.standard_normal((1, 5, 5, 2)), RNG.standard_normal((3, 3, 2, 2)))
    check_gradients(lambda b, dy: tf.nn.depthwise_conv2d_native_backprop_input([1, 4, 4, 2], b, dy, [1, 1, 1, 1],
                                                                               "VALID"),
                    RNG.standard_normal((2, 2, 2, 2)), RNG.standard_normal((1, 3, 3, 4)))
    check_gradients(lambda a, dy: tf.nn.depthwise_conv2d_native_backprop_filter(a, [2, 2, 2, 2], dy, [1, 1, 1, 1],
                                                                                "VALID"),
                    RNG.standard_normal((1, 4, 4, 2)), RNG.standard_normal((1, 3, 3, 4)))


def test_depthwise_and_separable_errors_and_batch():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5, 5, 2])
        with pytest.raises(ValueError, match=r"depthwise_conv2d.*depth 2.*in-channels 3"):
            tf.nn.depthwise_conv2d(x, tf.zeros([3, 3, 3, 1]), [1, 1, 1, 1], "SAME")
        with pytest.raises(ValueError, match="rate"):
            tf.nn.depthwise_conv2d(x, tf.zeros([3, 3, 2, 1]), [1, 2, 2, 1], "SAME", rate=[2, 2])
        y = tf.nn.separable_conv2d(x, tf.ones([3, 3, 2, 2]), tf.ones([1, 1, 4, 3]), [1, 1, 1, 1], "SAME")
        assert y.shape.as_list() == [None, 5, 5, 3]
        with tf.Session() as sess:
            for n in (1, 2):
                out = sess.run(y, {x: np.ones((n, 5, 5, 2), np.float32)})
                assert out.shape == (n, 5, 5, 3) and out[0, 2, 2, 0] == 9 * 4


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

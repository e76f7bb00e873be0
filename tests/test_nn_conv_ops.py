"""tf.nn convolutions: conv2d (the seed's examples, strides, padding, dilation, gradients,
batch dims, errors), its backprop ops, conv2d_transpose and depthwise_conv2d."""
import numpy as np
import pytest

from compiler import tf
from tests.helpers import check_gradients, run_fn
from tests.nn_kit import SEED_FILTER, SEED_IMAGE, np_conv2d

RNG = np.random.default_rng(7)


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

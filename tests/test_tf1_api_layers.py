"""tf.layers.conv2d_transpose / Conv2DTranspose and tf.layers.batch_normalization against TF
goldens (tests/record_api_goldens.py), finite differences and the compiled backend."""
from __future__ import annotations

import os

import numpy as np
import pytest

from compiler import tf

from .helpers import check_gradients

GOLDENS = os.path.join(os.path.dirname(__file__), "goldens")
CONV_T_CASES = [  # must match CONV_T_CASES in tests/record_api_goldens.py
    ((4, 5), 3, (3, 3), (2, 2), "same"), ((4, 5), 3, (3, 3), (2, 2), "valid"),
    ((3, 3), 2, (2, 3), (1, 2), "valid"), ((3, 4), 2, (2, 2), (3, 3), "valid"),
    ((3, 4), 4, (3, 2), (1, 1), "same"),
]
BN_CASES = [((4, 3, 3, 2), -1, 0.9, 1e-3), ((6, 5), -1, 0.99, 1e-3), ((3, 2, 2, 3), 3, 0.5, 0.01)]


def _golden(name):
    return np.load(os.path.join(GOLDENS, name))


# ----------------------------------------------------------------------------- conv2d_transpose
@pytest.mark.parametrize("case", range(len(CONV_T_CASES)))
def test_conv2d_transpose_layer_matches_tf(case):
    """Output shape, values, variable names/layout and gradients (x, kernel, bias) vs TF."""
    g = _golden("api_conv2d_transpose.npz")
    hw, filters, k, s, pad = CONV_T_CASES[case]
    p = lambda key: g[f"{case}_{key}"]  # noqa: E731
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float64, [None, *hw, 3])
        y = tf.layers.conv2d_transpose(x, filters, k, strides=s, padding=pad)
        kernel, bias = tf.global_variables()
        assert [v.name for v in tf.global_variables()] == list(p("names"))
        assert kernel.shape.as_list() == list(p("kernel").shape)  # [h, w, out, in]
        assert y.shape.as_list() == [None] + list(p("y").shape[1:])
        grads = tf.gradients(tf.reduce_sum(y * p("w")), [x, kernel, bias])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            kernel.load(p("kernel"), sess)
            bias.load(p("bias"), sess)
            got = sess.run([y] + grads, {x: p("x")})
    for key, value in zip(("y", "dx", "dkernel", "dbias"), got):
        np.testing.assert_allclose(value, p(key), rtol=1e-10, atol=1e-10, err_msg=key)


def test_conv2d_transpose_class_reuse_and_compiled():
    """The class form shares its variables across calls; the compiled backend matches."""
    xv = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3, 3, 4])
        layer = tf.layers.Conv2DTranspose(2, 3, strides=2, padding="same", activation=tf.nn.relu, name="up")
        y1, y2 = layer(x), layer(x * 2.0)
        assert [v.name for v in tf.global_variables()] == ["up/kernel:0", "up/bias:0"]
        assert y1.shape.as_list() == [None, 6, 6, 2]
        init = tf.global_variables_initializer()
        with tf.Session() as sess:
            sess.run(init)
            ref = sess.run([y1, y2], {x: xv})
            values = sess.run(tf.global_variables())
        with tf.Session(config={"backend": "compiled"}) as sess:
            for v, value in zip(tf.global_variables(), values):
                v.load(value, sess)
            got = sess.run([y1, y2], {x: xv})
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(ref[0]).sum() > 0


def test_conv2d_transpose_bad_input():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="expected ndim=4"):
            tf.layers.conv2d_transpose(tf.zeros([2, 3, 3]), 2, 3)
        with pytest.raises(ValueError, match="padding"):
            tf.layers.conv2d_transpose(tf.zeros([2, 3, 3, 1]), 2, 3, padding="full")


def test_nn_conv2d_transpose_batch_from_tf_shape():
    """output_shape built with tf.shape(x)[0] for the batch entry (a common tutorial idiom)."""
    rng = np.random.default_rng(1)
    xv, wv = rng.standard_normal((3, 4, 4, 2)), rng.standard_normal((3, 3, 5, 2))
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float64, [None, 4, 4, 2])
        w = tf.constant(wv)
        dyn = tf.nn.conv2d_transpose(x, w, tf.stack([tf.shape(x)[0], 8, 8, 5]), [1, 2, 2, 1])
        fixed = tf.nn.conv2d_transpose(x, w, [3, 8, 8, 5], [1, 2, 2, 1])
        assert dyn.shape.as_list() == [None, 8, 8, 5]
        with tf.Session() as sess:
            a, b = sess.run([dyn, fixed], {x: xv})
    np.testing.assert_allclose(a, b)


# ----------------------------------------------------------------------------- batch normalization
def _bn_graph(i, training, g):
    """x constant, the layer over it with the golden's parameters loaded by initializers."""
    shape, axis, momentum, eps = BN_CASES[i]
    p = lambda key: g[f"{i}_{key}"]  # noqa: E731
    x = tf.constant(p("x"))
    y = tf.layers.batch_normalization(
        x, axis=axis, momentum=momentum, epsilon=eps, training=training,
        gamma_initializer=tf.constant_initializer(p("gamma")), beta_initializer=tf.constant_initializer(p("beta")),
        moving_mean_initializer=tf.constant_initializer(p("mm")),
        moving_variance_initializer=tf.constant_initializer(p("mv")))
    return x, y


@pytest.mark.parametrize("case", range(len(BN_CASES)))
@pytest.mark.parametrize("mode", ["train", "infer", "tensor_train", "tensor_infer"])
def test_batch_normalization_matches_tf(case, mode):
    """Output, gradients (x, gamma, beta) and the moving statistics after the update ops."""
    g = _golden("api_batch_norm.npz")
    tag = f"{case}_{mode.split('_')[-1]}"
    with tf.Graph().as_default():
        flag = tf.placeholder(tf.bool, []) if mode.startswith("tensor") else mode == "train"
        x, y = _bn_graph(case, flag, g)
        gamma, beta, mm, mv = tf.global_variables()
        assert [v.name.split("/")[-1] for v in (gamma, beta, mm, mv)] == \
            ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"]
        assert tf.trainable_variables() == [gamma, beta]
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        assert len(updates) == (0 if mode == "infer" else 2)
        grads = tf.gradients(tf.reduce_sum(y * g[f"{case}_w"]), [x, gamma, beta])
        feed = {flag: mode == "tensor_train"} if mode.startswith("tensor") else None
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got = sess.run([y] + grads, feed)
            sess.run(updates, feed)
            new_mm, new_mv = sess.run([mm, mv])
    for key, value in zip(("y", "dx", "dgamma", "dbeta"), got):
        np.testing.assert_allclose(value, g[f"{tag}_{key}"], rtol=2e-4, atol=2e-5, err_msg=key)
    np.testing.assert_allclose(new_mm, g[f"{tag}_new_mm"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_mv, g[f"{tag}_new_mv"], rtol=1e-5, atol=1e-6)


def test_batch_normalization_update_ops_idiom_and_compiled():
    """control_dependencies(UPDATE_OPS) around minimize moves the statistics (both backends agree)."""
    rng = np.random.default_rng(2)
    xv = rng.standard_normal((8, 2, 2, 3)).astype(np.float32) * 3 + 2
    results = []
    for config in (None, {"backend": "compiled"}):
        with tf.Graph().as_default():
            x = tf.placeholder(tf.float32, [None, 2, 2, 3])
            training = tf.placeholder_with_default(False, [], name="training")
            h = tf.layers.batch_normalization(tf.layers.conv2d(x, 3, 1, kernel_initializer=tf.ones_initializer()),
                                              training=training, momentum=0.5)
            loss = tf.reduce_mean(tf.square(h - 1.0))
            with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
                train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
            moving = [v for v in tf.global_variables() if "moving" in v.name]
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                before = sess.run(moving)
                sess.run(train, {x: xv})  # training defaults to False: statistics stay
                same = sess.run(moving)
                sess.run(train, {x: xv, training: True})
                results.append((before, same, sess.run(moving), sess.run(loss, {x: xv})))
    for (before, same, after, _loss) in results:
        for a, b in zip(before, same):
            np.testing.assert_array_equal(a, b)
        assert not np.allclose(after[0], before[0])
    for a, b in zip(results[0][2] + [results[0][3]], results[1][2] + [results[1][3]]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_normalization_gradients_finite_differences():
    """Training-mode gradients through the batch moments, axis 1 of a 3-D input (non-fused)."""
    rng = np.random.default_rng(4)

    def fn(x):
        return tf.layers.batch_normalization(x, axis=1, training=True, center=False,
                                             gamma_initializer=tf.constant_initializer([0.5, 2.0]))

    with tf.Graph().as_default():  # build once to check the center=False variables
        fn(tf.zeros([3, 2, 4], tf.float64))
        assert [v.name for v in tf.global_variables()] == [
            "batch_normalization/gamma:0", "batch_normalization/moving_mean:0",
            "batch_normalization/moving_variance:0"]
    with pytest.raises(AssertionError):  # the check really looks at values
        check_gradients(lambda x: fn(x) + tf.stop_gradient(x), rng.standard_normal((3, 2, 4)))
    check_gradients(fn, rng.standard_normal((3, 2, 4)), rtol=1e-4, atol=1e-6)


def test_batch_normalization_bad_input():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="Invalid axis"):
            tf.layers.batch_normalization(tf.zeros([2, 3]), axis=2)
        with pytest.raises(ValueError, match="training must be a python bool or a scalar bool tensor"):
            tf.layers.batch_normalization(tf.zeros([2, 3]), training=tf.constant([True, False]))
        with pytest.raises(NotImplementedError, match="renorm"):
            tf.layers.batch_normalization(tf.zeros([2, 3]), renorm=True)
        with pytest.raises(ValueError, match="fused batch norm needs a 4-D input"):
            tf.layers.batch_normalization(tf.zeros([2, 3]), fused=True)


# ----------------------------------------------------------------------------- conv1d
CONV1D_CASES = [(7, 4, 3, 1, "valid", 1), (8, 3, 2, 2, "same", 1), (9, 2, 3, 1, "same", 2)]  # as the recorder


@pytest.mark.parametrize("case", range(len(CONV1D_CASES)))
def test_conv1d_layer_and_pooling1d_match_tf(case):
    g = _golden("api_conv1d.npz")
    width, filters, k, s, pad, dil = CONV1D_CASES[case]
    p = lambda key: g[f"{case}_{key}"]  # noqa: E731
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float64, [None, width, 3])
        y = tf.layers.conv1d(x, filters, k, strides=s, padding=pad, dilation_rate=dil)
        kernel, bias = tf.global_variables()
        assert [v.name for v in tf.global_variables()] == list(p("names"))
        assert kernel.shape.as_list() == [k, 3, filters]
        grads = tf.gradients(tf.reduce_sum(y * p("w")), [x, kernel, bias])
        pools = [tf.layers.max_pooling1d(x, 3, 2, padding=pad), tf.layers.average_pooling1d(x, 2, 3, padding=pad)]
        with tf.Session() as sess:
            kernel.load(p("kernel"), sess)
            bias.load(p("bias"), sess)
            got = sess.run([y] + grads + pools, {x: p("x")})
    for key, value in zip(("y", "dx", "dkernel", "dbias", "max", "avg"), got):
        np.testing.assert_allclose(value, p(key), rtol=1e-10, atol=1e-10, err_msg=key)


def test_nn_conv1d_compiled_and_errors():
    rng = np.random.default_rng(6)
    xv, wv = rng.standard_normal((3, 10, 2)).astype(np.float32), rng.standard_normal((3, 2, 4)).astype(np.float32)
    want = np.stack([np.einsum("nkc,kco->no", xv[:, i:i + 3], wv) for i in range(0, 8, 2)], axis=1)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 10, 2])
        y = tf.nn.conv1d(x, wv, stride=2, padding="VALID")
        with tf.Session(config={"backend": "compiled"}) as sess:
            np.testing.assert_allclose(sess.run(y, {x: xv}), want, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="conv1d: filters must be 3-dimensional"):
            tf.nn.conv1d(x, tf.zeros([3, 2]), 1, "SAME")
        with pytest.raises(ValueError, match="NWC only"):
            tf.nn.conv1d(x, wv, 1, "SAME", data_format="NCW")
        with pytest.raises(ValueError, match="expected ndim=3"):
            tf.layers.conv1d(tf.zeros([2, 3, 3, 1]), 2, 3)

"""tf.contrib.layers flatten / fully_connected / conv2d / batch_norm: names, defaults, numpy oracles.

TF 2.x has no tf.contrib, so the oracles are numpy restatements of TF1's documented
computation; the layers underneath are checked against TF in test_tf1_api_layers.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf

from .helpers import check_gradients
from .test_layers_model import np_conv2d

RNG = np.random.default_rng(7)


def test_fully_connected_defaults_names_and_reuse():
    xv = RNG.standard_normal((4, 2, 3)).astype(np.float32)
    with tf.Graph().as_default():
        tf.set_random_seed(3)  # initial weights that give negative pre-activations (asserted below)
        x = tf.placeholder(tf.float32, [None, 2, 3])
        flat = tf.contrib.layers.flatten(x)
        y = tf.contrib.layers.fully_connected(flat, 5, biases_initializer=tf.random_normal_initializer())
        again = tf.contrib.layers.fully_connected(flat, 5, scope="fully_connected", reuse=True)
        other = tf.contrib.layers.fully_connected(flat, 2, activation_fn=None, biases_initializer=None)
        names = [v.name for v in tf.global_variables()]
        assert names == ["fully_connected/weights:0", "fully_connected/biases:0", "fully_connected_1/weights:0"]
        assert tf.get_collection(tf.GraphKeys.MODEL_VARIABLES) == tf.global_variables()
        assert flat.shape.as_list() == [None, 6]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            yv, again_v, other_v, (w, b, w2) = sess.run([y, again, other, tf.global_variables()], {x: xv})
    flat_v = xv.reshape(4, 6)
    np.testing.assert_allclose(yv, np.maximum(flat_v @ w + b, 0), rtol=1e-5, atol=1e-6)  # relu by default
    np.testing.assert_allclose(again_v, yv)
    np.testing.assert_allclose(other_v, flat_v @ w2, rtol=1e-5, atol=1e-6)
    assert (yv == 0).any() and (other_v < 0).any()


def test_conv2d_same_by_default_with_batch_norm_normalizer():
    """conv2d pads SAME; a normalizer replaces the bias and lives in <scope>/BatchNorm."""
    xv = RNG.standard_normal((3, 5, 5, 2)).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5, 5, 2])
        plain = tf.contrib.layers.conv2d(x, 3, 3, activation_fn=None)
        normed = tf.contrib.layers.conv2d(x, 3, [3, 3], stride=2, normalizer_fn=tf.contrib.layers.batch_norm,
                                          normalizer_params={"is_training": True, "decay": 0.5})
        assert plain.shape.as_list() == [None, 5, 5, 3] and normed.shape.as_list() == [None, 3, 3, 3]
        assert [v.name for v in tf.global_variables()] == [
            "Conv/weights:0", "Conv/biases:0", "Conv_1/weights:0", "Conv_1/BatchNorm/beta:0",
            "Conv_1/BatchNorm/moving_mean:0", "Conv_1/BatchNorm/moving_variance:0"]
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        assert len(updates) == 2
        w1, b1, w2 = tf.global_variables()[:3]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            pv, nv, w1v, b1v, w2v = sess.run([plain, normed, w1, b1, w2], {x: xv})
            sess.run(updates, {x: xv})
            mv = sess.run(tf.global_variables()[-1])
    np.testing.assert_allclose(pv, np_conv2d(xv, w1v, 1, "SAME") + b1v, rtol=1e-4, atol=1e-5)
    z = np_conv2d(xv, w2v, 2, "SAME")
    mean, var = z.mean((0, 1, 2)), z.var((0, 1, 2))
    np.testing.assert_allclose(nv, np.maximum((z - mean) / np.sqrt(var + 1e-3), 0), rtol=1e-3, atol=1e-4)
    n = z.size / 3  # rank 4: TF's fused kernel feeds the unbiased variance to the moving average
    np.testing.assert_allclose(mv, 0.5 * 1.0 + 0.5 * var * n / (n - 1), rtol=1e-4)


@pytest.mark.parametrize("updates_collections", [None, tf.GraphKeys.UPDATE_OPS])
def test_batch_norm_rank2_tensor_training_and_inline_updates(updates_collections):
    """Rank 2 (fused in TF: unbiased moving variance); a bool tensor is_training; inline updates."""
    xv = RNG.standard_normal((6, 4)).astype(np.float32) * 2 + 3
    with tf.Graph().as_default():
        x = tf.constant(xv)
        training = tf.placeholder(tf.bool, [])
        y = tf.contrib.layers.batch_norm(x, decay=0.9, scale=True, is_training=training,
                                         updates_collections=updates_collections)
        mm, mv = [v for v in tf.global_variables() if "moving" in v.name]
        assert len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)) == (0 if updates_collections is None else 2)
        run = [y] + tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            infer = sess.run(run, {training: False})[0]
            assert sess.run(mm).tolist() == [0.0] * 4 and sess.run(mv).tolist() == [1.0] * 4
            train = sess.run(run, {training: True})[0]
            mm_v, mv_v = sess.run([mm, mv])
    np.testing.assert_allclose(infer, xv / np.sqrt(1 + 1e-3), rtol=1e-5)
    np.testing.assert_allclose(train, (xv - xv.mean(0)) / np.sqrt(xv.var(0) + 1e-3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mm_v, 0.1 * xv.mean(0), rtol=1e-5)
    np.testing.assert_allclose(mv_v, 0.9 + 0.1 * xv.var(0, ddof=1), rtol=1e-5)


def test_contrib_fully_connected_gradients():
    rng = np.random.default_rng(5)
    check_gradients(lambda x: tf.contrib.layers.fully_connected(x, 3, activation_fn=tf.tanh,
                                                                biases_initializer=tf.ones_initializer()),
                    rng.standard_normal((4, 5)))


def test_contrib_bad_input():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="NHWC only"):
            tf.contrib.layers.conv2d(tf.zeros([1, 4, 4, 2]), 2, 3, data_format="NCHW")
        with pytest.raises(NotImplementedError, match="batch_weights"):
            tf.contrib.layers.batch_norm(tf.zeros([2, 3]), batch_weights=tf.ones([2]))


def test_tf1_program_with_the_everyday_api_trains_compiled():
    """A TF-Examples-style program: placeholder_with_default for the mode, conv + batch norm +
    UPDATE_OPS idiom, tf.metrics.accuracy and in_top_k, on the compiled backend."""
    rng = np.random.default_rng(11)
    xs = rng.standard_normal((64, 4, 4, 1)).astype(np.float32)
    ys = (xs[:, :2].sum((1, 2, 3)) > xs[:, 2:].sum((1, 2, 3))).astype(np.int64)
    with tf.Graph().as_default():
        tf.set_random_seed(3)
        x, y = tf.placeholder(tf.float32, [None, 4, 4, 1]), tf.placeholder(tf.int64, [None])
        training = tf.placeholder_with_default(False, [], name="is_training")
        h = tf.contrib.layers.conv2d(x, 4, 3, normalizer_fn=tf.layers.batch_normalization,
                                     normalizer_params={"training": training, "momentum": 0.8})
        logits = tf.contrib.layers.fully_connected(tf.contrib.layers.flatten(h), 2, activation_fn=None)
        loss = tf.losses.sparse_softmax_cross_entropy(y, logits)
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train_op = tf.train.AdamOptimizer(0.05).minimize(loss)
        acc, acc_op = tf.metrics.accuracy(y, tf.arg_max(logits, 1))
        top1 = tf.reduce_mean(tf.to_float(tf.nn.in_top_k(logits, y, 1)))
        with tf.Session(config={"backend": "compiled"}) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            first = sess.run(loss, {x: xs, y: ys})
            for _ in range(40):
                sess.run(train_op, {x: xs, y: ys, training: True})
            last, acc_now, top1_now = sess.run([loss, acc_op, top1], {x: xs, y: ys})
            assert sess.run(acc) == pytest.approx(acc_now)
    assert last < first * 0.5
    assert acc_now == pytest.approx(top1_now) and acc_now > 0.9

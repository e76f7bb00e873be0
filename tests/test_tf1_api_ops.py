"""Everyday TF1 names (issue 12): placeholder_with_default, tf.metrics, in_top_k, TF1 aliases,
and the error a missing name gives.  Goldens: tests/record_api_goldens.py (real TF)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from compiler import tf

from .helpers import check_gradients

GOLDENS = os.path.join(os.path.dirname(__file__), "goldens")


def _golden(name):
    return np.load(os.path.join(GOLDENS, name))


# ----------------------------------------------------------------------------- placeholder_with_default
def test_placeholder_with_default_scalar_and_feed():
    with tf.Graph().as_default():
        keep = tf.placeholder_with_default(1.0, shape=(), name="keep_prob")
        x = tf.constant([2.0, 4.0]) * keep
        with tf.Session() as sess:
            np.testing.assert_allclose(sess.run(x), [2, 4])
            np.testing.assert_allclose(sess.run(x, {keep: 0.5}), [1, 2])
        assert keep.op.name == "keep_prob" and keep.shape.as_list() == []


def test_placeholder_with_default_relaxed_batch_dim():
    """shape [None, 3] over a [2, 3] default: unfed it is the default, fed it takes any batch."""
    default = np.arange(6, dtype=np.float32).reshape(2, 3)
    with tf.Graph().as_default():
        x = tf.placeholder_with_default(default, [None, 3])
        other = tf.placeholder(tf.float32, [None, 3])
        y = tf.reduce_sum(x * 2.0, axis=1)
        assert x.shape.as_list() == [None, 3]
        with tf.Session() as sess:
            np.testing.assert_allclose(sess.run(y), (default * 2).sum(1))
            fed = np.ones((5, 3), np.float32)
            np.testing.assert_allclose(sess.run(y, {x: fed}), np.full(5, 6.0))
            # an unneeded default does not bind the batch of an unrelated run
            np.testing.assert_allclose(sess.run(other + 1, {other: fed}), fed + 1)
        with tf.Session(config={"backend": "compiled"}) as sess:
            np.testing.assert_allclose(sess.run(y), (default * 2).sum(1))
            np.testing.assert_allclose(sess.run(y, {x: fed}), np.full(5, 6.0))


def test_placeholder_with_default_gradient_flows_to_default():
    """When input's shape is kept, the op is an identity: gradients reach the default."""
    check_gradients(lambda a: tf.placeholder_with_default(a, [2, 3]) ** 2, np.random.default_rng(0).random((2, 3)))


def test_placeholder_with_default_unknown_dims_keep_the_inputs():
    with tf.Graph().as_default():
        a = tf.placeholder_with_default(np.ones((2, 3), np.float32), None)
        b = tf.placeholder_with_default(np.ones((2, 3), np.float32), [None, None])
        c = tf.placeholder_with_default(np.ones((2, 3), np.float32), tf.TensorShape([2, None]))
        assert a.shape.as_list() == [2, 3] and b.shape.as_list() == [None, 3] and c.shape.as_list() == [2, 3]
        with tf.Session() as sess:
            for value in sess.run([a * 2, b * 2, c * 2]):
                np.testing.assert_allclose(value, np.full((2, 3), 2.0))


def test_placeholder_with_default_bad_shapes():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="Shapes must be equal rank, but are 2 and 1"):
            tf.placeholder_with_default([[1.0, 2.0]], [2])
        with pytest.raises(ValueError, match="Dimension 1 in both shapes must be equal, but are 2 and 3"):
            tf.placeholder_with_default([[1.0, 2.0]], [None, 3])
        v = tf.Variable(tf.zeros([2, 3]))
        with pytest.raises(ValueError, match="known when the graph is built"):
            tf.placeholder_with_default(v * 1.0, [None, 3])


# ----------------------------------------------------------------------------- metrics
def _build_metrics(lab, pred, w):
    fpred, flab = tf.cast(pred, tf.float32) * 0.5, tf.cast(lab, tf.float32)
    return {
        "accuracy": tf.metrics.accuracy(lab, pred), "accuracy_w": tf.metrics.accuracy(lab, pred, weights=w),
        "mean": tf.metrics.mean(fpred), "mean_w": tf.metrics.mean(fpred, weights=w),
        "mse": tf.metrics.mean_squared_error(flab, fpred), "mse_w": tf.metrics.mean_squared_error(flab, fpred, w),
        "precision": tf.metrics.precision(lab, pred), "precision_w": tf.metrics.precision(lab, pred, w),
        "recall": tf.metrics.recall(lab, pred), "recall_w": tf.metrics.recall(lab, pred, w),
        "mae": tf.metrics.mean_absolute_error(flab, fpred),
        "rmse_w": tf.metrics.root_mean_squared_error(flab, fpred, w),
        "tp": tf.metrics.true_positives(lab, pred), "fp_w": tf.metrics.false_positives(lab, pred, w),
        "fn": tf.metrics.false_negatives(lab, pred), "tn_w": tf.metrics.true_negatives(lab, pred, w),
    }


def test_metrics_match_tf_goldens():
    """Streaming updates over three batches, the read-back value, names and the reset."""
    g = _golden("api_metrics.npz")
    with tf.Graph().as_default():
        lab, pred = tf.placeholder(tf.int64, [None]), tf.placeholder(tf.int64, [None])
        w = tf.placeholder(tf.float32, [None])
        metrics = _build_metrics(lab, pred, w)
        assert list(metrics) == list(g["keys"])
        assert [v.name for v in tf.local_variables()] == list(g["local_names"])
        assert [v.name for v in tf.get_collection(tf.GraphKeys.METRIC_VARIABLES)] == list(g["metric_names"])
        assert tf.global_variables() == [] and tf.trainable_variables() == []
        with tf.Session() as sess:
            sess.run(tf.local_variables_initializer())
            np.testing.assert_allclose(sess.run([m[0] for m in metrics.values()]), g["initial"])
            for step in range(3):
                feed = {lab: g[f"labels_{step}"], pred: g[f"preds_{step}"], w: g[f"weights_{step}"]}
                got = sess.run([m[1] for m in metrics.values()], feed)
                np.testing.assert_allclose(got, g[f"update_{step}"], rtol=1e-6, err_msg=f"update {step}")
                np.testing.assert_allclose(sess.run([m[0] for m in metrics.values()]), g[f"value_{step}"],
                                           rtol=1e-6, err_msg=f"value {step}")
            sess.run(tf.local_variables_initializer())
            np.testing.assert_allclose(sess.run([m[0] for m in metrics.values()]), g["initial"])


def test_metrics_collections_and_squeeze():
    with tf.Graph().as_default():
        labels = tf.constant([[1], [2], [3]], tf.int64)
        preds = tf.constant([1, 0, 3], tf.int64)
        acc, op = tf.metrics.accuracy(labels, preds, metrics_collections=["m"], updates_collections=["u"],
                                      name="my_acc")
        assert tf.get_collection("m") == [acc] and tf.get_collection("u") == [op]
        assert [v.name for v in tf.local_variables()] == ["my_acc/total:0", "my_acc/count:0"]
        with tf.Session() as sess:
            sess.run(tf.local_variables_initializer())
            np.testing.assert_allclose(sess.run(op), 2 / 3, rtol=1e-6)


def test_metrics_bad_input():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="accuracy: labels"):
            tf.metrics.accuracy(tf.constant([1, 2, 3]), tf.constant([1, 2]))
        with pytest.raises(ValueError, match="weights"):
            tf.metrics.mean(tf.constant([1.0, 2.0, 3.0]), weights=tf.constant([1.0, 2.0]))


# ----------------------------------------------------------------------------- in_top_k
def test_in_top_k_matches_tf_ties_and_non_finite():
    g = _golden("api_in_top_k.npz")
    with tf.Graph().as_default():
        p, t = tf.constant(g["predictions"]), tf.constant(g["targets"])
        with tf.Session() as sess:
            for k in range(5):
                np.testing.assert_array_equal(sess.run(tf.nn.in_top_k(p, t, k)), g[f"k{k}"], err_msg=f"k={k}")
                np.testing.assert_array_equal(sess.run(tf.math.in_top_k(p, t, k)), g[f"k{k}"])


def test_in_top_k_out_of_range_and_compiled():
    """Out-of-range targets give False (TF); the compiled backend agrees with the interpreter."""
    preds = np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32)
    preds[1, 2] = preds[1, 4]  # a tie
    targets = np.array([0, 2, 4, 7, -1, 3], np.int64)
    want = [(preds[i] > preds[i, t]).sum() < 2 if 0 <= t < 5 else False for i, t in enumerate(targets)]
    with tf.Graph().as_default():
        p, t = tf.placeholder(tf.float32, [None, 5]), tf.placeholder(tf.int64, [None])
        out = tf.nn.in_top_k(p, t, 2)
        with tf.Session() as sess:
            np.testing.assert_array_equal(sess.run(out, {p: preds, t: targets}), want)
        with tf.Session(config={"backend": "compiled"}) as sess:
            np.testing.assert_array_equal(sess.run(out, {p: preds, t: targets}), want)


def test_in_top_k_bad_input():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="First dimension of predictions 2 must match length of targets 3"):
            tf.nn.in_top_k(tf.zeros([2, 4]), tf.constant([0, 1, 2]), 1)
        with pytest.raises(ValueError, match="predictions must be a 2-D float"):
            tf.nn.in_top_k(tf.zeros([4]), tf.constant([0, 1, 2, 3]), 1)
        with pytest.raises(TypeError, match="k must be a Python int"):
            tf.nn.in_top_k(tf.zeros([2, 4]), tf.constant([0, 1]), 1.5)


# ----------------------------------------------------------------------------- aliases
def test_tf1_aliases():
    x = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0]], np.float32)
    with tf.Graph().as_default():
        c = tf.constant(x)
        ops = [tf.arg_max(c, 1), tf.arg_min(c, dimension=0), tf.arg_max(c, 0, output_type=tf.int32),
               tf.to_double(c)]
        with tf.Session() as sess:
            amax, amin, amax32, dbl = sess.run(ops)
    np.testing.assert_array_equal(amax, x.argmax(1))
    np.testing.assert_array_equal(amin, x.argmin(0))
    assert amax.dtype == np.int64 and amax32.dtype == np.int32 and dbl.dtype == np.float64
    np.testing.assert_array_equal(dbl, x.astype(np.float64))


@pytest.mark.parametrize("path", ["tf.no_such_name", "tf.contrib.no_such_name", "tf.nn.no_such_name",
                                  "tf.layers.no_such_name", "tf.metrics.no_such_name", "tf.summary.no_such_name"])
def test_missing_name_points_at_api_docs(path):
    node, parts = tf, path.split(".")[1:]
    with pytest.raises(AttributeError) as info:
        for part in parts:
            node = getattr(node, part)
    assert f"{path} is not provided by Kiln" in str(info.value) and "docs/api.md" in str(info.value)


# ----------------------------------------------------------------------------- small TF1 ops
def test_small_ops_match_tf():
    """div_no_nan (and its gradient), log_sigmoid, reduce_variance/std, swish, zero_fraction, realdiv."""
    g = _golden("api_small_ops.npz")
    with tf.Graph().as_default():
        x, y = tf.constant(g["x"]), tf.constant(g["y"])
        ops = {"div_no_nan": tf.div_no_nan(x, y), "log_sigmoid": tf.log_sigmoid(x),
               "reduce_variance": tf.math.reduce_variance(x, axis=1), "reduce_std": tf.math.reduce_std(x),
               "swish": tf.nn.swish(x), "zero_fraction": tf.nn.zero_fraction(y), "realdiv": tf.realdiv(x, y + 10)}
        dx, dy = tf.gradients(tf.reduce_sum(tf.math.divide_no_nan(x, y) * g["x"]), [x, y])
        ops.update(d_div_no_nan_x=dx, d_div_no_nan_y=dy,
                   d_log_sigmoid=tf.gradients(tf.reduce_sum(tf.math.log_sigmoid(x)), x)[0])
        with tf.Session() as sess:
            got = sess.run(ops)
    for key, value in got.items():
        np.testing.assert_allclose(value, g[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_small_ops_gradients_and_errors():
    rng = np.random.default_rng(8)
    check_gradients(lambda a: tf.math.reduce_std(a, axis=0), rng.standard_normal((4, 3)))
    check_gradients(tf.nn.swish, rng.standard_normal((3, 2)))
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match="div_no_nan: expected a floating point tensor"):
            tf.div_no_nan(tf.constant([1, 2]), tf.constant([0, 1]))


@pytest.mark.parametrize("mode", ["train", "infer", "avg"])
def test_fused_batch_norm_matches_tf(mode):
    """Outputs (y, mean, Bessel-corrected variance in training) and gradients vs TF's kernel."""
    g = _golden("api_fused_batch_norm.npz")
    kwargs = {"train": dict(is_training=True),
              "infer": dict(mean=g["mean"], variance=g["variance"], is_training=False),
              "avg": dict(mean=g["mean"], variance=g["variance"], is_training=True, exponential_avg_factor=0.3)}
    with tf.Graph().as_default():
        x, scale, offset = tf.constant(g["x"]), tf.constant(g["scale"]), tf.constant(g["offset"])
        y, m, v = tf.nn.fused_batch_norm(x, scale, offset, epsilon=0.01, **kwargs[mode])
        grads = tf.gradients(tf.reduce_sum(y * g["w"]), [x, scale, offset])
        with tf.Session() as sess:
            got = sess.run([y, m, v] + grads)
    for key, value in zip(("y", "m", "v", "dx", "dscale", "doffset"), got):
        np.testing.assert_allclose(value, g[f"{mode}_{key}"], rtol=2e-4, atol=2e-5, err_msg=key)


def test_fused_batch_norm_nchw_and_errors():
    g = _golden("api_fused_batch_norm.npz")
    with tf.Graph().as_default():
        x = tf.constant(g["x"])
        nhwc = tf.nn.fused_batch_norm(x, g["scale"], g["offset"])[0]
        nchw = tf.nn.fused_batch_norm(tf.transpose(x, [0, 3, 1, 2]), g["scale"], g["offset"], data_format="NCHW")[0]
        with tf.Session() as sess:
            a, b = sess.run([nhwc, tf.transpose(nchw, [0, 2, 3, 1])])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="Both `mean` and `variance` must be a 1D tensor"):
            tf.nn.fused_batch_norm(x, g["scale"], g["offset"], is_training=False)
        with pytest.raises(ValueError, match="scale must be a 1-D tensor of size 5"):
            tf.nn.fused_batch_norm(x, g["scale"][:3], g["offset"])


def test_lrn_matches_tf_and_compiles():
    """tf.nn.lrn with TF's defaults, CIFAR-10's settings and a window wider than the channels."""
    g = _golden("api_small_ops.npz")
    cases = {"lrn": {}, "lrn_cifar": dict(depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75),
             "lrn_wide": dict(depth_radius=9, bias=2.0, alpha=0.5, beta=0.3)}
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [2, 3, 2, 7])
        fetches = {}
        for tag, kwargs in cases.items():
            out = tf.nn.local_response_normalization(x, **kwargs)
            fetches[tag], fetches[f"d_{tag}"] = out, tf.gradients(tf.reduce_sum(out * g["lrn_w"]), x)[0]
        with tf.Session() as sess:
            got = sess.run(fetches, {x: g["lrn_x"]})
        with tf.Session(config={"backend": "compiled"}) as sess:
            compiled = sess.run(fetches, {x: g["lrn_x"]})
    for key, value in got.items():
        np.testing.assert_allclose(value, g[key], rtol=2e-5, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(compiled[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    with tf.Graph().as_default(), pytest.raises(ValueError, match="input must be 4-dimensional"):
        tf.nn.lrn(tf.zeros([2, 3]))

"""Record TensorFlow goldens for the everyday-API tests (tests/test_tf1_api_*.py).

Runs only where TensorFlow is installed (``/work/tfenv/bin/python tests/record_api_goldens.py``);
Kiln's tests read the .npz files it writes under tests/goldens/ and never import TF.

TF 2.x without tf_keras has no ``tf.layers.batch_normalization``; the batch-norm goldens
come from TF's own kernels that TF1's layer used: ``tf.nn.fused_batch_norm`` for 4-D
inputs (the layer's default fused path, whose returned variance is Bessel-corrected) and
``tf.nn.moments`` + ``assign_moving_average`` for the other ranks, with gradients.
"""
from __future__ import annotations

import os

import numpy as np

import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens")
RNG = np.random.default_rng(1234)


def _save(name, **arrays):
    os.makedirs(OUT, exist_ok=True)
    np.savez_compressed(os.path.join(OUT, name), **arrays)
    print("wrote", name, sorted(arrays))


def _names(vs):
    return np.array([v.name for v in vs])


# ----------------------------------------------------------------------------- conv2d_transpose layer
CONV_T_CASES = [  # (input hw, filters, kernel, strides, padding)
    ((4, 5), 3, (3, 3), (2, 2), "same"), ((4, 5), 3, (3, 3), (2, 2), "valid"),
    ((3, 3), 2, (2, 3), (1, 2), "valid"), ((3, 4), 2, (2, 2), (3, 3), "valid"),
    ((3, 4), 4, (3, 2), (1, 1), "same"),
]


def record_conv2d_transpose():
    from tensorflow.python.keras.legacy_tf_layers import convolutional

    out = {}
    for i, (hw, filters, k, s, pad) in enumerate(CONV_T_CASES):
        with tf.Graph().as_default():
            tf.set_random_seed(i)
            xv = RNG.standard_normal((2,) + hw + (3,)).astype(np.float64)
            x = tf.placeholder(tf.float64, [None, *hw, 3])
            y = convolutional.conv2d_transpose(x, filters, k, strides=s, padding=pad,
                                               bias_initializer=tf.random_normal_initializer())
            wv = RNG.standard_normal(y.shape.as_list()[1:]).astype(np.float64)
            loss = tf.reduce_sum(y * wv)
            kernel, bias = tf.global_variables()
            grads = tf.gradients(loss, [x, kernel, bias])
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                kv, bv, yv, *gv = sess.run([kernel, bias, y] + grads, {x: xv})
            out.update({f"{i}_x": xv, f"{i}_kernel": kv, f"{i}_bias": bv, f"{i}_y": yv, f"{i}_w": wv,
                        f"{i}_dx": gv[0], f"{i}_dkernel": gv[1], f"{i}_dbias": gv[2],
                        f"{i}_names": _names(tf.global_variables())})
    _save("api_conv2d_transpose.npz", **out)


# (width, filters, kernel, stride, padding, dilation)
CONV1D_CASES = [(7, 4, 3, 1, "valid", 1), (8, 3, 2, 2, "same", 1), (9, 2, 3, 1, "same", 2)]


def record_conv1d():
    """tf.layers.conv1d (values, names, gradients) and max/average_pooling1d."""
    from tensorflow.python.keras.legacy_tf_layers import convolutional, pooling

    out = {}
    for i, (width, filters, k, s, pad, dil) in enumerate(CONV1D_CASES):
        with tf.Graph().as_default():
            tf.set_random_seed(i)
            xv = RNG.standard_normal((2, width, 3))
            x = tf.placeholder(tf.float64, [None, width, 3])
            y = convolutional.conv1d(x, filters, k, strides=s, padding=pad, dilation_rate=dil,
                                     bias_initializer=tf.random_normal_initializer())
            wv = RNG.standard_normal(y.shape.as_list()[1:])
            kernel, bias = tf.global_variables()
            grads = tf.gradients(tf.reduce_sum(y * wv), [x, kernel, bias])
            pools = [pooling.max_pooling1d(x, 3, 2, padding=pad), pooling.average_pooling1d(x, 2, 3, padding=pad)]
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                values = sess.run([kernel, bias, y] + grads + pools, {x: xv})
            keys = ("kernel", "bias", "y", "dx", "dkernel", "dbias", "max", "avg")
            out.update({f"{i}_{key}": v for key, v in zip(keys, values)})
            out.update({f"{i}_x": xv, f"{i}_w": wv, f"{i}_names": _names(tf.global_variables())})
    _save("api_conv1d.npz", **out)


# ----------------------------------------------------------------------------- batch norm
BN_CASES = [  # (input shape, axis, momentum, epsilon)
    ((4, 3, 3, 2), -1, 0.9, 1e-3), ((6, 5), -1, 0.99, 1e-3), ((3, 2, 2, 3), 3, 0.5, 0.01),
]


def _bn_reference(x, gamma, beta, mm, mv, axis, momentum, eps, training):
    """TF1 tf.layers.batch_normalization's computation, from TF kernels (see the module doc)."""
    if x.shape.ndims == 4 and axis in (-1, 3):
        if training:
            y, mean, var = tf.nn.fused_batch_norm(x, gamma, beta, epsilon=eps, is_training=True)
        else:
            y, mean, var = tf.nn.fused_batch_norm(x, gamma, beta, mm, mv, epsilon=eps, is_training=False)
    else:
        mean, var = tf.nn.moments(x, [0]) if training else (mm, mv)
        y = tf.nn.batch_normalization(x, mean, var, beta, gamma, eps)
    return y, mean, var


def record_batch_norm():
    from tensorflow.python.training import moving_averages

    out = {}
    for i, (shape, axis, momentum, eps) in enumerate(BN_CASES):
        c = shape[axis]
        xv = (RNG.standard_normal(shape) * 2 + 1).astype(np.float32)
        gv, bv = RNG.uniform(0.5, 2, c).astype(np.float32), RNG.standard_normal(c).astype(np.float32)
        mmv, mvv = RNG.standard_normal(c).astype(np.float32), RNG.uniform(0.5, 2, c).astype(np.float32)
        wv = RNG.standard_normal(shape).astype(np.float32)
        out.update({f"{i}_x": xv, f"{i}_gamma": gv, f"{i}_beta": bv, f"{i}_mm": mmv, f"{i}_mv": mvv, f"{i}_w": wv})
        for training in (True, False):
            with tf.Graph().as_default():
                x = tf.constant(xv)
                gamma, beta = tf.Variable(gv), tf.Variable(bv)
                mm, mv = tf.Variable(mmv, trainable=False), tf.Variable(mvv, trainable=False)
                y, mean, var = _bn_reference(x, gamma, beta, mm, mv, axis, momentum, eps, training)
                grads = tf.gradients(tf.reduce_sum(y * wv), [x, gamma, beta])
                with tf.Session() as sess:
                    sess.run(tf.global_variables_initializer())
                    yv, *dv = sess.run([y] + grads)
                    if training:
                        sess.run([moving_averages.assign_moving_average(mm, mean, momentum, zero_debias=False),
                                  moving_averages.assign_moving_average(mv, var, momentum, zero_debias=False)])
                    new_mm, new_mv = sess.run([mm, mv])
            tag = f"{i}_{'train' if training else 'infer'}"
            out.update({f"{tag}_y": yv, f"{tag}_dx": dv[0], f"{tag}_dgamma": dv[1], f"{tag}_dbeta": dv[2],
                        f"{tag}_new_mm": new_mm, f"{tag}_new_mv": new_mv})
    _save("api_batch_norm.npz", **out)


# ----------------------------------------------------------------------------- metrics
def record_metrics():
    labels = [np.array([1, 0, 1, 1, 2]), np.array([0, 2, 2]), np.array([1, 1, 0, 0])]
    preds = [np.array([1, 1, 0, 1, 2]), np.array([0, 2, 1]), np.array([0, 1, 1, 0])]
    weights = [np.array([1, 2, 0.5, 0, 1]), np.array([0, 0, 0]), np.array([3, 1, 1, 2])]
    out = {}
    with tf.Graph().as_default():
        lab, pred = tf.placeholder(tf.int64, [None]), tf.placeholder(tf.int64, [None])
        w = tf.placeholder(tf.float32, [None])
        fpred, flab = tf.cast(pred, tf.float32) * 0.5, tf.cast(lab, tf.float32)
        metrics = {
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
        out["local_names"] = _names(tf.local_variables())
        out["metric_names"] = _names(tf.get_collection(tf.GraphKeys.METRIC_VARIABLES))
        with tf.Session() as sess:
            sess.run(tf.local_variables_initializer())
            out["initial"] = np.array(sess.run([m[0] for m in metrics.values()]))
            for step, (lv, pv, wv) in enumerate(zip(labels, preds, weights)):
                feed = {lab: lv, pred: pv, w: wv}
                out[f"update_{step}"] = np.array(sess.run([m[1] for m in metrics.values()], feed))
                out[f"value_{step}"] = np.array(sess.run([m[0] for m in metrics.values()]))
        out["keys"] = np.array(list(metrics))
    for step, (lv, pv, wv) in enumerate(zip(labels, preds, weights)):
        out[f"labels_{step}"], out[f"preds_{step}"], out[f"weights_{step}"] = lv, pv, wv
    _save("api_metrics.npz", **out)


# ----------------------------------------------------------------------------- in_top_k
def record_in_top_k():
    preds = np.array([[0.1, 0.5, 0.5, 0.2], [0.3, 0.3, 0.3, 0.1], [1, 2, 3, 4], [np.nan, 1, 2, 3],
                      [1, np.inf, 2, 3], [5, 5, 5, 5], [1, -np.inf, 2, np.nan]], np.float32)
    targets = np.array([2, 0, 3, 3, 1, 3, 0], np.int32)
    out = {"predictions": preds, "targets": targets}
    with tf.Graph().as_default(), tf.Session() as sess:
        for k in (0, 1, 2, 3, 4):
            out[f"k{k}"] = sess.run(tf.nn.in_top_k(preds, targets, k))
    _save("api_in_top_k.npz", **out)


# ----------------------------------------------------------------------------- fused_batch_norm, small ops
def record_fused_batch_norm():
    xv = (RNG.standard_normal((3, 2, 4, 5)) * 2 + 1).astype(np.float32)
    gv, bv = RNG.uniform(0.5, 2, 5).astype(np.float32), RNG.standard_normal(5).astype(np.float32)
    mv, vv = RNG.standard_normal(5).astype(np.float32), RNG.uniform(0.5, 2, 5).astype(np.float32)
    wv = RNG.standard_normal(xv.shape).astype(np.float32)
    out = {"x": xv, "scale": gv, "offset": bv, "mean": mv, "variance": vv, "w": wv}
    cases = {"train": dict(is_training=True), "infer": dict(mean=mv, variance=vv, is_training=False),
             "avg": dict(mean=mv, variance=vv, is_training=True, exponential_avg_factor=0.3)}
    for tag, kwargs in cases.items():
        with tf.Graph().as_default():
            x = tf.constant(xv)
            scale, offset = tf.constant(gv), tf.constant(bv)
            y, m, v = tf.nn.fused_batch_norm(x, scale, offset, epsilon=0.01, **kwargs)
            grads = tf.gradients(tf.reduce_sum(y * wv), [x, scale, offset])
            with tf.Session() as sess:
                values = sess.run([y, m, v] + grads)
        for key, value in zip(("y", "m", "v", "dx", "dscale", "doffset"), values):
            out[f"{tag}_{key}"] = value
    _save("api_fused_batch_norm.npz", **out)


def record_small_ops():
    xv = np.array([[-30.0, -1.5, 0.0, 2.0], [0.5, 40.0, -0.25, 3.0]], np.float32)
    yv = np.array([[2.0, 0.0, 0.0, -4.0], [0.0, 8.0, 1.0, 0.5]], np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        x, y = tf.constant(xv), tf.constant(yv)
        ops = {"div_no_nan": tf.div_no_nan(x, y), "log_sigmoid": tf.log_sigmoid(x),
               "reduce_variance": tf.math.reduce_variance(x, axis=1), "reduce_std": tf.math.reduce_std(x),
               "swish": tf.nn.swish(x), "zero_fraction": tf.nn.zero_fraction(y), "realdiv": tf.realdiv(x, y + 10),
               "d_div_no_nan": tf.gradients(tf.reduce_sum(tf.div_no_nan(x, y) * xv), [x, y]),
               "d_log_sigmoid": tf.gradients(tf.reduce_sum(tf.log_sigmoid(x)), x)[0]}
        lrn_x = tf.constant(RNG.standard_normal((2, 3, 2, 7)).astype(np.float32))
        lrn_w = RNG.standard_normal((2, 3, 2, 7)).astype(np.float32)
        for tag, kwargs in {"lrn": {}, "lrn_cifar": dict(depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75),
                            "lrn_wide": dict(depth_radius=9, bias=2.0, alpha=0.5, beta=0.3)}.items():
            out = tf.nn.lrn(lrn_x, **kwargs)
            ops[tag] = out
            ops[f"d_{tag}"] = tf.gradients(tf.reduce_sum(out * lrn_w), lrn_x)[0]
        ops["lrn_x"], ops["lrn_w"] = lrn_x, tf.constant(lrn_w)
        values = sess.run(ops)
    values["d_div_no_nan_x"], values["d_div_no_nan_y"] = values.pop("d_div_no_nan")
    _save("api_small_ops.npz", x=xv, y=yv, **values)


if __name__ == "__main__":
    record_conv2d_transpose()
    record_batch_norm()
    record_metrics()
    record_in_top_k()
    record_fused_batch_norm()
    record_small_ops()
    record_conv1d()

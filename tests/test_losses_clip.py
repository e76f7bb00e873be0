"""Cross-entropies, l2_loss, tf.losses and clipping."""
import numpy as np
import pytest

from compiler import tf
from tests.helpers import check_gradients, run_fn

RNG = np.random.default_rng(11)
SEED_LABELS = np.array([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]], np.float32)
SEED_LOGITS = np.array([[2, 0.5, 1], [0.1, 1, 3]], np.float32)


def np_log_softmax(x):
    s = x - x.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def np_sigmoid_xent(z, x):
    p = 1 / (1 + np.exp(-x))
    return -(z * np.log(p) + (1 - z) * np.log(1 - p))


# ----------------------------------------------------------------------------- tf.nn cross-entropies
def test_softmax_cross_entropy_seed_example():
    out = run_fn(lambda y, x: tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=x), SEED_LABELS, SEED_LOGITS)
    np.testing.assert_allclose(out, [1.41436887, 1.66425455], rtol=1e-6)
    v2 = run_fn(lambda y, x: tf.nn.softmax_cross_entropy_with_logits_v2(labels=y, logits=x), SEED_LABELS, SEED_LOGITS)
    np.testing.assert_allclose(v2, [1.41436887, 1.66425455], rtol=1e-6)


def test_sparse_softmax_cross_entropy_seed_example():
    out = run_fn(lambda y, x: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x),
                 np.array([0, 2], np.int32), SEED_LOGITS)
    np.testing.assert_allclose(out, [0.46436879, 0.17425454], rtol=1e-6)
    as64 = run_fn(lambda y, x: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x),
                  np.array([0, 2], np.int64), SEED_LOGITS)
    np.testing.assert_allclose(as64, out)


def test_sigmoid_cross_entropy_seed_example():
    out = run_fn(lambda y, x: tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x),
                 np.array([1, 1, 1, 0, 0, 1, 0], np.float32), np.arange(1, 8, dtype=np.float32))
    np.testing.assert_allclose(out, [0.313262, 0.126928, 0.048587, 4.018150, 5.006715, 0.002476, 7.000911],
                               rtol=1e-5, atol=1e-6)


def test_cross_entropies_match_numpy_on_axes_and_large_logits():
    labels = RNG.dirichlet(np.ones(4), size=(3, 2)).transpose(0, 2, 1)  # distributions along axis 1
    logits = RNG.standard_normal((3, 4, 2)) * 4
    ref = -(labels * np_log_softmax(logits.transpose(0, 2, 1)).transpose(0, 2, 1)).sum(axis=1)
    for kw in ({"dim": 1}, {"axis": 1}):
        out = run_fn(lambda y, x: tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=x, **kw), labels, logits)
        np.testing.assert_allclose(out, ref, rtol=1e-12)
    big = np.array([[1000.0, -1000.0]])
    np.testing.assert_allclose(run_fn(lambda x: tf.nn.softmax_cross_entropy_with_logits(
        labels=[[0.0, 1.0]], logits=x), big), [2000.0])
    z, x = RNG.integers(0, 2, 6).astype(float), RNG.standard_normal(6) * 3
    np.testing.assert_allclose(run_fn(lambda a, b: tf.nn.sigmoid_cross_entropy_with_logits(labels=a, logits=b), z, x),
                               np_sigmoid_xent(z, x), rtol=1e-12)
    np.testing.assert_allclose(run_fn(lambda b: tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.ones([2], tf.float64), logits=b), np.array([-800.0, 800.0])), [800.0, 0.0])


def test_weighted_cross_entropy():
    z, x = RNG.integers(0, 2, 6).astype(float), RNG.standard_normal(6) * 3
    p = 1 / (1 + np.exp(-x))
    ref = -(2.5 * z * np.log(p) + (1 - z) * np.log(1 - p))
    out = run_fn(lambda a, b: tf.nn.weighted_cross_entropy_with_logits(targets=a, logits=b, pos_weight=2.5), z, x)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    check_gradients(lambda b: tf.nn.weighted_cross_entropy_with_logits(labels=z, logits=b, pos_weight=2.5), x)


def test_softmax_cross_entropy_gradient_is_softmax_minus_labels():
    labels = RNG.dirichlet(np.ones(5), size=3)
    logits = RNG.standard_normal((3, 5))
    with tf.Graph().as_default():
        y, x = tf.constant(labels), tf.constant(logits)
        v1 = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=x)
        gx, gy = tf.gradients(tf.reduce_sum(v1), [x, y])
        assert gy is None  # TF1's v1 stops gradients into labels
        with tf.Session() as sess:
            soft = np.exp(np_log_softmax(logits))
            np.testing.assert_allclose(sess.run(gx), soft - labels, atol=1e-14)
    check_gradients(lambda a, b: tf.nn.softmax_cross_entropy_with_logits_v2(labels=a, logits=b), labels, logits)
    check_gradients(lambda b: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=np.array([1, 4, 0]), logits=b),
                    logits)
    check_gradients(lambda a, b: tf.nn.sigmoid_cross_entropy_with_logits(labels=a, logits=b),
                    RNG.random((2, 3)), RNG.standard_normal((2, 3)) + 0.1)


def test_cross_entropy_batch_dim():
    with tf.Graph().as_default():
        labels = tf.placeholder(tf.int32, [None])
        logits = tf.placeholder(tf.float32, [None, 3])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        dense = tf.nn.softmax_cross_entropy_with_logits(labels=tf.one_hot(labels, 3), logits=logits)
        g, = tf.gradients(loss, [logits])
        with tf.Session() as sess:
            for n in (2, 5):
                lv, xv = RNG.integers(0, 3, n).astype(np.int32), RNG.standard_normal((n, 3)).astype(np.float32)
                ref = -np_log_softmax(xv)[np.arange(n), lv]
                a, b, c = sess.run([loss, dense, g], {labels: lv, logits: xv})
                np.testing.assert_allclose(a, ref.mean(), rtol=1e-5)
                np.testing.assert_allclose(b, ref, rtol=1e-5)
                np.testing.assert_allclose(c, (np.exp(np_log_softmax(xv)) - np.eye(3)[lv]) / n, atol=1e-6)


def test_cross_entropy_errors():
    with tf.Graph().as_default():
        logits = tf.zeros([4, 3])
        with pytest.raises(ValueError, match=r"sparse_softmax.*labels shape \[4,1\].*logits shape \[4,3\]"):
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.zeros([4, 1], tf.int32), logits=logits)
        with pytest.raises(ValueError, match="int32 or int64"):
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.zeros([4]), logits=logits)
        with pytest.raises(ValueError, match=r"sigmoid_cross_entropy.*same shape.*\[4\] vs \[4,3\]"):
            tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros([4]), logits=logits)
        with pytest.raises(ValueError, match=r"softmax_cross_entropy.*same shape"):
            tf.nn.softmax_cross_entropy_with_logits(labels=tf.zeros([4, 2]), logits=logits)
        with pytest.raises(ValueError, match="named arguments"):
            tf.nn.softmax_cross_entropy_with_logits(tf.zeros([4, 3]), logits)


def test_l2_loss():
    x = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(run_fn(tf.nn.l2_loss, x), np.sum(x ** 2) / 2)
    assert run_fn(tf.nn.l2_loss, np.array([1.0, 2.0, 3.0], np.float32)) == 7.0
    check_gradients(tf.nn.l2_loss, x)
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="l2_loss.*floating"):
            tf.nn.l2_loss(tf.constant([1, 2]))


# ----------------------------------------------------------------------------- tf.losses
def _np_reduce(losses, weights, reduction):
    w = np.broadcast_to(weights, losses.shape)
    total = np.sum(losses * w)
    R = tf.losses.Reduction
    return {R.SUM: total, R.MEAN: total / np.sum(w), R.SUM_OVER_BATCH_SIZE: total / losses.size,
            R.SUM_BY_NONZERO_WEIGHTS: total / np.count_nonzero(w), R.NONE: losses * w}[reduction]


LOSS_CASES = {
    "mean_squared_error": (tf.losses.mean_squared_error, lambda y, p: (p - y) ** 2),
    "absolute_difference": (tf.losses.absolute_difference, lambda y, p: np.abs(p - y)),
    "huber_loss": (tf.losses.huber_loss, lambda y, p: np.where(np.abs(p - y) <= 1, 0.5 * (p - y) ** 2,
                                                               np.abs(p - y) - 0.5)),
    "log_loss": (tf.losses.log_loss, lambda y, p: -(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7))),
    "hinge_loss": (tf.losses.hinge_loss, lambda y, p: np.maximum(0, 1 - (2 * y - 1) * p)),
    "sigmoid_cross_entropy": (tf.losses.sigmoid_cross_entropy, np_sigmoid_xent),
}


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_tf_losses_match_numpy_for_each_reduction(name):
    fn, ref = LOSS_CASES[name]
    labels = RNG.integers(0, 2, (4, 3)).astype(float)
    preds = RNG.uniform(0.05, 0.95, (4, 3)) * (3 if name in ("huber_loss", "mean_squared_error") else 1)
    weights = np.array([[1.0], [0.0], [2.0], [0.5]])
    for reduction in tf.losses.Reduction.all():
        out = run_fn(lambda y, p, w: fn(y, p, weights=w, reduction=reduction), labels, preds, weights)
        np.testing.assert_allclose(out, _np_reduce(ref(labels, preds), weights, reduction), rtol=1e-10)
    check_gradients(lambda p: fn(labels, p), preds)


def test_softmax_losses_weights_smoothing_and_collection():
    onehot = np.eye(3)[[0, 2, 1, 1]]
    logits = RNG.standard_normal((4, 3))
    weights = np.array([1.0, 0.0, 3.0, 1.0])
    per_example = -(onehot * np_log_softmax(logits)).sum(-1)
    with tf.Graph().as_default():
        a = tf.losses.softmax_cross_entropy(onehot, tf.constant(logits), weights=weights)
        b = tf.losses.sparse_softmax_cross_entropy(np.array([[0], [2], [1], [1]]), tf.constant(logits), weights=weights)
        smooth = tf.losses.softmax_cross_entropy(onehot, tf.constant(logits), label_smoothing=0.3)
        assert tf.losses.get_losses() == [a, b, smooth]
        assert tf.get_collection(tf.GraphKeys.LOSSES) == [a, b, smooth]
        assert a.op.name.startswith("softmax_cross_entropy_loss/")
        reg = tf.multiply(tf.constant(0.5, tf.float64), 2.0)
        tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, reg)
        assert tf.losses.get_regularization_losses() == [reg]
        total = tf.losses.get_total_loss()
        no_reg = tf.losses.get_total_loss(add_regularization_losses=False)
        with tf.Session() as sess:
            va, vb, vs, vt, vn, vr = sess.run([a, b, smooth, total, no_reg, tf.losses.get_regularization_loss()])
    expected = np.sum(per_example * weights) / 3
    np.testing.assert_allclose([va, vb], [expected, expected])
    smoothed = onehot * 0.7 + 0.1
    np.testing.assert_allclose(vs, np.mean(-(smoothed * np_log_softmax(logits)).sum(-1)))
    np.testing.assert_allclose(vt, va + vb + vs + 1.0)
    np.testing.assert_allclose([vn, vr], [va + vb + vs, 1.0])


def test_tf_losses_batch_dim_and_zero_weights():
    with tf.Graph().as_default():
        y = tf.placeholder(tf.float32, [None, 2])
        p = tf.placeholder(tf.float32, [None, 2])
        w = tf.placeholder(tf.float32, [None, 1])
        loss = tf.losses.mean_squared_error(y, p, weights=w)
        with tf.Session() as sess:
            for n in (1, 4):
                yv, pv = RNG.standard_normal((n, 2)), RNG.standard_normal((n, 2))
                wv = np.ones((n, 1))
                np.testing.assert_allclose(sess.run(loss, {y: yv, p: pv, w: wv}), np.mean((pv - yv) ** 2), rtol=1e-5)
                assert sess.run(loss, {y: yv, p: pv, w: 0 * wv}) == 0.0  # no NaN when all weights are 0


def test_tf_losses_errors_and_cosine_distance():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r"mean_squared_error.*same shape.*\[3\] vs \[4\]"):
            tf.losses.mean_squared_error(tf.zeros([3]), tf.zeros([4]))
        with pytest.raises(ValueError, match="Invalid Reduction"):
            tf.losses.absolute_difference(tf.zeros([3]), tf.zeros([3]), reduction="avg")
        with pytest.raises(ValueError, match=r"weights can not be broadcast.*\[2\].*\[3\]"):
            tf.losses.absolute_difference(tf.zeros([3]), tf.zeros([3]), weights=[1.0, 2.0])
        with pytest.raises(ValueError, match="no losses"):
            tf.losses.get_total_loss()
        with pytest.raises(ValueError, match="axis"):
            tf.losses.cosine_distance(tf.zeros([3]), tf.zeros([3]))
    y = np.array([[1.0, 0.0], [0.6, 0.8]])
    p = np.array([[0.6, 0.8], [0.6, 0.8]])
    out = run_fn(lambda a, b: tf.losses.cosine_distance(a, b, axis=1), y, p)
    np.testing.assert_allclose(out, np.mean([1 - 0.6, 0.0]))


# ----------------------------------------------------------------------------- clipping
def test_clip_by_value_seed_example_and_gradient():
    with tf.Graph().as_default():
        with tf.Session() as sess:
            np.testing.assert_array_equal(sess.run(tf.clip_by_value(range(10), 2, 8)), [2, 2, 2, 3, 4, 5, 6, 7, 8, 8])
    x = np.array([-1.0, 0.2, 0.5, 3.0])
    with tf.Graph().as_default():
        t = tf.constant(x)
        g, = tf.gradients(tf.reduce_sum(tf.clip_by_value(t, 0.0, 1.0)), [t])
        with tf.Session() as sess:
            np.testing.assert_array_equal(sess.run(g), [0, 1, 1, 0])
    check_gradients(lambda a, lo, hi: tf.clip_by_value(a, lo, hi), x, np.array([0.0, 0.0, 0.0, 0.0]),
                    np.array([1.0, 1.0, 1.0, 1.0]))
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r"clip_by_value.*broadcast t \[3\] to \[2,3\]"):
            tf.clip_by_value(tf.zeros([3]), tf.zeros([2, 1]), 1.0)


def test_clip_by_norm():
    x = np.array([[3.0, 4.0], [0.3, 0.4]])
    np.testing.assert_allclose(run_fn(lambda a: tf.clip_by_norm(a, 1.0), x), x / np.linalg.norm(x))
    np.testing.assert_allclose(run_fn(lambda a: tf.clip_by_norm(a, 1.0, axes=[1]), x), [[0.6, 0.8], [0.3, 0.4]])
    np.testing.assert_allclose(run_fn(lambda a: tf.clip_by_norm(a, 10.0), x), x)
    check_gradients(lambda a: tf.clip_by_norm(a, 1.0, axes=1), x)
    with tf.Graph().as_default():
        z = tf.zeros([3], tf.float64)
        g, = tf.gradients(tf.reduce_sum(tf.clip_by_norm(z, 1.0)), [z])
        v = tf.placeholder(tf.float32, [None, 2])
        clipped = tf.clip_by_norm(v, 1.0, axes=[1])
        with tf.Session() as sess:
            assert np.all(np.isfinite(sess.run(g)))
            for n in (1, 3):
                out = sess.run(clipped, {v: np.tile([[3.0, 4.0]], (n, 1))})
                np.testing.assert_allclose(out, np.tile([[0.6, 0.8]], (n, 1)), rtol=1e-6)


def test_global_norm_and_clip_by_global_norm():
    a, b = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])
    with tf.Graph().as_default():
        ta, tb = tf.constant(a), tf.constant(b)
        norm = tf.global_norm([ta, None, tb])
        clipped, gn = tf.clip_by_global_norm([ta, None, tb], 1.0)
        assert clipped[1] is None
        same, _ = tf.clip_by_global_norm((ta, tb), 10.0)
        forced, used = tf.clip_by_global_norm([ta], 1.0, use_norm=tf.constant(2.0, tf.float64))
        inf, _ = tf.clip_by_global_norm([ta], 1.0, use_norm=tf.constant(np.inf, tf.float64))
        with tf.Session() as sess:
            vn, (ca, _, cb), vgn, (sa, sb), (fa,), vu, (ia,) = sess.run(
                [norm, [clipped[0], tf.constant(0), clipped[2]], gn, same, forced, used, inf])
    assert vn == 5.0 and vgn == 5.0 and vu == 2.0
    np.testing.assert_allclose(ca, a / 5)
    np.testing.assert_allclose(cb, b / 5)
    np.testing.assert_allclose(sa, a)
    np.testing.assert_allclose(sb, b)
    np.testing.assert_allclose(fa, a / 2)
    assert np.all(np.isnan(ia))
    check_gradients(lambda x, y: tf.clip_by_global_norm([x, y], 1.0)[0][0] * 2 + tf.reduce_sum(
        tf.clip_by_global_norm([x, y], 1.0)[0][1]), RNG.standard_normal(3), RNG.standard_normal(2))
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match="t_list should be a sequence"):
            tf.clip_by_global_norm(tf.zeros([3]), 1.0)
        with pytest.raises(ValueError, match="no tensors"):
            tf.global_norm([None])


def test_clip_by_average_norm():
    x = np.array([3.0, 4.0])  # norm 5, average norm 2.5
    np.testing.assert_allclose(run_fn(lambda a: tf.clip_by_average_norm(a, 1.0), x), x / 2.5)
    np.testing.assert_allclose(run_fn(lambda a: tf.clip_by_average_norm(a, 5.0), x), x)
    check_gradients(lambda a: tf.clip_by_average_norm(a, 1.0), x)


def test_sparse_xent_label_out_of_range_fails_the_step():
    with tf.Graph().as_default():
        labels = tf.placeholder(tf.int32, [None])
        logits = tf.placeholder(tf.float32, [None, 3])
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        with tf.Session() as sess:
            ok = sess.run(loss, {labels: [0, 2], logits: np.zeros((2, 3))})
            np.testing.assert_allclose(ok, [np.log(3.0)] * 2, rtol=1e-6)
            with pytest.raises(ValueError, match=r"label.*value of 3 which is outside the valid range of \[0, 3\)"):
                sess.run(loss, {labels: [0, 3], logits: np.zeros((2, 3))})

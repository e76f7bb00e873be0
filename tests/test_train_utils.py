"""Global step, learning-rate schedules, ExponentialMovingAverage and regularizers."""
import math

import numpy as np
import pytest

from compiler import tf


def _session():
    sess = tf.Session()
    sess.run(tf.global_variables_initializer())
    return sess


def _values_over_steps(make_lr, steps):
    """Evaluate the schedule built by ``make_lr(global_step)`` at each global step value."""
    step = tf.train.get_or_create_global_step()
    lr = make_lr(step)
    sess = _session()
    out = []
    for s in steps:
        step.load(s, sess)
        out.append(sess.run(lr))
    return np.array(out)


# ----------------------------------------------------------------------------- global step
def test_global_step_variable():
    assert tf.train.get_global_step() is None
    step = tf.train.get_or_create_global_step()
    assert step.op.name == "global_step" and step.dtype == tf.int64 and step.shape.as_list() == []
    assert not step.trainable and step in tf.global_variables()
    assert tf.get_collection(tf.GraphKeys.GLOBAL_STEP) == [step]
    assert tf.train.get_global_step() is step and tf.train.get_or_create_global_step() is step
    with pytest.raises(ValueError, match='"global_step" already exists'):
        tf.train.create_global_step()
    sess = _session()
    assert tf.train.global_step(sess, step) == 0


def test_global_step_found_by_name_and_checked():
    v = tf.Variable(0, name="global_step", trainable=False)
    assert tf.train.get_global_step() is v
    with tf.Graph().as_default():
        tf.Variable(0.0, name="global_step")
        with pytest.raises(TypeError, match="integer type"):
            tf.train.get_global_step()


# ----------------------------------------------------------------------------- schedules
def test_exponential_decay_seed_staircase():
    """SEEDS: exponential_decay(0.1, step, 100, 0.96, staircase=True) -> x0.96 every 100 steps."""
    steps = [0, 1, 99, 100, 150, 199, 200, 350]
    got = _values_over_steps(lambda s: tf.train.exponential_decay(0.1, s, 100, 0.96, staircase=True), steps)
    np.testing.assert_allclose(got, [0.1 * 0.96 ** (s // 100) for s in steps], rtol=1e-6)


def test_exponential_decay_continuous():
    steps = [0, 30, 100, 250]
    got = _values_over_steps(lambda s: tf.train.exponential_decay(0.5, s, 100, 0.9), steps)
    np.testing.assert_allclose(got, [0.5 * 0.9 ** (s / 100) for s in steps], rtol=1e-6)


def test_other_decays():
    steps = [0, 5, 10, 25, 40]
    got = _values_over_steps(lambda s: [
        tf.train.natural_exp_decay(0.1, s, 10, 0.5),
        tf.train.natural_exp_decay(0.1, s, 10, 0.5, staircase=True),
        tf.train.inverse_time_decay(0.1, s, 10, 0.5),
        tf.train.inverse_time_decay(0.1, s, 10, 0.5, staircase=True),
        tf.train.polynomial_decay(0.1, s, 20, 0.01, power=2.0),
        tf.train.polynomial_decay(0.1, s, 20, 0.01, power=1.0, cycle=True),
        tf.train.cosine_decay(0.1, s, 20, alpha=0.1),
    ], steps)
    for row, s in zip(got, steps):
        poly_steps = 20 * max(math.ceil(s / 20), 1)
        want = [0.1 * math.exp(-0.5 * s / 10), 0.1 * math.exp(-0.5 * (s // 10)),
                0.1 / (1 + 0.5 * s / 10), 0.1 / (1 + 0.5 * (s // 10)),
                0.09 * (1 - min(s, 20) / 20) ** 2 + 0.01,
                0.09 * (1 - s / poly_steps) + 0.01,
                0.1 * (0.9 * 0.5 * (1 + math.cos(math.pi * min(s, 20) / 20)) + 0.1)]
        np.testing.assert_allclose(row, want, rtol=1e-5, err_msg=f"step {s}")


def test_piecewise_constant():
    steps = [0, 100, 101, 200, 201, 1000]
    got = _values_over_steps(lambda s: tf.train.piecewise_constant(s, [100, 200], [1.0, 0.5, 0.1]), steps)
    np.testing.assert_allclose(got, [1.0, 1.0, 0.5, 0.5, 0.1, 0.1])
    step = tf.train.get_global_step()
    with pytest.raises(ValueError, match="length of boundaries"):
        tf.train.piecewise_constant(step, [100], [1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="Boundaries \\(float32\\) must have the same dtype as x \\(int64\\)"):
        tf.train.piecewise_constant(step, [tf.constant(1.5)], [1.0, 0.5])


def test_decay_needs_a_global_step():
    with pytest.raises(ValueError, match="global_step is required for exponential_decay"):
        tf.train.exponential_decay(0.1, None, 100, 0.96)


# ----------------------------------------------------------------------------- moving averages
def test_ema_seed_example_in_separate_runs():
    """SEEDS: w = 1, EMA(0.9), w += 1 before each apply -> shadow 1.1, 1.29, 1.561."""
    w = tf.Variable(1.0, name="w")
    ema = tf.train.ExponentialMovingAverage(0.9)
    increment = tf.assign_add(w, 1.0)
    update = ema.apply([w])
    shadow = ema.average(w)
    assert shadow.op.name == "w/ExponentialMovingAverage" and ema.average_name(w) == shadow.op.name
    assert not shadow.trainable and shadow in tf.global_variables() and shadow not in tf.trainable_variables()
    assert tf.moving_average_variables() == [w]
    sess = _session()
    assert sess.run(shadow) == 1.0  # starts at the variable's initial value
    for want in (1.1, 1.29, 1.561):
        sess.run(increment)
        sess.run(update)
        np.testing.assert_allclose(sess.run(shadow), want, rtol=1e-6)


def test_ema_seed_example_under_control_dependencies_in_one_run():
    w = tf.Variable(1.0, name="w")
    ema = tf.train.ExponentialMovingAverage(0.9)
    increment = tf.assign_add(w, 1.0)
    with tf.control_dependencies([increment]):
        update = ema.apply([w])
    sess = _session()
    for i, want in enumerate((1.1, 1.29, 1.561)):
        sess.run(update)
        np.testing.assert_allclose(sess.run([w, ema.average(w)]), [2.0 + i, want], rtol=1e-6)


def test_ema_after_the_train_op_averages_the_updated_weights():
    w = tf.Variable([1.0, -2.0], name="w")
    train = tf.train.GradientDescentOptimizer(0.25).minimize(tf.reduce_sum(tf.square(w)))
    ema = tf.train.ExponentialMovingAverage(0.5)
    with tf.control_dependencies([train]):
        train_and_average = ema.apply(tf.trainable_variables())
    sess = _session()
    sess.run(train_and_average)
    np.testing.assert_allclose(sess.run(w), [0.5, -1.0])  # w -= 0.25 * 2w
    np.testing.assert_allclose(sess.run(ema.average(w)), [0.75, -1.5])  # averages the new w


def test_ema_num_updates_caps_the_decay():
    w = tf.Variable(0.0, name="w")
    step = tf.train.get_or_create_global_step()
    ema = tf.train.ExponentialMovingAverage(0.99, num_updates=step)
    update = ema.apply()  # default: trainable variables
    sess = _session()
    shadow, value = 0.0, 0.0
    for n in range(3):
        value += 4.0
        sess.run(tf.assign(w, value))
        step.load(n, sess)
        sess.run(update)
        decay = min(0.99, (1.0 + n) / (10.0 + n))
        shadow -= (1 - decay) * (shadow - value)
        np.testing.assert_allclose(sess.run(ema.average(w)), shadow, rtol=1e-6)


def test_ema_of_a_tensor_with_zero_debias():
    x = tf.placeholder(tf.float32, [2])
    ema = tf.train.ExponentialMovingAverage(0.5, zero_debias=True)
    update = ema.apply([x])
    assert ema.average(x).op.name == "Placeholder/ExponentialMovingAverage"
    sess = _session()
    biased = np.zeros(2)
    for t, value in enumerate([np.array([4.0, 2.0]), np.array([8.0, 0.0])], start=1):
        sess.run(update, {x: value})
        biased -= (biased - value) * 0.5
        np.testing.assert_allclose(sess.run(ema.average(x)), biased / (1 - 0.5 ** t), rtol=1e-6)


def test_ema_variables_to_restore_and_errors():
    w = tf.Variable(1.0, name="w")
    other = tf.Variable(2.0, name="other", trainable=False)
    ema = tf.train.ExponentialMovingAverage(0.9)
    ema.apply([w])
    assert ema.variables_to_restore() == {"w/ExponentialMovingAverage": w, "other": other}
    with pytest.raises(TypeError, match="must be half, float, or double"):
        ema.apply([tf.Variable(1, name="int_var")])


# ----------------------------------------------------------------------------- regularizers
W = np.array([[1.0, -2.0], [3.0, -0.5]], np.float32)


def test_contrib_regularizers_values():
    w = tf.constant(W)
    l1 = tf.contrib.layers.l1_regularizer(0.1)(w)
    l2 = tf.contrib.layers.l2_regularizer(0.2)(w)
    both = tf.contrib.layers.l1_l2_regularizer(0.1, 0.2)(w)
    sess = tf.Session()
    got = sess.run([l1, l2, both])
    want_l1, want_l2 = 0.1 * np.abs(W).sum(), 0.2 * (W.astype(np.float64) ** 2).sum() / 2
    np.testing.assert_allclose(got, [want_l1, want_l2, want_l1 + want_l2], rtol=1e-6)
    assert tf.contrib.layers.l2_regularizer(0.0)(w) is None


def test_keras_regularizers_have_no_half_factor():
    w = tf.constant(W)
    sess = tf.Session()
    got = sess.run([tf.keras.regularizers.l2(0.2)(w), tf.keras.regularizers.l1(0.1)(w),
                    tf.keras.regularizers.l1_l2(0.1, 0.2)(w)])
    sq, ab = (W.astype(np.float64) ** 2).sum(), np.abs(W).sum()
    np.testing.assert_allclose(got, [0.2 * sq, 0.1 * ab, 0.1 * ab + 0.2 * sq], rtol=1e-6)


def test_regularizer_scale_validation():
    with pytest.raises(ValueError, match="scale cannot be an integer: 1"):
        tf.contrib.layers.l2_regularizer(1)
    with pytest.raises(ValueError, match="Setting a scale less than 0 on a regularizer: -0.5"):
        tf.contrib.layers.l1_regularizer(-0.5)


def test_get_variable_regularizer_collection_and_training():
    with tf.variable_scope("dense", regularizer=tf.contrib.layers.l2_regularizer(0.5)):
        w = tf.get_variable("w", [2, 2], initializer=tf.constant_initializer(W))
    losses = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
    assert len(losses) == 1 and losses[0].name.startswith("dense/w/Regularizer/")
    total = tf.losses.get_regularization_loss()
    train = tf.train.GradientDescentOptimizer(0.1).minimize(total)
    sess = _session()
    np.testing.assert_allclose(sess.run(total), 0.5 * (W.astype(np.float64) ** 2).sum() / 2, rtol=1e-6)
    sess.run(train)
    np.testing.assert_allclose(sess.run(w), W - 0.1 * 0.5 * W, rtol=1e-6)  # d/dw 0.5*|w|^2/2 = 0.5*w


def test_apply_regularization():
    a = tf.constant(W)
    b = tf.constant([1.0, -1.0])
    total = tf.contrib.layers.apply_regularization(tf.contrib.layers.l1_regularizer(0.1), [a, b])
    assert tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES) == [total]
    np.testing.assert_allclose(tf.Session().run(total), 0.1 * (np.abs(W).sum() + 2), rtol=1e-6)
    with pytest.raises(ValueError, match="No weights to regularize"):
        tf.contrib.layers.apply_regularization(tf.contrib.layers.l1_regularizer(0.1))

"""Training with RNNs: a small LSTM train step on the compiled backend vs the interpreter, and
the TensorFlow-Examples ``recurrent_network.py`` program (an LSTM over the 28 rows of an
MNIST image, tf.unstack + rnn.static_rnn(BasicLSTMCell)) learning on MNIST-shaped data."""
import time

import numpy as np

from compiler import tf

rnn = tf.contrib.rnn


def _lstm_train_losses(config, steps=3):
    """A 3-step LSTM regression (dynamic_rnn with sequence_length: its selects run too) trained
    with SGD; the losses of ``steps`` train steps."""
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (4, 3, 2)).astype(np.float32)
    ys = rng.uniform(-1, 1, (4, 1)).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3, 2])
        y = tf.placeholder(tf.float32, [None, 1])
        lengths = tf.placeholder(tf.int32, [None])
        with tf.variable_scope("m", initializer=tf.random_uniform_initializer(-0.5, 0.5, seed=2)):
            _, state = tf.nn.dynamic_rnn(rnn.BasicLSTMCell(4), x, sequence_length=lengths, dtype=tf.float32)
            pred = tf.layers.dense(state.h, 1, kernel_initializer=tf.constant_initializer(0.3))
        loss = tf.reduce_mean(tf.square(pred - y))
        train = tf.train.GradientDescentOptimizer(0.5).minimize(loss)
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            return [sess.run([loss, train], {x: xs, y: ys, lengths: [3, 1, 2, 3]})[0] for _ in range(steps)]


def test_lstm_train_step_compiled_matches_interpreter():
    compiled = _lstm_train_losses({"backend": "compiled"})
    interpreted = _lstm_train_losses({"backend": "interpreter"})
    np.testing.assert_allclose(compiled, interpreted, rtol=1e-5, atol=1e-6)
    assert interpreted[-1] < interpreted[0]


# ----------------------------------------------------------------------------- recurrent_network.py
NUM_INPUT, TIMESTEPS, NUM_HIDDEN, NUM_CLASSES = 28, 28, 16, 10


def mnist_rows_batch(rng, n):
    """MNIST-shaped data: each class is a noisy fixed 28x28 pattern, flattened to 784."""
    centers = np.random.default_rng(99).random((NUM_CLASSES, 784), dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES, n)
    x = centers[labels] + 0.3 * rng.standard_normal((n, 784), dtype=np.float32)
    return x, np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def recurrent_network(x):
    """TensorFlow-Examples' RNN(x, weights, biases), with its tf.unstack + static_rnn."""
    weights = {"out": tf.Variable(tf.random_normal([NUM_HIDDEN, NUM_CLASSES], seed=1))}
    biases = {"out": tf.Variable(tf.random_normal([NUM_CLASSES], seed=2))}
    x = tf.unstack(x, TIMESTEPS, 1)
    lstm_cell = rnn.BasicLSTMCell(NUM_HIDDEN, forget_bias=1.0)
    outputs, states = rnn.static_rnn(lstm_cell, x, dtype=tf.float32)
    return tf.matmul(outputs[-1], weights["out"]) + biases["out"]


def test_recurrent_network_tutorial_learns():
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        X = tf.placeholder("float", [None, TIMESTEPS, NUM_INPUT])
        Y = tf.placeholder("float", [None, NUM_CLASSES])
        logits = recurrent_network(X)
        prediction = tf.nn.softmax(logits)
        loss_op = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(logits=logits, labels=Y))
        train_op = tf.train.AdamOptimizer(learning_rate=0.01).minimize(loss_op)
        correct = tf.equal(tf.argmax(prediction, 1), tf.argmax(Y, 1))
        accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
        test_x, test_y = mnist_rows_batch(np.random.default_rng(7), 64)
        test_feed = {X: test_x.reshape((-1, TIMESTEPS, NUM_INPUT)), Y: test_y}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            loss0 = sess.run(loss_op, test_feed)
            start = time.time()
            for _ in range(30):
                batch_x, batch_y = mnist_rows_batch(rng, 32)
                sess.run(train_op, {X: batch_x.reshape((-1, TIMESTEPS, NUM_INPUT)), Y: batch_y})
            loss1, acc = sess.run([loss_op, accuracy], test_feed)
            print(f"30 steps in {time.time() - start:.1f}s: loss {loss0:.3f} -> {loss1:.3f}, accuracy {acc:.2f}")
    assert loss1 < 0.5 * loss0
    assert acc > 0.5

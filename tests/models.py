"""Small model training steps as IR, shared by pass / codegen tests.

Each builder makes its graph in a fresh ``tf.Graph``, lowers one training step and returns
``(fn, state, feeds)`` ready for ``run_function(fn, state, feeds)``: ``state`` holds the
initialized value of every variable the step reads, ``feeds`` random inputs of ``batch`` rows.
"""
from __future__ import annotations

import numpy as np

from compiler import tf
from compiler.ir.from_graph import lower_graph


def _finish(loss, train, feeds, name="train_step"):
    """Lower ``loss`` + ``train`` over the fed placeholders; read the initial state in a session."""
    fn = lower_graph([loss], [train], list(feeds), name=name)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        state = {p.key: sess.variable_value(p.key) for p in fn.state_in()}
    return fn, state, {t.name: value for t, value in feeds.items()}


def _images_and_labels(rng, batch, one_hot):
    """MNIST-shaped random inputs: x f32[batch,784], labels int64 (or one-hot f32[batch,10])."""
    images = rng.random((batch, 784), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    return images, (np.eye(10, dtype=np.float32)[labels] if one_hot else labels)


def mlp_tensors(seed=0):
    """Build the 784→256→128→10 ReLU MLP (sparse softmax cross-entropy, Adam 1e-3) in the
    current default graph; returns its x, labels, logits, loss and train."""
    tf.set_random_seed(seed)
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    h = tf.layers.dense(x, 256, activation=tf.nn.relu, name="fc1")
    h = tf.layers.dense(h, 128, activation=tf.nn.relu, name="fc2")
    logits = tf.layers.dense(h, 10, name="logits")
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = tf.reduce_mean(xent, name="loss")
    train = tf.train.AdamOptimizer(1e-3).minimize(loss, name="train")
    return {"x": x, "labels": labels, "logits": logits, "loss": loss, "train": train}


def mlp_train_step(batch=8, seed=0):
    """The MLP of ``mlp_tensors`` as one training step."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        t = mlp_tensors(seed)
        x, labels, loss, train = t["x"], t["labels"], t["loss"], t["train"]
        images, ys = _images_and_labels(rng, batch, one_hot=False)
        return _finish(loss, train, {x: images, labels: ys})


def _weight(shape):
    return tf.Variable(tf.truncated_normal(shape, stddev=0.1))


def _bias(shape):
    return tf.Variable(tf.constant(0.1, shape=shape))


def _conv_relu_pool(x, w, b):
    """Seed 002: SAME 5x5 conv + bias + relu, then 2x2 max pool."""
    h = tf.nn.relu(tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME") + b)
    return tf.nn.max_pool(h, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")


def cnn_tensors(seed=0):
    """Build the seed-002 MNIST CNN in the current default graph: two conv/pool blocks,
    dense 1024 + dropout, dense 10, Adam 1e-4; returns x, y (one-hot), keep_prob, loss, train."""
    tf.set_random_seed(seed)
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    y = tf.placeholder(tf.float32, [None, 10], name="y_actual")
    keep_prob = tf.placeholder(tf.float32, [], name="keep_prob")
    h = _conv_relu_pool(tf.reshape(x, [-1, 28, 28, 1]), _weight([5, 5, 1, 32]), _bias([32]))
    h = _conv_relu_pool(h, _weight([5, 5, 32, 64]), _bias([64]))
    h = tf.nn.relu(tf.matmul(tf.reshape(h, [-1, 7 * 7 * 64]), _weight([3136, 1024])) + _bias([1024]))
    h = tf.nn.dropout(h, keep_prob)
    logits = tf.matmul(h, _weight([1024, 10])) + _bias([10])
    loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    train = tf.train.AdamOptimizer(1e-4).minimize(loss, name="train")
    return {"x": x, "y": y, "keep_prob": keep_prob, "loss": loss, "train": train}


def train_feeds(model, batch, seed):
    """Feeds (by tensor name) for a step of ``mlp_tensors`` ("mlp") or ``cnn_tensors`` ("cnn"):
    random images and labels (one-hot for the CNN, with keep_prob 0.5)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, batch)
    feeds = {"x:0": rng.random((batch, 784), dtype=np.float32)}
    if model == "mlp":
        feeds["labels:0"] = labels.astype(np.int64)
    else:
        feeds.update({"y_actual:0": np.eye(10, dtype=np.float32)[labels], "keep_prob:0": np.float32(0.5)})
    return feeds


def cnn_train_step(batch=8, seed=0, keep_prob_value=0.5):
    """The seed-002 CNN of ``cnn_tensors`` as one training step."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        t = cnn_tensors(seed)
        images, ys = _images_and_labels(rng, batch, one_hot=True)
        return _finish(t["loss"], t["train"], {t["x"]: images, t["y"]: ys, t["keep_prob"]: np.float32(keep_prob_value)})


def linear_regression_step(batch=8, seed=0):
    """y = x·w + b on 3 features, mean squared error, plain gradient descent 0.1."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        y = tf.placeholder(tf.float32, [None, 1], name="y")
        w = tf.Variable(tf.zeros([3, 1]), name="w")
        b = tf.Variable(tf.zeros([1]), name="b")
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y), name="loss")
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss, name="train")
        xs = rng.standard_normal((batch, 3)).astype(np.float32)
        ys = (xs @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
        return _finish(loss, train, {x: xs, y: ys})


def lenet_train_step(batch=8, seed=0):
    """LeNet-5 on 28x28 MNIST with tf.layers: conv6 SAME, pool, conv16 VALID, pool, 120, 84, 10; momentum SGD."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        x = tf.placeholder(tf.float32, [None, 784], name="x")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        h = tf.reshape(x, [-1, 28, 28, 1])
        h = tf.layers.conv2d(h, 6, 5, padding="same", activation=tf.nn.relu, name="conv1")
        h = tf.layers.max_pooling2d(h, 2, 2, name="pool1")
        h = tf.layers.conv2d(h, 16, 5, padding="valid", activation=tf.nn.relu, name="conv2")
        h = tf.layers.max_pooling2d(h, 2, 2, name="pool2")
        h = tf.reshape(h, [-1, 5 * 5 * 16])
        h = tf.layers.dense(h, 120, activation=tf.nn.relu, name="fc1")
        h = tf.layers.dense(h, 84, activation=tf.nn.relu, name="fc2")
        logits = tf.layers.dense(h, 10, name="logits")
        xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        loss = tf.reduce_mean(xent, name="loss")
        train = tf.train.MomentumOptimizer(0.01, 0.9).minimize(loss, name="train")
        images, ys = _images_and_labels(rng, batch, one_hot=False)
        return _finish(loss, train, {x: images, labels: ys})


def lstm_tensors(steps=28, hidden=128, inputs=28, classes=10, optimizer="adam", seed=0):
    """Build an unrolled ``steps``-step LSTM over MNIST rows in plain TF1 ops, as
    ``BasicLSTMCell`` computes it: one kernel [inputs+hidden, 4*hidden] and one bias shared by
    every step, gates i, j, f, o with forget bias 1.0; softmax over ``classes`` on the last
    output, sparse cross-entropy, Adam 1e-3 (or plain gradient descent 0.1 with
    ``optimizer="sgd"``).  Returns x f32[None, steps, inputs], labels, loss and train."""
    tf.set_random_seed(seed)
    x = tf.placeholder(tf.float32, [None, steps, inputs], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    kernel = tf.Variable(tf.truncated_normal([inputs + hidden, 4 * hidden], stddev=0.1), name="lstm_kernel")
    bias = tf.Variable(tf.zeros([4 * hidden]), name="lstm_bias")
    rows = [tf.reshape(r, [-1, inputs]) for r in tf.split(x, steps, axis=1)]
    c = h = tf.zeros_like(tf.matmul(rows[0], kernel[:inputs, :hidden]))
    for row in rows:
        gates = tf.matmul(tf.concat([row, h], 1), kernel) + bias
        i, j, f, o = tf.split(gates, 4, axis=1)
        c = c * tf.sigmoid(f + 1.0) + tf.sigmoid(i) * tf.tanh(j)
        h = tf.tanh(c) * tf.sigmoid(o)
    w_out = tf.Variable(tf.truncated_normal([hidden, classes], stddev=0.1), name="out_w")
    b_out = tf.Variable(tf.zeros([classes]), name="out_b")
    logits = tf.matmul(h, w_out) + b_out
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = tf.reduce_mean(xent, name="loss")
    opt = tf.train.AdamOptimizer(1e-3) if optimizer == "adam" else tf.train.GradientDescentOptimizer(0.1)
    return {"x": x, "labels": labels, "loss": loss, "train": opt.minimize(loss, name="train")}


def lstm_feeds(steps=28, batch=8, inputs=28, classes=10, seed=0):
    """Feeds (by tensor name) for ``lstm_tensors``: random rows in [0, 1) and labels."""
    rng = np.random.default_rng(seed)
    return {"x:0": rng.random((batch, steps, inputs), dtype=np.float32),
            "labels:0": rng.integers(0, classes, batch).astype(np.int64)}

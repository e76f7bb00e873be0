"""The benchmarked models written with Kiln's graph API (same shapes as bench/peers.py)."""
from __future__ import annotations

import numpy as np

from compiler import tf


def _dense(x, units, name, activation=None):
    return tf.layers.dense(x, units, activation=activation, name=name)


def build(model):
    """Returns (feeds [x, labels, ...], loss, train op, values of the feeds after x and labels)."""
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    extra = {}
    if model == "mlp":
        h = _dense(x, 256, "fc1", tf.nn.relu)
        h = _dense(h, 128, "fc2", tf.nn.relu)
        logits = _dense(h, 10, "logits")
        lr = 1e-3
    else:
        keep_prob = tf.placeholder(tf.float32, [], name="keep_prob")
        extra[keep_prob.name] = np.float32(0.5)
        img = tf.reshape(x, [-1, 28, 28, 1])
        h = tf.layers.conv2d(img, 32, 5, padding="same", activation=tf.nn.relu, name="conv1")
        h = tf.layers.max_pooling2d(h, 2, 2)
        h = tf.layers.conv2d(h, 64, 5, padding="same", activation=tf.nn.relu, name="conv2")
        h = tf.layers.max_pooling2d(h, 2, 2)
        h = _dense(tf.reshape(h, [-1, 3136]), 1024, "fc1", tf.nn.relu)
        h = tf.nn.dropout(h, keep_prob)
        logits = _dense(h, 10, "logits")
        lr = 1e-4
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    train = tf.train.AdamOptimizer(lr).minimize(loss, name="train")
    extra_feeds = [tf.get_default_graph().get_tensor_by_name(name) for name in extra]
    return [x, labels] + extra_feeds, loss, train, extra

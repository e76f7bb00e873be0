"""MNIST CNN (seed 002 §4): conv5×5×32+relu+pool → conv5×5×64+relu+pool → fc 3136→1024 relu
→ dropout(0.5) → fc 10; Adam 1e-4, batch 50.

A model file (docs/model-files.md): ``build()`` returns ``train``, ``eval`` and ``predict``;
features ``x`` [N, 784] float32 (reshaped to 28×28×1 in the graph), labels ``labels`` [N]
int64:

    kiln compile samples/mnist_cnn.py -o build/mnist_cnn

Dropout: the seed feeds a ``keep_prob`` placeholder (0.5 training, 1.0 testing), but a
trainer feeds only features and labels.  So the layers are built once as layer objects
and applied twice to ``x``, sharing their variables: once with dropout (the ``train``
entry's ``loss``/``accuracy``) and once without (``eval``'s ``eval_loss``/``eval_accuracy``
and ``predict``'s ``probabilities``).  Run directly it trains a few steps on synthetic
MNIST-shaped data through ``tf.Session``:

    python samples/mnist_cnn.py --steps 10
"""
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402
from common import classifier_entries, demo  # noqa: E402


def make_layers():
    """The network's layers (created once; calling them again reuses their variables)."""
    kw = {"kernel_initializer": tf.truncated_normal_initializer(stddev=0.1),
          "bias_initializer": tf.constant_initializer(0.1)}
    return {
        "conv1": tf.layers.Conv2D(32, 5, padding="same", activation=tf.nn.relu, name="conv1", **kw),
        "pool1": tf.layers.MaxPooling2D(2, 2, name="pool1"),
        "conv2": tf.layers.Conv2D(64, 5, padding="same", activation=tf.nn.relu, name="conv2", **kw),
        "pool2": tf.layers.MaxPooling2D(2, 2, name="pool2"),
        "fc1": tf.layers.Dense(1024, activation=tf.nn.relu, name="fc1", **kw),
        "dropout": tf.layers.Dropout(0.5, name="dropout"),
        "fc2": tf.layers.Dense(10, name="fc2", **kw),
    }


def logits_of(layers, x, training):
    """Apply the layers to x [N, 784]; dropout only when ``training`` (a python bool)."""
    h = tf.reshape(x, [-1, 28, 28, 1])
    h = layers["pool1"](layers["conv1"](h))
    h = layers["pool2"](layers["conv2"](h))
    h = layers["fc1"](tf.reshape(h, [-1, 7 * 7 * 64]))
    h = layers["dropout"](h, training=training)
    return layers["fc2"](h)


def metrics(logits, labels, prefix=""):
    """(loss, accuracy) tensors named ``<prefix>loss`` and ``<prefix>accuracy``."""
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                          name=prefix + "loss")
    correct = tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32)
    return loss, tf.reduce_mean(correct, name=prefix + "accuracy")


def build_graph(learning_rate=1e-4):
    """The training graph; returns its named tensors and ops."""
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    layers = make_layers()
    loss, accuracy = metrics(logits_of(layers, x, training=True), labels)
    train = tf.train.AdamOptimizer(learning_rate).minimize(loss, name="train")
    test_logits = logits_of(layers, x, training=False)
    eval_loss, eval_accuracy = metrics(test_logits, labels, "eval_")
    probabilities = tf.nn.softmax(test_logits, name="probabilities")
    return {"x": x, "labels": labels, "loss": loss, "accuracy": accuracy, "train": train,
            "eval_loss": eval_loss, "eval_accuracy": eval_accuracy, "probabilities": probabilities}


def build(learning_rate=1e-4):
    """The model-file entry points (``kiln compile``): train, eval and predict."""
    return classifier_entries(build_graph(learning_rate), eval_loss="eval_loss", eval_accuracy="eval_accuracy")


def main(argv=None):
    demo(build_graph, __doc__, argv, steps=10, batch_size=50)


if __name__ == "__main__":
    main()

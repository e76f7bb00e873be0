"""MNIST softmax regression (seed 002 §2): 784→10, gradient descent 0.01, batch 100.

A model file (docs/model-files.md): ``build()`` returns the entry points ``train``, ``eval``
and ``predict``; features ``x`` [N, 784] float32, labels ``labels`` [N] int64 (so ``--data
digits`` works through the trainer's resizing):

    kiln compile samples/mnist_softmax.py -o build/mnist_softmax

Run directly it trains a few steps on synthetic MNIST-shaped data through ``tf.Session``:

    python samples/mnist_softmax.py --steps 20
"""
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402
from common import classifier_entries, demo  # noqa: E402


def build_graph(learning_rate=0.01):
    """The training graph; returns its named tensors and ops."""
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    W = tf.Variable(tf.zeros([784, 10]), name="W")
    b = tf.Variable(tf.zeros([10]), name="b")
    logits = tf.matmul(x, W) + b
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32), name="accuracy")
    train = tf.train.GradientDescentOptimizer(learning_rate).minimize(loss, name="train")
    probabilities = tf.nn.softmax(logits, name="probabilities")
    return {"x": x, "labels": labels, "loss": loss, "accuracy": accuracy, "train": train,
            "probabilities": probabilities}


def build(learning_rate=0.01):
    """The model-file entry points (``kiln compile``): train, eval and predict."""
    return classifier_entries(build_graph(learning_rate))


def main(argv=None):
    demo(build_graph, __doc__, argv, steps=20, batch_size=100)


if __name__ == "__main__":
    main()

"""MNIST MLP (seed 003): 784→256→128→10 ReLU, truncated_normal(σ=0.1) weights, Adam, batch 128.

As a model file (docs/model-files.md), ``build()`` returns the entry points ``train``,
``eval`` and ``predict``:

    kiln compile samples/mnist_mlp.py -o build/mnist_mlp

The graph has tensors ``x``, ``labels``, ``loss``, ``accuracy``, ``probabilities`` and the op
``train`` (``kiln ir`` / ``kiln inspect`` can fetch them by name).  Run directly it trains a
few steps on synthetic MNIST-shaped data through ``tf.Session``:

    python samples/mnist_mlp.py --steps 20
"""
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402
from common import classifier_entries, demo  # noqa: E402


def dense(x, units, name, activation=None):
    with tf.variable_scope(name):
        w = tf.get_variable("kernel", [x.shape[-1], units], initializer=tf.truncated_normal_initializer(stddev=0.1))
        b = tf.get_variable("bias", [units], initializer=tf.zeros_initializer())
        y = tf.nn.bias_add(tf.matmul(x, w), b)
        return activation(y) if activation else y


def build_graph(learning_rate=1e-3):
    """The training graph; returns its named tensors and ops."""
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    h = dense(x, 256, "fc1", tf.nn.relu)
    h = dense(h, 128, "fc2", tf.nn.relu)
    logits = dense(h, 10, "logits")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    correct = tf.equal(tf.argmax(logits, 1), labels)
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
    train = tf.train.AdamOptimizer(learning_rate).minimize(loss, name="train")
    probabilities = tf.nn.softmax(logits, name="probabilities")
    return {"x": x, "labels": labels, "loss": loss, "accuracy": accuracy, "train": train,
            "probabilities": probabilities}


def build(learning_rate=1e-3):
    """The model-file entry points (``kiln compile``): train, eval and predict.  The graph
    seed makes the initial weights, and so a training run, repeatable."""
    tf.set_random_seed(0)
    return classifier_entries(build_graph(learning_rate))


def main(argv=None):
    demo(build_graph, __doc__, argv, steps=20, batch_size=128)


if __name__ == "__main__":
    main()

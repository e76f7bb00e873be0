"""LeNet-5 (seed 000) with plain ``tf.layers``: conv6 5×5 → avgpool → conv16 5×5 → avgpool
→ 120 → 84 → 10, ReLU, Adam 1e-3.

A model file (docs/model-files.md): ``build()`` returns ``train``, ``eval`` and ``predict``;
features ``x`` [N, 784] float32 (reshaped to 28×28×1; the first convolution is 'same', so
the second sees 14×14 and leaves 5×5×16 = 400 features, as in the paper's 32×32 input),
labels ``labels`` [N] int64.  samples/model_class.py builds the same network with seed
000's ``Model`` base class.

    kiln compile samples/lenet5.py -o build/lenet5
    python samples/lenet5.py --steps 10      # a few tf.Session steps on synthetic data
"""
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402
from common import classifier_entries, demo  # noqa: E402


def lenet5_logits(x):
    """LeNet-5's logits [N, 10] for x [N, 784]."""
    h = tf.reshape(x, [-1, 28, 28, 1])
    h = tf.layers.conv2d(h, 6, 5, padding="same", activation=tf.nn.relu, name="conv1")
    h = tf.layers.average_pooling2d(h, 2, 2, name="pool1")
    h = tf.layers.conv2d(h, 16, 5, activation=tf.nn.relu, name="conv2")
    h = tf.layers.average_pooling2d(h, 2, 2, name="pool2")
    h = tf.layers.flatten(h)
    h = tf.layers.dense(h, 120, activation=tf.nn.relu, name="fc1")
    h = tf.layers.dense(h, 84, activation=tf.nn.relu, name="fc2")
    return tf.layers.dense(h, 10, name="logits")


def build_graph(learning_rate=1e-3):
    """The training graph; returns its named tensors and ops."""
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    logits = lenet5_logits(x)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32), name="accuracy")
    train = tf.train.AdamOptimizer(learning_rate).minimize(loss, name="train")
    probabilities = tf.nn.softmax(logits, name="probabilities")
    return {"x": x, "labels": labels, "loss": loss, "accuracy": accuracy, "train": train,
            "probabilities": probabilities}


def build(learning_rate=1e-3):
    """The model-file entry points (``kiln compile``): train, eval and predict."""
    return classifier_entries(build_graph(learning_rate))


def main(argv=None):
    demo(build_graph, __doc__, argv, steps=10, batch_size=64)


if __name__ == "__main__":
    main()

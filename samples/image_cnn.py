"""Small CNN over an image folder (seed 001): 3×(conv3×3 + relu + maxpool 2) → dense 128 relu
→ n classes; Adam 1e-3.

A model file (docs/model-files.md): ``build()`` returns ``train``, ``eval`` and ``predict``.
Features ``x`` are image-shaped [N, 32, 32, 3] float32 in [0, 1], what the image-folder
source of runtime/data.py yields with ``size=32, channels=3`` (its default ``flatten=False``),
and labels ``labels`` [N] int64 (the sorted sub-folder index).  ``build()``'s defaults are
32×32 RGB and 10 classes; for another folder, edit ``SIZE``/``CHANNELS``/``NUM_CLASSES``
below (``kiln compile`` calls ``build()`` without arguments).

    kiln compile samples/image_cnn.py -o build/image_cnn
    python samples/image_cnn.py --steps 10     # a few tf.Session steps on synthetic images
"""
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402
from common import classifier_entries, demo  # noqa: E402

SIZE, CHANNELS, NUM_CLASSES = 32, 3, 10
FILTERS = (32, 64, 64)


def cnn_logits(x, num_classes):
    """Logits [N, num_classes] of image batches x [N, H, W, C]."""
    h = x
    for i, filters in enumerate(FILTERS, start=1):
        h = tf.layers.conv2d(h, filters, 3, padding="same", activation=tf.nn.relu, name=f"conv{i}")
        h = tf.layers.max_pooling2d(h, 2, 2, name=f"pool{i}")
    h = tf.layers.flatten(h)
    h = tf.layers.dense(h, 128, activation=tf.nn.relu, name="fc")
    return tf.layers.dense(h, num_classes, name="logits")


def build_graph(size=SIZE, channels=CHANNELS, num_classes=NUM_CLASSES, learning_rate=1e-3):
    """The training graph; returns its named tensors and ops."""
    x = tf.placeholder(tf.float32, [None, size, size, channels], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    logits = cnn_logits(x, num_classes)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32), name="accuracy")
    train = tf.train.AdamOptimizer(learning_rate).minimize(loss, name="train")
    probabilities = tf.nn.softmax(logits, name="probabilities")
    return {"x": x, "labels": labels, "loss": loss, "accuracy": accuracy, "train": train,
            "probabilities": probabilities}


def build(size=SIZE, channels=CHANNELS, num_classes=NUM_CLASSES, learning_rate=1e-3):
    """The model-file entry points (``kiln compile``): train, eval and predict."""
    return classifier_entries(build_graph(size, channels, num_classes, learning_rate))


def main(argv=None):
    demo(build_graph, __doc__, argv, steps=10, batch_size=32, shape=(SIZE, SIZE, CHANNELS), noise=0.2, clip=True,
         num_classes=NUM_CLASSES)


if __name__ == "__main__":
    main()

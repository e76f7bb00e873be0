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
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402

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
    m = build_graph(size, channels, num_classes, learning_rate)
    metrics = {"loss": m["loss"], "accuracy": m["accuracy"]}
    return {
        "train": {"feeds": [m["x"], m["labels"]], "fetches": metrics, "targets": [m["train"]]},
        "eval": {"feeds": [m["x"], m["labels"]], "fetches": dict(metrics)},
        "predict": {"feeds": [m["x"]], "fetches": {"probabilities": m["probabilities"]}},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    tf.set_random_seed(0)
    m = build_graph()
    rng = np.random.default_rng(0)
    shape = (SIZE, SIZE, CHANNELS)
    centers = rng.random((NUM_CLASSES,) + shape, dtype=np.float32)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for step in range(args.steps):
            y = rng.integers(0, NUM_CLASSES, args.batch_size)
            x = np.clip(centers[y] + 0.2 * rng.standard_normal((args.batch_size,) + shape, dtype=np.float32), 0, 1)
            loss, acc, _ = sess.run([m["loss"], m["accuracy"], m["train"]], {m["x"]: x, m["labels"]: y})
            print(f"step {step:3d}  loss {loss:.4f}  accuracy {acc:.3f}")


if __name__ == "__main__":
    main()

"""Binary MLP (seed 001): 20→64→64→1 ReLU, sigmoid output, binary cross-entropy, Adam 1e-3.

A model file (docs/model-files.md): ``build()`` returns ``train``, ``eval`` (``loss``,
``accuracy``) and ``predict`` (``probabilities`` [N, 1], the sigmoid).  Features ``x`` are
[N, 20] float32; labels ``labels`` are [N] int64 in {0, 1}, what a CSV source yields by
default (last column the label), cast to float32 [N, 1] inside the graph for
``tf.nn.sigmoid_cross_entropy_with_logits``:

    kiln compile samples/binary_mlp.py -o build/binary_mlp
    python samples/binary_mlp.py --steps 20    # a few tf.Session steps on synthetic data
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402

FEATURES = 20


def make_data(n=256, seed=0):
    """Synthetic data: x [n, 20] standard normal, label 1 when a fixed linear score is > 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(FEATURES)
    return x, (x @ w > 0).astype(np.int64)


def build_graph(learning_rate=1e-3):
    """The training graph; returns its named tensors and ops."""
    x = tf.placeholder(tf.float32, [None, FEATURES], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    h = tf.layers.dense(x, 64, activation=tf.nn.relu, name="fc1")
    h = tf.layers.dense(h, 64, activation=tf.nn.relu, name="fc2")
    logits = tf.layers.dense(h, 1, name="logits")
    targets = tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), name="loss")
    predicted = tf.cast(tf.greater(logits, 0.0), tf.float32)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, targets), tf.float32), name="accuracy")
    train = tf.train.AdamOptimizer(learning_rate).minimize(loss, name="train")
    probabilities = tf.sigmoid(logits, name="probabilities")
    return {"x": x, "labels": labels, "loss": loss, "accuracy": accuracy, "train": train,
            "probabilities": probabilities}


def build(learning_rate=1e-3):
    """The model-file entry points (``kiln compile``): train, eval and predict."""
    m = build_graph(learning_rate)
    metrics = {"loss": m["loss"], "accuracy": m["accuracy"]}
    return {
        "train": {"feeds": [m["x"], m["labels"]], "fetches": metrics, "targets": [m["train"]]},
        "eval": {"feeds": [m["x"], m["labels"]], "fetches": dict(metrics)},
        "predict": {"feeds": [m["x"]], "fetches": {"probabilities": m["probabilities"]}},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    tf.set_random_seed(0)
    m = build_graph()
    x_all, y_all = make_data()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for step in range(args.steps):
            i = (step * args.batch_size) % len(x_all)
            x, y = x_all[i:i + args.batch_size], y_all[i:i + args.batch_size]
            loss, acc, _ = sess.run([m["loss"], m["accuracy"], m["train"]], {m["x"]: x, m["labels"]: y})
            print(f"step {step:3d}  loss {loss:.4f}  accuracy {acc:.3f}")


if __name__ == "__main__":
    main()

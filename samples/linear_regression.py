"""Linear regression by gradient descent (seed 003): y = w·x + b, mean squared error, lr 1e-4.

A model file (docs/model-files.md): ``build()`` returns ``train``, ``eval`` (fetch ``loss``)
and ``predict`` (fetch ``predictions``).  Features ``x`` are [N, 1] float32 (one CSV feature
column) and targets ``labels`` [N] float32 (a CSV read with ``label_dtype="float32"``):

    kiln compile samples/linear_regression.py -o build/linear_regression

The seed's learning rate of 1e-4 only makes progress in 1000 iterations when x is large
(the gradient step for w scales with x²): the demo data is x uniform in [0, 50) with
y = 3x + 2 + noise, on which 1000 full-batch steps cut the error by orders of magnitude
(b, whose gradient does not scale with x, is still far from 2 then; that is the seed's
behaviour, not a bug).  Run directly it trains through ``tf.Session`` and prints the start
and end error:

    python samples/linear_regression.py [--steps 1000]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402


def make_data(n=100, seed=0):
    """Demo data: x uniform in [0, 50) as [n, 1], y = 3x + 2 + N(0, 1) as [n] (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 50.0, (n, 1)).astype(np.float32)
    y = (3.0 * x[:, 0] + 2.0 + rng.standard_normal(n)).astype(np.float32)
    return x, y


def build_graph(learning_rate=1e-4):
    """The training graph; returns its named tensors and ops."""
    x = tf.placeholder(tf.float32, [None, 1], name="x")
    labels = tf.placeholder(tf.float32, [None], name="labels")
    w = tf.Variable(tf.zeros([1]), name="w")
    b = tf.Variable(tf.zeros([1]), name="b")
    predictions = tf.add(tf.reshape(x, [-1]) * w, b, name="predictions")
    loss = tf.reduce_mean(tf.square(predictions - labels), name="loss")
    train = tf.train.GradientDescentOptimizer(learning_rate).minimize(loss, name="train")
    return {"x": x, "labels": labels, "w": w, "b": b, "predictions": predictions, "loss": loss,
            "train": train}


def build(learning_rate=1e-4):
    """The model-file entry points (``kiln compile``): train, eval and predict."""
    m = build_graph(learning_rate)
    return {
        "train": {"feeds": [m["x"], m["labels"]], "fetches": {"loss": m["loss"]}, "targets": [m["train"]]},
        "eval": {"feeds": [m["x"], m["labels"]], "fetches": {"loss": m["loss"]}},
        "predict": {"feeds": [m["x"]], "fetches": {"predictions": m["predictions"]}},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args(argv)
    m = build_graph()
    x, y = make_data()
    feed = {m["x"]: x, m["labels"]: y}
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        print(f"start error: {sess.run(m['loss'], feed):.4f}")
        for _ in range(args.steps):
            sess.run(m["train"], feed)
        w, b, loss = sess.run([m["w"], m["b"], m["loss"]], feed)
        print(f"end error: {loss:.4f}  (w = {w[0]:.4f}, b = {b[0]:.4f})")


if __name__ == "__main__":
    main()

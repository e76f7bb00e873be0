"""Plane fit (seed 002 §3): fit y = W·x + b to 100 points of y = [0.1, 0.2]·x + 0.3 by gradient descent.

Run:  python samples/plane_fit.py [--steps 201] [--ckpt-dir build/plane_fit]
Trains through tf.Session, prints W and b every 20 steps, and saves a checkpoint.

Also a model file (docs/model-files.md): the data are constants of the graph, so the
entries feed nothing; ``train`` (fetch ``loss``, target ``train``), ``eval`` (``loss``) and
``predict`` (``predictions``, the fitted plane at the 100 points):

    kiln compile samples/plane_fit.py -o build/plane_fit_art
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import tf  # noqa: E402


def build_graph(seed=None):
    """Build the plane-fit graph; returns the tensors and ops a trainer needs."""
    rng = np.random.RandomState(seed)
    x_data = np.float32(rng.rand(2, 100))
    y_data = np.dot([0.100, 0.200], x_data) + 0.300

    b = tf.Variable(tf.zeros([1]), name="b")
    W = tf.Variable(tf.random_uniform([1, 2], -1.0, 1.0), name="W")
    y = tf.matmul(W, x_data) + b
    loss = tf.reduce_mean(tf.square(y - y_data), name="loss")
    train = tf.train.GradientDescentOptimizer(0.5).minimize(loss, name="train")
    return {"W": W, "b": b, "y": y, "loss": loss, "train": train}


def build(seed=0):
    """The model-file entry points (``kiln compile``); no feeds: the data are in the graph."""
    m = build_graph(seed)
    return {
        "train": {"feeds": [], "fetches": {"loss": m["loss"]}, "targets": [m["train"]]},
        "eval": {"feeds": [], "fetches": {"loss": m["loss"]}},
        "predict": {"feeds": [], "fetches": {"predictions": tf.identity(m["y"], name="predictions")}},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=201)
    parser.add_argument("--ckpt-dir", default=os.path.join("build", "plane_fit"))
    args = parser.parse_args(argv)

    model = build_graph()
    W, b, loss, train = model["W"], model["b"], model["loss"], model["train"]
    saver = tf.train.Saver()

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for step in range(args.steps):
            sess.run(train)
            if step % 20 == 0:
                print(step, sess.run(W), sess.run(b))
        os.makedirs(args.ckpt_dir, exist_ok=True)
        path = saver.save(sess, os.path.join(args.ckpt_dir, "model"), global_step=args.steps)
        print("final loss %.3g; checkpoint saved to %s" % (sess.run(loss), path))


if __name__ == "__main__":
    main()

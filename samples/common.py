"""Pieces the classifier samples share: their model-file entry points and a short demo run.

A model file may import this module: `kiln compile` puts the model file's folder on the
import path while it runs the file, as running the script directly does.
"""
import argparse

import numpy as np

from compiler import tf


def classifier_entries(m, eval_loss="loss", eval_accuracy="accuracy"):
    """train / eval / predict entries of a classifier graph ``m`` (a dict with x, labels, loss,
    accuracy, train, probabilities; eval may use other tensors, e.g. without dropout)."""
    metrics = {"loss": m["loss"], "accuracy": m["accuracy"]}
    return {
        "train": {"feeds": [m["x"], m["labels"]], "fetches": metrics, "targets": [m["train"]]},
        "eval": {"feeds": [m["x"], m["labels"]], "fetches": {"loss": m[eval_loss], "accuracy": m[eval_accuracy]}},
        "predict": {"feeds": [m["x"]], "fetches": {"probabilities": m["probabilities"]}},
    }


def demo(build_graph, doc, argv=None, steps=20, batch_size=64, shape=(784,), noise=0.3, clip=False,
         num_classes=10):
    """Train a few steps through ``tf.Session`` on synthetic data: noisy class centres of
    ``shape``; prints loss and accuracy per step."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    args = parser.parse_args(argv)
    tf.set_random_seed(0)
    m = build_graph()
    rng = np.random.default_rng(0)
    centers = rng.random((num_classes,) + tuple(shape), dtype=np.float32)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for step in range(args.steps):
            y = rng.integers(0, num_classes, args.batch_size)
            x = centers[y] + noise * rng.standard_normal((args.batch_size,) + tuple(shape), dtype=np.float32)
            if clip:
                x = np.clip(x, 0, 1)
            loss, acc, _ = sess.run([m["loss"], m["accuracy"], m["train"]], {m["x"]: x, m["labels"]: y})
            print(f"step {step:3d}  loss {loss:.4f}  accuracy {acc:.3f}")

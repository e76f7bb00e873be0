"""Seed 000's ``Model`` base class (``from compiler import Model``): LeNet-5 as a subclass.

The subclass sets ``inputs``/``placeholders``/``optimizer``, appends its layers in
``_build()``, and sets ``loss`` and ``accuracy`` in ``_loss()``/``_accuracy()``; ``Model.build()``
chains the layers, collects ``vars`` and makes ``opt_op``; ``save``/``load`` print "Model saved
in file: ..." like the seed.  Same network as samples/lenet5.py (conv6 5×5 → avgpool →
conv16 5×5 → avgpool → 120 → 84 → 10, Adam 1e-3), features ``x`` [N, 784] float32, labels
``labels`` [N] int64.

A model file (docs/model-files.md): ``build()`` returns ``train``, ``eval`` and ``predict``.

    kiln compile samples/model_class.py -o build/model_class
    python samples/model_class.py --steps 10 [--save-dir build/model_class_ckpt]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compiler import Model, tf  # noqa: E402


class LeNet5(Model):
    """LeNet-5 on x [N, 784]: the layers list, loss and accuracy of seed 000's pattern."""

    def __init__(self, x, labels, learning_rate=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.placeholders = {"x": x, "labels": labels}
        self.inputs = tf.reshape(x, [-1, 28, 28, 1])
        self.optimizer = tf.train.AdamOptimizer(learning_rate)
        self.build()

    def _build(self):
        self.layers += [
            tf.layers.Conv2D(6, 5, padding="same", activation=tf.nn.relu),
            tf.layers.AveragePooling2D(2, 2),
            tf.layers.Conv2D(16, 5, activation=tf.nn.relu),
            tf.layers.AveragePooling2D(2, 2),
            tf.layers.Flatten(),
            tf.layers.Dense(120, activation=tf.nn.relu),
            tf.layers.Dense(84, activation=tf.nn.relu),
            tf.layers.Dense(10),
        ]

    def _loss(self):
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.placeholders["labels"], logits=self.outputs), name="loss")

    def _accuracy(self):
        correct = tf.equal(tf.argmax(self.outputs, 1), self.placeholders["labels"])
        self.accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")

    def predict(self):
        return tf.nn.softmax(self.outputs, name="probabilities")


def build_model(learning_rate=1e-3):
    """The placeholders and the LeNet5 model (its opt_op trains it)."""
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    return LeNet5(x, labels, learning_rate, name="lenet5")


def build(learning_rate=1e-3):
    """The model-file entry points (``kiln compile``): train, eval and predict."""
    model = build_model(learning_rate)
    feeds = [model.placeholders["x"], model.placeholders["labels"]]
    metrics = {"loss": model.loss, "accuracy": model.accuracy}
    return {
        "train": {"feeds": feeds, "fetches": metrics, "targets": [model.opt_op]},
        "eval": {"feeds": list(feeds), "fetches": dict(metrics)},
        "predict": {"feeds": [model.placeholders["x"]], "fetches": {"probabilities": model.predict()}},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--save-dir", default=os.path.join("build", "model_class_ckpt"))
    args = parser.parse_args(argv)
    tf.set_random_seed(0)
    model = build_model()
    x_ph, y_ph = model.placeholders["x"], model.placeholders["labels"]
    rng = np.random.default_rng(0)
    centers = rng.random((10, 784), dtype=np.float32)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for step in range(args.steps):
            y = rng.integers(0, 10, args.batch_size)
            x = centers[y] + 0.3 * rng.standard_normal((args.batch_size, 784), dtype=np.float32)
            loss, acc, _ = sess.run([model.loss, model.accuracy, model.opt_op], {x_ph: x, y_ph: y})
            print(f"step {step:3d}  loss {loss:.4f}  accuracy {acc:.3f}")
        model.save(sess, save_dir=args.save_dir)
        model.load(sess, save_dir=args.save_dir)


if __name__ == "__main__":
    main()

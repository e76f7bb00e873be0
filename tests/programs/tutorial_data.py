"""Stand-in for ``tensorflow.examples.tutorials.mnist.input_data`` (the "data download" the
tutorial programs start with), deterministic and offline.

``read_data_sets(train_dir, one_hot=...)`` returns ``.train``, ``.validation`` and ``.test``
with ``images`` (float32 [n, 784] in [0, 1]), ``labels`` and ``next_batch(n)`` like the
tutorials' DataSet.  The images are MNIST-shaped and learnable but synthetic: each class is
a fixed 28x28 stroke template, shifted by up to two pixels and blurred by noise, all drawn
from numpy's legacy ``RandomState`` so TensorFlow and Kiln see the same bytes.  It needs
only numpy (it also runs in an environment with TensorFlow and without Kiln).
"""
from __future__ import annotations

import numpy as np

SIDE = 28


def _templates(rng) -> np.ndarray:
    """Ten 28x28 class templates: a few random thick strokes each."""
    out = np.zeros((10, SIDE, SIDE), np.float32)
    for c in range(10):
        for _ in range(3):
            r0, c0, r1, c1 = rng.randint(4, SIDE - 4, size=4)
            for t in np.linspace(0.0, 1.0, 40):
                r, q = int(round(r0 + t * (r1 - r0))), int(round(c0 + t * (c1 - c0)))
                out[c, r - 1:r + 2, q - 1:q + 2] = 1.0
    return out


def _make(n: int, rng, templates) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.randint(0, 10, size=n)
    images = np.empty((n, SIDE, SIDE), np.float32)
    for i, c in enumerate(labels):
        dr, dc = rng.randint(-2, 3, size=2)
        img = np.roll(np.roll(templates[c], dr, axis=0), dc, axis=1)
        images[i] = np.clip(img * rng.uniform(0.6, 1.0) + rng.uniform(0, 0.3, (SIDE, SIDE)), 0, 1)
    return images.reshape(n, SIDE * SIDE), labels


class DataSet:
    """Images and labels with the tutorials' ``next_batch``: in order, reshuffled (seeded) each epoch."""

    def __init__(self, images, labels, one_hot, seed):
        self.images = images
        self.labels = np.eye(10, dtype=np.float32)[labels] if one_hot else labels.astype(np.int64)
        self.num_examples = len(images)
        self._rng = np.random.RandomState(seed)
        self._pos = 0

    def next_batch(self, batch_size, shuffle=True):
        if self._pos + batch_size > self.num_examples:
            if shuffle:
                order = self._rng.permutation(self.num_examples)
                self.images, self.labels = self.images[order], self.labels[order]
            self._pos = 0
        start, self._pos = self._pos, self._pos + batch_size
        return self.images[start:self._pos], self.labels[start:self._pos]


class DataSets:
    def __init__(self, train, validation, test):
        self.train, self.validation, self.test = train, validation, test


def read_data_sets(train_dir=None, one_hot=False, sizes=(2000, 200, 500), seed=1234, **_ignored):
    """The three splits; ``train_dir`` is accepted (nothing is downloaded)."""
    rng = np.random.RandomState(seed)
    templates = _templates(rng)
    splits = [DataSet(*_make(n, rng, templates), one_hot, seed + i) for i, n in enumerate(sizes)]
    return DataSets(*splits)

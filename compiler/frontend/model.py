"""The ``Model`` base class of seed 000 (the GCN-style model skeleton), built on Kiln's graph API.

A subclass sets ``self.inputs`` (and ``self.placeholders``), ``self.optimizer``, appends
layers in ``_build()``, computes ``self.loss`` in ``_loss()`` and ``self.accuracy`` in
``_accuracy()``, and calls ``self.build()``::

    class LeNet(Model):
        def __init__(self, x, y, **kwargs):
            super().__init__(**kwargs)
            self.inputs, self.placeholders = x, {"x": x, "y": y}
            self.optimizer = tf.train.AdamOptimizer(1e-3)
            self.build()
        def _build(self):
            self.layers.append(tf.layers.Conv2D(6, 5, activation=tf.nn.relu)) ...
        def _loss(self): self.loss = ...
        def _accuracy(self): self.accuracy = ...

``build()`` opens ``tf.variable_scope(self.name)`` around ``_build()`` *and* the chaining
of the layers (Kiln's layers create their variables on the first call, so the call must
be inside the scope for the variables to be ``<name>/dense/kernel`` and be found by
``get_collection(GLOBAL_VARIABLES, scope=<name>/)``; the trailing slash keeps a model
"lenet" from collecting the variables of a model "lenet5").
"""
from __future__ import annotations

import os
import re

from .graph import GraphKeys, get_default_graph
from . import variables as vs


class InvalidKwargError(TypeError, AssertionError):
    """An unknown constructor kwarg: a TypeError (Python's rule) and an AssertionError (the seed's assert)."""


class Model:
    """Seed 000's Model: layers chained over ``inputs``; loss, accuracy, opt_op; save/load."""

    allowed_kwargs = frozenset({"name", "logging"})

    def __init__(self, **kwargs):
        for kwarg in kwargs:
            if kwarg not in self.allowed_kwargs:
                raise InvalidKwargError("Invalid keyword argument: " + kwarg)
        self.name = kwargs.get("name") or type(self).__name__.lower()
        self.logging = kwargs.get("logging", False)
        self.vars = {}
        self.placeholders = {}
        self.layers = []
        self.activations = []
        self.inputs = None
        self.outputs = None
        self.loss = 0
        self.accuracy = 0
        self.optimizer = None
        self.opt_op = None

    def _build(self):
        """Append the layers to ``self.layers`` (subclasses)."""
        raise NotImplementedError

    def _loss(self):
        """Set ``self.loss`` from ``self.outputs`` and the placeholders (subclasses)."""
        raise NotImplementedError

    def _accuracy(self):
        """Set ``self.accuracy`` (subclasses)."""
        raise NotImplementedError

    def build(self):
        """Wrapper for _build(): chain the layers, collect the variables, metrics, and opt_op."""
        if self.inputs is None:
            raise ValueError(f"Model {self.name}: set self.inputs before build()")
        with vs.variable_scope(self.name) as scope:
            self._build()
            self.activations = [self.inputs]
            for layer in self.layers:
                self.activations.append(layer(self.activations[-1]))
        self.outputs = self.activations[-1]
        variables = get_default_graph().get_collection(GraphKeys.GLOBAL_VARIABLES, scope=re.escape(scope.name) + "/")
        self.vars = {var.name: var for var in variables}
        self._loss()
        self._accuracy()
        if self.optimizer is not None:
            self.opt_op = self.optimizer.minimize(self.loss)

    def predict(self):
        """The model's output tensor (subclasses may apply softmax etc.)."""
        return self.outputs

    def checkpoint_path(self, path=None, save_dir=None):
        """``path`` as given, else ``<save_dir or 'tmp'>/<name>.ckpt`` (the seed's default)."""
        if path is not None:
            return str(path)
        return os.path.join(str(save_dir) if save_dir is not None else "tmp", f"{self.name}.ckpt")

    def _saver(self, sess):
        if not sess:
            raise AttributeError("TensorFlow session not provided.")
        from .train.saver import Saver

        return Saver(self.vars)

    def save(self, sess=None, path=None, save_dir=None):
        """Write ``self.vars`` to a checkpoint; returns and prints its path."""
        saver = self._saver(sess)
        target = self.checkpoint_path(path, save_dir)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        save_path = saver.save(sess, target)
        print("Model saved in file: %s" % save_path)
        return save_path

    def load(self, sess=None, path=None, save_dir=None):
        """Restore ``self.vars`` from the checkpoint at ``path`` (default: where save() writes)."""
        saver = self._saver(sess)
        save_path = self.checkpoint_path(path, save_dir)
        saver.restore(sess, save_path)
        print("Model restored from file: %s" % save_path)
        return save_path


TF_API = {"tf.kiln": {"Model": Model}}

"""tf.layers.BatchNormalization / tf.layers.batch_normalization (TF1 semantics).

Variables (in the layer's scope, created in TF's order): ``gamma`` (if ``scale``), ``beta``
(if ``center``), and the non-trainable ``moving_mean`` / ``moving_variance``.

* ``training`` False (the TF1 default): normalize with the moving statistics; no update ops.
* ``training`` True: normalize with the batch mean and (biased) variance, and create the
  update ops ``moving -= (moving - batch) * (1 - momentum)``; they are added to
  ``tf.GraphKeys.UPDATE_OPS`` (and ``layer.updates``), so the usual
  ``with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS))`` idiom runs them.
  As in TF's fused kernel (used for 4-D inputs when ``fused`` is None), the moving variance
  is fed the Bessel-corrected batch variance ``var * n / (n - 1)``; the non-fused path
  (other ranks) feeds the biased one.
* ``training`` a scalar bool tensor (a placeholder): both paths are built and selected
  elementwise; the update ops write the old moving value back when ``training`` is false —
  TF's observable behaviour (there it is a ``tf.cond``).
"""
from __future__ import annotations

import numpy as np

from . import initializers as inits
from .convert import convert_to_tensor
from .graph import GraphKeys, get_default_graph
from .layers import Layer

_UNSUPPORTED = ("renorm", "virtual_batch_size", "adjustment")


def training_mode(training, what):
    """A python bool, or a scalar bool tensor (checked) for a graph that serves both modes."""
    if training is None or isinstance(training, (bool, np.bool_)):
        return bool(training)
    training = convert_to_tensor(training)
    if training.dtype.name != "bool" or training.shape.ndims not in (None, 0):
        raise ValueError(f"{what}: training must be a python bool or a scalar bool tensor, got {training!r}")
    return training


class BatchNormalization(Layer):
    """tf.layers.BatchNormalization (see the module doc); NHWC or any axis list."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer=inits.Zeros(), gamma_initializer=inits.Ones(),
                 moving_mean_initializer=inits.Zeros(), moving_variance_initializer=inits.Ones(),
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 renorm=False, renorm_clipping=None, renorm_momentum=0.99, fused=None, trainable=True,
                 virtual_batch_size=None, adjustment=None, name=None, **kwargs):
        super().__init__(trainable=trainable, name=name, **kwargs)
        for arg, value in zip(_UNSUPPORTED, (renorm, virtual_batch_size, adjustment)):
            if value:
                raise NotImplementedError(f"BatchNormalization: {arg} is not supported by Kiln")
        self.axis = axis
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale, self.fused = center, scale, fused
        self.fused_arg = fused  # as given (build decides self.fused)
        self.initializers = (gamma_initializer, beta_initializer, moving_mean_initializer,
                             moving_variance_initializer)
        self.regularizers = (gamma_regularizer, beta_regularizer)
        self.constraints = (gamma_constraint, beta_constraint)
        self.gamma = self.beta = None
        self.updates = []
        self.updates_collections = [GraphKeys.UPDATE_OPS]

    def _axes(self, rank):
        """The normalized (kept) axes as sorted non-negative ints, checked against ``rank``."""
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        in_range = all(-rank <= int(a) < rank for a in axes)
        if not axes or not in_range or len({int(a) % rank for a in axes}) != len(axes):
            raise ValueError(f"Invalid axis: {self.axis} for inputs of rank {rank} ({self.name})")
        return sorted(int(a) % rank for a in axes)

    def build(self, input_shape):
        """gamma/beta (trainable) and moving_mean/moving_variance (not) over the axis dims."""
        rank = input_shape.ndims
        self.kept = self._axes(rank)
        dims = [input_shape[a] for a in self.kept]
        if any(d is None for d in dims):
            raise ValueError(f"Axis {self.axis} of input tensor should have a defined dimension but the "
                             f"layer received an input with shape {input_shape}.")
        if self.fused is None:
            self.fused = rank == 4 and self.kept in ([1], [3])
        elif self.fused and (rank != 4 or self.kept not in ([1], [3])):
            raise ValueError(f"{self.name}: fused batch norm needs a 4-D input normalized over axis 1 or 3; "
                             f"got rank {rank}, axis {self.axis}")
        shape = [int(d) for d in dims]
        g_init, b_init, mm_init, mv_init = self.initializers
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, initializer=g_init, regularizer=self.regularizers[0],
                                         constraint=self.constraints[0])
        if self.center:
            self.beta = self.add_weight("beta", shape, initializer=b_init, regularizer=self.regularizers[1],
                                        constraint=self.constraints[1])
        self.moving_mean = self.add_weight("moving_mean", shape, initializer=mm_init, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape, initializer=mv_init, trainable=False)

    def _broadcast(self, t, rank):
        """A parameter vector reshaped to broadcast against the input (no-op for the last axis)."""
        from .ops.array_ops import reshape

        if t is None or self.kept == [rank - 1]:
            return t
        return reshape(t, [t.type.shape[self.kept.index(a)] if a in self.kept else 1 for a in range(rank)])

    def call(self, inputs, training=False):
        """Normalize ``inputs``; in training mode also make the moving-average update ops."""
        from .ops import math_ops as M
        from .ops import nn_ops

        training = training_mode(training, self.name)
        rank = inputs.shape.ndims
        if training is False:
            mean, variance = self.moving_mean, self.moving_variance
        else:
            reduce_axes = [a for a in range(rank) if a not in self.kept]
            mean, variance = nn_ops.moments(inputs, reduce_axes)
            self._make_updates(inputs, mean, variance, training)
            if training is not True:
                mean = M.where(training, mean, self.moving_mean)
                variance = M.where(training, variance, self.moving_variance)
        mean, variance, beta, gamma = (self._broadcast(t, rank) for t in (mean, variance, self.beta, self.gamma))
        return nn_ops.batch_normalization(inputs, mean, variance, beta, gamma, self.epsilon)

    def _make_updates(self, inputs, mean, variance, training):
        """The two moving-average assigns (see the module doc), recorded in UPDATE_OPS."""
        from .ops import math_ops as M
        from .ops.norm_ops import bessel_variance

        if self.unbiased_moving_variance(inputs.shape.ndims):
            variance = bessel_variance(inputs, variance, int(np.prod([inputs.type.shape[a] for a in self.kept])))
        graph = get_default_graph()
        for var, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            with graph.name_scope("AssignMovingAvg"):
                new = var - (var - value) * (1.0 - self.momentum)
                if training is not True:
                    new = M.where(training, new, var)
                update = var.assign(new)
            self.updates.append(update)
            graph.add_to_collections(self.updates_collections, update)

    def unbiased_moving_variance(self, rank) -> bool:
        """TF's fused kernel feeds the moving variance the Bessel-corrected batch variance."""
        return bool(self.fused)


def batch_normalization(inputs, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                        beta_initializer=inits.Zeros(), gamma_initializer=inits.Ones(),
                        moving_mean_initializer=inits.Zeros(), moving_variance_initializer=inits.Ones(),
                        beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                        training=False, trainable=True, name=None, reuse=None, renorm=False, renorm_clipping=None,
                        renorm_momentum=0.99, fused=None, virtual_batch_size=None, adjustment=None):
    """tf.layers.batch_normalization: a one-shot BatchNormalization; ``name`` + ``reuse`` share it."""
    layer = BatchNormalization(axis, momentum, epsilon, center, scale, beta_initializer, gamma_initializer,
                               moving_mean_initializer, moving_variance_initializer, beta_regularizer,
                               gamma_regularizer, beta_constraint, gamma_constraint, renorm, renorm_clipping,
                               renorm_momentum, fused, trainable, virtual_batch_size, adjustment,
                               name=name, _scope=name, _reuse=reuse)
    return layer(inputs, training=training)


TF_API = {"tf.layers": {"BatchNormalization": BatchNormalization, "batch_normalization": batch_normalization}}

"""Keras-style layers (``tf.layers`` / ``tf.keras.layers``) that build plain graph ops.

A layer is an object that owns variables and is called on tensors.  As in TF1's
``tf.layers``, the variables are made with ``tf.get_variable`` inside a variable scope
named after the layer: the first call opens ``variable_scope(None, default_name=<snake
case class name>)`` (so unnamed layers get ``dense``, ``dense_1``, ...; a ``name`` is the
scope's base name), builds the variables (``dense/kernel``, ``dense/bias``) and later calls
re-enter the same scope and reuse them.  The functional forms (``tf.layers.dense(x, 10,
name="fc", reuse=...)``) capture ``variable_scope(name)`` exactly, like TF1, so a repeated
name without ``reuse`` is an error and ``reuse=True`` shares the variables.

Convolution and pooling layers live in ``layers_conv.py`` (imported at the end).
Keras layers are the same classes here (in TF1 they differ only in how variables are
named, and both spell them ``<layer>/kernel:0`` in the simple cases).
"""
from __future__ import annotations

import inspect
import re

import numpy as np

from ..ir.types import as_dtype
from . import initializers as inits
from . import variables as vs
from .convert import convert_to_tensor
from .graph import GraphKeys, Tensor, get_default_graph

_LAYER_KWARGS = {"input_shape", "batch_input_shape", "batch_size", "dynamic", "autocast",
                 "weights", "input_dim"}


def to_snake_case(name: str) -> str:
    """Keras' default layer name from a class name: ``MaxPooling2D`` -> ``max_pooling2d``."""
    s = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _unique_layer_name(base: str) -> str:
    """A per-graph unique object name, zero based (``dense``, ``dense_1``, ...) like TF1."""
    counts = get_default_graph().__dict__.setdefault("_layer_name_uids", {})
    n = counts.get(base, 0)
    counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def get_initializer(init):
    """An initializer object from None, a name ('glorot_uniform', 'zeros', ...) or a callable."""
    if isinstance(init, str):
        try:
            init = inits._INITIALIZERS[init]
        except KeyError:
            raise ValueError(f"Unknown initializer: {init!r}; known: {sorted(inits._INITIALIZERS)}") from None
    if isinstance(init, type) or (callable(init) and init in inits._INITIALIZERS.values()):
        init = init()
    return init


def get_activation(activation):
    """An activation callable from None / 'linear' (identity), a Keras name, or a callable."""
    if activation is None or callable(activation):
        return activation
    from .ops import math_ops, nn_ops

    table = {"linear": None, "relu": math_ops.relu, "tanh": math_ops.tanh, "sigmoid": math_ops.sigmoid,
             "elu": math_ops.elu, "softplus": math_ops.softplus, "softmax": nn_ops.softmax}
    for extra in ("relu6", "selu", "softsign", "leaky_relu"):
        if hasattr(nn_ops, extra):
            table[extra] = getattr(nn_ops, extra)
    if activation not in table:
        raise ValueError(f"Unknown activation function: {activation!r}; known: {sorted(table)}")
    return table[activation]


class Layer:
    """Base layer: name, variable scope, ``add_weight``, ``build`` once, then ``call``."""

    def __init__(self, trainable=True, name=None, dtype=None, **kwargs):
        scope, self._reuse = kwargs.pop("_scope", None), kwargs.pop("_reuse", None)
        for key in kwargs:
            if key not in _LAYER_KWARGS:
                raise TypeError(f"Keyword argument not understood: {key!r} ({type(self).__name__})")
        self.trainable = bool(trainable)
        self.dtype = None if dtype is None else as_dtype(dtype)
        self._base_name = name or to_snake_case(type(self).__name__)
        self.name = name or _unique_layer_name(self._base_name)
        self.built = False
        self._variables, self.losses = [], []
        self._scope = None
        if scope:
            with vs.variable_scope(scope) as captured:
                self._scope = captured

    # --- variables ------------------------------------------------------------------------
    @property
    def variables(self):
        return list(self._variables)

    weights = variables

    @property
    def trainable_variables(self):
        return [v for v in self._variables if v.trainable]

    trainable_weights = trainable_variables

    @property
    def non_trainable_variables(self):
        return [v for v in self._variables if not v.trainable]

    non_trainable_weights = non_trainable_variables

    @property
    def scope_name(self):
        return self._scope.name if self._scope is not None else None

    def add_weight(self, name, shape, dtype=None, initializer=None, regularizer=None, trainable=True,
                   constraint=None, **kwargs):
        """tf.get_variable(name, ...) in the layer's scope; records the variable and its loss."""
        if constraint is not None:
            raise NotImplementedError(f"{self.name}: weight constraints are not supported by Kiln")
        reg_losses = get_default_graph().get_collection_ref(GraphKeys.REGULARIZATION_LOSSES)
        before = len(reg_losses)
        var = vs.get_variable(name, shape=list(shape), dtype=dtype or self.dtype or "float32",
                              initializer=get_initializer(initializer), regularizer=regularizer,
                              trainable=self.trainable and trainable)
        if var not in self._variables:
            self._variables.append(var)
        self.losses.extend(reg_losses[before:])
        return var

    # --- calling --------------------------------------------------------------------------
    def set_kernel_options(self, activation, use_bias, kernel_initializer, bias_initializer,
                           kernel_regularizer, bias_regularizer, activity_regularizer,
                           kernel_constraint, bias_constraint):
        """Store the kernel/bias options shared by Dense and Conv2D (weights come in build)."""
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        self.kernel_regularizer, self.bias_regularizer = kernel_regularizer, bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint, self.bias_constraint = kernel_constraint, bias_constraint
        self.kernel = self.bias = None

    def build(self, input_shape):
        """Create the variables for inputs of ``input_shape`` (a TensorShape)."""
        self.built = True

    def call(self, inputs, **kwargs):
        return inputs

    def __call__(self, inputs, *args, **kwargs):
        """Build on the first call (in a fresh scope), then run ``call`` inside the layer scope."""
        inputs = inputs if isinstance(inputs, Tensor) else convert_to_tensor(inputs, dtype_hint=self.dtype)
        if "training" in kwargs and "training" not in inspect.signature(self.call).parameters:
            kwargs.pop("training")
        if self._scope is None:
            if self._reuse:
                opener = vs.variable_scope(self._base_name, reuse=self._reuse)
            else:
                opener = vs.variable_scope(None, default_name=self._base_name)
            with opener as captured:
                self._scope = captured
        with vs.variable_scope(self._scope, reuse=self._reuse if not self.built else True):
            if not self.built:
                if self.dtype is None and inputs.dtype.is_floating:
                    self.dtype = inputs.dtype
                self.build(inputs.shape)
                self.built = True
            return self.call(inputs, *args, **kwargs)

    apply = __call__

    def count_params(self):
        return int(sum(np.prod(v.shape.as_list(), dtype=np.int64) for v in self._variables))

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}'>"


def last_dim(input_shape, layer, what="last"):
    """The static size of an input's last dimension (needed to size the weights)."""
    if input_shape.ndims is None or input_shape.ndims < 1 or input_shape[-1] is None:
        raise ValueError(f"The {what} dimension of the inputs to `{type(layer).__name__}` "
                         f"should be defined. Found `None` (input shape {input_shape}).")
    return int(input_shape[-1])


class Dense(Layer):
    """tf.layers.Dense: ``activation(inputs @ kernel + bias)``; variables ``kernel`` [in, units], ``bias`` [units]."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer=inits.Zeros(), kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, trainable=True,
                 name=None, **kwargs):
        super().__init__(trainable=trainable, name=name, **kwargs)
        if int(units) <= 0:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.set_kernel_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint)

    def build(self, input_shape):
        """kernel [last_dim, units] (glorot uniform by default), bias [units] (zeros)."""
        self.kernel = self.add_weight("kernel", [last_dim(input_shape, self), self.units],
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.units], initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)

    def call(self, inputs):
        """matmul over the last axis (inputs of rank > 2 are flattened to 2-D and back)."""
        from .ops import array_ops, math_ops

        rank = inputs.shape.ndims
        if rank > 2:
            rest = inputs.shape.as_list()[1:-1]
            if None in rest:
                raise ValueError(f"Dense: inner dimensions of input {inputs.shape} must be static")
            flat = array_ops.reshape(inputs, [-1, inputs.shape[-1]])
            outputs = array_ops.reshape(math_ops.matmul(flat, self.kernel), [-1] + rest + [self.units])
        else:
            outputs = math_ops.matmul(inputs, self.kernel)
        return finish(self, outputs)


def finish(layer, outputs):
    """Bias add, activation and activity regularizer: the common tail of Dense and Conv2D."""
    if layer.use_bias:
        from .ops import nn_ops

        outputs = nn_ops.bias_add(outputs, layer.bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    if layer.activity_regularizer is not None:
        loss = layer.activity_regularizer(outputs)
        layer.losses.append(loss)
        get_default_graph().add_to_collection(GraphKeys.REGULARIZATION_LOSSES, loss)
    return outputs


class Dropout(Layer):
    """tf.layers.Dropout(rate): in training, zero ``rate`` of the units and scale the rest by 1/(1-rate).

    ``training`` is a python bool (decided while building the graph) or a scalar bool
    tensor such as a placeholder: then keep_prob = 1 - rate * cast(training), so one graph
    serves both (keep_prob 1 makes dropout the identity).
    """

    def __init__(self, rate=0.5, noise_shape=None, seed=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be a scalar in [0, 1), got {rate}")
        self.rate, self.noise_shape, self.seed = rate, noise_shape, seed

    def call(self, inputs, training=False):
        from .core_api import identity
        from .ops import math_ops, nn_ops

        if self.rate == 0.0 or training is None or training is False or isinstance(training, np.bool_) and not training:
            return identity(inputs)
        if training is True or isinstance(training, np.bool_):
            return nn_ops.dropout(inputs, rate=self.rate, noise_shape=self.noise_shape, seed=self.seed)
        training = convert_to_tensor(training)
        if training.dtype.name != "bool" or training.shape.ndims != 0:
            raise ValueError(f"Dropout: training must be a python bool or a scalar bool tensor, got {training!r}")
        keep_prob = 1.0 - self.rate * math_ops.cast(training, inputs.dtype)
        return nn_ops.dropout(inputs, keep_prob=keep_prob, noise_shape=self.noise_shape, seed=self.seed)


class Flatten(Layer):
    """tf.layers.Flatten: [batch, d1, d2, ...] -> [batch, d1*d2*...] (the batch dim may be None)."""

    def __init__(self, data_format=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)

    def call(self, inputs):
        from .ops import array_ops

        dims = inputs.shape.as_list()
        if len(dims) <= 1:
            return array_ops.reshape(inputs, [-1, 1])
        if None in dims[1:]:
            raise ValueError(f"Flatten: non-batch dimensions of input {inputs.shape} must be static")
        return array_ops.reshape(inputs, [-1, int(np.prod(dims[1:], dtype=np.int64))])


class Activation(Layer):
    """tf.keras.layers.Activation(activation): apply a named or callable activation."""

    def __init__(self, activation, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.activation = get_activation(activation)

    def call(self, inputs):
        from .core_api import identity

        return identity(inputs) if self.activation is None else self.activation(inputs)


def check_data_format(data_format):
    """Kiln's layers are NHWC only (TF's default 'channels_last')."""
    if data_format not in (None, "channels_last"):
        raise ValueError(f"data_format must be 'channels_last' (NHWC, the only layout Kiln layers support), "
                         f"got {data_format!r}")


# ----------------------------------------------------------------------------- functional forms
def dense(inputs, units, activation=None, use_bias=True, kernel_initializer=None,
          bias_initializer=inits.Zeros(), kernel_regularizer=None, bias_regularizer=None,
          activity_regularizer=None, kernel_constraint=None, bias_constraint=None, trainable=True,
          name=None, reuse=None):
    """tf.layers.dense: a one-shot Dense layer; ``name`` + ``reuse`` share variables across calls."""
    layer = Dense(units, activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                  bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, trainable,
                  name=name, _scope=name, _reuse=reuse)
    return layer(inputs)


def dropout(inputs, rate=0.5, noise_shape=None, seed=None, training=False, name=None):
    """tf.layers.dropout: identity unless ``training`` (TF1 default False)."""
    return Dropout(rate, noise_shape, seed, name=name)(inputs, training=training)


def flatten(inputs, name=None, data_format="channels_last"):
    """tf.layers.flatten."""
    return Flatten(data_format, name=name)(inputs)


class Sequential(Layer):
    """A minimal tf.keras.Sequential: a layer that chains its layers (no compile/fit)."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name)
        self.layers = []
        for layer in layers or ():
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"The added layer must be an instance of class Layer. Found: {layer!r}")
        self.layers.append(layer)

    @property
    def variables(self):
        return [v for layer in self.layers for v in layer.variables]

    weights = variables

    @property
    def trainable_variables(self):
        return [v for layer in self.layers for v in layer.trainable_variables]

    trainable_weights = trainable_variables

    def call(self, inputs, training=None):
        for layer in self.layers:
            inputs = layer(inputs, training=training)
        return inputs

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError("Kiln's Sequential only builds the graph: write the loss, "
                                  "optimizer.minimize(loss) and a tf.Session loop (or kiln train)")

    compile = fit = evaluate = predict = summary = _unsupported


from . import layers_conv as _conv  # noqa: E402  (conv/pool layers subclass Layer)

_CLASSES = {
    "Layer": Layer, "Dense": Dense, "Dropout": Dropout, "Flatten": Flatten,
    "Conv2D": _conv.Conv2D, "Convolution2D": _conv.Conv2D,
    "Conv2DTranspose": _conv.Conv2DTranspose, "Convolution2DTranspose": _conv.Conv2DTranspose,
    "MaxPooling2D": _conv.MaxPooling2D, "MaxPool2D": _conv.MaxPooling2D,
    "AveragePooling2D": _conv.AveragePooling2D, "AvgPool2D": _conv.AveragePooling2D,
}

TF_API = {
    "tf.layers": {**_CLASSES, "dense": dense, "dropout": dropout, "flatten": flatten,
                  "conv2d": _conv.conv2d, "conv2d_transpose": _conv.conv2d_transpose,
                  "max_pooling2d": _conv.max_pooling2d,
                  "average_pooling2d": _conv.average_pooling2d},
    "tf.keras.layers": {**_CLASSES, "Activation": Activation},
    "tf.keras": {"Sequential": Sequential},
    "tf.keras.models": {"Sequential": Sequential},
}

"""1-D convolution and pooling layers (tf.layers.Conv1D, MaxPooling1D, AveragePooling1D) — NWC.

Same naming and scope rules as the 2-D layers (``layers.py``): variables ``conv1d/kernel``
``[k, in_channels, filters]`` and ``conv1d/bias`` ``[filters]``.
"""
from __future__ import annotations

from . import initializers as inits
from .layers import Layer, check_data_format, finish, last_dim
from .layers_conv import normalize_padding, normalize_tuple


def _check_rank3(inputs, layer):
    if inputs.shape.ndims != 3:
        raise ValueError(f"Input 0 of layer {layer.name} is incompatible with the layer: expected ndim=3 "
                         f"(NWC), found ndim={inputs.shape.ndims}. Full shape received: {inputs.shape}")


class Conv1D(Layer):
    """tf.layers.Conv1D: kernel [k, in_channels, filters], bias [filters]; NWC."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format="channels_last",
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer=inits.Zeros(), kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, trainable=True,
                 name=None, **kwargs):
        super().__init__(trainable=trainable, name=name, **kwargs)
        check_data_format(data_format)
        if int(filters) <= 0:
            raise ValueError(f"Conv1D: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        (self.kernel_size,) = normalize_tuple(kernel_size, 1, "kernel_size")
        (self.strides,) = normalize_tuple(strides, 1, "strides")
        (self.dilation_rate,) = normalize_tuple(dilation_rate, 1, "dilation_rate")
        if self.strides != 1 and self.dilation_rate != 1:
            raise ValueError("Conv1D: strides > 1 are not supported together with dilation_rate > 1")
        self.padding = normalize_padding(padding)
        self.set_kernel_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint)

    def build(self, input_shape):
        """kernel [k, channels, filters] (glorot uniform over the receptive field), bias zeros."""
        channels = last_dim(input_shape, self, "channel")
        self.kernel = self.add_weight("kernel", [self.kernel_size, channels, self.filters],
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.filters], initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)

    def call(self, inputs):
        from .ops.conv1d_ops import conv1d

        _check_rank3(inputs, self)
        outputs = conv1d(inputs, self.kernel, stride=self.strides, padding=self.padding,
                         dilations=self.dilation_rate)
        return finish(self, outputs)


class _Pooling1D(Layer):
    """Shared 1-D pooling layer: pool_size, strides (default: pool_size), padding; no variables."""

    _POOL = None  # name of the conv_ops pooling function

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format="channels_last", name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)
        (self.pool_size,) = normalize_tuple(pool_size, 1, "pool_size")
        (self.strides,) = (self.pool_size,) if strides is None else normalize_tuple(strides, 1, "strides")
        self.padding = normalize_padding(padding)

    def call(self, inputs):
        from .ops.conv1d_ops import pool1d

        _check_rank3(inputs, self)
        return pool1d(self._POOL, inputs, self.pool_size, self.strides, self.padding)


class MaxPooling1D(_Pooling1D):
    """tf.layers.MaxPooling1D / tf.keras.layers.MaxPool1D."""

    _POOL = "max_pool"


class AveragePooling1D(_Pooling1D):
    """tf.layers.AveragePooling1D / tf.keras.layers.AvgPool1D (padding cells are not counted)."""

    _POOL = "avg_pool"


def conv1d(inputs, filters, kernel_size, strides=1, padding="valid", data_format="channels_last",
           dilation_rate=1, activation=None, use_bias=True, kernel_initializer=None,
           bias_initializer=inits.Zeros(), kernel_regularizer=None, bias_regularizer=None,
           activity_regularizer=None, kernel_constraint=None, bias_constraint=None, trainable=True,
           name=None, reuse=None):
    """tf.layers.conv1d: a one-shot Conv1D layer; ``name`` + ``reuse`` share variables."""
    layer = Conv1D(filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                   kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
                   activity_regularizer, kernel_constraint, bias_constraint, trainable,
                   name=name, _scope=name, _reuse=reuse)
    return layer(inputs)


def max_pooling1d(inputs, pool_size, strides, padding="valid", data_format="channels_last", name=None):
    """tf.layers.max_pooling1d (strides required, as in TF1)."""
    return MaxPooling1D(pool_size, strides, padding, data_format, name=name)(inputs)


def average_pooling1d(inputs, pool_size, strides, padding="valid", data_format="channels_last", name=None):
    """tf.layers.average_pooling1d (strides required, as in TF1)."""
    return AveragePooling1D(pool_size, strides, padding, data_format, name=name)(inputs)


_CLASSES = {"Conv1D": Conv1D, "Convolution1D": Conv1D, "MaxPooling1D": MaxPooling1D, "MaxPool1D": MaxPooling1D,
            "AveragePooling1D": AveragePooling1D, "AvgPool1D": AveragePooling1D}
TF_API = {
    "tf.layers": {**_CLASSES, "conv1d": conv1d, "max_pooling1d": max_pooling1d,
                  "average_pooling1d": average_pooling1d},
    "tf.keras.layers": _CLASSES,
}

"""Convolution and pooling layers (tf.layers.Conv2D, MaxPooling2D, AveragePooling2D) — NHWC.

Imported by ``layers.py``, which exports them; see that module for the naming and
variable-scope rules the layers share.
"""
from __future__ import annotations

from . import initializers as inits
from .layers import Layer, check_data_format, finish, last_dim


def normalize_tuple(value, n, name):
    """An int or an n-sequence of ints as an n-tuple (Keras' rule and error message)."""
    if isinstance(value, int):
        return (value,) * n
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or any(v <= 0 for v in out):
        raise ValueError(f"The `{name}` argument must be a tuple of {n} positive integers. Received: {value!r}")
    return out


def normalize_padding(padding):
    """'valid'/'same' in any case -> the nn op spelling 'VALID'/'SAME'."""
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"The `padding` argument must be one of 'valid', 'same'. Received: {padding!r}")
    return padding.upper()


def _nhwc(value):
    return [1, value[0], value[1], 1]


def check_rank4(inputs, layer):
    if inputs.shape.ndims != 4:
        raise ValueError(f"Input 0 of layer {layer.name} is incompatible with the layer: expected ndim=4 "
                         f"(NHWC), found ndim={inputs.shape.ndims}. Full shape received: {inputs.shape}")


class Conv2D(Layer):
    """tf.layers.Conv2D: kernel [kh, kw, in_channels, filters], bias [filters]; NHWC."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format="channels_last",
                 dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer=inits.Zeros(), kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, trainable=True,
                 name=None, **kwargs):
        super().__init__(trainable=trainable, name=name, **kwargs)
        check_data_format(data_format)
        if int(filters) <= 0:
            raise ValueError(f"Conv2D: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        if self.strides != (1, 1) and self.dilation_rate != (1, 1):
            raise ValueError("Conv2D: strides > 1 are not supported together with dilation_rate > 1")
        self.padding = normalize_padding(padding)
        self.set_kernel_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint)

    def build(self, input_shape):
        """kernel [kh, kw, channels, filters] (glorot uniform over the receptive field), bias zeros."""
        channels = last_dim(input_shape, self, "channel")
        self.kernel = self.add_weight("kernel", list(self.kernel_size) + [channels, self.filters],
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.filters], initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)

    def call(self, inputs):
        from .ops import conv_ops

        check_rank4(inputs, self)
        kwargs = {"dilations": _nhwc(self.dilation_rate)} if self.dilation_rate != (1, 1) else {}
        outputs = conv_ops.conv2d(inputs, self.kernel, strides=_nhwc(self.strides), padding=self.padding,
                                **kwargs)
        return finish(self, outputs)


class Conv2DTranspose(Conv2D):
    """tf.layers.Conv2DTranspose: kernel [kh, kw, filters, in_channels] (conv2d_transpose's layout), bias [filters].

    Output size per spatial dim (TF's deconv_output_length): ``in * stride`` for 'same',
    ``in * stride + max(kernel - stride, 0)`` for 'valid'.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format="channels_last",
                 activation=None, use_bias=True, kernel_initializer=None, bias_initializer=inits.Zeros(),
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, trainable=True, name=None, **kwargs):
        super().__init__(filters, kernel_size, strides, padding, data_format, (1, 1), activation, use_bias,
                         kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
                         activity_regularizer, kernel_constraint, bias_constraint, trainable, name=name, **kwargs)

    def build(self, input_shape):
        """kernel [kh, kw, filters, channels] (glorot uniform), bias [filters] (zeros)."""
        channels = last_dim(input_shape, self, "channel")
        self.kernel = self.add_weight("kernel", list(self.kernel_size) + [self.filters, channels],
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.filters], initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)

    def output_hw(self, input_shape):
        """The spatial output size (see the class doc)."""
        def length(size, k, s):
            return size * s + (max(k - s, 0) if self.padding == "VALID" else 0)

        return [length(int(input_shape[1 + i]), self.kernel_size[i], self.strides[i]) for i in range(2)]

    def call(self, inputs):
        from .ops import conv_ops

        check_rank4(inputs, self)
        out_shape = [None] + self.output_hw(inputs.shape) + [self.filters]
        outputs = conv_ops.conv2d_transpose(inputs, self.kernel, out_shape, strides=_nhwc(self.strides),
                                            padding=self.padding)
        return finish(self, outputs)


class _Pooling2D(Layer):
    """Shared pooling layer: pool_size, strides (default: pool_size), padding; no variables."""

    _POOL = None  # name of the conv_ops pooling function

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format="channels_last",
                 name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = self.pool_size if strides is None else normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)

    def call(self, inputs):
        from .ops import conv_ops

        check_rank4(inputs, self)
        pool = getattr(conv_ops, self._POOL)
        return pool(inputs, ksize=_nhwc(self.pool_size), strides=_nhwc(self.strides), padding=self.padding)


class MaxPooling2D(_Pooling2D):
    """tf.layers.MaxPooling2D / tf.keras.layers.MaxPool2D."""

    _POOL = "max_pool"


class AveragePooling2D(_Pooling2D):
    """tf.layers.AveragePooling2D / tf.keras.layers.AvgPool2D (padding cells are not counted)."""

    _POOL = "avg_pool"


def conv2d(inputs, filters, kernel_size, strides=(1, 1), padding="valid", data_format="channels_last",
           dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer=None,
           bias_initializer=inits.Zeros(), kernel_regularizer=None, bias_regularizer=None,
           activity_regularizer=None, kernel_constraint=None, bias_constraint=None, trainable=True,
           name=None, reuse=None):
    """tf.layers.conv2d: a one-shot Conv2D layer; ``name`` + ``reuse`` share variables."""
    layer = Conv2D(filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                   kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
                   activity_regularizer, kernel_constraint, bias_constraint, trainable,
                   name=name, _scope=name, _reuse=reuse)
    return layer(inputs)


def max_pooling2d(inputs, pool_size, strides, padding="valid", data_format="channels_last", name=None):
    """tf.layers.max_pooling2d (strides required, as in TF1)."""
    return MaxPooling2D(pool_size, strides, padding, data_format, name=name)(inputs)


def average_pooling2d(inputs, pool_size, strides, padding="valid", data_format="channels_last", name=None):
    """tf.layers.average_pooling2d (strides required, as in TF1)."""
    return AveragePooling2D(pool_size, strides, padding, data_format, name=name)(inputs)


def conv2d_transpose(inputs, filters, kernel_size, strides=(1, 1), padding="valid", data_format="channels_last",
                     activation=None, use_bias=True, kernel_initializer=None, bias_initializer=inits.Zeros(),
                     kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                     kernel_constraint=None, bias_constraint=None, trainable=True, name=None, reuse=None):
    """tf.layers.conv2d_transpose: a one-shot Conv2DTranspose; ``name`` + ``reuse`` share variables."""
    layer = Conv2DTranspose(filters, kernel_size, strides, padding, data_format, activation, use_bias,
                            kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
                            activity_regularizer, kernel_constraint, bias_constraint, trainable,
                            name=name, _scope=name, _reuse=reuse)
    return layer(inputs)

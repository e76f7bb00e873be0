"""tf.nn.conv1d and the 1-D pooling used by tf.layers.MaxPooling1D / AveragePooling1D.

A 1-D op is its 2-D op over a height of one (TF builds conv1d the same way): ``[N, W, C]``
becomes ``[N, 1, W, C]``, the filter ``[k, in, out]`` becomes ``[1, k, in, out]``, and the
result is squeezed back.  Gradients come from the 2-D ops.
"""
from __future__ import annotations

from ..convert import convert_to_tensor
from ..graph import get_default_graph
from . import conv_ops


def _rank3(t, role, what):
    if t.shape.ndims != 3:
        raise ValueError(f"{what}: {role} must be 3-dimensional, got {t.name} {t.type}")


def _width_arg(value, arg, what):
    """An int or a list of 1 or 3 entries (N, W, C) -> the width entry."""
    if isinstance(value, int):
        return value
    values = list(value)
    if len(values) == 1:
        return int(values[0])
    if len(values) == 3 and values[0] == values[2] == 1:
        return int(values[1])
    raise ValueError(f"{what}: {arg} must be an int or a list of 1 or 3 entries (batch and channel 1), got {value!r}")


def conv1d(value=None, filters=None, stride=None, padding=None, use_cudnn_on_gpu=None, data_format=None,
           name=None, input=None, dilations=None):
    """tf.nn.conv1d: ``[N, W, in]`` x ``[k, in, out]`` -> ``[N, W', out]`` (NWC only)."""
    from .array_ops import expand_dims, squeeze

    what = "conv1d"
    if value is not None and input is not None:
        raise ValueError(f"{what}: pass either 'value' or its alias 'input', not both")
    x = convert_to_tensor(value if value is not None else input)
    if filters is None or stride is None or padding is None:
        raise ValueError(f"{what}: filters, stride and padding are required")
    w = convert_to_tensor(filters)
    _rank3(x, "value", what)
    _rank3(w, "filters", what)
    if data_format not in (None, "NWC"):
        raise ValueError(f"{what}: Kiln supports data_format NWC only, got {data_format!r}")
    s = _width_arg(stride, "stride", what)
    d = 1 if dilations is None else _width_arg(dilations, "dilations", what)
    with get_default_graph().name_scope(name or "conv1d"):
        out = conv_ops.conv2d(expand_dims(x, 1), expand_dims(w, 0), strides=[1, 1, s, 1], padding=padding,
                              dilations=[1, 1, d, 1])
        return squeeze(out, [1])


def pool1d(kind, inputs, pool_size, strides, padding):
    """Max or average pooling of ``[N, W, C]`` over windows of ``pool_size`` (kind 'max_pool'/'avg_pool')."""
    from .array_ops import expand_dims, squeeze

    x = convert_to_tensor(inputs)
    _rank3(x, "inputs", kind)
    pool = getattr(conv_ops, kind)
    out = pool(expand_dims(x, 1), ksize=[1, 1, pool_size, 1], strides=[1, 1, strides, 1], padding=padding)
    return squeeze(out, [1])


TF_API = {"tf.nn": {"conv1d": conv1d}}

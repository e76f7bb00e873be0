"""Convolution and pooling constructors of ``tf.nn`` (TF1 names and signatures, NHWC only).

Each constructor turns TF's arguments (4-element strides/ksize lists, 'SAME'/'VALID')
into the explicit IR attrs of ``compiler/ir/ops/conv.py``: ``strides=(sh, sw)``,
``pads=((top, bottom), (left, right))`` and ``dilations=(dh, dw)``.  Height and width must
be static; the batch dim may be symbolic.  Shape arguments (conv2d_transpose's
``output_shape``, the backprop ops' ``input_sizes``) may be a list — ``None`` or ``-1``
as the first entry means "the batch of the gradient input" — or a tensor whose value is
known when the graph is built (``tf.shape(x)``, a stack of those, a constant).  The batch
entry of such a shape is always taken from the tensor the op consumes (TF requires them
to agree at run time anyway).
"""
from __future__ import annotations

from ...ir.ops.conv import padding_pads
from ...ir.types import Sym, shape_str
from ..convert import convert_pair, convert_to_tensor
from ..graph import make_op

_PADDINGS = ("SAME", "VALID")


# ----------------------------------------------------------------------------- argument helpers
def _fail(what, message):
    raise ValueError(f"{what}: {message}")


def _pick(primary, alias, arg, what):
    """TF1's renamed kwargs (filter/filters, value/input): exactly one of them."""
    if primary is not None and alias is not None:
        _fail(what, f"pass either '{arg}' or its alias, not both")
    if primary is None and alias is None:
        _fail(what, f"missing required argument '{arg}'")
    return primary if primary is not None else alias


def _hw_arg(value, arg, what, default=None):
    """(h, w) from an int or a list of 1, 2 or 4 ints (4: NHWC, batch and depth entries must be 1)."""
    if value is None:
        if default is None:
            _fail(what, f"missing required argument '{arg}'")
        value = default
    if isinstance(value, int):
        value = [value]
    value = [int(v) for v in value]
    if len(value) == 4:
        if value[0] != 1 or value[3] != 1:
            _fail(what, f"{arg} {value}: Kiln supports {arg} over height and width only "
                        f"(batch and depth entries must be 1)")
        value = value[1:3]
    elif len(value) == 1:
        value = value * 2
    if len(value) != 2 or min(value) < 1:
        _fail(what, f"{arg} must be a positive int or a list of 1, 2 or 4 positive ints, got {value}")
    return tuple(value)


def _check_format(data_format, what):
    if data_format not in (None, "NHWC"):
        _fail(what, f"data_format {data_format!r} is not supported; Kiln supports 'NHWC' only "
                    f"(transpose NCHW input with tf.transpose(x, [0, 2, 3, 1]))")


def _rank4(t, role, what):
    if t.type.rank != 4:
        _fail(what, f"{role} must be rank 4 ({'NHWC' if role != 'filter' else 'HWIO'}), "
                    f"got {shape_str(t.type.shape)}")


def _pads(in_shape, window, strides, dilations, padding, what):
    """Explicit pads for 'SAME'/'VALID' or TF's explicit [[0,0],[t,b],[l,r],[0,0]] list."""
    if in_shape is None or len(in_shape) != 4:
        _fail(what, f"the input must be rank 4 (NHWC), got {shape_str(in_shape)}")
    h, w = in_shape[1], in_shape[2]
    if not isinstance(h, int) or not isinstance(w, int):
        _fail(what, f"height and width must be static (Kiln computes the padding when the graph is "
                    f"built), got input {shape_str(in_shape).replace('N', '?')}; give the placeholder "
                    f"a shape such as [None, 28, 28, 1]")
    if isinstance(padding, str):
        if padding not in _PADDINGS:
            _fail(what, f"padding must be 'SAME' or 'VALID', got {padding!r}")
        return tuple(padding_pads(s, k, st, d, padding) for s, k, st, d in zip((h, w), window, strides, dilations))
    pairs = [tuple(int(v) for v in p) for p in padding]
    if len(pairs) != 4 or pairs[0] != (0, 0) or pairs[3] != (0, 0) or min(min(pairs)) < 0:
        _fail(what, f"explicit padding must be [[0,0],[top,bottom],[left,right],[0,0]] with "
                    f"non-negative entries, got {padding!r}")
    return (pairs[1], pairs[2])


def _window_attrs(in_shape, kernel_hw, strides, padding, dilations, data_format, what):
    """IR attrs of a conv kind from TF arguments."""
    _check_format(data_format, what)
    strides = _hw_arg(strides, "strides", what)
    dilations = _hw_arg(dilations, "dilations", what, default=[1])
    pads = _pads(in_shape, kernel_hw, strides, dilations, padding, what)
    return {"strides": strides, "pads": pads, "dilations": dilations}


def _shape_with_batch(shape, batch, what):
    """A 4-dim static shape argument with its batch entry replaced by ``batch``."""
    from .array_ops import shape_arg

    dims = list(shape_arg([-1 if d is None else d for d in shape] if isinstance(shape, (list, tuple)) else shape,
                          what, allow_unknown=True))
    if len(dims) != 4:
        _fail(what, f"expected a 4-element NHWC shape, got {dims}")
    if any(isinstance(d, int) and d < 0 for d in dims[1:]):
        _fail(what, f"only the batch entry may be None or -1, got {dims}")
    return (batch,) + tuple(dims[1:])


# ----------------------------------------------------------------------------- convolutions
def conv2d(input, filter=None, strides=None, padding=None, use_cudnn_on_gpu=True, data_format="NHWC",
           dilations=(1, 1, 1, 1), name=None, filters=None):
    """tf.nn.conv2d: NHWC input, HWIO filter; padding 'SAME' (extra on the bottom/right), 'VALID' or explicit."""
    x, w = convert_pair(input, _pick(filter, filters, "filter", "conv2d"))
    _rank4(x, "input", "conv2d")
    _rank4(w, "filter", "conv2d")
    attrs = _window_attrs(x.type.shape, w.type.shape[:2], strides, padding, dilations, data_format, "conv2d")
    return make_op("conv2d", [x, w], attrs, name=name or "Conv2D")


def conv2d_backprop_input(input_sizes, filter=None, out_backprop=None, strides=None, padding=None,
                          use_cudnn_on_gpu=True, data_format="NHWC", dilations=(1, 1, 1, 1), name=None,
                          filters=None):
    """tf.nn.conv2d_backprop_input: the gradient of conv2d with respect to its input."""
    return _backprop_input("conv2d", input_sizes, _pick(filter, filters, "filter", "conv2d_backprop_input"),
                           out_backprop, strides, padding, dilations, data_format, name or "Conv2DBackpropInput")


def _backprop_input(kind, input_sizes, filter, out_backprop, strides, padding, dilations, data_format, name):
    """conv2d_backprop_input / depthwise_..._backprop_input from TF arguments."""
    what = f"{kind}_backprop_input"
    w, dy = convert_pair(filter, out_backprop)
    _rank4(w, "filter", what)
    _rank4(dy, "out_backprop", what)
    in_shape = _shape_with_batch(input_sizes, dy.type.shape[0], f"{what} input_sizes")
    attrs = _window_attrs(in_shape, w.type.shape[:2], strides, padding, dilations, data_format, what)
    attrs["input_shape"] = in_shape
    return make_op(what, [w, dy], attrs, name=name)


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides, padding, use_cudnn_on_gpu=True,
                           data_format="NHWC", dilations=(1, 1, 1, 1), name=None):
    """tf.nn.conv2d_backprop_filter: the gradient of conv2d with respect to its filter."""
    return _backprop_filter("conv2d", input, filter_sizes, out_backprop, strides, padding, dilations,
                            data_format, name or "Conv2DBackpropFilter")


def _backprop_filter(kind, input, filter_sizes, out_backprop, strides, padding, dilations, data_format, name):
    from .array_ops import shape_arg

    what = f"{kind}_backprop_filter"
    x, dy = convert_pair(input, out_backprop)
    _rank4(x, "input", what)
    fshape = shape_arg(filter_sizes, f"{what} filter_sizes")
    if len(fshape) != 4 or any(isinstance(d, Sym) for d in fshape):
        _fail(what, f"filter_sizes must be 4 static ints, got {list(fshape)}")
    attrs = _window_attrs(x.type.shape, fshape[:2], strides, padding, dilations, data_format, what)
    attrs["filter_shape"] = tuple(fshape)
    return make_op(what, [x, dy], attrs, name=name)


def conv2d_transpose(value=None, filter=None, output_shape=None, strides=None, padding="SAME",
                     data_format="NHWC", name=None, input=None, filters=None, dilations=None):
    """tf.nn.conv2d_transpose: the adjoint of conv2d (filter is [h, w, out_channels, in_channels]).

    ``output_shape`` is a static 4-element shape (a list, or tf.shape-derived tensor);
    its batch entry may be None and is always the batch of ``value``.
    """
    what = "conv2d_transpose"
    value = _pick(value, input, "value", what)
    w, v = convert_pair(_pick(filter, filters, "filter", what), value)
    _rank4(v, "value", what)
    _rank4(w, "filter", what)
    if output_shape is None:
        _fail(what, "missing required argument 'output_shape'")
    out_shape = _shape_with_batch(output_shape, v.type.shape[0], f"{what} output_shape")
    if v.type.shape[3] != w.type.shape[3]:
        _fail(what, f"input channels does not match filter's input channels, "
                    f"{v.type.shape[3]} != {w.type.shape[3]} (value {shape_str(v.type.shape)}, "
                    f"filter {shape_str(w.type.shape)})")
    if out_shape[3] != w.type.shape[2]:
        _fail(what, f"output_shape's last dimension does not match filter's output channels, "
                    f"{out_shape[3]} != {w.type.shape[2]}")
    return _backprop_input("conv2d", list(out_shape), w, v, strides, padding, dilations, data_format,
                           name or "conv2d_transpose")


def _depthwise_dilations(rate, dilations, strides, what):
    """TF's ``rate`` (atrous) and ``dilations`` for depthwise convs; rate > 1 needs stride 1."""
    if rate is not None and dilations is not None:
        _fail(what, "pass either 'rate' or 'dilations', not both")
    dil = _hw_arg(rate if rate is not None else dilations, "rate", what, default=[1])
    steps = _hw_arg(strides, "strides", what)
    if max(dil) > 1 and max(steps) > 1:
        _fail(what, f"rate {list(dil)} > 1 with strides {list(steps)} > 1 is not supported (as in TF)")
    return dil


def depthwise_conv2d(input, filter, strides, padding, rate=None, name=None, data_format=None, dilations=None):
    """tf.nn.depthwise_conv2d: filter [h, w, in_channels, multiplier] -> in_channels*multiplier outputs."""
    dil = _depthwise_dilations(rate, dilations, strides, "depthwise_conv2d")
    return depthwise_conv2d_native(input, filter, strides, padding, data_format, dil, name or "depthwise")


def depthwise_conv2d_native(input, filter, strides, padding, data_format="NHWC", dilations=(1, 1, 1, 1),
                            name=None):
    """tf.nn.depthwise_conv2d_native: the kernel behind depthwise_conv2d."""
    x, w = convert_pair(input, filter)
    _rank4(x, "input", "depthwise_conv2d")
    _rank4(w, "filter", "depthwise_conv2d")
    attrs = _window_attrs(x.type.shape, w.type.shape[:2], strides, padding, dilations, data_format,
                          "depthwise_conv2d")
    return make_op("depthwise_conv2d", [x, w], attrs, name=name or "DepthwiseConv2dNative")


def depthwise_conv2d_native_backprop_input(input_sizes, filter, out_backprop, strides, padding,
                                           data_format="NHWC", dilations=(1, 1, 1, 1), name=None):
    return _backprop_input("depthwise_conv2d", input_sizes, filter, out_backprop, strides, padding, dilations,
                           data_format, name or "DepthwiseConv2dNativeBackpropInput")


def depthwise_conv2d_native_backprop_filter(input, filter_sizes, out_backprop, strides, padding,
                                            data_format="NHWC", dilations=(1, 1, 1, 1), name=None):
    return _backprop_filter("depthwise_conv2d", input, filter_sizes, out_backprop, strides, padding, dilations,
                            data_format, name or "DepthwiseConv2dNativeBackpropFilter")


def separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding, rate=None, name=None,
                     data_format=None, dilations=None):
    """tf.nn.separable_conv2d: depthwise conv, then a 1x1 conv mixing channels."""
    dil = _depthwise_dilations(rate, dilations, strides, "separable_conv2d")
    depthwise = depthwise_conv2d_native(input, depthwise_filter, strides, padding, data_format, dil,
                                        name="separable_conv2d_depthwise")
    return conv2d(depthwise, pointwise_filter, [1, 1, 1, 1], "VALID", data_format=data_format,
                  name=name or "separable_conv2d")


# ----------------------------------------------------------------------------- pooling
def _pool(kind, value, input, ksize, strides, padding, data_format, name):
    """max_pool / avg_pool from TF arguments (ksize and strides over height and width)."""
    x = convert_to_tensor(_pick(value, input, "value", kind))
    _rank4(x, "value", kind)
    _check_format(data_format, kind)
    ksize = _hw_arg(ksize, "ksize", kind)
    strides = _hw_arg(strides, "strides", kind)
    if not isinstance(padding, str):
        _fail(kind, f"padding must be 'SAME' or 'VALID', got {padding!r}")
    pads = _pads(x.type.shape, ksize, strides, (1, 1), padding, kind)
    return make_op(kind, [x], {"ksize": ksize, "strides": strides, "pads": pads}, name=name)


def max_pool(value=None, ksize=None, strides=None, padding=None, data_format="NHWC", name=None, input=None):
    """tf.nn.max_pool: padding never wins the max; the gradient goes to the first max of a window."""
    return _pool("max_pool", value, input, ksize, strides, padding, data_format, name or "MaxPool")


def avg_pool(value=None, ksize=None, strides=None, padding=None, data_format="NHWC", name=None, input=None):
    """tf.nn.avg_pool: with 'SAME' each window divides by its count of unpadded elements (like TF)."""
    return _pool("avg_pool", value, input, ksize, strides, padding, data_format, name or "AvgPool")


def max_pool2d(input, ksize, strides, padding, data_format="NHWC", name=None):
    return max_pool(input, ksize, strides, padding, data_format, name)


def avg_pool2d(input, ksize, strides, padding, data_format="NHWC", name=None):
    return avg_pool(input, ksize, strides, padding, data_format, name)


NN_API = {
    "conv2d": conv2d, "conv2d_backprop_input": conv2d_backprop_input,
    "conv2d_backprop_filter": conv2d_backprop_filter, "conv2d_transpose": conv2d_transpose,
    "depthwise_conv2d": depthwise_conv2d, "depthwise_conv2d_native": depthwise_conv2d_native,
    "depthwise_conv2d_native_backprop_input": depthwise_conv2d_native_backprop_input,
    "depthwise_conv2d_native_backprop_filter": depthwise_conv2d_native_backprop_filter,
    "separable_conv2d": separable_conv2d, "max_pool": max_pool, "avg_pool": avg_pool,
    "max_pool2d": max_pool2d, "avg_pool2d": avg_pool2d,
}

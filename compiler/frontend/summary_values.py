"""The host side of ``tf.summary``: a summary op's fetched inputs -> serialized ``Summary``
bytes, value for value as TF's kernels make them (``ScalarSummary``, ``HistogramSummary``,
``ImageSummary``, ``TensorSummaryV2`` with the text plugin, ``MergeSummary``).

The protos are TensorBoard's, as tensorboardX ships them (``runtime.events.proto``, imported
on the first fetch).  Each ``evaluate_*`` is a host-op evaluator (``host_ops.register_evaluator``):
``(op, input values) -> bytes``; a ValueError becomes ``tf.errors.InvalidArgumentError``.
"""
from __future__ import annotations

import functools

import numpy as np

from runtime.events import proto

from .summary_image import image_pixels, png

_DBL_MAX = float(np.finfo(np.float64).max)
_DT_STRING = 7  # tensorflow.DataType DT_STRING


@functools.lru_cache(maxsize=1)
def default_bucket_limits() -> np.ndarray:
    """TF's default histogram bucket limits (``histogram::Histogram``): 0, +-1e-12 growing by
    10% up to 1e20, and +-DBL_MAX (1549 limits)."""
    pos, v = [], 1.0e-12
    while v < 1.0e20:
        pos.append(v)
        v *= 1.1
    pos.append(_DBL_MAX)
    return np.array([-x for x in reversed(pos)] + [0.0] + pos, np.float64)


def histogram_proto(values: np.ndarray, tag: str):
    """A ``HistogramProto`` of ``values`` as TF's ``HistogramSummary`` makes it: counts in the
    default buckets (a value goes to the first limit above it), runs of empty buckets
    collapsed into one, sums added in element order in double precision."""
    summary_pb2 = proto("summary")
    flat = np.asarray(values, np.float64).reshape(-1)
    if np.isnan(flat).any():
        raise ValueError(f"Nan in summary histogram for: {tag}")
    if np.isinf(flat).any():
        raise ValueError(f"Infinity in Histogram for: {tag}")
    limits = default_bucket_limits()
    counts = np.bincount(np.searchsorted(limits, flat, side="right"), minlength=len(limits))
    empty = flat.size == 0  # TF's Histogram starts at min DBL_MAX, max -DBL_MAX
    histo = summary_pb2.HistogramProto(
        min=_DBL_MAX if empty else flat.min(), max=-_DBL_MAX if empty else flat.max(), num=float(flat.size),
        sum=0.0 if empty else np.cumsum(flat)[-1], sum_squares=0.0 if empty else np.cumsum(flat * flat)[-1])
    i = 0
    while i < len(limits):
        j = i + 1
        if counts[i] <= 0:  # collapse a run of empty buckets into its last one
            while j < len(limits) and counts[j] <= 0:
                j += 1
        histo.bucket_limit.append(limits[j - 1])
        histo.bucket.append(float(counts[j - 1]))
        i = j
    return histo


def _serialize(values) -> bytes:
    return proto("summary").Summary(value=values).SerializeToString()


def shape_problem(kind, dims, tag, name):
    """TF's shape check of a scalar or image summary's input (``dims``: ints, or '?' for a
    dim unknown at build time); the message, or None when the shape fits."""
    text = ",".join(str(d) for d in dims)
    if kind == "scalar_summary" and dims:
        return f"tags and values are not the same shape: [] != [{text}] (tag '{tag}')"
    if kind == "image_summary" and (len(dims) != 4 or str(dims[3]) not in ("1", "3", "4")):
        return f"Tensor must be 4-D with last dim 1, 3, or 4, not [{text}] (tf.summary.image '{tag}': {name})"
    return None


def _check_run_shape(op, value) -> None:
    """The shape check of an input whose shape was not known when the op was built."""
    problem = shape_problem(op.type, np.shape(value), op.attrs["tag"], op.inputs[0].name)
    if problem:
        raise ValueError(problem)


def evaluate_scalar(op, inputs) -> bytes:
    """ScalarSummary: ``simple_value`` (float32) under the op's tag."""
    _check_run_shape(op, inputs[0])
    value = proto("summary").Summary.Value(tag=op.attrs["tag"], simple_value=float(inputs[0]))
    return _serialize([value])


def evaluate_histogram(op, inputs) -> bytes:
    """HistogramSummary over every element of the input."""
    tag = op.attrs["tag"]
    return _serialize([proto("summary").Summary.Value(tag=tag, histo=histogram_proto(inputs[0], tag))])


def evaluate_image(op, inputs) -> bytes:
    """ImageSummary: the first ``max_outputs`` images as PNG; tags ``tag/image/i`` (or
    ``tag/image`` when ``max_outputs`` is 1)."""
    summary_pb2 = proto("summary")
    tag, max_outputs = op.attrs["tag"], op.attrs["max_outputs"]
    _check_run_shape(op, inputs[0])
    images = np.asarray(inputs[0])
    values = []
    for i in range(min(max_outputs, images.shape[0])):
        pixels = image_pixels(images[i])
        h, w, c = pixels.shape
        image = summary_pb2.Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=png(pixels))
        values.append(summary_pb2.Summary.Value(
            tag=f"{tag}/image/{i}" if max_outputs > 1 else f"{tag}/image", image=image))
    return _serialize(values)


def evaluate_text(op, inputs) -> bytes:
    """TensorSummaryV2 of the op's string constant, marked for TensorBoard's text plugin."""
    summary_pb2, tensor_pb2, shape_pb2 = proto("summary"), proto("tensor"), proto("tensor_shape")
    text = op.attrs["value"]
    shape = shape_pb2.TensorShapeProto(dim=[shape_pb2.TensorShapeProto.Dim(size=d) for d in text.shape])
    tensor = tensor_pb2.TensorProto(dtype=_DT_STRING, tensor_shape=shape, string_val=list(text.reshape(-1)))
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    return _serialize([summary_pb2.Summary.Value(tag=op.attrs["tag"], tensor=tensor, metadata=metadata)])


def evaluate_merge(op, inputs) -> bytes:
    """MergeSummary: every value of every input, in order; a tag seen twice is an error."""
    summary_pb2 = proto("summary")
    merged, tags = summary_pb2.Summary(), set()
    for data in inputs:
        for value in summary_pb2.Summary.FromString(data).value:
            if value.tag and value.tag in tags:
                raise ValueError(f"Duplicate tag {value.tag} found in summary inputs ")
            tags.add(value.tag)
            merged.value.append(value)
    return merged.SerializeToString()

"""``tf.summary``: TF1's summary ops (scalar, histogram, image, text, merge, merge_all).

Each op is a host op (``host_ops``): a graph node with a scalar ``string`` output that
``Session.run`` evaluates after the run from its fetched numeric inputs, giving the
serialized ``Summary`` protobuf bytes TF gives (``summary_values``), ready for
``FileWriter.add_summary`` (``summary_writer``).  Names and tags follow TF1's
``summary_scope``: the op is named by a name scope opened with the (cleaned) name, the tag
is that scope (``train/loss``, ``train/loss_1`` for a second one); with ``family`` the scope
is ``family/name`` and the tag ``family/family/name``.  Summaries join
``GraphKeys.SUMMARIES`` (or ``collections``); ``merge`` joins no collection by default.

Kiln has no string tensors: ``tf.summary.text`` takes its text as a Python ``str``/``bytes``
or a (nested) list / numpy array of them, and a tensor there is an error.
"""
from __future__ import annotations

import contextlib
import re

import numpy as np

from . import host_ops, summary_values
from .convert import convert_to_tensor
from .graph import GraphKeys, Tensor, get_default_graph
from .tf_logging import get_logger

_INVALID_TAG_CHARACTERS = re.compile(r"[^-/\w\.]")


def clean_tag(name):
    """TF's tag cleaning: characters other than ``[-/\\w.]`` become ``_``, leading ``/`` go."""
    if name is not None:
        new = _INVALID_TAG_CHARACTERS.sub("_", name).lstrip("/")
        if new != name:
            get_logger().info("Summary name %s is illegal; using %s instead.", name, new)
            name = new
    return name


@contextlib.contextmanager
def summary_scope(graph, name, family=None):
    """Open TF's summary scope: yields ``(tag, op name)`` (module doc)."""
    name, family = clean_tag(name), clean_tag(family)
    base = name if family is None else f"{family}/{name}"
    with graph.name_scope(base) as scope:
        scope = scope.rstrip("/")
        yield (scope if family is None else f"{family}/{scope}"), scope


def _collect(tensor, collections, default):
    for key in (default if collections is None else collections):
        tensor.graph.add_to_collection(key, tensor)
    return tensor


def _real_tensor(value, op_type) -> Tensor:
    """The input of a summary of numbers: a real-valued tensor (TF refuses bool)."""
    tensor = convert_to_tensor(value)
    if tensor.dtype.is_bool or tensor.dtype == host_ops.string:
        raise TypeError(f"Value passed to parameter 'values' has DataType {tensor.dtype.name} not in list "
                        f"of allowed values of {op_type} (real numbers)")
    return tensor


def _summary(kind, op_type, name, value, attrs, collections, family):
    """Add a one-input summary op of ``kind`` (TF type ``op_type``) and collect it."""
    tensor = _real_tensor(value, op_type)
    with summary_scope(tensor.graph, name, family) as (tag, op_name):
        _check_shape(kind, tensor, tag)
        out = host_ops.create(tensor.graph, kind, [tensor], {"tag": tag, **attrs}, op_name)
    return _collect(out, collections, [GraphKeys.SUMMARIES])


def _check_shape(kind, tensor, tag):
    """TF's runtime shape checks, made when the op is built where the rank is known (else
    when the summary is evaluated)."""
    if tensor.type.shape is None:
        return
    dims = [d if isinstance(d, int) else "?" for d in tensor.type.shape]
    problem = summary_values.shape_problem(kind, dims, tag, tensor.name)
    if problem and not (kind == "image_summary" and "?" in dims[3:] and len(dims) == 4):
        raise ValueError(problem)


def scalar(name, tensor, collections=None, family=None):
    """tf.summary.scalar: a ``Summary`` with one ``simple_value`` of a real scalar tensor."""
    return _summary("scalar_summary", "ScalarSummary", name, tensor, {}, collections, family)


def histogram(name, values, collections=None, family=None):
    """tf.summary.histogram: a ``Summary`` with TF's histogram (default buckets) of ``values``."""
    return _summary("histogram_summary", "HistogramSummary", name, values, {}, collections, family)


def image(name, tensor, max_outputs=3, collections=None, family=None):
    """tf.summary.image: PNG images of the first ``max_outputs`` of a [N, H, W, 1|3|4] tensor
    (uint8 as is; floats scaled per image as TF does; see summary_image)."""
    if int(max_outputs) < 1:
        raise ValueError(f"max_outputs must be >= 1, got {max_outputs}")
    return _summary("image_summary", "ImageSummary", name, tensor, {"max_outputs": int(max_outputs)},
                    collections, family)


def text(name, tensor, collections=None):
    """tf.summary.text: a text-plugin summary of a Python ``str``/``bytes``, or a (nested) list
    / numpy array of them (Kiln has no string tensors; a tensor is an error)."""
    value = _text_array(tensor, name)
    graph = get_default_graph()
    with summary_scope(graph, name) as (tag, op_name):
        out = host_ops.create(graph, "text_summary", [], {"tag": tag, "value": value}, op_name)
    return _collect(out, collections, [GraphKeys.SUMMARIES])


def _text_array(value, name) -> np.ndarray:
    """``value`` as an object array of UTF-8 bytes, or a clear error."""
    if isinstance(value, Tensor):
        raise ValueError(f"Expected tensor {value.name} to have dtype string, got {value.dtype!s}: Kiln has "
                         f"no string tensors; pass tf.summary.text('{name}', ...) the text itself "
                         "(a str, or a list of str)")
    try:
        arr = np.array(value, dtype=object)
    except ValueError as err:  # ragged nesting
        raise ValueError(f"tf.summary.text '{name}': {err}") from None
    flat = arr.reshape(-1)
    for i, item in enumerate(flat):
        if isinstance(item, str):
            flat[i] = item.encode("utf-8")
        elif not isinstance(item, bytes):
            raise ValueError(f"tf.summary.text '{name}' takes str or bytes (or lists of them); "
                             f"got {type(item).__name__} {item!r}")
    return flat.reshape(arr.shape)


def merge(inputs, collections=None, name=None):
    """tf.summary.merge: one ``Summary`` holding every value of ``inputs`` (duplicate tags are
    an error when it runs, as in TF)."""
    inputs = list(inputs)
    if not inputs:
        raise ValueError("tf.summary.merge: Length for attr 'N' of 0 must be at least minimum 1 "
                         "(give it at least one summary)")
    for t in inputs:
        if not isinstance(t, Tensor) or t.dtype != host_ops.string:
            raise TypeError(f"tf.summary.merge: inputs must be summary tensors (dtype string), got {t!r}")
    graph = inputs[0].graph
    with graph.name_scope(name or "Merge"):
        out = host_ops.create(graph, "merge_summary", inputs, {}, graph.unique_name(name or "MergeSummary"))
    return _collect(out, collections, [])


def merge_all(key=GraphKeys.SUMMARIES, scope=None, name=None):
    """tf.summary.merge_all: ``merge`` of the collection ``key`` (filtered by ``scope``); None
    when it is empty."""
    summaries = get_default_graph().get_collection(key, scope=scope)
    return merge(summaries, name=name) if summaries else None


for _kind in ("scalar", "histogram", "image", "text", "merge"):
    host_ops.register_evaluator(f"{_kind}_summary", getattr(summary_values, f"evaluate_{_kind}"))


TF_API = {
    "tf.summary": {"scalar": scalar, "histogram": histogram, "image": image, "text": text,
                   "merge": merge, "merge_all": merge_all},
}

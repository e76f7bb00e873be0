"""tf.metrics (TF1 streaming metrics): accuracy, mean, mean_squared_error, mean_absolute_error,
root_mean_squared_error, precision, recall, true/false positives/negatives.

Each metric keeps running sums in local variables (collections LOCAL_VARIABLES and
METRIC_VARIABLES, not trainable), named as TF names them under the metric's variable
scope (``accuracy/total``, ``accuracy/count``, ``precision/true_positives/count``, ...),
and returns ``(value, update_op)``: ``value`` reads the sums, ``update_op`` adds this
batch and returns the updated value.  ``tf.local_variables_initializer()`` resets them.
"""
from __future__ import annotations

from ..ir.types import float32
from .convert import convert_to_tensor
from .core_api import identity
from .graph import GraphKeys, get_default_graph
from .ops import array_ops as A
from .ops import math_ops as M
from .variables import Variable, variable_scope

_COLLECTIONS = [GraphKeys.LOCAL_VARIABLES, GraphKeys.METRIC_VARIABLES]


def metric_variable(shape, dtype, name):
    """A zero-initialized local metric variable (TF's ``metric_variable``)."""
    return Variable(lambda: A.zeros(shape, dtype), trainable=False, collections=_COLLECTIONS, name=name)


def _add(collections, value):
    for key in collections or ():
        get_default_graph().add_to_collection(key, value)


def _squeeze_pair(labels, predictions):
    """TF's remove_squeezable_dimensions: drop a trailing size-1 dim that makes ranks differ by one."""
    lr, pr = labels.shape.ndims, predictions.shape.ndims
    if pr - lr == 1 and predictions.type.shape[-1] == 1:
        predictions = A.squeeze(predictions, [-1])
    elif lr - pr == 1 and labels.type.shape[-1] == 1:
        labels = A.squeeze(labels, [-1])
    return labels, predictions


def _weights_like(weights, values, what):
    """float32 weights broadcast to ``values`` (TF squeezes or expands one trailing dim first)."""
    w = M.cast(convert_to_tensor(weights), float32)
    wr, vr = w.shape.ndims, values.shape.ndims
    if wr - vr == 1 and w.type.shape[-1] == 1:
        w = A.squeeze(w, [-1])
    elif vr - wr == 1 and wr > 0:
        w = A.expand_dims(w, -1)
    try:
        return M.multiply(w, A.ones_like(values))
    except ValueError as err:
        raise ValueError(f"{what}: weights {w.type} can not be broadcast to values {values.type}: {err}") from None


def _safe_div(num, den, name):
    """num / den, 0 where den <= 0 (TF's div_no_nan(num, maximum(den, 0)))."""
    positive = M.greater(den, 0.0)
    return M.where_v2(positive, M.truediv(num, M.where_v2(positive, den, 1.0)), 0.0, name=name)


def mean(values, weights=None, metrics_collections=None, updates_collections=None, name=None):
    """tf.metrics.mean: the (weighted) mean of every value seen since the last reset."""
    with variable_scope(name, "mean"):
        values = M.cast(convert_to_tensor(values), float32)
        total = metric_variable([], float32, "total")
        count = metric_variable([], float32, "count")
        if weights is None:
            num = M.cast(A.size(values), float32)
        else:
            w = _weights_like(weights, values, "mean")
            values, num = M.multiply(values, w), M.reduce_sum(w)
        update_total = total.assign_add(M.reduce_sum(values))
        update_count = count.assign_add(num)
        value = _safe_div(total, count, "value")
        update_op = _safe_div(update_total, update_count, "update_op")
    _add(metrics_collections, value)
    _add(updates_collections, update_op)
    return value, update_op


def accuracy(labels, predictions, weights=None, metrics_collections=None, updates_collections=None, name=None):
    """tf.metrics.accuracy: how often ``predictions`` equals ``labels`` (weighted mean of matches)."""
    labels, predictions = convert_to_tensor(labels), convert_to_tensor(predictions)
    labels, predictions = _squeeze_pair(labels, predictions)
    if predictions.dtype != labels.dtype:
        predictions = M.cast(predictions, labels.dtype)
    if labels.type.shape != predictions.type.shape:
        raise ValueError(f"accuracy: labels {labels.type} and predictions {predictions.type} must have the "
                         f"same shape")
    correct = M.cast(M.equal(predictions, labels), float32)
    return mean(correct, weights, metrics_collections, updates_collections, name or "accuracy")


def mean_squared_error(labels, predictions, weights=None, metrics_collections=None, updates_collections=None,
                       name=None):
    """tf.metrics.mean_squared_error: running mean of (labels - predictions)**2."""
    labels, predictions = _squeeze_pair(convert_to_tensor(labels), convert_to_tensor(predictions))
    err = M.squared_difference(labels, predictions)
    return mean(err, weights, metrics_collections, updates_collections, name or "mean_squared_error")


def mean_absolute_error(labels, predictions, weights=None, metrics_collections=None, updates_collections=None,
                        name=None):
    """tf.metrics.mean_absolute_error: running mean of |predictions - labels|."""
    labels, predictions = _squeeze_pair(convert_to_tensor(labels), convert_to_tensor(predictions))
    err = M.abs(M.subtract(predictions, labels))
    return mean(err, weights, metrics_collections, updates_collections, name or "mean_absolute_error")


def root_mean_squared_error(labels, predictions, weights=None, metrics_collections=None,
                            updates_collections=None, name=None):
    """tf.metrics.root_mean_squared_error: sqrt of the running mean squared error."""
    mse, update_mse = mean_squared_error(labels, predictions, weights, None, None,
                                         name or "root_mean_squared_error")
    value, update_op = M.sqrt(mse), M.sqrt(update_mse)
    _add(metrics_collections, value)
    _add(updates_collections, update_op)
    return value, update_op


#: the confusion-matrix cell each counting metric sums: (label, prediction)
_CELLS = {"true_positives": (True, True), "false_positives": (False, True),
          "false_negatives": (True, False), "true_negatives": (False, False)}


def _bools(labels, predictions):
    return _squeeze_pair(M.cast(convert_to_tensor(labels), "bool"), M.cast(convert_to_tensor(predictions), "bool"))


def _count(kind, labels, predictions, weights, name):
    """(value, update_op) of a ``<kind>/count`` variable summing the (weighted) cell ``kind``."""
    with variable_scope(name, kind):
        labels, predictions = _bools(labels, predictions)
        want_label, want_prediction = _CELLS[kind]
        cond = M.logical_and(labels if want_label else M.logical_not(labels),
                             predictions if want_prediction else M.logical_not(predictions))
        count = metric_variable([], float32, "count")
        values = M.cast(cond, float32)
        if weights is not None:
            values = M.multiply(values, _weights_like(weights, values, kind))
        return identity(count), count.assign_add(M.reduce_sum(values))


def _counting_metric(kind):
    """tf.metrics.true_positives / false_positives / false_negatives / true_negatives."""
    def metric(labels, predictions, weights=None, metrics_collections=None, updates_collections=None, name=None):
        value, update_op = _count(kind, labels, predictions, weights, name)
        _add(metrics_collections, value)
        _add(updates_collections, update_op)
        return value, update_op

    metric.__name__ = kind
    metric.__doc__ = f"tf.metrics.{kind}: the running (weighted) count of {kind.replace('_', ' ')}."
    return metric


def _ratio_metric(kind, other, labels, predictions, weights, metrics_collections, updates_collections, name):
    """precision = tp / (tp + fp), recall = tp / (tp + fn); 0 while the denominator is 0."""
    with variable_scope(name, kind):
        labels, predictions = _bools(labels, predictions)
        tp, tp_update = _count("true_positives", labels, predictions, weights, None)
        xx, xx_update = _count(other, labels, predictions, weights, None)
        value = _safe_div(tp, M.add(tp, xx), "value")
        update_op = _safe_div(tp_update, M.add(tp_update, xx_update), "update_op")
    _add(metrics_collections, value)
    _add(updates_collections, update_op)
    return value, update_op


def precision(labels, predictions, weights=None, metrics_collections=None, updates_collections=None, name=None):
    """tf.metrics.precision over boolean (or castable) labels and predictions."""
    return _ratio_metric("precision", "false_positives", labels, predictions, weights, metrics_collections,
                         updates_collections, name)


def recall(labels, predictions, weights=None, metrics_collections=None, updates_collections=None, name=None):
    """tf.metrics.recall over boolean (or castable) labels and predictions."""
    return _ratio_metric("recall", "false_negatives", labels, predictions, weights, metrics_collections,
                         updates_collections, name)


TF_API = {"tf.metrics": {"mean": mean, "accuracy": accuracy, "mean_squared_error": mean_squared_error,
                         "mean_absolute_error": mean_absolute_error,
                         "root_mean_squared_error": root_mean_squared_error,
                         "precision": precision, "recall": recall,
                         **{kind: _counting_metric(kind) for kind in _CELLS}}}

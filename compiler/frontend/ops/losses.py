"""Losses: the ``tf.nn`` cross-entropies and ``l2_loss``, and TF1's ``tf.losses`` module.

Everything is composed from math kinds, so gradients come from autodiff of primitives:
* softmax cross-entropy is ``-sum(labels * log_softmax(logits))`` with the max-shifted
  log-sum-exp, whose gradient is ``softmax * sum(labels) - labels`` — exactly
  ``softmax - labels`` for label distributions, with no division by a softmax value;
* sigmoid cross-entropy uses TF's stable ``max(x, 0) - x*z + log(1 + exp(-|x|))``.

``tf.losses`` functions follow TF1: they weight the per-element losses, reduce them
(default SUM_BY_NONZERO_WEIGHTS) and add the result to the ``tf.GraphKeys.LOSSES``
collection.  Deviation: integer labels are cast to the predictions' dtype instead of
everything being cast to float32, so float64 graphs stay float64.
"""
from __future__ import annotations

from ...ir.types import shape_str
from ..convert import constant, convert_to_tensor
from ..graph import GraphKeys, get_default_graph, make_op
from . import math_ops as M
from ..shape_inference import compatible
from .nn_ops import float_tensor, pick_axis, scope, shifted_logits


# ----------------------------------------------------------------------------- helpers
def _named_only(sentinel, what):
    if sentinel is not None:
        raise ValueError(f"Only call `{what}` with named arguments (labels=..., logits=..., ...)")


def _same_shape(a, b, what, a_name="labels", b_name="logits"):
    """TF's check: the shapes must be compatible (an unknown or batch dim matches any size)."""
    if not compatible(a.type.shape, b.type.shape):
        raise ValueError(f"{what}: {a_name} and {b_name} must have the same shape, got "
                         f"{shape_str(a.type.shape)} vs {shape_str(b.type.shape)}")


def _labels_like(labels, ref, what):
    """``labels`` as a tensor of ``ref``'s dtype (non-floating labels are cast)."""
    t = convert_to_tensor(labels, dtype_hint=ref.dtype)
    if t.dtype != ref.dtype:
        if t.dtype.is_floating:
            raise ValueError(f"{what}: labels dtype {t.dtype.name} differs from {ref.dtype.name}")
        t = M.cast(t, ref.dtype)
    return t


# ----------------------------------------------------------------------------- tf.nn losses
def softmax_cross_entropy_with_logits_v2(labels, logits, axis=None, name=None, dim=None):
    """Per-example -sum(labels * log_softmax(logits)) along ``axis``; gradients reach labels too."""
    what = "softmax_cross_entropy_with_logits"
    logits = float_tensor(logits, what, "logits")
    labels = _labels_like(labels, logits, what)
    _same_shape(labels, logits, what)
    with scope(name, "softmax_cross_entropy_with_logits"):
        shifted, lse, axis = shifted_logits(logits, pick_axis(axis, dim, what), what)
        return M.negative(M.reduce_sum(M.multiply(labels, M.subtract(shifted, lse)), axis))


def softmax_cross_entropy_with_logits(_sentinel=None, labels=None, logits=None, dim=-1, name=None, axis=None):
    """TF1 version: like _v2 but no gradient flows into ``labels``."""
    _named_only(_sentinel, "softmax_cross_entropy_with_logits")
    labels = M.stop_gradient_(convert_to_tensor(labels, dtype_hint=getattr(logits, "dtype", None)))
    axis = pick_axis(axis, None if dim == -1 else dim, "softmax_cross_entropy_with_logits")
    return softmax_cross_entropy_with_logits_v2(labels, logits, axis=axis, name=name)


def _sparse_labels(labels, logits, what):
    """Integer labels whose shape is logits' shape without the class dim."""
    labels = convert_to_tensor(labels)
    if not labels.dtype.is_integer:
        raise ValueError(f"{what}: labels must be int32 or int64, got {labels.dtype.name}")
    if logits.type.shape is not None and not compatible(labels.type.shape, logits.type.shape[:-1]):
        raise ValueError(f"{what}: labels shape {shape_str(labels.type.shape)} must equal logits shape "
                         f"{shape_str(logits.type.shape)} without its last dimension (rank of labels "
                         f"{labels.type.rank} should equal rank of logits minus 1)")
    return labels


def _one_hot(labels, depth, dtype):
    from .array_creation import one_hot

    return one_hot(labels, depth, dtype=dtype)


def sparse_softmax_cross_entropy_with_logits(_sentinel=None, labels=None, logits=None, name=None):
    """Per-example -log_softmax(logits)[label]; a label outside [0, classes) fails the step."""
    what = "sparse_softmax_cross_entropy_with_logits"
    _named_only(_sentinel, what)
    logits = float_tensor(logits, what, "logits")
    if logits.type.rank == 0:
        raise ValueError(f"{what}: logits must have rank >= 1, got a scalar")
    labels = _sparse_labels(labels, logits, what)
    classes = logits.type.shape[-1]
    if not isinstance(classes, int):
        raise ValueError(f"{what}: the class dim of logits {shape_str(logits.type.shape)} must be static "
                         f"(Kiln builds the label check and one-hot from it when the graph is built)")
    labels = make_op("check_range", [labels], {"low": 0, "high": int(classes), "what": f"{what} label"})
    with scope(name, "SparseSoftmaxCrossEntropyWithLogits"):
        shifted, lse, _ = shifted_logits(logits, -1, what)
        picked = M.reduce_sum(M.multiply(_one_hot(labels, logits.type.shape[-1], logits.dtype), shifted), -1)
        return M.subtract(M.reduce_sum(lse, -1), picked)


def sigmoid_cross_entropy_with_logits(_sentinel=None, labels=None, logits=None, name=None):
    """max(x, 0) - x*z + log(1 + exp(-|x|)), stable for large |x|."""
    what = "sigmoid_cross_entropy_with_logits"
    _named_only(_sentinel, what)
    logits = float_tensor(logits, what, "logits")
    labels = _labels_like(labels, logits, what)
    _same_shape(labels, logits, what)
    with scope(name, "logistic_loss"):
        soft = M.log1p(M.exp(M.negative(M.abs(logits))))
        return M.add(M.subtract(M.relu(logits), M.multiply(logits, labels)), soft)


def weighted_cross_entropy_with_logits(labels=None, logits=None, pos_weight=None, name=None, targets=None):
    """Sigmoid cross-entropy with positives weighted by ``pos_weight`` (TF's stable formula)."""
    what = "weighted_cross_entropy_with_logits"
    if labels is not None and targets is not None:
        raise ValueError(f"{what}: pass either 'labels' or its alias 'targets', not both")
    logits = float_tensor(logits, what, "logits")
    labels = _labels_like(labels if labels is not None else targets, logits, what)
    _same_shape(labels, logits, what)
    with scope(name, "logistic_loss"):
        pos_weight = convert_to_tensor(pos_weight, dtype_hint=logits.dtype)
        log_weight = M.add(M.multiply(M.subtract(pos_weight, 1.0), labels), 1.0)
        soft = M.add(M.log1p(M.exp(M.negative(M.abs(logits)))), M.relu(M.negative(logits)))
        return M.add(M.multiply(M.subtract(1.0, labels), logits), M.multiply(log_weight, soft))


def l2_loss(t, name=None):
    """sum(t ** 2) / 2, a scalar."""
    t = float_tensor(t, "l2_loss", "t")
    return M.multiply(M.reduce_sum(M.square(t)), 0.5, name=name or "L2Loss")


# ----------------------------------------------------------------------------- tf.losses machinery
class Reduction:
    """TF1's tf.losses.Reduction constants."""

    NONE = "none"
    SUM = "weighted_sum"
    SUM_OVER_BATCH_SIZE = "weighted_sum_over_batch_size"
    MEAN = "weighted_mean"
    SUM_BY_NONZERO_WEIGHTS = "weighted_sum_by_nonzero_weights"
    SUM_OVER_NONZERO_WEIGHTS = SUM_BY_NONZERO_WEIGHTS

    @classmethod
    def all(cls):
        return (cls.NONE, cls.SUM, cls.MEAN, cls.SUM_OVER_BATCH_SIZE, cls.SUM_OVER_NONZERO_WEIGHTS,
                cls.SUM_BY_NONZERO_WEIGHTS)

    @classmethod
    def validate(cls, key):
        if key not in cls.all():
            raise ValueError(f"Invalid Reduction Key {key!r}; expected one of {cls.all()}")


def _check_weights(weights, losses):
    """TF's rule: weights are a scalar or have the losses' rank with each dim 1 or equal."""
    ws, ls = weights.type.shape, losses.type.shape
    if ws and (len(ws) != len(ls) or any(w != 1 and w != d for w, d in zip(ws, ls))):
        raise ValueError(f"weights can not be broadcast to values: weights shape {shape_str(ws)}, "
                         f"values shape {shape_str(ls)}")


def _safe_div(total, count):
    """total / count, or 0 where count is 0 (TF's div_no_nan)."""
    zero = M.equal(count, 0.0)
    return M.where(zero, M.multiply(total, 0.0), M.truediv(total, M.where(zero, M.add(count, 1.0), count)))


def _reduce(weighted, losses, weights, reduction):
    """Scalar loss from weighted per-element losses for a Reduction key."""
    if reduction == Reduction.NONE:
        return weighted
    total = M.reduce_sum(weighted)
    from .array_ops import ones_like

    if reduction == Reduction.SUM:
        return total
    ones = ones_like(losses)
    if reduction == Reduction.MEAN:
        count = M.reduce_sum(M.multiply(weights, ones))
    elif reduction == Reduction.SUM_OVER_BATCH_SIZE:
        count = M.reduce_sum(ones)
    else:
        count = M.reduce_sum(M.multiply(M.cast(M.not_equal(weights, 0.0), losses.dtype), ones))
    return _safe_div(total, count)


def _weighted_loss(losses, weights, loss_collection, reduction):
    """Weight and reduce ``losses`` in the current name scope, then record the result."""
    Reduction.validate(reduction)
    losses = float_tensor(losses, "compute_weighted_loss", "losses")
    weights = convert_to_tensor(weights, dtype_hint=losses.dtype)
    if weights.dtype != losses.dtype:
        weights = M.cast(weights, losses.dtype)
    _check_weights(weights, losses)
    loss = _reduce(M.multiply(losses, weights), losses, weights, reduction)
    if reduction != Reduction.NONE:
        loss = make_op("identity", [loss], name="value")
    add_loss(loss, loss_collection)
    return loss


def compute_weighted_loss(losses, weights=1.0, scope=None, loss_collection=GraphKeys.LOSSES,
                          reduction=Reduction.SUM_BY_NONZERO_WEIGHTS):
    """tf.losses.compute_weighted_loss: weight, reduce, and add the result to ``loss_collection``."""
    with get_default_graph().name_scope(scope or "weighted_loss"):
        return _weighted_loss(losses, weights, loss_collection, reduction)


def add_loss(loss, loss_collection=GraphKeys.LOSSES):
    if loss_collection:
        get_default_graph().add_to_collection(loss_collection, loss)


def get_losses(scope=None, loss_collection=GraphKeys.LOSSES):
    return get_default_graph().get_collection(loss_collection, scope)


def get_regularization_losses(scope=None):
    return get_default_graph().get_collection(GraphKeys.REGULARIZATION_LOSSES, scope)


def get_regularization_loss(scope=None, name="total_regularization_loss"):
    """The sum of the regularization losses, or 0.0 when there are none."""
    losses = get_regularization_losses(scope)
    if not losses:
        return constant(0.0, dtype="float32", name=name)
    return M.add_n(losses, name=name) if len(losses) > 1 else make_op("identity", [losses[0]], name=name)


def get_total_loss(add_regularization_losses=True, name="total_loss", scope=None):
    """Sum of the LOSSES collection (plus regularization losses); ValueError when empty."""
    losses = get_losses(scope) + (get_regularization_losses(scope) if add_regularization_losses else [])
    if not losses:
        raise ValueError("get_total_loss: no losses have been added to the graph "
                         "(tf.losses.* functions and regularizers add them)")
    return M.add_n(losses, name=name) if len(losses) > 1 else make_op("identity", [losses[0]], name=name)


# ----------------------------------------------------------------------------- tf.losses functions
def _pair(labels, predictions, what, pred_name="predictions"):
    predictions = float_tensor(predictions, what, pred_name)
    labels = _labels_like(labels, predictions, what)
    _same_shape(labels, predictions, what, "labels", pred_name)
    return labels, predictions


def _loss_fn(what, pred_name, per_element):
    """A tf.losses function from its per-element formula ``per_element(labels, predictions, **kw)``."""

    def fn(labels, predictions, weights=1.0, scope=None, loss_collection=GraphKeys.LOSSES,
           reduction=Reduction.SUM_BY_NONZERO_WEIGHTS, **kw):
        with get_default_graph().name_scope(scope or what):
            labels, predictions = _pair(labels, predictions, what, pred_name)
            losses = per_element(labels, predictions, **kw)
            return _weighted_loss(losses, weights, loss_collection, reduction)

    fn.__name__ = what
    fn.__doc__ = f"tf.losses.{what}(labels, {pred_name}, weights=1.0, ...): TF1 semantics."
    return fn


def _huber(labels, predictions, delta=1.0):
    error = M.abs(M.subtract(predictions, labels))
    quadratic = M.minimum(error, delta)
    return M.add(M.multiply(M.square(quadratic), 0.5), M.multiply(M.subtract(error, quadratic), delta))


def _log_loss(labels, predictions, epsilon=1e-7):
    pos = M.multiply(labels, M.log(M.add(predictions, epsilon)))
    neg = M.multiply(M.subtract(1.0, labels), M.log(M.add(M.subtract(1.0, predictions), epsilon)))
    return M.negative(M.add(pos, neg))


def _hinge(labels, logits):
    return M.relu(M.subtract(1.0, M.multiply(M.subtract(M.multiply(labels, 2.0), 1.0), logits)))


absolute_difference = _loss_fn("absolute_difference", "predictions",
                               lambda y, p: M.abs(M.subtract(p, y)))
mean_squared_error = _loss_fn("mean_squared_error", "predictions", lambda y, p: M.squared_difference(p, y))
huber_loss = _loss_fn("huber_loss", "predictions", _huber)
log_loss = _loss_fn("log_loss", "predictions", _log_loss)
hinge_loss = _loss_fn("hinge_loss", "logits", _hinge)


def cosine_distance(labels, predictions, axis=None, weights=1.0, scope=None, loss_collection=GraphKeys.LOSSES,
                    reduction=Reduction.SUM_BY_NONZERO_WEIGHTS, dim=None):
    """1 - sum(labels * predictions, axis) for unit-normalized inputs."""
    if axis is None and dim is None:
        raise ValueError("cosine_distance: you must specify 'axis'")
    axis = pick_axis(axis, dim, "cosine_distance")
    per = lambda y, p: M.subtract(1.0, M.reduce_sum(M.multiply(y, p), axis, keepdims=True))  # noqa: E731
    return _loss_fn("cosine_distance_loss", "predictions", per)(labels, predictions, weights, scope,
                                                                 loss_collection, reduction)


def sigmoid_cross_entropy(multi_class_labels, logits, weights=1.0, label_smoothing=0, scope=None,
                          loss_collection=GraphKeys.LOSSES, reduction=Reduction.SUM_BY_NONZERO_WEIGHTS):
    """tf.losses.sigmoid_cross_entropy; smoothing moves labels towards 1/2."""
    with get_default_graph().name_scope(scope or "sigmoid_cross_entropy_loss"):
        labels, logits = _pair(multi_class_labels, logits, "sigmoid_cross_entropy", "logits")
        if label_smoothing:
            labels = M.add(M.multiply(labels, 1.0 - label_smoothing), 0.5 * label_smoothing)
        losses = sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        return _weighted_loss(losses, weights, loss_collection, reduction)


def softmax_cross_entropy(onehot_labels, logits, weights=1.0, label_smoothing=0, scope=None,
                          loss_collection=GraphKeys.LOSSES, reduction=Reduction.SUM_BY_NONZERO_WEIGHTS):
    """tf.losses.softmax_cross_entropy; per-example losses weighted by ``weights`` ([batch] or scalar)."""
    with get_default_graph().name_scope(scope or "softmax_cross_entropy_loss"):
        labels, logits = _pair(onehot_labels, logits, "softmax_cross_entropy", "logits")
        if label_smoothing:
            num_classes = logits.type.shape[-1]
            labels = M.add(M.multiply(labels, 1.0 - label_smoothing), label_smoothing / num_classes)
        losses = softmax_cross_entropy_with_logits_v2(M.stop_gradient_(labels), logits)
        return _weighted_loss(losses, weights, loss_collection, reduction)


def sparse_softmax_cross_entropy(labels, logits, weights=1.0, scope=None, loss_collection=GraphKeys.LOSSES,
                                 reduction=Reduction.SUM_BY_NONZERO_WEIGHTS):
    """tf.losses.sparse_softmax_cross_entropy; labels [batch] (or [batch, 1], squeezed like TF)."""
    from .array_ops import squeeze

    with get_default_graph().name_scope(scope or "sparse_softmax_cross_entropy_loss"):
        labels, logits = convert_to_tensor(labels), convert_to_tensor(logits)
        if labels.type.rank == logits.type.rank and labels.type.rank and labels.type.shape[-1] == 1:
            labels = squeeze(labels, [-1])
        losses = sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return _weighted_loss(losses, weights, loss_collection, reduction)


TF_API = {
    "tf.nn": {
        "softmax_cross_entropy_with_logits": softmax_cross_entropy_with_logits,
        "softmax_cross_entropy_with_logits_v2": softmax_cross_entropy_with_logits_v2,
        "sparse_softmax_cross_entropy_with_logits": sparse_softmax_cross_entropy_with_logits,
        "sigmoid_cross_entropy_with_logits": sigmoid_cross_entropy_with_logits,
        "weighted_cross_entropy_with_logits": weighted_cross_entropy_with_logits,
        "l2_loss": l2_loss,
    },
    "tf.losses": {
        "Reduction": Reduction, "compute_weighted_loss": compute_weighted_loss, "add_loss": add_loss,
        "get_losses": get_losses, "get_regularization_losses": get_regularization_losses,
        "get_regularization_loss": get_regularization_loss, "get_total_loss": get_total_loss,
        "absolute_difference": absolute_difference, "mean_squared_error": mean_squared_error,
        "huber_loss": huber_loss, "log_loss": log_loss, "hinge_loss": hinge_loss,
        "cosine_distance": cosine_distance, "sigmoid_cross_entropy": sigmoid_cross_entropy,
        "softmax_cross_entropy": softmax_cross_entropy,
        "sparse_softmax_cross_entropy": sparse_softmax_cross_entropy,
    },
    "tf": {"l2_loss": l2_loss},
}

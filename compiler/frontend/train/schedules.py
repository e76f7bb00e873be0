"""The global step and TF1's learning-rate schedules (tf.train.exponential_decay, ...).

The global step is an int64 scalar variable named ``global_step``: non-trainable, in
GLOBAL_VARIABLES and the GLOBAL_STEP collection.  ``minimize(..., global_step=gs)``
increments it after the updates; a schedule reads it, so the learning rate of a step is
computed from the step count *before* that step (state semantics: reads see the
pre-step value).  Schedules are small graph formulas evaluated in the step.
"""
from __future__ import annotations

import math

from ...ir.types import as_dtype
from ..convert import convert_to_tensor
from ..graph import GraphKeys, get_default_graph
from ..ops import math_ops as M
from .. import initializers as inits
from .. import variables as vs


# ----------------------------------------------------------------------------- global step
def assert_global_step(global_step_tensor):
    """TF1: the global step must be an integer scalar variable or tensor."""
    if not hasattr(global_step_tensor, "dtype") or not hasattr(global_step_tensor, "op"):
        raise TypeError(f"Existing \"global_step\" must be a Variable or Tensor: {global_step_tensor}.")
    if not global_step_tensor.dtype.is_integer:
        raise TypeError(f"Existing \"global_step\" does not have integer type: {global_step_tensor.dtype.name}")
    if global_step_tensor.shape.ndims != 0:
        raise TypeError(f"Existing \"global_step\" is not scalar: {global_step_tensor.shape}")


def get_global_step(graph=None):
    """The global step of ``graph`` (GLOBAL_STEP collection, else the tensor 'global_step:0'), or None."""
    graph = graph or get_default_graph()
    found = graph.get_collection(GraphKeys.GLOBAL_STEP)
    if len(found) > 1:
        return None  # TF logs "Multiple tensors in global_step collection." and returns None
    if found:
        step = found[0]
    else:
        try:
            step = graph.get_tensor_by_name("global_step:0")
        except KeyError:
            return None
    assert_global_step(step)
    return step


def create_global_step(graph=None):
    """Create the int64 ``global_step`` variable (initialized to 0); error if one exists."""
    graph = graph or get_default_graph()
    if get_global_step(graph) is not None:
        raise ValueError('"global_step" already exists.')
    with graph.as_default():
        var = vs._variable_with_exact_name(graph, "global_step", lambda: inits.Zeros()([], "int64"), False,
                                           [GraphKeys.GLOBAL_VARIABLES, GraphKeys.GLOBAL_STEP], as_dtype("int64"))
    graph._variables_by_name["global_step"] = var
    return var


def get_or_create_global_step(graph=None):
    graph = graph or get_default_graph()
    step = get_global_step(graph)
    return step if step is not None else create_global_step(graph)


def global_step(sess, global_step_tensor):
    """tf.train.global_step: the current value of the global step as a python int."""
    return int(sess.run(global_step_tensor))


# ----------------------------------------------------------------------------- schedules
def _decay_inputs(fn_name, learning_rate, global_step, *others):
    """Convert the common arguments: lr tensor, and step and ``others`` cast to lr's dtype."""
    if global_step is None:
        raise ValueError(f"global_step is required for {fn_name}.")
    lr = convert_to_tensor(learning_rate, dtype_hint="float32", name="learning_rate")
    return (lr,) + tuple(M.cast(convert_to_tensor(x, dtype_hint=lr.dtype), lr.dtype) for x in (global_step,) + others)


def _progress(step, decay_steps, staircase):
    """step / decay_steps, floored with ``staircase``."""
    p = step / decay_steps
    return M.floor(p) if staircase else p


def exponential_decay(learning_rate, global_step, decay_steps, decay_rate, staircase=False, name=None):
    """lr * decay_rate ^ (step / decay_steps) (the exponent floored with staircase)."""
    with get_default_graph().name_scope(name or "ExponentialDecay"):
        lr, step, steps, rate = _decay_inputs("exponential_decay", learning_rate, global_step, decay_steps, decay_rate)
        return lr * M.pow(rate, _progress(step, steps, staircase))


def natural_exp_decay(learning_rate, global_step, decay_steps, decay_rate, staircase=False, name=None):
    """lr * exp(-decay_rate * step / decay_steps)."""
    with get_default_graph().name_scope(name or "NaturalExpDecay"):
        lr, step, steps, rate = _decay_inputs("natural_exp_decay", learning_rate, global_step, decay_steps, decay_rate)
        return lr * M.exp(-rate * _progress(step, steps, staircase))


def inverse_time_decay(learning_rate, global_step, decay_steps, decay_rate, staircase=False, name=None):
    """lr / (1 + decay_rate * step / decay_steps)."""
    with get_default_graph().name_scope(name or "InverseTimeDecay"):
        lr, step, steps, rate = _decay_inputs("inverse_time_decay", learning_rate, global_step, decay_steps, decay_rate)
        return lr / (1.0 + rate * _progress(step, steps, staircase))


def polynomial_decay(learning_rate, global_step, decay_steps, end_learning_rate=0.0001, power=1.0,
                     cycle=False, name=None):
    """(lr - end) * (1 - step/decay_steps)^power + end; step clipped to decay_steps, or with
    ``cycle`` decay_steps stretched to the next multiple above step."""
    with get_default_graph().name_scope(name or "PolynomialDecay"):
        lr, step, steps, end, pw = _decay_inputs("polynomial_decay", learning_rate, global_step, decay_steps,
                                                  end_learning_rate, power)
        if cycle:
            steps = steps * M.maximum(M.ceil(step / steps), 1.0)  # the multiplier is 1 at step 0
        else:
            step = M.minimum(step, steps)
        return (lr - end) * M.pow(1.0 - step / steps, pw) + end


def cosine_decay(learning_rate, global_step, decay_steps, alpha=0.0, name=None):
    """lr * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)."""
    with get_default_graph().name_scope(name or "CosineDecay"):
        lr, step, steps, a = _decay_inputs("cosine_decay", learning_rate, global_step, decay_steps, alpha)
        step = M.minimum(step, steps)
        cosine = 0.5 * (1.0 + M.cos(math.pi * step / steps))
        return lr * ((1.0 - a) * cosine + a)


def piecewise_constant(x, boundaries, values, name=None):
    """values[0] while x <= boundaries[0], values[i] while boundaries[i-1] < x <= boundaries[i],
    values[-1] after the last boundary."""
    if len(values) != len(boundaries) + 1:
        raise ValueError("The length of boundaries should be 1 less than the length of values")
    with get_default_graph().name_scope(name or "PiecewiseConstant"):
        x = convert_to_tensor(x)
        bounds = [convert_to_tensor(b, dtype_hint=x.dtype) for b in boundaries]
        vals = [convert_to_tensor(v, dtype_hint="float32") for v in values]
        for b in bounds:
            if b.dtype != x.dtype:
                raise ValueError(f"Boundaries ({b.dtype.name}) must have the same dtype as x ({x.dtype.name}).")
        for v in vals[1:]:
            if v.dtype != vals[0].dtype:
                raise ValueError("Values must have elements all with the same dtype "
                                 f"({vals[0].dtype.name} vs {v.dtype.name}).")
        result = vals[-1]
        for b, v in reversed(list(zip(bounds, vals))):
            result = M.where(M.less_equal(x, b), v, result)
        return result


TF_API = {
    "tf.train": {
        "get_global_step": get_global_step, "create_global_step": create_global_step,
        "get_or_create_global_step": get_or_create_global_step, "global_step": global_step,
        "assert_global_step": assert_global_step,
        "exponential_decay": exponential_decay, "natural_exp_decay": natural_exp_decay,
        "inverse_time_decay": inverse_time_decay, "polynomial_decay": polynomial_decay,
        "cosine_decay": cosine_decay, "piecewise_constant": piecewise_constant,
    },
}

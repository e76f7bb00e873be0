"""tf.train.ExponentialMovingAverage: shadow copies of variables updated by
``shadow -= (1 - decay) * (shadow - value)``.

As in TF1: a Variable's shadow is named ``<var>/ExponentialMovingAverage`` and starts at
the variable's initial value; the Variable itself is added to MOVING_AVERAGE_VARIABLES and
the (non-trainable) shadow to GLOBAL_VARIABLES.  A plain tensor's shadow starts at zero
and, with ``zero_debias``, is corrected by TF's biased/local_step variables.  To average
the values *after* an update in the same run, build ``apply`` under
``tf.control_dependencies([update])`` (the reads then depend on the update's assign).
"""
from __future__ import annotations

from ..convert import convert_to_tensor
from ..graph import GraphKeys, get_default_graph
from ..ops import math_ops as M
from .. import variables as vs
from .optimizer_base import create_slot, create_zeros_slot

_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _zero_debias(shadow, value, one_minus_decay):
    """TF's zero-debiased EMA of a tensor: the value ``shadow`` must take after this update.

    biased -= (biased - value) * (1 - decay); local_step += 1;
    result = biased / (1 - decay ** local_step).
    """
    with get_default_graph().control_dependencies(None):
        biased = create_zeros_slot(shadow, "biased")
        local_step = create_slot(shadow, lambda: convert_to_tensor(0.0, dtype=shadow.dtype), "local_step")
    biased_t = vs.assign_sub(biased, (biased - value) * one_minus_decay)
    step_t = vs.assign_add(local_step, 1.0)
    return biased_t / (1.0 - M.pow(1.0 - one_minus_decay, step_t))


def assign_moving_average(variable, value, decay, zero_debias=True, name=None):
    """variable -= (variable - value) * (1 - decay), or its zero-debiased form; returns the new value."""
    with get_default_graph().name_scope(name or "AssignMovingAvg"):
        one_minus_decay = 1.0 - convert_to_tensor(decay, dtype_hint=variable.dtype, name="decay")
        if one_minus_decay.dtype != variable.dtype:
            one_minus_decay = M.cast(one_minus_decay, variable.dtype)
        value = convert_to_tensor(value, dtype_hint=variable.dtype)
        if zero_debias:
            delta = variable - _zero_debias(variable, value, one_minus_decay)
        else:
            delta = (variable - value) * one_minus_decay
        return vs.assign_sub(variable, delta)


class ExponentialMovingAverage:
    """tf.train.ExponentialMovingAverage(decay, num_updates=None, zero_debias=False, name=...).

    With ``num_updates`` the decay used is min(decay, (1 + num_updates) / (10 + num_updates)).
    """

    def __init__(self, decay, num_updates=None, zero_debias=False, name="ExponentialMovingAverage"):
        self._decay = decay
        self._num_updates = num_updates
        self._zero_debias = zero_debias
        self._name = name
        self._averages = {}  # variable or tensor -> shadow variable
        self._debiased = set()  # shadows that use zero debiasing

    @property
    def name(self):
        return self._name

    def apply(self, var_list=None):
        """Create shadows for new entries of ``var_list`` (default: trainable variables) and
        return an op that updates all of them."""
        var_list = vs.trainable_variables() if var_list is None else list(var_list)
        graph = get_default_graph()
        for var in var_list:
            if var.dtype.name not in _FLOATS:
                raise TypeError(f"The variables must be half, float, or double: {var.name}")
        for var in var_list:
            if var in self._averages:
                continue
            with graph.control_dependencies(None):
                if isinstance(var, vs.Variable):
                    avg = create_slot(var, var.initialized_value(), self._name)
                    graph.add_to_collection(GraphKeys.MOVING_AVERAGE_VARIABLES, var)
                else:
                    avg = create_zeros_slot(var, self._name)
                    if self._zero_debias:
                        self._debiased.add(avg)
            self._averages[var] = avg
        with graph.name_scope(self._name) as scope:
            decay = convert_to_tensor(self._decay, dtype_hint="float32", name="decay")
            if self._num_updates is not None:
                n = M.cast(convert_to_tensor(self._num_updates), "float32", name="num_updates")
                decay = M.minimum(decay, (1.0 + n) / (10.0 + n))
            updates = [assign_moving_average(self._averages[v], v, decay, self._averages[v] in self._debiased)
                       for v in var_list]
            with graph.control_dependencies(updates):
                return graph.create_op("no_op", (), {}, scope[:-1], has_output=False, exact_name=True)

    def average(self, var):
        """The shadow variable of ``var``, or None."""
        return self._averages.get(var)

    def average_name(self, var):
        """The name of ``var``'s shadow in a checkpoint: '<var op name>/<EMA name>'."""
        if var in self._averages:
            return self._averages[var].op.name
        return f"{var.op.name}/{self._name}"

    def variables_to_restore(self, moving_avg_variables=None):
        """{checkpoint name: variable} restoring each averaged variable from its shadow, others as is."""
        if moving_avg_variables is None:
            moving_avg_variables = vs.trainable_variables() + moving_average_variables()
        averaged = list(dict.fromkeys(moving_avg_variables))
        name_map = {self.average_name(v): v for v in averaged}
        averaged_names = {v.name for v in averaged}
        for v in vs.global_variables():
            if v.name not in averaged_names and v.op.name not in name_map:
                name_map[v.op.name] = v
        return name_map


def moving_average_variables(scope=None):
    return get_default_graph().get_collection(GraphKeys.MOVING_AVERAGE_VARIABLES, scope)


TF_API = {
    "tf": {"moving_average_variables": moving_average_variables},
    "tf.train": {"ExponentialMovingAverage": ExponentialMovingAverage},
}

"""The TF1 optimizers, with TF's exact update rules, slot names and slot initial values.

Each ``_apply_dense`` is TF's fused ``Apply*`` kernel written with graph ops: slot reads
see the value from before the step, and the output tensor of a slot's assign is its new
value.  docs/training.md lists the rules side by side.
"""
from __future__ import annotations

from ..core_api import group
from ..ops import math_ops as M
from ..ops.array_ops import zeros_like
from ..variables import assign, assign_add, assign_sub
from .optimizer_base import Optimizer


class GradientDescentOptimizer(Optimizer):
    """var -= lr * grad."""

    def __init__(self, learning_rate, use_locking=False, name="GradientDescent"):
        super().__init__(use_locking, name)
        self._set_hyper(learning_rate=learning_rate)

    def _apply_dense(self, grad, var):
        return assign_sub(var, self._get_hyper("learning_rate", var.dtype) * grad)


class MomentumOptimizer(Optimizer):
    """accum = momentum*accum + grad; var -= lr*accum (Nesterov: var -= lr*grad + lr*momentum*accum)."""

    def __init__(self, learning_rate, momentum, use_locking=False, name="Momentum", use_nesterov=False):
        super().__init__(use_locking, name)
        self._set_hyper(learning_rate=learning_rate, momentum=momentum)
        self._use_nesterov = use_nesterov

    def _create_slots(self, var_list):
        for v in var_list:
            self._zeros_slot(v, "momentum", self._name)

    def _apply_dense(self, grad, var):
        lr, mu = (self._get_hyper(k, var.dtype) for k in ("learning_rate", "momentum"))
        accum = self.get_slot(var, "momentum")
        accum_t = assign(accum, accum * mu + grad)
        if self._use_nesterov:
            return assign_sub(var, grad * lr + accum_t * mu * lr)
        return assign_sub(var, accum_t * lr)


class AdamOptimizer(Optimizer):
    """Adam (Kingma & Ba) as TF1 computes it, with the bias correction folded into lr_t.

    lr_t = lr*sqrt(1-beta2^t)/(1-beta1^t); m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g^2;
    var -= lr_t*m/(sqrt(v)+epsilon).  beta1^t and beta2^t are the non-trainable variables
    ``beta1_power``/``beta2_power`` (initialized to beta1/beta2), multiplied by beta after
    all updates of a step.
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-08, use_locking=False,
                 name="Adam"):
        super().__init__(use_locking, name)
        self._beta1, self._beta2 = beta1, beta2
        self._set_hyper(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon)

    def _get_beta_accumulators(self):
        return self._get_non_slot_variable("beta1_power"), self._get_non_slot_variable("beta2_power")

    def _create_slots(self, var_list):
        first_var = min(var_list, key=lambda x: x.name)
        self._create_non_slot_variable(self._beta1, "beta1_power", first_var)
        self._create_non_slot_variable(self._beta2, "beta2_power", first_var)
        for v in var_list:
            self._zeros_slot(v, "m", self._name)
            self._zeros_slot(v, "v", self._name)

    def _apply_dense(self, grad, var):
        dt = var.dtype
        lr, b1, b2, eps = (self._get_hyper(k, dt) for k in ("learning_rate", "beta1", "beta2", "epsilon"))
        b1p, b2p = (_as_dtype(p, dt) for p in self._get_beta_accumulators())
        lr_t = lr * M.sqrt(1 - b2p) / (1 - b1p)
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_t = assign(m, m * b1 + grad * (1 - b1))
        v_t = assign(v, v * b2 + (grad * grad) * (1 - b2))
        return assign_sub(var, lr_t * m_t / (M.sqrt(v_t) + eps))

    def _finish(self, update_ops, name):
        """After every variable update: beta1_power *= beta1, beta2_power *= beta2."""
        from ..graph import get_default_graph

        b1p, b2p = self._get_beta_accumulators()
        with get_default_graph().control_dependencies(update_ops):
            update_b1 = assign(b1p, b1p * self._get_hyper("beta1", b1p.dtype))
            update_b2 = assign(b2p, b2p * self._get_hyper("beta2", b2p.dtype))
        return super()._finish(list(update_ops) + [update_b1.op, update_b2.op], name)


class AdagradOptimizer(Optimizer):
    """accum += grad^2; var -= lr*grad/sqrt(accum); accum starts at initial_accumulator_value."""

    def __init__(self, learning_rate, initial_accumulator_value=0.1, use_locking=False, name="Adagrad"):
        if initial_accumulator_value <= 0.0:
            raise ValueError(f"initial_accumulator_value must be positive: {initial_accumulator_value}")
        super().__init__(use_locking, name)
        self._initial_accumulator_value = initial_accumulator_value
        self._set_hyper(learning_rate=learning_rate)

    def _create_slots(self, var_list):
        for v in var_list:
            self._filled_slot(v, "accumulator", self._name, self._initial_accumulator_value)

    def _apply_dense(self, grad, var):
        lr = self._get_hyper("learning_rate", var.dtype)
        accum_t = assign_add(self.get_slot(var, "accumulator"), grad * grad)
        return assign_sub(var, grad * lr * M.rsqrt(accum_t))


class RMSPropOptimizer(Optimizer):
    """TF1 RMSProp: the ``rms`` slot starts at ONES, ``momentum`` (and centered ``mg``) at zeros.

    ms = decay*ms + (1-decay)*g^2; [mg = decay*mg + (1-decay)*g];
    mom = momentum*mom + lr*g/sqrt(ms [- mg^2] + epsilon); var -= mom.
    """

    def __init__(self, learning_rate, decay=0.9, momentum=0.0, epsilon=1e-10, use_locking=False,
                 centered=False, name="RMSProp"):
        super().__init__(use_locking, name)
        self._centered = centered
        self._set_hyper(learning_rate=learning_rate, decay=decay, momentum=momentum, epsilon=epsilon)

    def _create_slots(self, var_list):
        for v in var_list:
            self._filled_slot(v, "rms", self._name, 1.0)
            if self._centered:
                self._zeros_slot(v, "mg", self._name)
            self._zeros_slot(v, "momentum", self._name)

    def _apply_dense(self, grad, var):
        lr, rho, mu, eps = (self._get_hyper(k, var.dtype) for k in ("learning_rate", "decay", "momentum", "epsilon"))
        ms, mom = self.get_slot(var, "rms"), self.get_slot(var, "momentum")
        ms_t = assign(ms, ms * rho + (grad * grad) * (1 - rho))
        denom = ms_t
        if self._centered:
            mg = self.get_slot(var, "mg")
            mg_t = assign(mg, mg * rho + grad * (1 - rho))
            denom = ms_t - mg_t * mg_t
        mom_t = assign(mom, mom * mu + lr * grad / M.sqrt(denom + eps))
        return assign_sub(var, mom_t)


class AdadeltaOptimizer(Optimizer):
    """accum = rho*accum + (1-rho)*g^2; update = sqrt(accum_update+eps)/sqrt(accum+eps)*g;
    accum_update = rho*accum_update + (1-rho)*update^2; var -= lr*update."""

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-08, use_locking=False, name="Adadelta"):
        super().__init__(use_locking, name)
        self._set_hyper(learning_rate=learning_rate, rho=rho, epsilon=epsilon)

    def _create_slots(self, var_list):
        for v in var_list:
            self._zeros_slot(v, "accum", self._name)
            self._zeros_slot(v, "accum_update", self._name)

    def _apply_dense(self, grad, var):
        lr, rho, eps = (self._get_hyper(k, var.dtype) for k in ("learning_rate", "rho", "epsilon"))
        accum, accum_update = self.get_slot(var, "accum"), self.get_slot(var, "accum_update")
        accum_t = assign(accum, accum * rho + (grad * grad) * (1 - rho))
        update = M.sqrt(accum_update + eps) * M.rsqrt(accum_t + eps) * grad
        accum_update_t = assign(accum_update, accum_update * rho + (update * update) * (1 - rho))
        var_t = assign_sub(var, update * lr)
        return group(var_t, accum_update_t)


class FtrlOptimizer(Optimizer):
    """FTRL-Proximal (TF1 ApplyFtrl, without l2_shrinkage):

    accum_new = accum + g^2; linear += g - (accum_new^-p - accum^-p)/lr * var;
    quadratic = accum_new^-p/lr + 2*l2; var = (sign(linear)*l1 - linear)/quadratic if |linear| > l1
    else 0 (p = learning_rate_power).  Slots ``accum`` (initial_accumulator_value), ``linear`` (0).
    """

    def __init__(self, learning_rate, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0, use_locking=False,
                 name="Ftrl", accum_name=None, linear_name=None, l2_shrinkage_regularization_strength=0.0,
                 beta=None):
        _check_sign("initial_accumulator_value", initial_accumulator_value, 1)
        _check_sign("learning_rate_power", learning_rate_power, -1)
        _check_sign("l1_regularization_strength", l1_regularization_strength, 1)
        _check_sign("l2_regularization_strength", l2_regularization_strength, 1)
        if l2_shrinkage_regularization_strength or beta:
            raise NotImplementedError("FtrlOptimizer: l2_shrinkage_regularization_strength and beta are not supported")
        super().__init__(use_locking, name)
        self._initial_accumulator_value = initial_accumulator_value
        self._accum_name, self._linear_name = accum_name, linear_name
        self._set_hyper(learning_rate=learning_rate, learning_rate_power=learning_rate_power,
                        l1=l1_regularization_strength, l2=l2_regularization_strength)

    def _create_slots(self, var_list):
        for v in var_list:
            self._filled_slot(v, "accum", self._accum_name or self._name, self._initial_accumulator_value)
            self._zeros_slot(v, "linear", self._linear_name or self._name)

    def _apply_dense(self, grad, var):
        lr, p, l1, l2 = (self._get_hyper(k, var.dtype) for k in ("learning_rate", "learning_rate_power", "l1", "l2"))
        accum, linear = self.get_slot(var, "accum"), self.get_slot(var, "linear")
        accum_new = accum + grad * grad
        sigma = (M.pow(accum_new, -p) - M.pow(accum, -p)) / lr
        linear_t = assign_add(linear, grad - sigma * var)
        quadratic = M.pow(accum_new, -p) / lr + 2.0 * l2
        shrunk = (M.sign(linear_t) * l1 - linear_t) / quadratic
        var_t = assign(var, M.where(M.abs(linear_t) > l1, shrunk, zeros_like(shrunk)))
        return group(var_t, assign(accum, accum_new))


def _check_sign(what, value, sign):
    """FTRL's argument checks: ``sign`` 1 needs value >= 0, -1 needs value <= 0 (TF's messages)."""
    if value * sign < 0:
        raise ValueError(f"{what} {value:f} needs to be {'positive' if sign > 0 else 'negative'} or zero")


def _as_dtype(t, dtype):
    """``t`` cast to ``dtype`` when it differs (float32 beta powers with float64 variables)."""
    return t if t.dtype == dtype else M.cast(t, dtype)


TF_API = {
    "tf.train": {
        "Optimizer": Optimizer, "GradientDescentOptimizer": GradientDescentOptimizer,
        "MomentumOptimizer": MomentumOptimizer, "AdamOptimizer": AdamOptimizer,
        "AdagradOptimizer": AdagradOptimizer, "RMSPropOptimizer": RMSPropOptimizer,
        "AdadeltaOptimizer": AdadeltaOptimizer, "FtrlOptimizer": FtrlOptimizer,
    },
}

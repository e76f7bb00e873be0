"""tf.train.Optimizer: the TF1 base class (minimize = compute_gradients + apply_gradients).

Subclasses (optimizers.py) build each variable's update from ordinary graph ops plus
``assign``/``assign_add``/``assign_sub``.  The lowering's state rule (reads see the value
from before the step unless they depend on an assign to that variable) makes this exactly
TF's fused ``Apply*`` kernels: an update reads the old slot values, and where the rule
needs a slot's *new* value it uses the output tensor of the slot's assign.

Slot variables are created like TF's ``slot_creator``: non-trainable, in GLOBAL_VARIABLES,
named ``<variable scope>/<var>/<optimizer name>`` made unique with ``_1``, ``_2`` (so
Adam's are ``w/Adam`` and ``w/Adam_1``).  They are created outside any ``reuse=True``
variable scope and outside control dependencies, so ``minimize`` works anywhere.
"""
from __future__ import annotations

from ...ir.types import as_dtype
from ..convert import convert_to_tensor
from ..graph import GraphKeys, Tensor, get_default_graph
from .. import initializers as inits
from .. import variables as vs

_VALID_DTYPES = ("float16", "bfloat16", "float32", "float64")
# Functions (list of gradients -> list of gradients) every compute_gradients applies, e.g.
# the fused allreduce of ``kiln compile --distributed`` (compiler.horovod.distributed_gradients).
GRADIENT_TRANSFORMS: list = []


def _assert_valid_dtypes(tensors):
    """TF1's check that losses and trained variables are floating point."""
    for t in tensors:
        if t.dtype.name not in _VALID_DTYPES:
            raise ValueError(f"Invalid type tf.{t.dtype.name} for {t.name}, expected: "
                             f"[{', '.join('tf.' + d for d in _VALID_DTYPES)}].")


def _flatten(x):
    """Flatten nested lists/tuples (TF's nest.flatten for var_list)."""
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in _flatten(item)]
    return [x]


def _unique_variable_name(graph, base):
    """``base``, or ``base_1``, ``base_2``, ... — the first not used by a variable or an op."""
    name, i = base, 0
    while name in graph._variables_by_name or name in graph._ops_by_name:
        i += 1
        name = f"{base}_{i}"
    return name


def create_slot(primary, init, op_name, dtype=None):
    """A non-trainable variable ``<scope>/<primary>/<op_name>`` initialized by ``init``.

    ``init`` is a tensor or a callable returning one (built under the slot's name scope).
    This is TF's ``slot_creator.create_slot``, shared by optimizers and moving averages.
    """
    graph = primary.graph
    scope = vs.get_variable_scope().name
    base = f"{primary.op.name}/{op_name}"
    name = _unique_variable_name(graph, f"{scope}/{base}" if scope else base)
    var = vs._variable_with_exact_name(graph, name, init, False, [GraphKeys.GLOBAL_VARIABLES],
                                       as_dtype(dtype or primary.dtype))
    graph._variables_by_name[name] = var
    return var


def create_zeros_slot(primary, op_name, dtype=None):
    """A slot of the primary's shape initialized to zeros (TF's ``create_zeros_slot``)."""
    dtype = as_dtype(dtype or primary.dtype)
    return create_slot(primary, lambda: inits.Zeros()(primary.shape.as_list(), dtype), op_name, dtype)


def _group_named(update_ops, name):
    """An op named exactly ``name`` (the optimizer's name scope) that runs ``update_ops``."""
    graph = get_default_graph()
    with graph.control_dependencies([u.op if isinstance(u, Tensor) else u for u in update_ops]):
        return graph.create_op("no_op", (), {}, name, has_output=False, exact_name=True)


class Optimizer:
    """Base class of the TF1 optimizers.  Subclasses implement ``_apply_dense(grad, var)``."""

    GATE_NONE = 0
    GATE_OP = 1
    GATE_GRAPH = 2

    def __init__(self, use_locking, name):
        if not name:
            raise ValueError("Must specify the optimizer name")
        self._use_locking = use_locking
        self._name = name
        self._slots = {}  # slot name -> {primary variable: slot variable}
        self._non_slot_dict = {}  # (name, graph) -> variable
        self._hyper = {}  # name -> python value or tensor, converted in _prepare
        self._hyper_t = {}  # (name, dtype name) -> tensor

    def get_name(self):
        return self._name

    # --- the three TF1 entry points ------------------------------------------------------
    def minimize(self, loss, global_step=None, var_list=None, gate_gradients=GATE_OP,
                 aggregation_method=None, colocate_gradients_with_ops=False, name=None, grad_loss=None):
        """Add ops that compute gradients of ``loss`` and apply them (one train op)."""
        grads_and_vars = self.compute_gradients(
            loss, var_list=var_list, gate_gradients=gate_gradients, aggregation_method=aggregation_method,
            colocate_gradients_with_ops=colocate_gradients_with_ops, grad_loss=grad_loss)
        vars_with_grad = [v for g, v in grads_and_vars if g is not None]
        if not vars_with_grad:
            raise ValueError("No gradients provided for any variable, check your graph for ops that do "
                             f"not support gradients, between variables {[str(v) for _, v in grads_and_vars]} "
                             f"and loss {loss}.")
        return self.apply_gradients(grads_and_vars, global_step=global_step, name=name)

    def compute_gradients(self, loss, var_list=None, gate_gradients=GATE_OP, aggregation_method=None,
                          colocate_gradients_with_ops=False, grad_loss=None):
        """List of (gradient or None, variable) for ``var_list`` (default: trainable variables)."""
        if callable(loss):
            loss = loss()
        loss = convert_to_tensor(loss)
        if gate_gradients not in (Optimizer.GATE_NONE, Optimizer.GATE_OP, Optimizer.GATE_GRAPH):
            raise ValueError(f"gate_gradients must be one of: Optimizer.GATE_NONE, Optimizer.GATE_OP, "
                             f"Optimizer.GATE_GRAPH.  Not {gate_gradients}")
        _assert_valid_dtypes([loss])
        if grad_loss is not None:
            grad_loss = convert_to_tensor(grad_loss, dtype_hint=loss.dtype)
            _assert_valid_dtypes([grad_loss])
        var_list = vs.trainable_variables() if var_list is None else _flatten(var_list)
        if not var_list:
            raise ValueError("No variables to optimize.")
        for v in var_list:
            if not isinstance(v, vs.Variable):
                raise NotImplementedError(f"Trying to optimize unsupported type {v!r}")
        from ..gradients import gradients

        grads = gradients(loss, var_list, grad_ys=None if grad_loss is None else [grad_loss])
        if gate_gradients == Optimizer.GATE_GRAPH:
            from ..core_api import tuple_

            grads = tuple_(grads)
        for transform in GRADIENT_TRANSFORMS:
            grads = transform(grads)
        grads_and_vars = list(zip(grads, var_list))
        _assert_valid_dtypes([v for g, v in grads_and_vars if g is not None])
        return grads_and_vars

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        """Update each variable with its gradient (None gradients are skipped); returns the train op.

        With ``global_step``, the returned op is ``global_step += 1`` run after all updates.
        """
        pairs = _checked_pairs(grads_and_vars)
        var_list = [v for g, v in pairs if g is not None]
        if not var_list:
            raise ValueError(f"No gradients provided for any variable: {[str(v) for _, v in pairs]}.")
        graph = get_default_graph()
        with graph.control_dependencies(None):
            self._create_slots(var_list)
        with graph.name_scope(name or self._name) as scope:
            self._prepare()
            update_ops = []
            for grad, var in pairs:
                if grad is None:
                    continue
                with graph.name_scope("update_" + var.op.name):
                    update_ops.append(_as_op(self._apply_dense(grad, var)))
            if global_step is None:
                train_op = self._finish(update_ops, scope[:-1])
            else:
                finish = self._finish(update_ops, graph.unique_name("update"))
                with graph.control_dependencies([finish]):
                    one = convert_to_tensor(1, dtype=global_step.dtype)
                    train_op = graph.create_op("assign_add", [global_step, one], {"validate_shape": True},
                                               scope[:-1], exact_name=True)
        if train_op not in graph.get_collection(GraphKeys.TRAIN_OP):
            graph.add_to_collection(GraphKeys.TRAIN_OP, train_op)
        return train_op

    # --- slots and optimizer variables ---------------------------------------------------
    def get_slot(self, var, name):
        """The slot variable ``name`` (e.g. "m") created for ``var``, or None."""
        return self._slots.get(name, {}).get(var)

    def get_slot_names(self):
        return sorted(self._slots)

    def variables(self):
        """All variables this optimizer created in the default graph (slots, beta powers), by name."""
        graph = get_default_graph()
        found = [v for (_, g), v in self._non_slot_dict.items() if g is graph]
        found += [s for slots in self._slots.values() for s in slots.values() if s.graph is graph]
        return sorted(found, key=lambda v: v.name)

    def _get_or_make_slot(self, var, init, slot_name, op_name, dtype=None):
        """The ``slot_name`` slot of ``var``, creating it from ``init`` on first use."""
        slots = self._slots.setdefault(slot_name, {})
        if var not in slots:
            slots[var] = create_slot(var, init, op_name, dtype)
        return slots[var]

    def _zeros_slot(self, var, slot_name, op_name):
        slots = self._slots.setdefault(slot_name, {})
        if var not in slots:
            slots[var] = create_zeros_slot(var, op_name)
        return slots[var]

    def _filled_slot(self, var, slot_name, op_name, value):
        """A slot initialized to the constant ``value`` everywhere (Adagrad, RMSProp's ``rms``)."""
        init = lambda: inits.Constant(value)(var.shape.as_list(), var.dtype)  # noqa: E731
        return self._get_or_make_slot(var, init, slot_name, op_name)

    def _create_non_slot_variable(self, initial_value, name, colocate_with=None):
        """A variable owned by the optimizer, not by one primary (Adam's beta1_power)."""
        graph = colocate_with.graph if colocate_with is not None else get_default_graph()
        key = (name, graph)
        if key not in self._non_slot_dict:
            with graph.control_dependencies(None):
                self._non_slot_dict[key] = vs.Variable(initial_value, name=name, trainable=False)
        return self._non_slot_dict[key]

    def _get_non_slot_variable(self, name, graph=None):
        return self._non_slot_dict.get((name, graph or get_default_graph()))

    # --- hyper-parameters --------------------------------------------------------------
    def _set_hyper(self, **values):
        self._hyper.update(values)

    def _prepare(self):
        """Convert the hyper-parameters to tensors (called inside the apply name scope)."""
        self._hyper_t = {}
        for name, value in self._hyper.items():
            value = value() if callable(value) else value
            t = convert_to_tensor(value, dtype_hint="float32", name=name)
            self._hyper_t[(name, t.dtype.name)] = t
            self._hyper_t[(name, None)] = t

    def _get_hyper(self, name, dtype):
        """Hyper-parameter ``name`` as a tensor of ``dtype`` (cast once per dtype)."""
        dtype = as_dtype(dtype)
        key = (name, dtype.name)
        if key not in self._hyper_t:
            from ..ops.math_ops import cast

            self._hyper_t[key] = cast(self._hyper_t[(name, None)], dtype)
        return self._hyper_t[key]

    # --- subclass hooks ----------------------------------------------------------------
    def _create_slots(self, var_list):
        """Create the slots the update rule needs (none by default)."""

    def _apply_dense(self, grad, var):
        raise NotImplementedError

    def _finish(self, update_ops, name):
        """Group the per-variable updates into one op named ``name``."""
        return _group_named(update_ops, name)


def _as_op(x):
    return x.op if isinstance(x, Tensor) else x


def _checked_pairs(grads_and_vars):
    """Validate (grad, var) pairs: var a Variable, grad None or a tensor of the var's type."""
    pairs = tuple(grads_and_vars)
    if not pairs:
        raise ValueError("No variables provided.")
    out = []
    for pair in pairs:
        g, v = pair
        if not isinstance(v, vs.Variable):
            raise NotImplementedError(f"Trying to update unsupported type {v!r}")
        if g is not None:
            try:
                g = convert_to_tensor(g, dtype_hint=v.dtype)
            except (TypeError, ValueError):
                raise TypeError(f"Gradient must be convertible to a Tensor or None: {g!r}") from None
            if g.dtype != v.dtype:
                raise ValueError(f"Gradient {g.name} has dtype {g.dtype.name} but variable {v.op.name} "
                                 f"has dtype {v.dtype.name}")
            if g.type.shape != v.type.shape:
                raise ValueError(f"Shapes of gradient {g.name} {g.shape} and variable {v.op.name} "
                                 f"{v.shape} are incompatible")
        out.append((g, v))
    return out


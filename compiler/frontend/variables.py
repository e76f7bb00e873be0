"""Variables: tf.Variable, tf.get_variable with variable scopes, assignment ops, initializers.

A ``Variable`` *is* the output tensor of its ``variable`` op (so it can be used anywhere a
tensor can); its value is held by the session.  Its ``initializer`` is an ``assign`` of the
initial value; ``global_variables_initializer`` groups all of them.
"""
from __future__ import annotations

import contextlib
import re

import numpy as np

from ..ir.types import TensorType, as_dtype
from .convert import convert_to_tensor
from .graph import GraphKeys, Tensor, get_default_graph, make_op
from . import initializers as inits


class Variable(Tensor):
    """tf.Variable(initial_value, trainable=True, collections=None, validate_shape=True, name=None, dtype=None)."""

    def __init__(self, initial_value=None, trainable=True, collections=None, validate_shape=True,
                 caching_device=None, name=None, variable_def=None, dtype=None, expected_shape=None,
                 import_scope=None, constraint=None, use_resource=None, synchronization=None,
                 aggregation=None, shape=None):
        if initial_value is None:
            raise ValueError("initial_value must be specified.")
        graph = get_default_graph()
        root = _lifted_to(graph, initial_value, name or "Variable")
        if root is not None:  # created inside a tf.cond/tf.while_loop body: made in the outermost graph
            with root.as_default(), root.name_scope(graph.get_name_scope() + "/" if graph.get_name_scope() else None):
                Variable.__init__(self, initial_value, trainable, collections, validate_shape, name=name, dtype=dtype)
            return
        with graph.name_scope(name or "Variable") as scope:
            var_name = scope[:-1]
            with graph.control_dependencies(None), graph.name_scope("Initializer"):
                value = initial_value() if callable(initial_value) else initial_value
                value = convert_to_tensor(value, dtype=dtype, dtype_hint=dtype)
                if dtype is not None and value.dtype != as_dtype(dtype):
                    from .ops.math_ops import cast

                    value = cast(value, dtype)
            _make(self, graph, var_name, value.type, trainable, collections)
            with graph.control_dependencies(None):
                self.initializer = make_op("assign", [self, value], {"validate_shape": True}, name="Assign").op
        self._initial_value = value

    # --- TF1 surface ---------------------------------------------------------------------
    @property
    def initial_value(self):
        return self._initial_value

    def initialized_value(self):
        return self._initial_value

    def value(self):
        return self

    def read_value(self):
        from .core_api import identity

        return identity(self, name="read")

    def _as_tensor(self):
        return self

    def assign(self, value, use_locking=None, name=None, read_value=True):
        return assign(self, value, name=name)

    def assign_add(self, delta, use_locking=None, name=None, read_value=True):
        return assign_add(self, delta, name=name)

    def assign_sub(self, delta, use_locking=None, name=None, read_value=True):
        return assign_sub(self, delta, name=name)

    def load(self, value, session=None):
        from .session import get_default_session

        sess = session or get_default_session()
        if sess is None:
            raise ValueError("Either session argument should be provided or default session should be established")
        arr = np.asarray(value, dtype=self.dtype.np)
        if arr.shape != tuple(self.shape.as_list()):
            raise ValueError(f"Cannot load value of shape {arr.shape} into variable {self.op.name} of shape {tuple(self.shape.as_list())}")
        sess.set_variable_value(self.op.name, arr)

    def __repr__(self):
        return f"<tf.Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}_ref>"


def _lifted_to(graph, initial, what):
    """The outermost graph when ``graph`` is a control-flow body (body_graph.py), else None.

    A variable made inside a tf.cond/tf.while_loop body lives in the outermost graph, and so
    does its initializer (TF1 lifts it the same way); an initial value computed inside the
    body cannot be lifted: TF1's error."""
    root = getattr(graph, "root", None)
    if root is not None and isinstance(initial, Tensor) and initial.graph is not root:
        raise ValueError(f"Initializer for variable {what} is from inside a control-flow construct, such as a "
                         "loop or conditional. When creating a variable inside a loop or conditional, use a "
                         "lambda as the initializer.")
    return root


def _make(var, graph, name, ttype: TensorType, trainable, collections):
    """Create the ``variable`` op named exactly ``name`` with ``var`` as its output tensor."""
    if any(d is None or not isinstance(d, (int, np.integer)) for d in ttype.shape):
        raise ValueError(f"Variable {name}: shape must be fully static, got {ttype}")
    with graph.control_dependencies(None):
        op = graph.create_op("variable", (), {"dtype": ttype.dtype, "shape": ttype.shape}, name,
                             ttype=ttype, exact_name=True)
    Tensor.__init__(var, op, ttype)
    op.outputs[0] = var
    var.trainable = bool(trainable)
    if collections is None:
        collections = [GraphKeys.GLOBAL_VARIABLES]
    collections = list(collections)
    if trainable and GraphKeys.TRAINABLE_VARIABLES not in collections:
        collections.append(GraphKeys.TRAINABLE_VARIABLES)
    graph.add_to_collections(collections, var)


# ----------------------------------------------------------------------------- assignment
def _check_ref(ref, what):
    if not isinstance(ref, Variable):
        raise TypeError(f"{what}: the first argument must be a Variable, got {ref!r}")


def assign(ref, value, validate_shape=None, use_locking=None, name=None):
    _check_ref(ref, "assign")
    return make_op("assign", [ref, convert_to_tensor(value, dtype_hint=ref.dtype)], {"validate_shape": True}, name=name or "Assign")


def assign_add(ref, value, use_locking=None, name=None):
    _check_ref(ref, "assign_add")
    return make_op("assign_add", [ref, convert_to_tensor(value, dtype_hint=ref.dtype)], {"validate_shape": True}, name=name or "AssignAdd")


def assign_sub(ref, value, use_locking=None, name=None):
    _check_ref(ref, "assign_sub")
    return make_op("assign_sub", [ref, convert_to_tensor(value, dtype_hint=ref.dtype)], {"validate_shape": True}, name=name or "AssignSub")


# ----------------------------------------------------------------------------- collections
def global_variables(scope=None):
    return get_default_graph().get_collection(GraphKeys.GLOBAL_VARIABLES, scope)


def trainable_variables(scope=None):
    return get_default_graph().get_collection(GraphKeys.TRAINABLE_VARIABLES, scope)


def local_variables(scope=None):
    return get_default_graph().get_collection(GraphKeys.LOCAL_VARIABLES, scope)


def model_variables(scope=None):
    return get_default_graph().get_collection(GraphKeys.MODEL_VARIABLES, scope)


def variables_initializer(var_list, name="init"):
    from .core_api import group, no_op

    if not var_list:
        return no_op(name=name)
    return group(*[v.initializer for v in var_list], name=name)


def global_variables_initializer():
    return variables_initializer(global_variables(), name="init")


def local_variables_initializer():
    return variables_initializer(local_variables(), name="init_1")


# ----------------------------------------------------------------------------- scopes
class _AutoReuse:
    def __repr__(self):
        return "tf.AUTO_REUSE"


AUTO_REUSE = _AutoReuse()


class VariableScope:
    """The state of one ``variable_scope``: name prefix, reuse flag, defaults for get_variable."""

    def __init__(self, reuse, name="", initializer=None, regularizer=None, dtype="float32",
                 original_name_scope=""):
        self.name, self.reuse, self.initializer, self.regularizer = name, reuse, initializer, regularizer
        self.dtype = as_dtype(dtype)
        self.original_name_scope = original_name_scope

    def reuse_variables(self):
        self.reuse = True

    def set_initializer(self, initializer):
        self.initializer = initializer

    def set_regularizer(self, regularizer):
        self.regularizer = regularizer

    def get_variable(self, name, *args, **kwargs):
        return get_variable(name, *args, **kwargs)


def get_variable_scope() -> VariableScope:
    stack = get_default_graph()._var_scope_stack
    return stack[-1] if stack else VariableScope(False)


def _scope_counts(graph) -> dict:
    """How often each full variable-scope name was opened (TF's variable_scopes_count)."""
    return graph.__dict__.setdefault("_var_scope_counts", {})


def _unique_scope_name(graph, base):
    """TF's _get_unique_variable_scope: ``base`` if never opened, else the first free ``base_i``."""
    counts = _scope_counts(graph)
    if not counts.get(base):
        return base
    i = 1
    while counts.get(f"{base}_{i}"):
        i += 1
    return f"{base}_{i}"


@contextlib.contextmanager
def _counted_scope(graph, full, by_object):
    """Count ``full`` as opened; on exit forget sub-scope counts as TF does.

    Leaving a scope opened by name resets the counts of its sub-scopes (so re-entering
    ``model`` and building a new ``model/rnn/basic_lstm_cell`` reuses that name); leaving
    one re-entered through its VariableScope object restores the counts seen on entry.
    """
    counts = _scope_counts(graph)
    counts[full] = counts.get(full, 0) + 1
    saved = dict(counts) if by_object else None
    try:
        yield
    finally:
        if by_object:
            counts.clear()
            counts.update(saved)
        else:
            for key in counts:
                if key.startswith(full + "/"):
                    counts[key] = 0


@contextlib.contextmanager
def variable_scope(name_or_scope, default_name=None, values=None, initializer=None, regularizer=None,
                   caching_device=None, partitioner=None, custom_getter=None, reuse=None, dtype=None,
                   use_resource=None, constraint=None, auxiliary_name_scope=True):
    """Open a variable scope (and a matching name scope); reuse True is inherited by children."""
    graph = get_default_graph()
    parent = get_variable_scope()
    if isinstance(name_or_scope, VariableScope):
        full = name_or_scope.name
        name_scope_name = name_or_scope.original_name_scope or (full + "/" if full else "")
    else:
        if name_or_scope is None:
            if default_name is None:
                raise TypeError("If default_name is None then name_or_scope is required")
            prefix = parent.name + "/" if parent.name else ""
            local = _unique_scope_name(graph, prefix + default_name)[len(prefix):]
        else:
            local = name_or_scope
            if not re.match(r"^[A-Za-z0-9_.\-/>]*$", local):
                raise ValueError(f"'{local}' is not a valid scope name")
        full = f"{parent.name}/{local}" if parent.name else local
        name_scope_name = local
    if reuse is False:
        reuse_flag = False
    elif reuse is None:
        reuse_flag = parent.reuse
    else:
        reuse_flag = reuse if parent.reuse is not True else True
    if isinstance(name_or_scope, VariableScope) and reuse is None:
        reuse_flag = name_or_scope.reuse or parent.reuse
    source = name_or_scope if isinstance(name_or_scope, VariableScope) else parent
    scope = VariableScope(reuse_flag, full,
                          initializer if initializer is not None else source.initializer,
                          regularizer if regularizer is not None else source.regularizer,
                          dtype if dtype is not None else source.dtype)
    with graph.name_scope(name_scope_name) as ns, \
            _counted_scope(graph, full, isinstance(name_or_scope, VariableScope)):
        scope.original_name_scope = ns
        graph._var_scope_stack.append(scope)
        try:
            yield scope
        finally:
            graph._var_scope_stack.pop()


def get_variable(name, shape=None, dtype=None, initializer=None, regularizer=None, trainable=None,
                 collections=None, caching_device=None, partitioner=None, validate_shape=True,
                 use_resource=None, custom_getter=None, constraint=None, synchronization=None,
                 aggregation=None):
    """tf.get_variable: create ``scope/name`` or, under reuse, return the existing one.

    Inside a tf.cond/tf.while_loop body a new variable (and its initializer, regularizer loss)
    is made in the outermost graph; the body reads it like any outer tensor."""
    graph = get_default_graph()
    root = getattr(graph, "root", None)
    if root is not None:
        _lifted_to(graph, initializer, name)
        with root.as_default():
            return get_variable(name, shape, dtype, initializer, regularizer, trainable, collections,
                                caching_device, partitioner, validate_shape, use_resource, custom_getter,
                                constraint, synchronization, aggregation)
    scope = get_variable_scope()
    full = f"{scope.name}/{name}" if scope.name else name
    store = graph._variables_by_name
    if full in store:
        if scope.reuse is False:
            raise ValueError(f"Variable {full} already exists, disallowed. Did you mean to set "
                             "reuse=True or reuse=tf.AUTO_REUSE in VarScope?")
        var = store[full]
        if shape is not None and list(_as_shape(shape)) != var.shape.as_list():
            raise ValueError(f"Trying to share variable {full}, but specified shape {tuple(_as_shape(shape))} "
                             f"and found shape {tuple(var.shape.as_list())}.")
        if dtype is not None and as_dtype(dtype) != var.dtype:
            raise ValueError(f"Trying to share variable {full}, but specified dtype {as_dtype(dtype).name} "
                             f"and found dtype {var.dtype.name}.")
        return var
    if scope.reuse is True:
        raise ValueError(f"Variable {full} does not exist, or was not created with tf.get_variable(). "
                         "Did you mean to set reuse=tf.AUTO_REUSE in VarScope?")
    initializer = initializer if initializer is not None else scope.initializer
    if dtype is None:  # a tensor/array initializer brings its own dtype (TF rule)
        dtype = scope.dtype if initializer is None or callable(initializer) else _value_dtype(initializer)
    var = _create_variable(graph, full, shape, dtype, initializer,
                           True if trainable is None else trainable, collections)
    store[full] = var
    reg = regularizer if regularizer is not None else scope.regularizer
    if reg is not None:
        with graph.name_scope(full + "/Regularizer/"):
            loss = reg(var)
        if loss is not None:
            graph.add_to_collection(GraphKeys.REGULARIZATION_LOSSES, loss)
    return var


def _value_dtype(value):
    from .convert import _python_dtype

    return value.dtype if isinstance(value, Tensor) else _python_dtype(value)


def _as_shape(shape):
    if hasattr(shape, "as_list"):
        shape = shape.as_list()
    if isinstance(shape, (int, np.integer)):
        shape = [shape]
    return [int(d) for d in shape]


def _create_variable(graph, full, shape, dtype, initializer, trainable, collections):
    dtype = as_dtype(dtype)
    if initializer is None:
        initializer = inits.glorot_uniform_initializer() if dtype.is_floating else inits.Zeros()
    if isinstance(initializer, type) and issubclass(initializer, inits.Initializer):
        initializer = initializer()
    if callable(initializer):
        if shape is None:
            raise ValueError(f"The shape of variable {full} must be specified when using an initializer")
        init_fn = lambda: initializer(_as_shape(shape), dtype=dtype)  # noqa: E731
    else:
        value = convert_to_tensor(initializer, dtype_hint=dtype)
        if shape is not None and value.shape.as_list() != _as_shape(shape):
            raise ValueError(f"If initializer is a constant, do not specify shape (variable {full})")
        init_fn = value
    return _variable_with_exact_name(graph, full, init_fn, trainable, collections, dtype)


def _variable_with_exact_name(graph, full, init, trainable, collections, dtype):
    """Build a Variable whose op name is exactly ``full`` (get_variable naming ignores name scopes)."""
    var = Variable.__new__(Variable)
    saved = graph._name_stack
    graph._name_stack = full
    try:
        with graph.control_dependencies(None), graph.name_scope("Initializer"):
            value = init() if callable(init) else init
            value = convert_to_tensor(value, dtype_hint=dtype)
            if value.dtype != dtype:
                from .ops.math_ops import cast

                value = cast(value, dtype)
        graph._name_stack = ""
        _make(var, graph, full, value.type, trainable, collections)
        graph._name_stack = full
        with graph.control_dependencies(None):
            var.initializer = make_op("assign", [var, value], {"validate_shape": True}, name="Assign").op
    finally:
        graph._name_stack = saved
    var._initial_value = value
    return var


TF_API = {
    "tf": {
        "Variable": Variable, "get_variable": get_variable, "variable_scope": variable_scope,
        "get_variable_scope": get_variable_scope, "VariableScope": VariableScope, "AUTO_REUSE": AUTO_REUSE,
        "assign": assign, "assign_add": assign_add, "assign_sub": assign_sub,
        "global_variables": global_variables, "trainable_variables": trainable_variables,
        "local_variables": local_variables, "model_variables": model_variables,
        "all_variables": global_variables,
        "global_variables_initializer": global_variables_initializer,
        "initialize_all_variables": global_variables_initializer,
        "local_variables_initializer": local_variables_initializer,
        "variables_initializer": variables_initializer,
    },
}

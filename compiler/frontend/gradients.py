"""Reverse-mode autodiff on the graph: ``tf.gradients`` adds gradient ops to the graph.

Gradient rules live in ``compiler/frontend/grads/`` and are registered per op kind with
``@register_gradient(kind)``.  A rule receives the forward ``Operation`` and the gradient
of its output and returns one gradient (a Tensor or None) per input.  A rule registered
with ``outputs="list"`` (the control-flow ops, which have several outputs) receives a list
with one gradient per output instead (None where no gradient reaches that output).
"""
from __future__ import annotations

from .convert import convert_to_tensor
from .graph import Operation, Tensor

_GRADIENTS: dict = {}
_LIST_KINDS: set = set()  # kinds whose rule takes one gradient per output (a list)
# kinds whose outputs carry no gradient (comparisons, integer ops, shape queries, ...)
_NOT_DIFFERENTIABLE: set = set()


def register_gradient(kind: str, outputs: str = "one"):
    def deco(fn):
        if kind in _GRADIENTS:
            raise ValueError(f"gradient for {kind!r} registered twice")
        _GRADIENTS[kind] = fn
        if outputs == "list":
            _LIST_KINDS.add(kind)
        return fn

    return deco


def not_differentiable(*kinds: str):
    _NOT_DIFFERENTIABLE.update(kinds)


not_differentiable("constant", "placeholder", "variable", "no_op", "stop_gradient", "check_range",
                   "assign", "assign_add", "assign_sub")


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _differentiable(t: Tensor) -> bool:
    return t.dtype.is_floating


def _ops_between(ys, xs):
    """Ops reachable backwards from ys that also depend on some x (in creation order)."""
    x_ops = {x.op for x in xs}
    back = set()
    stack = [y.op for y in ys]
    while stack:
        op = stack.pop()
        if op in back:
            continue
        back.add(op)
        stack.extend(t.op for t in op.inputs)
    # forward from xs within `back`
    consumers: dict = {}
    for op in back:
        for t in op.inputs:
            consumers.setdefault(t.op, []).append(op)
    between = set()
    stack = [op for op in x_ops if op in back]
    while stack:
        op = stack.pop()
        if op in between:
            continue
        between.add(op)
        stack.extend(consumers.get(op, []))
    return sorted(between, key=lambda o: o.id)


def _sum_grads(grads):
    grads = [g for g in grads if g is not None]
    if not grads:
        return None
    if len(grads) == 1:
        return grads[0]
    from .ops.math_ops import add_n

    return add_n(grads)


def gradients(ys, xs, grad_ys=None, name="gradients", stop_gradients=None, **unsupported):
    """Symbolic d(sum ys)/d(xs); None for an x that no y depends on (TF1 semantics)."""
    for key in unsupported:
        if key not in ("colocate_gradients_with_ops", "gate_gradients", "aggregation_method"):
            raise TypeError(f"gradients() got an unexpected keyword argument '{key}'")
    ys = [convert_to_tensor(y) for y in _as_list(ys)]
    xs = [convert_to_tensor(x) for x in _as_list(xs)]
    if grad_ys is None:
        grad_ys = [None] * len(ys)
    grad_ys = _as_list(grad_ys)
    if len(grad_ys) != len(ys):
        raise ValueError(f"Passed {len(grad_ys)} grad_ys for {len(ys)} ys")
    stop_ops = {convert_to_tensor(s).op for s in _as_list(stop_gradients or [])}
    graph = ys[0].graph
    from .ops import array_ops

    with graph.name_scope(name):
        pending: dict = {}
        for y, gy in zip(ys, grad_ys):
            if gy is None:
                if not _differentiable(y):
                    raise TypeError(f"gradients: ys tensor {y.name} has non-floating dtype {y.dtype.name}")
                gy = array_ops.ones_like(y)
            else:
                gy = convert_to_tensor(gy, dtype_hint=y.dtype)
                if gy.type.shape != y.type.shape and gy.shape.as_list() != y.shape.as_list():
                    raise ValueError(f"gradients: grad_ys shape {gy.shape} does not match ys {y.name} shape {y.shape}")
            pending.setdefault(y, []).append(gy)
        for op in reversed(_ops_between(ys, xs)):
            if not op.outputs:
                continue
            grads = []
            for out in op.outputs:
                grads.append(_sum_grads(pending.get(out, [])))
                pending[out] = [grads[-1]] if grads[-1] is not None else []
            if all(g is None for g in grads) or op in stop_ops or op.type in _NOT_DIFFERENTIABLE or not op.inputs:
                continue
            if op.type not in _GRADIENTS:
                raise LookupError(f"No gradient defined for operation '{op.name}' (op type: {op.type})")
            with graph.name_scope(op.name + "_grad"):
                in_grads = _GRADIENTS[op.type](op, grads if op.type in _LIST_KINDS else grads[0])
            in_grads = _as_list(in_grads)
            if len(in_grads) != len(op.inputs):
                raise ValueError(f"gradient of {op.type} returned {len(in_grads)} grads for {len(op.inputs)} inputs")
            for t, g in zip(op.inputs, in_grads):
                if g is not None and _differentiable(t):
                    pending.setdefault(t, []).append(g)
        return [_sum_grads(pending.get(x, [])) for x in xs]


def is_operation(x) -> bool:
    return isinstance(x, Operation)

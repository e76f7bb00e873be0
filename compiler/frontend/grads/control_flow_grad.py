"""Gradients of ``cond`` and ``while`` (frontend/control_flow.py).

Both rules rebuild the forward body inside a new control-flow body (``clone_body`` copies a
body graph's ops with its inputs mapped to new tensors) and differentiate the copy there
with ``tf.gradients``; nested control flow is differentiated the same way, recursively.

* cond: the gradient is a cond on the same predicate whose branches are the gradients of
  the forward branches (w.r.t. the captured tensors) — only the taken branch's runs.
* while: the body's gradient needs each iteration's loop values.  The forward loop itself
  keeps them: ``tf.while_loop`` with ``back_prop`` and a static bound writes the loop
  variables entering iteration k into row k of one ``[maximum_iterations, ...]`` stack per
  loop variable (``update_row``, written in place inside the loop: O(row) per iteration),
  and its counter is the trip count (frontend/control_flow.py).  A backward loop walks
  k = trips-1 .. 0, reads row k, rebuilds that iteration's body
  from it and applies its gradient, carrying the loop variables' gradients and summing
  the captured tensors' gradients.  The stacks need a bound known when a run is lowered: a
  loop whose ``maximum_iterations`` is neither a Python int (or constant) nor a scalar
  computed from shapes (``tf.shape(x)[1]``) cannot be differentiated (a clear error) — Kiln's
  buffers have static sizes on every backend, so stacks do not grow dynamically.
  ``back_prop=False`` loops pass no gradient.  The values inside one iteration are
  recomputed from its stacked inputs rather than stacked themselves; the rebuilt body's
  ``iteration`` input is k (the stack row = the forward iteration's number), so its random
  ops (dropout) draw the numbers the forward iteration drew.
"""
from __future__ import annotations

from ...ir.deferred import attr_tensors, remap
from ...ir.from_graph import ASSIGN_KINDS
from ..control_flow import cond, while_loop
from ..gradients import gradients, register_gradient
from ..graph import get_default_graph
from ..ops import array_ops, array_slicing, math_ops


def clone_body(body, inputs: list, iteration=None) -> list:
    """Copy ``body``'s ops into the default graph with ``body.inputs`` mapped to ``inputs``
    (deferred attrs too: a ``DimOf`` of a body tensor reads its copy; and a loop body's
    ``iteration`` input to ``iteration``: the random ops it keys then draw what they drew in
    that iteration); returns the copies of ``body.outputs``."""
    graph = get_default_graph()
    mapping = dict(zip(body.inputs, inputs))
    if getattr(body, "iteration", None) is not None:
        if iteration is None:
            raise ValueError(f"{body.body_name}: rebuilding a loop body needs its iteration number")
        mapping[body.iteration] = iteration
    ops = {}
    for op in body.get_operations():
        if op.outputs and op.outputs[0] in mapping:
            continue
        control = [ops[c] for c in op.control_inputs if c in ops]
        types = [t.type for t in op.outputs]
        with graph.control_dependencies(control):
            attrs = {k: remap(v, mapping) for k, v in op.attrs.items()} if attr_tensors(op.attrs) else op.attrs
            new = graph.create_op(op.type, [mapping[t] for t in op.inputs], attrs, op.name.rsplit("/", 1)[-1],
                                  has_output=bool(types), ttype=types if len(types) > 1 else (types or [None])[0])
        ops[op] = new
        mapping.update(zip(op.outputs, new.outputs))
    return [mapping[t] for t in body.outputs]


def _float(ts) -> list:
    return [i for i, t in enumerate(ts) if t.dtype.is_floating]


def _or_zeros(grads, like) -> list:
    return [g if g is not None else array_ops.zeros_like(t) for g, t in zip(grads, like)]


def _body_grads(body, inputs, grad_ys, wrt, iteration=None) -> list:
    """Gradients of ``body``'s float outputs (weighted by ``grad_ys``, one per output) w.r.t.
    ``inputs[i]`` for i in ``wrt``, the body rebuilt on ``inputs`` (and ``iteration``, a loop
    body's iteration number); zeros where none flows.

    Inputs from an enclosing graph are captured first, so the gradient w.r.t. them is the
    gradient w.r.t. their placeholders in the current body."""
    graph = get_default_graph()
    inputs = [graph.capture(t) if t.graph is not graph else t for t in inputs]
    outs = clone_body(body, inputs, iteration)
    pairs = [(o, g) for o, g in zip(outs, grad_ys) if o.dtype.is_floating and g is not None]
    xs = [inputs[i] for i in wrt]
    if not pairs:
        return [array_ops.zeros_like(x) for x in xs]
    return _or_zeros(gradients([o for o, _ in pairs], xs, grad_ys=[g for _, g in pairs]), xs)


@register_gradient("cond", outputs="list")
def _cond_grad(op, grads):
    """d/d(captures) = cond(pred, grad of then branch, grad of else branch)."""
    pred, caps = op.inputs[0], op.inputs[1:]
    wrt = _float(caps)
    if not wrt:
        return [None] * len(op.inputs)
    grads = [g if g is not None or not o.dtype.is_floating else array_ops.zeros_like(o)
             for g, o in zip(grads, op.outputs)]

    def branch(body):
        def fn():
            return _body_grads(body, list(caps), grads, wrt)
        return fn

    outs = cond(pred, branch(op.attrs["then"]), branch(op.attrs["else"]), strict=True, name="cond_grad")
    result = [None] * len(op.inputs)
    for i, g in zip(wrt, outs):
        result[1 + i] = g
    return result


def _assigns(graph) -> list:
    """Names of the assign ops in a body graph and in the bodies nested in it."""
    found = []
    for op in graph.get_operations():
        if op.type in ASSIGN_KINDS:
            found.append(op.name)
        for key in ("then", "else", "cond", "body"):
            if op.type in ("cond", "while") and key in op.attrs:
                found += _assigns(op.attrs[key])
    return found


def _bound(op) -> int:
    """The loop's static bound; the stacks exist exactly when there is one (and back_prop)."""
    bound = op.attrs["maximum_iterations"]
    if bound is None or not op.attrs["stacked"]:
        raise ValueError(f"tf.gradients through tf.while_loop '{op.name}' needs maximum_iterations (a Python int, "
                         "a constant, or a scalar computed from shapes such as tf.shape(x)[1]): Kiln stacks each iteration's loop variables for the backward pass in "
                         "buffers of that many rows")
    return bound


@register_gradient("while", outputs="list")
def _while_grad(op, grads):
    """Backward loop over the stacked loop variables, last iteration first (module doc)."""
    if not op.attrs["back_prop"]:
        return [None] * len(op.inputs)
    assigns = _assigns(op.attrs["body"])
    if assigns:
        raise ValueError(f"tf.gradients through tf.while_loop '{op.name}' whose body assigns variables "
                         f"({', '.join(assigns)}) is not supported: the backward loop would need each "
                         "iteration's variable values; carry them as loop variables instead")
    n, core = op.attrs["num_loop_vars"], op.attrs["num_core"]
    inits, caps = list(op.inputs[:core]), list(op.inputs[n:])
    wrt_v, wrt_c = _float(inits), _float(caps)
    if not wrt_v and not wrt_c:
        return [None] * len(op.inputs)
    _bound(op)
    trips, stacks = op.outputs[0], list(op.outputs[core:n])
    grads = _or_zeros(grads[:core], op.outputs[:core])

    def cond_fn(k, *rest):
        return math_ops.greater_equal(k, 0)

    def body_fn(k, *rest):
        g_v, g_c = rest[:len(wrt_v)], rest[len(wrt_v):]
        values = [array_slicing.gather(s, k) for s in stacks]
        grad_ys = [None] * n  # none for the stack outputs: the rebuilt pushes are pruned
        for i, g in zip(wrt_v, g_v):
            grad_ys[i] = g
        d = _body_grads(op.attrs["body"], values + stacks + caps, grad_ys, wrt_v + [n + i for i in wrt_c],
                        iteration=math_ops.cast(k, "int64"))
        return [k - 1] + d[:len(wrt_v)] + [a + b for a, b in zip(g_c, d[len(wrt_v):])]

    start = [trips - 1] + [grads[i] for i in wrt_v] + [array_ops.zeros_like(caps[i]) for i in wrt_c]
    out = while_loop(cond_fn, body_fn, start, back_prop=False, name="while_grad")
    result = [None] * len(op.inputs)
    for pos, i in enumerate(wrt_v):
        result[i] = out[1 + pos]
    for pos, i in enumerate(wrt_c):
        result[n + i] = out[1 + len(wrt_v) + pos]
    return result

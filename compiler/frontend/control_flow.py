"""``tf.cond``, ``tf.case`` and ``tf.while_loop``: control flow as graph ops with body graphs.

Design (docs/graph.md, "Control flow"): each user function is traced into a ``BodyGraph``
(body_graph.py); the control-flow op in the enclosing graph holds those body graphs in its
attrs and has one output tensor per result (``cond:0``, ``cond:1``, ... — the graph's
multi-output mechanism), so no extra "get" ops exist.

* ``cond``: inputs ``[pred, *captures]``; attrs ``then``/``else`` (body graphs whose
  ``inputs`` are placeholders for the captures, in the op's order) and ``structure``;
  outputs: the flattened branch results.  Assigns in a branch happen only on the taken
  branch: lowering turns each variable a branch writes into an extra result of the IR
  ``if`` (the other branch yields the value unchanged).
* ``while``: inputs ``[*loop_var_inits, *captures]``; attrs ``cond``/``body`` (body graphs
  with placeholders for the loop variables then the captures), ``num_loop_vars``,
  ``maximum_iterations`` (a Python int when static; a ``ValueOf`` deferred attr when it is a
  tensor computed from shapes, known when a run is lowered), ``back_prop``, ``counter``; outputs:
  the final loop variables.  ``maximum_iterations`` is an int32 counter carried as loop
  variable 0 (``counter=True``) and and-ed into the condition, as TF does.  With
  ``back_prop`` and a static bound (``stacked``), the first ``num_core`` loop variables are
  followed by one ``[maximum_iterations, ...]`` stack each, where the body writes the values
  entering each iteration: the forward values the gradient needs (unused stacks are pruned).
  Loop variables keep one static type (the IR's values have fixed shapes): a body that
  changes a shape is an error, ``shape_invariants`` are checked but cannot relax it.
  A variable assigned in the body is carried through the loop by lowering; assigning in
  the condition is refused.
"""
from __future__ import annotations

from .body_graph import BodyGraph
from .convert import convert_to_tensor
from .graph import Tensor, get_default_graph, graph_for
from .nest import flatten, pack_like
from ..ir.from_graph import ASSIGN_KINDS
from ..ir.types import TensorType, shape_str


def _trace(outer, name, fn, arg_types=(), structure=None, loop=False):
    """Trace ``fn`` into a new body graph; returns (graph, python result, flat result tensors).

    ``arg_types`` are the loop variables' types (none for a cond branch); the function gets
    them packed like ``structure``.  Results are tensors of the body (outer tensors and
    python values are captured / converted inside it).
    """
    body = BodyGraph(outer, name, loop=loop)
    args = [body.add_loop_var(t) for t in arg_types]
    with body.as_default():
        result = fn(*pack_like(structure, args)) if structure is not None else fn()
        if result is None:
            raise ValueError(f"{name}: the function must return a value (got None)")
        flat = []
        for leaf in flatten(result):
            if not isinstance(leaf, Tensor) and hasattr(leaf, "type") and hasattr(leaf, "op"):
                raise TypeError(f"{name}: returns an Operation ({leaf!r}); return tensors")
            t = convert_to_tensor(leaf)
            flat.append(body.capture(t) if t.graph is not body else t)
    return body, result, flat


def _align_captures(bodies) -> list:
    """The union of the bodies' captures (first-seen order); every body gets a placeholder for
    each, and its ``inputs`` become its loop variables followed by those placeholders."""
    union = list(dict.fromkeys(t for b in bodies for t in b.captures))
    for b in bodies:
        loop_vars = [t for t in b.inputs if t not in b.capture_source]
        b.inputs = loop_vars + [b.capture(t) for t in union]
    return union


def _static_int(value, what):
    """A Python int from an int or a constant tensor, else None (a tensor computed at run time)."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, Tensor) and value.op.type == "constant":
        return int(value.op.attrs["value"])
    if isinstance(value, Tensor):
        return None
    raise TypeError(f"{what} must be an int or an int32 scalar tensor, got {value!r}")


def _lowering_bound(limit):
    """``ValueOf(limit)`` when the scalar tensor ``limit`` is computed from shapes and constants
    (e.g. ``tf.shape(x)[1]`` of a dim unknown until the feed): its value is known when a run
    signature is lowered, so it can size the gradient's stacks; else None."""
    from ..ir.deferred import ValueOf
    from .ops.dynamic_dims import value_source

    if limit.type.shape != () or not limit.dtype.is_integer or value_source(limit) is not None:
        return None
    return ValueOf(limit)


def _create(graph, kind, scope, inputs, attrs, types, bodies):
    """The control-flow op named after its scope (``cond`` -> ``cond:0``, ...)."""
    control = list(dict.fromkeys(c for b in bodies for c in b.outer_control))
    with graph.control_dependencies(control):
        return graph.create_op(kind, inputs, attrs, scope.rstrip("/"), ttype=list(types), exact_name=True)


# ----------------------------------------------------------------------------- cond
def _check_pred(pred, what):
    pred = convert_to_tensor(pred)
    if not pred.dtype.is_bool or pred.type.shape != ():
        raise ValueError(f"{what}: pred must be a scalar bool tensor, got {_tstr(pred.type)}")
    return pred


def _check_same(what, a_name, a, b_name, b):
    """Both branches return the same structure of tensors with equal dtypes and shapes."""
    if len(a) != len(b):
        raise ValueError(f"{what}: {a_name} and {b_name} must return the same number of tensors "
                         f"({len(a)} vs {len(b)})")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.dtype != y.dtype:
            raise ValueError(f"{what}: output {i} of {a_name} has dtype {x.dtype.name} but {b_name} returns "
                             f"{y.dtype.name}")
        if tuple(x.type.shape) != tuple(y.type.shape):
            raise ValueError(f"{what}: output {i} of {a_name} has shape {shape_str(x.type.shape)} but {b_name} "
                             f"returns {shape_str(y.type.shape)} (Kiln's IR needs one static shape)")


def cond(pred, true_fn=None, false_fn=None, strict=False, name=None, fn1=None, fn2=None):
    """tf.cond: ``true_fn()`` if ``pred`` else ``false_fn()``; only the taken branch runs."""
    true_fn = true_fn if true_fn is not None else fn1
    false_fn = false_fn if false_fn is not None else fn2
    if not callable(true_fn):
        raise TypeError("true_fn must be callable.")
    if not callable(false_fn):
        raise TypeError("false_fn must be callable.")
    pred = _check_pred(pred, f"cond '{name or 'cond'}'")
    graph = graph_for([pred])
    with graph.name_scope(name or "cond") as scope:
        then_g, then_res, then_flat = _trace(graph, scope + "true_fn", true_fn)
        else_g, else_res, else_flat = _trace(graph, scope + "false_fn", false_fn)
    _check_same(f"cond '{scope[:-1]}'", "true_fn", then_flat, "false_fn", else_flat)
    _check_structure(scope[:-1], then_res, else_res)
    then_g.outputs, else_g.outputs = then_flat, else_flat
    captures = _align_captures([then_g, else_g])
    attrs = {"then": then_g, "else": else_g}
    op = _create(graph, "cond", scope, [pred] + captures, attrs, [t.type for t in then_flat], [then_g, else_g])
    result = pack_like(then_res, op.outputs)
    if not strict and isinstance(result, (list, tuple)) and len(result) == 1:
        return result[0]
    return result


def _check_structure(what, a, b):
    try:
        pack_like(a, flatten(b))
    except (TypeError, ValueError):
        raise ValueError(f"cond '{what}': true_fn and false_fn must return the same nested structure") from None


def case(pred_fn_pairs, default=None, exclusive=False, strict=False, name="case"):
    """tf.case: the fn of the first true predicate (``default`` when none is); nested conds.

    With ``exclusive``, a step in which more than one predicate is true fails.  With no
    ``default``, the last pair's fn is the default and a step in which no predicate is true
    fails (TF1).
    """
    pairs = list(pred_fn_pairs.items()) if isinstance(pred_fn_pairs, dict) else list(pred_fn_pairs)
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2 or not callable(pair[1]):
            raise TypeError(f"case: each pred_fn_pair must be a (pred, callable) tuple, got {pair!r}")
    if not pairs:
        raise ValueError("case: pred_fn_pairs must not be empty")
    preds = [_check_pred(p, f"case '{name}'") for p, _ in pairs]
    fns = [f for _, f in pairs]
    graph = graph_for(preds)
    with graph.name_scope(name):
        if exclusive:
            preds[0] = _exclusive_check(preds, name)
        if default is None:
            default = _asserting(preds[-1], fns[-1], name)
            preds, fns = preds[:-1], fns[:-1]
        chain = default
        for p, f in reversed(list(zip(preds, fns))):
            chain = (lambda p, f, rest: lambda: cond(p, f, rest, strict=True))(p, f, chain)
        result = chain()
    if not strict and isinstance(result, (list, tuple)) and len(result) == 1:
        return result[0]
    return result


def _asserting(pred, fn, name):
    """``fn`` as the default of a case without one: its results wait on a run-time check
    that its own predicate is true (else no predicate was)."""
    from .graph import make_op
    from .ops import math_ops

    def default():
        flag = math_ops.cast(pred, "int32")
        checked = make_op("check_range", [flag], {"low": 1, "high": 2, "what": (
            f"case '{name}': Input error: None of conditions evaluated as True (the last predicate, as 0/1)")})
        result = fn()
        with get_default_graph().control_dependencies([checked]):
            return pack_like(result, [make_op("identity", [convert_to_tensor(t)]) for t in flatten(result)])

    return default


def _exclusive_check(preds, name):
    """``preds[0]`` made to depend on a run-time check that at most one predicate is true."""
    from .ops import math_ops

    count = math_ops.add_n([math_ops.cast(p, "int32") for p in preds]) if len(preds) > 1 else None
    if count is None:
        return preds[0]
    from .graph import make_op

    checked = make_op("check_range", [count], {"low": 0, "high": 2,
                                               "what": f"case '{name}' (exclusive=True): number of true predicates"})
    with get_default_graph().control_dependencies([checked]):
        return make_op("identity", [preds[0]], name="exclusive_pred")


# ----------------------------------------------------------------------------- while_loop
def while_loop(cond, body, loop_vars, shape_invariants=None, parallel_iterations=10, back_prop=True,
               swap_memory=False, maximum_iterations=None, name=None, return_same_structure=False):
    """tf.while_loop: repeat ``loop_vars = body(*loop_vars)`` while ``cond(*loop_vars)``."""
    if not callable(cond):
        raise TypeError("cond must be callable.")
    if not callable(body):
        raise TypeError("body must be callable.")
    if parallel_iterations < 1:
        raise TypeError("parallel_iterations must be a positive integer.")
    single = not isinstance(loop_vars, (list, tuple))  # the body then gets it as one argument (TF1)
    structure = [loop_vars] if single else loop_vars
    inits = [convert_to_tensor(v) for v in flatten(structure)]
    if not inits:
        raise ValueError("No loop variables provided")
    graph = graph_for(inits)
    with graph.name_scope(name or "while") as scope:
        max_static = _static_int(maximum_iterations, "maximum_iterations")
        counter = maximum_iterations is not None
        if counter:
            limit = convert_to_tensor(maximum_iterations, dtype_hint="int32")
            inits = [convert_to_tensor(0, dtype="int32", name="iteration_counter")] + inits
            if max_static is None:
                max_static = _lowering_bound(limit)
        _check_invariants(scope, shape_invariants, structure, inits[counter:])
        core = len(inits)
        stacked = bool(back_prop) and max_static is not None
        if stacked:
            rows = max_static if isinstance(max_static, int) else limit
            inits = inits + [_empty_stack(t, rows) for t in inits]
        types = [t.type for t in inits]
        cond_fn, body_fn = _wrap(cond, body, structure, counter, limit if counter else None, core, stacked)
        cond_g, _, cond_flat = _trace(graph, scope + "cond", cond_fn, types, list(inits), loop=True)
        body_g, _, body_flat = _trace(graph, scope + "body", body_fn, types, list(inits), loop=True)
    _check_loop(scope[:-1], cond_flat, body_flat, inits, counter, core)
    cond_g.outputs, body_g.outputs = cond_flat, body_flat
    captures = _align_captures([cond_g, body_g])
    attrs = {"cond": cond_g, "body": body_g, "num_loop_vars": len(inits), "num_core": core, "stacked": stacked,
             "counter": counter, "maximum_iterations": max_static, "back_prop": bool(back_prop),
             "parallel_iterations": int(parallel_iterations), "swap_memory": bool(swap_memory)}
    op = _create(graph, "while", scope, inits + captures, attrs, types, [cond_g, body_g])
    outs = pack_like(structure, op.outputs[counter:core])
    return outs[0] if single or (len(outs) == 1 and not return_same_structure and isinstance(outs, list)) else outs


def _empty_stack(t, bound):
    """Zeros of shape ``[bound, *t.shape]``: the stack of one loop variable's values."""
    from .ops import array_ops

    return array_ops.tile(array_ops.expand_dims(array_ops.zeros_like(t), 0), [bound] + [1] * t.type.rank)


def _wrap(cond, body, structure, counter, limit, core, stacked):
    """The traced cond/body over the flat loop variables: the counter first when there is
    one, then the user's, then (``stacked``) one stack per loop variable before them.  The
    body writes the values entering iteration k into row k of the stacks (``update_row``);
    they are what the gradient reads back (grads/control_flow_grad.py), and pruning drops
    them from a step that takes no gradient (passes/prune_regions.py)."""
    from .graph import make_op
    from .ops import math_ops

    def cond_fn(*flat):
        ok = cond(*_args(structure, flat[counter:core]))
        if counter:
            ok = math_ops.logical_and(math_ops.less(flat[0], limit), ok)
        return [ok]

    def body_fn(*flat):
        out = body(*_args(structure, flat[counter:core]))
        out = flatten([out] if len(structure) == 1 and not isinstance(out, (list, tuple)) else out)
        pushes = [make_op("update_row", [s, v, flat[0]], name="stack_push")
                  for v, s in zip(flat[:core], flat[core:])] if stacked else []
        return ([math_ops.add(flat[0], 1)] if counter else []) + list(out) + pushes

    return cond_fn, body_fn


def _args(structure, flat):
    """The loop variables as the body's arguments: one per element of ``structure`` (a list,
    tuple or namedtuple)."""
    return list(pack_like(structure, list(flat)))


def _check_invariants(scope, shape_invariants, structure, inits):
    """Each given invariant is compatible with its loop variable's shape."""
    if shape_invariants is None:
        return
    from .tensor_shape import TensorShape

    def leaf(x):
        return isinstance(x, TensorShape) or x is None or (isinstance(x, (list, tuple)) and all(
            d is None or isinstance(d, int) for d in x))

    invariants = flatten(shape_invariants, leaf=leaf)
    if len(invariants) != len(inits):
        raise ValueError(f"while_loop '{scope[:-1]}': {len(invariants)} shape_invariants for {len(inits)} "
                         "loop variables")
    for inv, t in zip(invariants, inits):
        dims, have = TensorShape(inv).dims, t.shape.dims
        if dims is not None and (len(dims) != len(have) or any(a is not None and a != b for a, b in zip(dims, have))):
            raise ValueError(f"while_loop '{scope[:-1]}': the shape invariant {TensorShape(inv)} is not "
                             f"compatible with the initial shape {t.shape} of loop variable {t.name}")


def _check_loop(what, cond_flat, body_flat, inits, counter, core):
    """cond returns one bool scalar; body returns the loop variables with their types unchanged."""
    if len(cond_flat) != 1 or not cond_flat[0].dtype.is_bool or cond_flat[0].type.shape != ():
        got = ", ".join(f"{t.dtype.name}{shape_str(t.type.shape)}" for t in cond_flat)
        raise ValueError(f"while_loop '{what}': cond must return a scalar bool tensor, got {got}")
    if len(body_flat) != len(inits):
        raise ValueError(f"while_loop '{what}': body returned {len(body_flat) - len(inits) + core - counter} "
                         f"tensors for {core - counter} loop variables")
    for t, init in zip(body_flat, inits):
        if t.dtype != init.dtype or tuple(t.type.shape) != tuple(init.type.shape):
            raise ValueError(f"while_loop '{what}': loop variable {init.name} enters the loop as "
                             f"{_tstr(init.type)} but the body returns {_tstr(t.type)} (Kiln's IR needs "
                             f"each loop variable to keep one static dtype and shape)")
    for op in cond_flat[0].graph.get_operations():
        if op.type in ASSIGN_KINDS:
            raise ValueError(f"while_loop '{what}': {op.type} '{op.name}' in the loop condition; assign in the "
                             "body instead")


def _tstr(t: TensorType) -> str:
    return f"{t.dtype.name}{shape_str(t.shape)}"


TF_API = {"tf": {"cond": cond, "case": case, "while_loop": while_loop}}

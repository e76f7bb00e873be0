"""Lowering of the graph's control-flow ops (frontend/control_flow.py) to ``if``/``while`` instrs.

Each body graph becomes a region lowered by a fresh lowerer of the same class that shares
the function's value namer: its block params stand for the body graph's inputs (loop
variables, then captures, in the op's input order), only the ops the body's outputs need
are lowered (Session.run semantics, as at the top level), and its yields are the outputs.

* ``cond`` -> ``if(pred, *captures)``: results are the branch outputs, then one per variable
  that either branch assigns (sorted by name); a branch that does not assign it yields the
  value it received.  The cond op then counts as an assign of those variables.
* ``while`` -> ``while(*inits, *captures)``: the body region yields the next loop values and
  passes the captures through unchanged (regions see only their params), so the instr has
  one result per operand; the op's outputs are the first ``num_loop_vars`` results.  A
  variable the body assigns is carried instead: its capture's yield is the value the body
  leaves it with, and the matching result is the variable's new value (the while op counts
  as an assign of it).  Assigning a variable in the loop's condition is refused.
  When the cond or body graph uses its ``iteration`` input (random ops there key their
  draws by it: frontend/ops/random_ops.py), the loop carries one more value, an i64
  iteration counter: operand ``0`` after the captures, bound to that input in both
  regions, yielded by the body as itself plus one.
"""
from __future__ import annotations

import numpy as np

from .deferred import Deferred
from .function import Instr, Region
from .graph_walk import LoweringError, needed_ops, var_name
from .types import TensorType, int64

_I64 = TensorType(int64, ())


def lower_body(lowerer, graph, operands, outer, counted=False):
    """``graph`` (a body graph) as a Region; returns (region, {var: assigned value}, {var: param}).

    ``operands`` are the lowered values entering the body (their types, re-inferred from the
    fed shapes, are the params'), ``outer`` the graph tensors they come from (a known shape
    value stays known inside; None for a loop variable, which changes every iteration).
    ``counted``: the last operand is a loop's iteration counter, bound to the graph's
    ``iteration`` input (if it has one)."""
    sub = type(lowerer)(lowerer.fn.name, set(), batch=lowerer.batch, namer=lowerer.new_value)
    params = [lowerer.new_value(v.type) for v in operands]
    if counted and graph.iteration is not None:
        sub.values[graph.iteration] = params[-1]
    for t, p, o in zip(graph.inputs, params, outer):
        sub.values[t] = p
        if o is not None and o in lowerer.known:
            sub.known[t] = lowerer.known[o]
        name = var_name(t)
        if name is not None:
            sub.var_params.setdefault(name, p)
    for op in needed_ops([t.op for t in graph.outputs], set()):
        sub.lower_op(op)
    yields = [sub.read(t, sub.ancestors.get(t.op, {})) for t in graph.outputs]
    assigned = {name: sub.assign_result[(op, name)] for name, op in sub.chain_last.items()}
    return Region(params, sub.body, yields), assigned, sub.var_params


def lower_cond(lowerer, op, anc) -> list:
    """Emit the ``if`` of a cond op; returns the names of the variables it assigns."""
    operands = [lowerer.read(t, anc) for t in op.inputs]
    branches = [lower_body(lowerer, op.attrs[key], operands[1:], op.inputs[1:]) for key in ("then", "else")]
    effects = sorted(set().union(*(assigned for _, assigned, _ in branches)))
    for region, assigned, var_params in branches:
        region.yields += [assigned.get(name, var_params.get(name)) for name in effects]
    results = [lowerer.new_value(v.type) for v in branches[0][0].yields]
    lowerer.body.append(Instr("if", operands, {}, results, op.name, regions=[r for r, _, _ in branches]))
    lowerer.values.update(zip(op.outputs, results))
    for name, value in zip(effects, results[len(op.outputs):]):
        lowerer.set_assigned(op, name, value)
    return effects


def lower_while(lowerer, op, anc) -> list:
    """Emit the ``while`` of a while op; returns the names of the variables its body assigns."""
    operands = [lowerer.read(t, anc) for t in op.inputs]
    counted = any(op.attrs[k].iteration is not None for k in ("cond", "body"))
    if counted:
        operands.append(lowerer.emit("constant", [], {"value": np.array(0, np.int64)}, _I64, op.name))
    # loop variables change every iteration: only the captures' known shape values hold inside
    invariant = [None] * op.attrs["num_loop_vars"] + list(op.inputs[op.attrs["num_loop_vars"]:])
    (cond, cond_assigned, _), (body, assigned, var_params) = (
        lower_body(lowerer, op.attrs[k], operands, invariant, counted) for k in ("cond", "body"))
    if cond_assigned:
        raise LoweringError(f"while_loop '{op.name}': the loop condition assigns {', '.join(sorted(cond_assigned))}; "
                            "assign in the body instead")
    carried = {body.params.index(var_params[name]): name for name in assigned}
    body.yields += [assigned[carried[i]] if i in carried else p
                    for i, p in enumerate(body.params) if op.attrs["num_loop_vars"] <= i < len(op.inputs)]
    if counted:
        body.yields.append(_increment(lowerer, body, body.params[-1], op.name))
    results = [lowerer.new_value(v.type) for v in operands]
    lowerer.body.append(Instr("while", operands, _loop_attrs(lowerer, op), results, op.name, regions=[cond, body]))
    lowerer.values.update(zip(op.outputs, results))
    for i, name in sorted(carried.items()):
        lowerer.set_assigned(op, name, results[i])
    return sorted(carried.values())


def _increment(lowerer, region, counter, name):
    """``counter + 1``, appended to ``region``'s body (a region defines its own constants)."""
    one, out = lowerer.new_value(_I64), lowerer.new_value(_I64)
    loc = f"{name}/next_iteration"
    region.body += [Instr("constant", [], {"value": np.array(1, np.int64)}, one, loc),
                    Instr("add", [counter, one], {}, out, loc)]
    return out


def _loop_attrs(lowerer, op) -> dict:
    """The IR attrs of a while: the trip bound (when known; a shape value is resolved here)
    and parallel_iterations (hints only)."""
    attrs = {"parallel_iterations": op.attrs["parallel_iterations"]}
    bound = op.attrs.get("maximum_iterations")
    if isinstance(bound, Deferred):  # a shape value (frontend while_loop): known now, maybe k*N
        bound = lowerer.static(lowerer.value_of(bound))
    if isinstance(bound, int):
        attrs["maximum_iterations"] = bound
    return attrs


CONTROL_FLOW_OPS = {"cond": lower_cond, "while": lower_while}

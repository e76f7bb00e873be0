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
  one result per operand; the op's outputs are the first ``num_loop_vars`` results.
  Assigning a variable inside a loop is refused (the frontend refuses it too).
"""
from __future__ import annotations

from .function import Instr, Region
from .graph_walk import LoweringError, needed_ops, var_name


def lower_body(lowerer, graph):
    """``graph`` (a body graph) as a Region; returns (region, {var: assigned value}, {var: param})."""
    sub = type(lowerer)(lowerer.fn.name, set(), namer=lowerer.new_value)
    params = [lowerer.new_value(t.type) for t in graph.inputs]
    for t, p in zip(graph.inputs, params):
        sub.values[t] = p
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
    branches = [lower_body(lowerer, op.attrs[key]) for key in ("then", "else")]
    effects = sorted(set().union(*(assigned for _, assigned, _ in branches)))
    for region, assigned, var_params in branches:
        region.yields += [assigned.get(name, var_params.get(name)) for name in effects]
    results = [lowerer.new_value(t.type) for t in op.outputs]
    results += [lowerer.new_value(v.type) for v in branches[0][0].yields[len(op.outputs):]]
    lowerer.body.append(Instr("if", operands, {}, results, op.name, regions=[r for r, _, _ in branches]))
    lowerer.values.update(zip(op.outputs, results))
    for name, value in zip(effects, results[len(op.outputs):]):
        lowerer.set_assigned(op, name, value)
    return effects


def lower_while(lowerer, op, anc) -> list:
    """Emit the ``while`` of a while op (it assigns no variable)."""
    operands = [lowerer.read(t, anc) for t in op.inputs]
    (cond, cond_assigned, _), (body, body_assigned, _) = (lower_body(lowerer, op.attrs[k]) for k in ("cond", "body"))
    if cond_assigned or body_assigned:
        names = ", ".join(sorted(set(cond_assigned) | set(body_assigned)))
        raise LoweringError(f"while_loop '{op.name}': variables assigned inside the loop ({names}) are not "
                            "supported; carry the value as a loop variable and assign it after the loop")
    body.yields += body.params[op.attrs["num_loop_vars"]:]
    results = [lowerer.new_value(v.type) for v in operands]
    lowerer.body.append(Instr("while", operands, _loop_attrs(op), results, op.name, regions=[cond, body]))
    lowerer.values.update(zip(op.outputs, results))
    return []


def _loop_attrs(op) -> dict:
    """The IR attrs of a while: the static trip bound (when known) and parallel_iterations (hints only)."""
    attrs = {"parallel_iterations": op.attrs["parallel_iterations"]}
    if op.attrs.get("maximum_iterations") is not None:
        attrs["maximum_iterations"] = op.attrs["maximum_iterations"]
    return attrs


CONTROL_FLOW_OPS = {"cond": lower_cond, "while": lower_while}

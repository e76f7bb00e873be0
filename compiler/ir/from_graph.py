"""Lowering: the subgraph a ``Session.run`` needs becomes one IR ``Function``.

Only ops needed by the fetches (and their control dependencies) are lowered, stopping at
fed tensors — TF's ``Session.run`` semantics.  State semantics, written down in docs/IR.md:

* A plain read of variable ``v`` by op Y sees the value written by the newest assign to
  ``v`` that Y depends on (data or control edge); with none, the value from before the step.
* ``assign_add``/``assign_sub`` are atomic read-modify-writes: each applies on top of the
  newest earlier assign to the same variable in this step (so two of them both count).
* The state output of ``v`` is the newest assign to it; untouched variables pass through.
* The hidden random counter ``kiln/rng_step`` is advanced by one in any step that reads it.
* Control flow (``cond``/``while`` graph ops with body graphs, frontend/control_flow.py)
  becomes ``if``/``while`` instrs whose regions are the lowered body graphs
  (``control_flow_lowering.py``).  Inside a body, a capture of a variable reads like the
  variable; the variables a branch assigns are extra results of the ``if``, so the cond op
  counts as an assign of each of them.
"""
from __future__ import annotations

from .control_flow_lowering import CONTROL_FLOW_OPS
from .function import Function, Instr, Param, ValueNamer
from .graph_walk import ASSIGN_KINDS, LoweringError, needed_ops, var_name
from .types import TensorType, as_dtype, shape_str
import numpy as np

RNG_STATE = "kiln/rng_step"
__all__ = ["ASSIGN_KINDS", "LoweringError", "RNG_STATE", "describe_feed", "lower_graph", "needed_ops", "var_name"]


def _placeholder_error(op) -> LoweringError:
    dims = ",".join("?" if d is None else str(d) for d in op.outputs[0].shape.as_list())
    return LoweringError(f"You must feed a value for placeholder tensor '{op.name}' with dtype "
                         f"{op.outputs[0].dtype.name} and shape [{dims}]")


class _Lowerer:
    """Lowers graph ops into ``self.body``: the function's body, or (``namer`` given) a region's.

    In a region lowerer, ``var_params`` maps each variable the body graph captures to the
    block param holding its value at region entry (what a plain read sees there).
    """

    def __init__(self, name, fed, namer=None):
        self.fn = Function(name)
        self.new_value = namer or ValueNamer()
        self.body = self.fn.body if namer is None else []
        self.fed = fed
        self.values = {}  # graph Tensor -> IR Value
        self.state_params = {}  # variable name -> Value at step start
        self.var_params = None if namer is None else {}  # region: variable name -> block param
        self.assign_result = {}  # (assign-like Operation, variable name) -> IR Value of the new value
        self.ancestors = {}  # op -> {variable name: newest assign op it depends on}
        self.chain_last = {}  # variable name -> newest assign op lowered so far

    # --- values -----------------------------------------------------------------------
    def feed_value(self, tensor):
        if tensor not in self.values:
            v = self.new_value(tensor.type)
            self.fn.params.append(Param("feed", tensor.name, v))
            self.values[tensor] = v
        return self.values[tensor]

    def start_value(self, name, ttype):
        """Variable ``name``'s value where this body starts: a state param (or a block param)."""
        if self.var_params is not None:
            return self.var_params[name]
        if name not in self.state_params:
            v = self.new_value(ttype)
            self.fn.params.append(Param("state", name, v))
            self.state_params[name] = v
        return self.state_params[name]

    def emit(self, kind, operands, attrs, ttype, loc=""):
        v = self.new_value(ttype)
        self.body.append(Instr(kind, list(operands), dict(attrs), v, loc))
        return v

    def newest(self, name, anc, ttype):
        """The value of variable ``name`` as seen by a reader with assign ancestors ``anc``."""
        op = anc.get(name)
        return self.assign_result[(op, name)] if op is not None else self.start_value(name, ttype)

    # --- reads ------------------------------------------------------------------------
    def read(self, tensor, consumer_ancestors):
        if tensor in self.fed:
            return self.feed_value(tensor)
        name = var_name(tensor)
        if name is not None:
            return self.newest(name, consumer_ancestors, tensor.type)
        return self.values[tensor]

    def merged_ancestors(self, op):
        merged = {}
        sources = [t.op for t in op.inputs if t not in self.fed] + list(op.control_inputs)
        for src in sources:
            for var, a in self.ancestors.get(src, {}).items():
                if var not in merged or merged[var].id < a.id:
                    merged[var] = a
        return merged

    # --- ops --------------------------------------------------------------------------
    def lower_op(self, op):
        anc = self.merged_ancestors(op)
        if op.type == "placeholder" and op.outputs[0] not in self.values:
            raise _placeholder_error(op)
        if op.type in ("variable", "no_op", "placeholder"):
            pass
        elif op.type in ASSIGN_KINDS:
            self.lower_assign(op, anc)
            anc = dict(anc)
            anc[var_name(op.inputs[0])] = op
        elif op.type in CONTROL_FLOW_OPS:
            anc = dict(anc)
            for name in CONTROL_FLOW_OPS[op.type](self, op, anc):
                anc[name] = op
        else:
            operands = [self.read(t, anc) for t in op.inputs]
            self.values[op.outputs[0]] = self.emit(op.type, operands, op.attrs, op.outputs[0].type, op.name)
        self.ancestors[op] = anc

    def lower_assign(self, op, anc):
        name = var_name(op.inputs[0])
        if name is None:
            var_op = op.inputs[0].op
            raise LoweringError(f"{op.type} '{op.name}': the first input must be a variable, got {var_op.type} '{var_op.name}'")
        new = self.read(op.inputs[1], anc)
        if op.type != "assign":
            old = self.newest(name, self.chain_last, op.inputs[0].type)
            kind = "add" if op.type == "assign_add" else "sub"
            new = self.emit(kind, [old, new], {}, op.inputs[0].type, op.name)
        self.set_assigned(op, name, new)
        self.values[op.outputs[0]] = new

    def set_assigned(self, op, name, value):
        """Record that ``op`` writes ``value`` to variable ``name`` (the newest assign so far)."""
        self.assign_result[(op, name)] = value
        self.chain_last[name] = op

    def finish(self, fetch_tensors, fetch_keys):
        for name, op in self.chain_last.items():
            self.fn.state_out.append((name, self.assign_result[(op, name)]))
        if RNG_STATE in self.state_params and RNG_STATE not in self.chain_last:
            old = self.state_params[RNG_STATE]
            one = self.emit("constant", [], {"value": np.array(1, dtype=old.type.dtype.np)}, TensorType(old.type.dtype, ()))
            self.fn.state_out.append((RNG_STATE, self.emit("add", [old, one], {}, old.type)))
        for key, t in zip(fetch_keys, fetch_tensors):
            self.fn.fetches.append((key, self.read(t, self.ancestors.get(t.op, {}))))
        return self.fn


def lower_graph(fetch_tensors, target_ops=(), feed_tensors=(), name="step", fetch_keys=None) -> Function:
    """Lower the ops needed for ``fetch_tensors`` and ``target_ops`` into a Function.

    ``fetch_keys`` name the fetches in the function (default: the tensor names).
    """
    fed = set(feed_tensors)
    for x in list(fetch_tensors) + list(target_ops) + list(feed_tensors):
        body = getattr(x.graph, "body_name", None)
        if body is not None:
            raise LoweringError(f"{x.name} is inside the body of {body}: it cannot be fetched or fed on its own; "
                                "return it from the function and use the control-flow op's output")
    fetch_keys = list(fetch_keys) if fetch_keys is not None else [t.name for t in fetch_tensors]
    lowerer = _Lowerer(name, fed)
    for t in feed_tensors:
        lowerer.feed_value(t)
    roots = [t.op for t in fetch_tensors if t not in fed] + list(target_ops)
    for op in needed_ops(roots, fed):
        lowerer.lower_op(op)
    return lowerer.finish(fetch_tensors, fetch_keys)


def describe_feed(tensor, value_shape, value_dtype) -> str:
    return f"{tensor.name} expects {tensor.dtype.name}{shape_str(tensor.type.shape)}, got {as_dtype(value_dtype).name}{list(value_shape)}"

"""Lowering: the subgraph a ``Session.run`` needs becomes one IR ``Function``.

Only ops needed by the fetches (and their control dependencies) are lowered, stopping at
fed tensors — TF's ``Session.run`` semantics.  State semantics, written down in docs/IR.md:

* A plain read of variable ``v`` by op Y sees the value written by the newest assign to
  ``v`` that Y depends on (data or control edge); with none, the value from before the step.
* ``assign_add``/``assign_sub`` are atomic read-modify-writes: each applies on top of the
  newest earlier assign to the same variable in this step (so two of them both count).
* The state output of ``v`` is the newest assign to it; untouched variables pass through.
* The hidden random counter ``kiln/rng_step`` is advanced by one in any step that reads it.
"""
from __future__ import annotations

from .function import Function, Instr, Param, ValueNamer
from .types import ALL_DTYPES, TensorType, as_dtype, shape_str
import numpy as np

RNG_STATE = "kiln/rng_step"
ASSIGN_KINDS = ("assign", "assign_add", "assign_sub")


class LoweringError(ValueError):
    """The requested fetches cannot be computed (unfed placeholder, bad fetch, ...)."""


def needed_ops(fetch_ops, fed):
    """Backward closure over data and control edges, not entering fed tensors' producers."""
    seen, stack = set(), list(fetch_ops)
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs if t not in fed)
        stack.extend(op.control_inputs)
    return sorted(seen, key=lambda o: o.id)


def _placeholder_error(op) -> LoweringError:
    dims = ",".join("?" if d is None else str(d) for d in op.outputs[0].shape.as_list())
    return LoweringError(f"You must feed a value for placeholder tensor '{op.name}' with dtype "
                         f"{op.outputs[0].dtype.name} and shape [{dims}]")


class _Lowerer:
    def __init__(self, name, fed):
        self.fn = Function(name)
        self.new_value = ValueNamer()
        self.fed = fed
        self.values = {}  # graph Tensor -> IR Value
        self.state_params = {}  # variable name -> Value at step start
        self.assign_result = {}  # assign Operation -> IR Value of the new variable value
        self.ancestors = {}  # op -> {variable name: newest assign op it depends on}
        self.chain_last = {}  # variable name -> newest assign op lowered so far

    # --- values -----------------------------------------------------------------------
    def feed_value(self, tensor):
        if tensor not in self.values:
            v = self.new_value(tensor.type)
            self.fn.params.append(Param("feed", tensor.name, v))
            self.values[tensor] = v
        return self.values[tensor]

    def start_value(self, var_op):
        if var_op.name not in self.state_params:
            v = self.new_value(var_op.outputs[0].type)
            self.fn.params.append(Param("state", var_op.name, v))
            self.state_params[var_op.name] = v
        return self.state_params[var_op.name]

    def emit(self, kind, operands, attrs, ttype, loc=""):
        v = self.new_value(ttype)
        self.fn.body.append(Instr(kind, list(operands), dict(attrs), v, loc))
        return v

    # --- reads ------------------------------------------------------------------------
    def read(self, tensor, consumer_ancestors):
        if tensor in self.fed:
            return self.feed_value(tensor)
        op = tensor.op
        if op.type == "variable":
            newest = consumer_ancestors.get(op.name)
            return self.assign_result[newest] if newest is not None else self.start_value(op)
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
        if op.type == "placeholder":
            raise _placeholder_error(op)
        if op.outputs and op.outputs[0].dtype not in ALL_DTYPES:  # e.g. a tf.summary op
            raise LoweringError(f"{op.type} '{op.name}' makes a {op.outputs[0].dtype.name} value, which Kiln "
                                "computes on the host after a Session.run: Session.run can fetch it, but "
                                "no op can consume it or depend on it, and a compiled entry cannot return it")
        if op.type in ("variable", "no_op"):
            pass
        elif op.type in ASSIGN_KINDS:
            self.lower_assign(op, anc)
            anc = dict(anc)
            anc[op.inputs[0].op.name] = op
        else:
            operands = [self.read(t, anc) for t in op.inputs]
            self.values[op.outputs[0]] = self.emit(op.type, operands, op.attrs, op.outputs[0].type, op.name)
        self.ancestors[op] = anc

    def lower_assign(self, op, anc):
        var_op = op.inputs[0].op
        if var_op.type != "variable":
            raise LoweringError(f"{op.type} '{op.name}': the first input must be a variable, got {var_op.type} '{var_op.name}'")
        new = self.read(op.inputs[1], anc)
        if op.type != "assign":
            prev = self.chain_last.get(var_op.name)
            old = self.assign_result[prev] if prev is not None else self.start_value(var_op)
            kind = "add" if op.type == "assign_add" else "sub"
            new = self.emit(kind, [old, new], {}, var_op.outputs[0].type, op.name)
        self.assign_result[op] = new
        self.chain_last[var_op.name] = op
        self.values[op.outputs[0]] = new

    def finish(self, fetch_tensors, fetch_keys):
        for var_name, op in self.chain_last.items():
            self.fn.state_out.append((var_name, self.assign_result[op]))
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

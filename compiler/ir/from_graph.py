"""Lowering: the subgraph a ``Session.run`` needs becomes one IR ``Function``.

Only ops needed by the fetches (and their control dependencies) are lowered, stopping at
fed tensors — TF's ``Session.run`` semantics.  State semantics, written down in docs/IR.md:

* A plain read of variable ``v`` by op Y sees the value written by the newest assign to
  ``v`` that Y depends on (data or control edge); with none, the value from before the step.
* ``assign_add``/``assign_sub`` are atomic read-modify-writes: each applies on top of the
  newest earlier assign to the same variable in this step (so two of them both count).
* The state output of ``v`` is the newest assign to it; untouched variables pass through.
* The hidden random counter ``kiln/rng_step`` is advanced by one in any step that reads it.

Shapes (docs/graph.md, "Shapes"): graph types may be partly unknown; the IR's are not.  The
fed tensors get the fed shapes (``feed_shapes``), except that a graph dim ``Sym`` (the batch
dim of a placeholder declared ``[None, ...]``) stays symbolic unless ``batch`` specializes
the signature on a batch size.  Every op's type is then re-inferred from its lowered
operands, deferred shape attrs are resolved (``deferred.py``), and small integer tensors
computed from shapes get known values (``shape_values.py``): a static one is emitted as a
constant.  Where the symbolic batch dim cannot flow (a rule refuses ``N`` against a static
size, or a shape needs ``N - 1``), ``NeedsStaticBatch`` asks the caller to lower again with
``batch`` set.  Without ``feed_shapes`` (``kiln compile``) every fed tensor must have a
static shape except the batch dim.

Control flow (``cond``/``while`` graph ops with body graphs, frontend/control_flow.py)
becomes ``if``/``while`` instrs whose regions are the lowered body graphs
(``control_flow_lowering.py``).  Inside a body, a capture of a variable reads like the
variable; the variables a branch assigns are extra results of the ``if``, so the cond op
counts as an assign of each of them.  A region's ops are re-inferred like the others, from
the types of the values entering it.
"""
from __future__ import annotations

from . import deferred
from .control_flow_lowering import CONTROL_FLOW_OPS
from .function import Function, Instr, Param, ValueNamer
from .graph_walk import ASSIGN_KINDS, LoweringError, needed_ops, var_name
from .opdef import REGISTRY, infer_type
from .shape_values import NONLINEAR, as_dims, holds_sym, known_value
from .types import (ALL_DTYPES, ShapeError, Sym, TensorType, as_dtype, dim_div, is_known_shape, num_elements,
                    shape_str)
import numpy as np

RNG_STATE = "kiln/rng_step"
__all__ = ["ASSIGN_KINDS", "LoweringError", "NeedsStaticBatch", "RNG_STATE", "describe_feed", "lower_graph",
           "needed_ops", "var_name"]


class NeedsStaticBatch(LoweringError):
    """The signature cannot keep the batch dim symbolic: lower it again with ``batch`` set."""


def _placeholder_error(op) -> LoweringError:
    t = op.outputs[0]
    where = "" if t.type.shape is None else " and shape " + shape_str(t.type.shape).replace("N", "?")
    return LoweringError(f"You must feed a value for placeholder tensor '{op.name}' with dtype "
                         f"{t.dtype.name}{where}")


def undeclared_shape_error(tensor) -> LoweringError:
    """Why a fed tensor cannot be compiled ahead of time, and how to declare it."""
    what = f"placeholder '{tensor.op.name}'" if tensor.op.type == "placeholder" else f"fed tensor '{tensor.name}'"
    shape = tensor.type.shape
    if shape is None:
        return LoweringError(f"{what} has no shape: declare it, e.g. as tf.placeholder(tf.{tensor.dtype.name}, "
                             f"shape=[]) for a scalar; an ahead-of-time compile needs static shapes except the "
                             f"leading batch dim")
    dims = [i for i, d in enumerate(shape) if d is None]
    return LoweringError(f"{what} has unknown dim {dims[0]} (shape {shape_str(shape).replace('N', '?')}): give it "
                         f"a size; only the leading dim may be None (the batch dim) in an ahead-of-time compile")


class _Lowerer:
    """Lowers graph ops into ``self.body``: the function's body, or (``namer`` given) a region's.

    In a region lowerer, ``var_params`` maps each variable the body graph captures to the
    block param holding its value at region entry (what a plain read sees there).
    """

    def __init__(self, name, fed, feed_shapes=None, batch=None, namer=None):
        self.fn = Function(name)
        self.new_value = namer or ValueNamer()
        self.body = self.fn.body if namer is None else []
        self.fed = fed
        self.feed_shapes = feed_shapes
        self.batch = batch  # None: the batch dim stays symbolic
        self.known = {}  # graph Tensor -> known value of a shape tensor (shape_values)
        self.values = {}  # graph Tensor -> IR Value
        self.state_params = {}  # variable name -> Value at step start
        self.var_params = None if namer is None else {}  # region: variable name -> block param
        self.assign_result = {}  # (assign-like Operation, variable name) -> IR Value of the new value
        self.ancestors = {}  # op -> {variable name: newest assign op it depends on}
        self.chain_last = {}  # variable name -> newest assign op lowered so far

    # --- values -----------------------------------------------------------------------
    def feed_value(self, tensor):
        if tensor not in self.values:
            v = self.new_value(self.feed_type(tensor))
            self.fn.params.append(Param("feed", tensor.name, v))
            self.values[tensor] = v
        return self.values[tensor]

    def feed_type(self, tensor) -> TensorType:
        """The IR type of a fed tensor: the fed shape, keeping the graph's batch dims symbolic."""
        g = tensor.type
        if self.feed_shapes is None or tensor not in self.feed_shapes:
            if not is_known_shape(g.shape):
                raise undeclared_shape_error(tensor)
            return self.static(g)
        fed = tuple(self.feed_shapes[tensor])
        if g.shape is None:
            return TensorType(g.dtype, fed)

        def dim(d, s):  # unknown: the fed size; batch: N unless specialized; static: as declared
            if d is None or isinstance(d, Sym) and self.batch is not None:
                return s
            return d
        return TensorType(g.dtype, tuple(dim(d, s) for d, s in zip(g.shape, fed)))

    def static(self, value):
        """``value`` (a type, attr or nested tuple) with batch dims resolved when specialized."""
        if self.batch is None:
            return value
        if isinstance(value, TensorType):
            return TensorType(value.dtype, self.static(value.shape))
        if isinstance(value, Sym):
            return value.coef * self.batch
        if isinstance(value, (tuple, list)):
            return type(value)(self.static(v) for v in value)
        return value

    def start_value(self, name, ttype):
        """Variable ``name``'s value where this body starts: a state param (or a block param)."""
        if self.var_params is not None:
            return self.var_params[name]
        if name not in self.state_params:
            if not is_known_shape(ttype.shape):
                raise LoweringError(f"variable '{name}' has shape {shape_str(ttype.shape)}: Kiln needs "
                                    f"variables of static shape")
            v = self.new_value(self.static(ttype))
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
        if op.outputs and op.outputs[0].dtype not in ALL_DTYPES:  # e.g. a tf.summary op
            raise LoweringError(f"{op.type} '{op.name}' makes a {op.outputs[0].dtype.name} value, which Kiln "
                                "computes on the host after a Session.run: Session.run can fetch it, but "
                                "no op can consume it or depend on it, and a compiled entry cannot return it")
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
            self.lower_computation(op, operands)
        self.ancestors[op] = anc

    # --- types and shape values --------------------------------------------------------------
    def type_of(self, tensor) -> TensorType:
        """The lowered type of a graph tensor (fed, variable, or already lowered)."""
        if tensor in self.fed:
            return self.feed_value(tensor).type
        if var_name(tensor) is not None:
            return self.static(tensor.type)
        return self.values[tensor].type

    def resolve_attrs(self, op, operands) -> dict:
        """``op``'s attrs with deferred dims/values resolved and batch dims specialized."""
        shape = op.attrs.get("shape")
        minus_one = op.type == "reshape" and isinstance(shape, tuple) and any(isinstance(d, int) and d == -1 for d in shape)
        if self.batch is None and not minus_one and not deferred.attr_tensors(op.attrs):
            attrs = op.attrs  # (the same object: nothing to resolve)
        else:
            attrs = {k: self.static(deferred.resolve(v, self.type_of, self.value_of)) for k, v in op.attrs.items()}
        if op.type == "reshape" and any(isinstance(d, int) and d == -1 for d in attrs["shape"]):
            attrs["shape"] = _fill_minus_one(op, operands[0].type.shape, tuple(attrs["shape"]))
        for k, v in attrs.items():
            if isinstance(v, tuple) and any(d is None for d in v):
                raise LoweringError(f"{op.type} '{op.name}': attr {k} {shape_str(v)} holds a dim that was unknown "
                                    f"when the graph was built; Kiln cannot run this op with shapes known only "
                                    f"at the feed yet (give its inputs static shapes)")
        return attrs

    def value_of(self, ref):
        value = self.known.get(ref.tensor)
        if value is None:
            raise LoweringError(f"the value of {ref.tensor.name} is used as a shape, but it is not known before "
                                f"the step runs (it must be computed from shapes and constants)")
        if any(e is NONLINEAR for e in value.reshape(-1)):
            raise NeedsStaticBatch(f"the shape value {ref.tensor.name} depends on the batch size in a way "
                                   f"a symbolic batch dim cannot hold")
        return as_dims(value)

    def infer(self, op, operands, attrs) -> TensorType:
        """Re-infer ``op``'s type from its lowered operands; errors name the op and shapes."""
        types = [v.type for v in operands]
        graph_type = op.outputs[0].type
        if op.type not in REGISTRY and is_known_shape(graph_type.shape):
            return self.static(graph_type)  # a kind with no type rule: the graph's type
        try:
            ttype = infer_type(op.type, types, attrs)
        except ShapeError as err:
            if self.batch is None and any(isinstance(d, Sym) for t in types for d in t.shape):
                raise NeedsStaticBatch(f"{op.type} '{op.name}': {err}") from None
            shapes = ", ".join(f"{t.name}: {ty}" for t, ty in zip(op.inputs, types))
            raise LoweringError(f"{op.type} '{op.name}': {err} (inputs with the fed shapes: {shapes})") from None
        if self.batch is None and sum(isinstance(d, Sym) for d in ttype.shape) > 1:
            raise NeedsStaticBatch(f"{op.type} '{op.name}': shape {shape_str(ttype.shape)} has the batch dim twice")
        self.check_graph_shape(op, ttype)
        return ttype

    def check_graph_shape(self, op, ttype):
        """The re-inferred type must fit the graph's (e.g. a ``set_shape`` claim)."""
        g = op.outputs[0].type.shape
        if g is None:
            return
        ok = len(g) == len(ttype.shape)
        for gd, d in zip(g, ttype.shape) if ok else ():
            if isinstance(gd, int) and gd != d:
                if isinstance(d, Sym) and self.batch is None:
                    raise NeedsStaticBatch(f"{op.name}: the graph fixes a batch dim to {gd}")
                ok = False
        if not ok:
            raise LoweringError(f"{op.type} '{op.name}': the fed shapes give it shape {shape_str(ttype.shape)}, "
                                f"which is not compatible with its static shape {shape_str(g)} in the graph")

    def lower_computation(self, op, operands):
        """Emit one computing op; a shape value known to be static becomes a constant."""
        attrs = self.resolve_attrs(op, operands)
        ttype = self.infer(op, operands, attrs)
        out = op.outputs[0]
        value = known_value(op.type, attrs, [v.type for v in operands],
                            [self.known.get(t) for t in op.inputs], ttype, self.batch)
        if value is not None:
            self.known[out] = value
            if op.type != "constant" and not holds_sym(value):
                array = np.array(value.tolist(), dtype=ttype.dtype.np).reshape(ttype.shape)
                self.values[out] = self.emit("constant", [], {"value": array}, ttype, op.name)
                return
        self.values[out] = self.emit(op.type, operands, attrs, ttype, op.name)

    def lower_assign(self, op, anc):
        name = var_name(op.inputs[0])
        if name is None:
            var_op = op.inputs[0].op
            raise LoweringError(f"{op.type} '{op.name}': the first input must be a variable, got {var_op.type} '{var_op.name}'")
        new = self.read(op.inputs[1], anc)
        if op.type != "assign":
            old = self.newest(name, self.chain_last, op.inputs[0].type)
            kind = "add" if op.type == "assign_add" else "sub"
            new = self.emit(kind, [old, new], {}, self.static(op.inputs[0].type), op.name)
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


def _fill_minus_one(op, in_shape, dims):
    """A reshape's shape with its -1 replaced by the size that keeps the element count."""
    hole = [i for i, d in enumerate(dims) if isinstance(d, int) and d == -1]
    rest = dims[:hole[0]] + dims[hole[0] + 1:]
    try:
        if len(hole) > 1:
            raise ShapeError("only one dim may be -1")
        fill = dim_div(num_elements(in_shape), num_elements(rest))
    except ShapeError as err:
        raise LoweringError(f"reshape '{op.name}': cannot reshape a tensor of shape {shape_str(in_shape)} "
                            f"to {shape_str(dims)}: {err}") from None
    return dims[:hole[0]] + (fill,) + dims[hole[0] + 1:]


def lower_graph(fetch_tensors, target_ops=(), feed_tensors=(), name="step", fetch_keys=None,
                feed_shapes=None, batch=None) -> Function:
    """Lower the ops needed for ``fetch_tensors`` and ``target_ops`` into a Function.

    ``fetch_keys`` name the fetches in the function (default: the tensor names).
    ``feed_shapes`` (fed tensor -> shape of the fed value) specializes the function on the
    fed shapes, ``batch`` on a batch size too (see the module doc, "Shapes").
    """
    fed = set(feed_tensors)
    for x in list(fetch_tensors) + list(target_ops) + list(feed_tensors):
        body = getattr(x.graph, "body_name", None)
        if body is not None:
            raise LoweringError(f"{x.name} is inside the body of {body}: it cannot be fetched or fed on its own; "
                                "return it from the function and use the control-flow op's output")
    fetch_keys = list(fetch_keys) if fetch_keys is not None else [t.name for t in fetch_tensors]
    lowerer = _Lowerer(name, fed, feed_shapes, batch)
    for t in feed_tensors:
        lowerer.feed_value(t)
    roots = [t.op for t in fetch_tensors if t not in fed] + list(target_ops)
    for op in needed_ops(roots, fed):
        lowerer.lower_op(op)
    return lowerer.finish(fetch_tensors, fetch_keys)


def describe_feed(tensor, value_shape, value_dtype) -> str:
    return f"{tensor.name} expects {tensor.dtype.name}{shape_str(tensor.type.shape)}, got {as_dtype(value_dtype).name}{list(value_shape)}"

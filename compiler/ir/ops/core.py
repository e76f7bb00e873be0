"""Core op kinds: constants, graph-only state/feeds ops, identity-like ops."""
from __future__ import annotations

import numpy as np

from ..opdef import register_op
from ..types import ShapeError, TensorType, as_dtype


def _infer_constant(inputs, *, value):
    return TensorType(as_dtype(value.dtype), tuple(value.shape))


def _eval_constant(ctx, *, value):
    return value


def _infer_declared(inputs, *, dtype, shape, **_):
    return TensorType(dtype, tuple(shape))


def _infer_same(inputs, **_):
    return inputs[0]


def _eval_identity(ctx, x, **_):
    return x


def _infer_assign(inputs, **attrs):
    ref, value = inputs
    if ref.dtype != value.dtype:
        raise ShapeError(f"cannot assign a {value.dtype.name} value to a {ref.dtype.name} variable")
    if attrs.get("validate_shape", True) and ref.shape != value.shape:
        raise ShapeError(f"shape of the value {value.shape and list(value.shape)} does not match the variable's shape {list(ref.shape)}")
    return ref


register_op("constant", _infer_constant, _eval_constant, arity=0, doc="a literal tensor (attr value)")
# Graph-only kinds: lowering turns them into parameters / state updates of the entry point.
register_op("placeholder", _infer_declared, None, arity=0, doc="a feed")
register_op("variable", _infer_declared, None, arity=0, stateful=True, doc="a state value (read at step start)")
for _kind in ("assign", "assign_add", "assign_sub"):
    register_op(_kind, _infer_assign, None, arity=2, stateful=True, doc="state update; output is the new value")
register_op("no_op", lambda inputs, **_: None, None, arity=0, doc="control-only grouping")
register_op("identity", _infer_same, _eval_identity, arity=1)
register_op("stop_gradient", _infer_same, _eval_identity, arity=1, doc="identity that blocks autodiff")


def _infer_check_range(inputs, *, low, high, what):
    (x,) = inputs
    if not x.dtype.is_integer:
        raise ShapeError(f"check_range needs an integer operand, got {x.dtype.name}")
    return x


def _eval_check_range(ctx, x, *, low, high, what):
    bad = (x < low) | (x >= high)
    if np.any(bad):
        value = x[bad].reshape(-1)[0]
        raise ValueError(f"{what}: received a value of {value} which is outside the valid range of [{low}, {high})")
    return x


register_op("check_range", _infer_check_range, _eval_check_range, arity=1,
            doc="identity on integer indices that fails the step when one is outside [low, high)")


def _region_only(*_args, **_attrs):
    raise ShapeError("a fused instr has no type rule or kernel of its own: its result types and values "
                     "come from its region (see verifier.region_instr and interpreter.run_instr)")


# Made by the fusion pass: the op kinds of its Region run as one kernel.  Registered so that
# passes looking up any kind find it; it is stateful when an op inside its region is.
register_op("fused", _region_only, _region_only, arity=None,
            doc="a kernel: a Region of ops run together (attr pattern names the fusion kind)")


def _control_flow_only(*_args, **_attrs):
    raise ShapeError("if/while have no type rule or kernel of their own: their result types and values come "
                     "from their regions (see verifier.control_flow_instr and interpreter.run_instr)")


# Control flow (docs/IR.md): registered so passes looking up any kind find them.  They are
# pure (state effects are results); passes leave them alone because they carry regions.
register_op("if", _control_flow_only, _control_flow_only, arity=None,
            doc="runs its then or else region on its operands (after the predicate) and yields the results")
register_op("while", _control_flow_only, _control_flow_only, arity=None,
            doc="repeats its body region on the loop values while its cond region yields true")

"""The op registry: one definition per op kind, shared by the graph API and the IR.

Each kind has
  * ``infer(input_types, **attrs) -> TensorType`` — type/shape rule used when a graph op is
    built and again by the IR verifier (raise ``ShapeError`` with the shapes in the message);
  * ``evaluate(ctx, *arrays, **attrs) -> np.ndarray`` — numpy reference semantics, used by the
    interpreter (the oracle every backend is tested against) and by constant folding.

Graph-only kinds (placeholder, variable, assign, no_op) have no ``evaluate``: lowering turns
them into function parameters and state updates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .types import ShapeError, TensorType, resolve_shape


@dataclass
class EvalContext:
    """What an op's numpy semantics may need beyond its operands: the batch size N."""

    batch: int | None = None

    def shape(self, shape) -> tuple:
        """Resolve a shape attr that may hold batch dims (``Sym``) to concrete ints."""
        return resolve_shape(shape, self.batch)


@dataclass
class OpDef:
    kind: str
    infer: Callable[..., TensorType]
    evaluate: Callable[..., np.ndarray] | None = None
    # stateful kinds (random draws, state access) are never folded or deduplicated
    stateful: bool = False
    # the number of operands, or None for variadic kinds (add_n, concat)
    arity: int | None = None
    doc: str = ""
    extra: dict = field(default_factory=dict)


REGISTRY: dict[str, OpDef] = {}

# kinds whose result is its operand's bytes reinterpreted (no copy, no kernel)
VIEW_KINDS = frozenset({"reshape", "identity", "stop_gradient"})


def register_op(kind: str, infer, evaluate=None, *, stateful=False, arity=None, doc="") -> OpDef:
    """Add an op kind to the registry (a kind may be defined once)."""
    if kind in REGISTRY:
        raise ValueError(f"op kind {kind!r} is already registered")
    opdef = OpDef(kind, infer, evaluate, stateful=stateful, arity=arity, doc=doc)
    REGISTRY[kind] = opdef
    return opdef


def get_opdef(kind: str) -> OpDef:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown op kind {kind!r}") from None


def infer_type(kind: str, input_types, attrs) -> TensorType:
    """Run a kind's type rule; arity is checked here so each rule need not."""
    opdef = get_opdef(kind)
    if opdef.arity is not None and len(input_types) != opdef.arity:
        raise ShapeError(f"expects {opdef.arity} operands, got {len(input_types)}")
    return opdef.infer(list(input_types), **attrs)


def evaluate_op(kind: str, ctx: EvalContext, arrays, attrs) -> np.ndarray:
    opdef = get_opdef(kind)
    if opdef.evaluate is None:
        raise ValueError(f"op kind {kind!r} has no reference semantics (graph-only)")
    return opdef.evaluate(ctx, *arrays, **attrs)

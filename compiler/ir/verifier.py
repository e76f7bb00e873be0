"""Structural and type checks of an IR ``Function``.

``verify(fn)`` raises ``IRVerifyError`` on the first problem it finds: values used before
their definition or never defined, values defined twice, unknown or graph-only op kinds,
operand-count mismatches, declared result types that disagree with the op's type rule
(``opdef.infer_type``), duplicate parameter / output keys, and state outputs whose type
differs from the state parameter of the same variable.  Messages name the instruction by
its position, kind, printed result name (as in ``printer.print_function``) and loc.
"""
from __future__ import annotations

from . import ops as _ops  # noqa: F401  (fills the registry)
from .function import Function
from .opdef import REGISTRY, infer_type
from .printer import value_names
from .types import ShapeError, TensorType

PARAM_KINDS = ("state", "feed")


class IRVerifyError(ValueError):
    """The function breaks an IR invariant; the message names the offending line."""


def _type_str(t) -> str:
    return str(t) if isinstance(t, TensorType) else repr(t)


def _same_type(a, b) -> bool:
    """Equal dtype and dims (a shape given as a list equals the same tuple)."""
    return (isinstance(a, TensorType) and isinstance(b, TensorType) and a.dtype == b.dtype
            and tuple(a.shape) == tuple(b.shape))


class _Verifier:
    """Walks one function in order, tracking which values are defined so far."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.names = value_names(fn)
        self.defined: set = set()
        self.all_defs = set(self.names)

    def name(self, v) -> str:
        return "%" + self.names[v] if v in self.names else f"%undef.{getattr(v, 'name', '?')}"

    def fail(self, where: str, message: str):
        raise IRVerifyError(f"in func @{self.fn.name}: {where}: {message}")

    def define(self, v, where: str):
        if v in self.defined:
            self.fail(where, f"value {self.name(v)} is defined twice")
        if not isinstance(v.type, TensorType):
            self.fail(where, f"value {self.name(v)} has no tensor type (got {v.type!r})")
        self.defined.add(v)

    def use(self, v, where: str):
        if v in self.defined:
            return
        if v in self.all_defs:
            self.fail(where, f"{self.name(v)} is used before its definition")
        self.fail(where, f"value {getattr(v, 'name', v)!r} is not defined in this function")

    # --- pieces ---------------------------------------------------------------------------
    def params(self):
        """Param kinds are state/feed, and no key appears twice for the same kind."""
        seen = set()
        for p in self.fn.params:
            where = f'{p.kind} param "{p.key}" ({self.name(p.value)})'
            if p.kind not in PARAM_KINDS:
                self.fail(where, f"param kind must be one of {PARAM_KINDS}")
            if (p.kind, p.key) in seen:
                self.fail(where, f"duplicate {p.kind} param key {p.key!r}")
            seen.add((p.kind, p.key))
            self.define(p.value, where)

    def instr(self, index: int, ins):
        """Operands defined, kind known and executable, declared type equal to the rule's."""
        loc = f' loc("{ins.loc}")' if ins.loc else ""
        where = f"instruction #{index} {self.name(ins.result)} = {ins.kind}(...){loc}"
        opdef = REGISTRY.get(ins.kind)
        if opdef is None:
            self.fail(where, f"unknown op kind {ins.kind!r}")
        if opdef.evaluate is None:
            self.fail(where, f"op kind {ins.kind!r} is graph-only and cannot appear in the IR")
        if opdef.arity is not None and len(ins.operands) != opdef.arity:
            self.fail(where, f"{ins.kind} expects {opdef.arity} operands, got {len(ins.operands)}")
        for v in ins.operands:
            self.use(v, where)
        self.check_type(ins, where)
        self.define(ins.result, where)

    def check_type(self, ins, where: str):
        """Compare the declared result type with ``infer_type`` on the operand types."""
        in_types = [v.type for v in ins.operands]
        try:
            want = infer_type(ins.kind, in_types, dict(ins.attrs))
        except ShapeError as err:
            shapes = ", ".join(_type_str(t) for t in in_types)
            self.fail(where, f"type rule rejects operands ({shapes}): {err}")
        except Exception as err:  # e.g. a missing or unexpected attr reaches the rule as a TypeError
            self.fail(where, f"type rule failed with attrs {sorted(ins.attrs)}: {type(err).__name__}: {err}")
        if not _same_type(ins.result.type, want):
            self.fail(where, f"declared type {_type_str(ins.result.type)} but the type rule gives {_type_str(want)}")

    def outputs(self):
        """Outputs refer to defined values; keys are unique; state keeps its parameter's type."""
        state_params = {p.key: p.value for p in self.fn.params if p.kind == "state"}
        for label, items in (("state", self.fn.state_out), ("fetch", self.fn.fetches)):
            seen = set()
            for key, v in items:
                where = f'{label} output "{key}" = {self.name(v)}'
                if key in seen:
                    self.fail(where, f"duplicate {label} output key {key!r}")
                seen.add(key)
                self.use(v, where)
                param = state_params.get(key) if label == "state" else None
                if param is not None and not _same_type(param.type, v.type):
                    self.fail(where, f"new value has type {_type_str(v.type)} but the state param has "
                                     f"{_type_str(param.type)}")


def verify(fn: Function) -> None:
    """Raise ``IRVerifyError`` unless ``fn`` is a well-formed, well-typed entry point."""
    checker = _Verifier(fn)
    checker.params()
    for index, ins in enumerate(fn.body):
        checker.instr(index, ins)
    checker.outputs()


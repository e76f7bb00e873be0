"""IR data structures: an entry point is a pure function ``(state, feeds) -> (state', fetches)``.

* ``Value``  — an SSA value with a ``TensorType`` (dtype + shape, batch dim ``N`` allowed).
* ``Param``  — a function input: ``state`` (a variable's value at step start) or ``feed``.
* ``Instr``  — one op: kind (a registry name), operands, attrs, one result value.
* ``Function`` — params, a body in dependency order, state updates and fetches (outputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .types import TensorType


class Value:
    __slots__ = ("name", "type", "producer")

    def __init__(self, name: str, ttype: TensorType, producer=None):
        self.name = name
        self.type = ttype
        self.producer = producer  # the Instr that defines it, or a Param

    def __repr__(self):
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Param:
    kind: str  # "state" or "feed"
    key: str  # variable name (state) or tensor name (feed)
    value: Value

    def __post_init__(self):
        self.value.producer = self


@dataclass(eq=False)
class Instr:
    kind: str
    operands: list
    attrs: dict
    result: Value
    loc: str = ""  # the graph op this came from, for readers of dumps

    def __post_init__(self):
        self.result.producer = self


@dataclass(eq=False)
class Function:
    name: str
    params: list = field(default_factory=list)
    body: list = field(default_factory=list)
    state_out: list = field(default_factory=list)  # [(variable name, Value)]
    fetches: list = field(default_factory=list)  # [(fetch key, Value)]

    def feeds(self):
        return [p for p in self.params if p.kind == "feed"]

    def state_in(self):
        return [p for p in self.params if p.kind == "state"]

    def outputs(self):
        return [v for _, v in self.state_out] + [v for _, v in self.fetches]

    def uses_batch(self) -> bool:
        from .types import has_sym

        return any(has_sym(p.value.type.shape) for p in self.params)


class ValueNamer:
    """Hands out fresh SSA names ("0", "1", ...) for one function."""

    def __init__(self):
        self.count = 0

    def __call__(self, ttype: TensorType) -> Value:
        v = Value(str(self.count), ttype)
        self.count += 1
        return v

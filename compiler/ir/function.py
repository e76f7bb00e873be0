"""IR data structures: an entry point is a pure function ``(state, feeds) -> (state', fetches)``.

* ``Value``  — an SSA value with a ``TensorType`` (dtype + shape, batch dim ``N`` allowed).
* ``Param``  — a function input: ``state`` (a variable's value at step start) or ``feed``.
* ``Instr``  — one op: kind (a registry name), operands, attrs, one result value; a
  ``fused`` instr (made by the fusion pass) holds a ``Region`` and may have several results;
  the control-flow instrs ``if`` (regions then/else) and ``while`` (regions cond/body) hold
  two (``regions``; docs/IR.md "Control flow").
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
class Region:
    """The body of a fused or control-flow instruction: block params, ops, yields.

    A fused instr's region has one param per operand and one yield per result; see docs/IR.md
    for the ``if``/``while`` regions.  A region sees only its params and its own values.
    """

    params: list
    body: list
    yields: list


@dataclass(frozen=True)
class Buffer:
    """Where a kernel result lives after memory planning.

    ``space`` is ``"static"`` (offset in bytes), ``"batch"`` (offset in bytes per batch
    element: the real offset is ``offset * N``) or ``"state"`` (written in place over the
    state buffer named ``key``).
    """

    space: str
    offset: int = 0
    key: str = ""


class Instr:
    """One op.  Plain ops have one result; a ``fused`` op has a Region and may have several;
    ``if``/``while`` have two regions (``regions``) and several results.

    ``region`` is the first region (None for a plain op), so code that only asks "does this
    instr carry a region" treats control flow as opaque, like a fused kernel.
    ``buffers`` (one per result, or None) is filled by memory planning.
    """

    __slots__ = ("kind", "operands", "attrs", "results", "loc", "regions", "buffers")

    def __init__(self, kind, operands, attrs, results, loc="", region=None, buffers=None, regions=None):
        self.kind = kind
        self.operands = list(operands)
        self.attrs = dict(attrs)
        self.results = list(results) if isinstance(results, (list, tuple)) else [results]
        self.loc = loc
        self.regions = list(regions) if regions is not None else [] if region is None else [region]
        self.buffers = buffers
        for v in self.results:
            v.producer = self

    @property
    def region(self):
        """The first region (a fused instr's only one), or None."""
        return self.regions[0] if self.regions else None

    @region.setter
    def region(self, region):
        self.regions = [] if region is None else [region]

    @property
    def result(self) -> Value:
        """The single result of a plain op."""
        if len(self.results) != 1:
            raise ValueError(f"{self.kind} has {len(self.results)} results; use .results")
        return self.results[0]

    def __repr__(self):
        outs = ", ".join(f"%{v.name}" for v in self.results)
        return f"<Instr {outs} = {self.kind}({', '.join('%' + v.name for v in self.operands)})>"


@dataclass(eq=False)
class Function:
    name: str
    params: list = field(default_factory=list)
    body: list = field(default_factory=list)
    state_out: list = field(default_factory=list)  # [(variable name, Value)]
    fetches: list = field(default_factory=list)  # [(fetch key, Value)]
    # filled by memory planning: {"static_bytes": int, "batch_bytes": int, "naive_static_bytes": ..., ...}
    memory: dict = field(default_factory=dict)

    def feeds(self):
        return [p for p in self.params if p.kind == "feed"]

    def state_in(self):
        return [p for p in self.params if p.kind == "state"]

    def outputs(self):
        return [v for _, v in self.state_out] + [v for _, v in self.fetches]

    def uses_batch(self) -> bool:
        from .types import has_sym

        return any(has_sym(p.value.type.shape) for p in self.params)


CONTROL_FLOW_KINDS = ("if", "while")


def walk(body):
    """Every instr of ``body`` and, depth first, of the regions inside it."""
    for ins in body:
        yield ins
        for region in ins.regions:
            yield from walk(region.body)


class ValueNamer:
    """Hands out fresh SSA names ("0", "1", ...) for one function."""

    def __init__(self):
        self.count = 0

    def __call__(self, ttype: TensorType) -> Value:
        v = Value(str(self.count), ttype)
        self.count += 1
        return v

"""Structural and type checks of an IR ``Function``.

``verify(fn)`` raises ``IRVerifyError`` on the first problem it finds: values used before
their definition or never defined, values defined twice, unknown or graph-only op kinds,
operand-count mismatches, declared result types that disagree with the op's type rule
(``opdef.infer_type``), duplicate parameter / output keys, state outputs whose type differs
from the state parameter of the same variable, fused instrs whose region does not match
their operands/results (or captures outer values), ``if``/``while`` instrs whose regions
do not match their operands/results (docs/IR.md "Control flow"), and planned buffers that do not fit
their values or the arenas of ``fn.memory``.  Messages name the instruction by its position
(``#3``, or ``#3.1`` inside the region of ``#3``), kind, printed result names (as in
``printer.print_function``) and loc.
"""
from __future__ import annotations

from . import ops as _ops  # noqa: F401  (fills the registry)
from .function import Buffer, Function
from .opdef import REGISTRY, infer_type
from .printer import value_names
from .types import ShapeError, Sym, TensorType, num_elements

PARAM_KINDS = ("state", "feed")
REGION_KINDS = ("fused", "if", "while")
# the names of a control-flow instr's regions, in order (used in messages and labels)
REGION_NAMES = {"if": ("then", "else"), "while": ("cond", "body")}
BUFFER_SPACES = ("static", "batch", "state")
ARENA_SIZE_KEYS = {"static": "static_bytes", "batch": "batch_bytes"}


class IRVerifyError(ValueError):
    """The function breaks an IR invariant; the message names the offending line."""


def _type_str(t) -> str:
    return str(t) if isinstance(t, TensorType) else repr(t)


def _same_type(a, b) -> bool:
    """Equal dtype and dims (a shape given as a list equals the same tuple)."""
    return (isinstance(a, TensorType) and isinstance(b, TensorType) and a.dtype == b.dtype
            and tuple(a.shape) == tuple(b.shape))


def value_bytes(ttype: TensorType) -> int | Sym:
    """Bytes of a value: an int, or ``Sym(k)`` meaning ``k*N`` bytes for a batch-sized value."""
    count = num_elements(ttype.shape)
    itemsize = ttype.dtype.np.itemsize
    return Sym(count.coef * itemsize) if isinstance(count, Sym) else int(count) * itemsize


def buffer_span(buf: Buffer, ttype: TensorType, batch: int = 1) -> tuple:
    """Byte range ``[start, end)`` of a value of type ``ttype`` placed at ``buf``, at batch size ``batch``.

    ``batch`` offsets are per batch element (real offset ``offset * N``); a ``state`` buffer
    starts at the variable's first byte.  With ``batch=1`` a batch span is per batch element.
    """
    size = value_bytes(ttype)
    size = size.coef * batch if isinstance(size, Sym) else size
    start = 0 if buf.space == "state" else buf.offset * (batch if buf.space == "batch" else 1)
    return start, start + size


def _is_bool_scalar(t) -> bool:
    return isinstance(t, TensorType) and t.dtype.is_bool and tuple(t.shape) == ()


class _Verifier:
    """Walks one function in order, tracking which values are visible in the current body."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.names = value_names(fn)
        self.home: dict = {}  # value -> the body (fn.body or a Region) that defines it
        self._find_homes(fn.body, fn.body)
        for p in fn.params:
            self.home.setdefault(p.value, fn.body)
        self.defined: set = set()  # every value defined so far, anywhere
        self.state_types = self._state_types()

    def _find_homes(self, body, owner):
        for ins in body:
            for v in ins.results:
                self.home.setdefault(v, owner)
            for region in ins.regions:
                for v in region.params:
                    self.home.setdefault(v, region)
                self._find_homes(region.body, region)

    def _state_types(self) -> dict:
        """Variable name -> type, from the state params, else from the state outputs."""
        types = {key: v.type for key, v in self.fn.state_out}
        types.update({p.key: p.value.type for p in self.fn.params if p.kind == "state"})
        return types

    def name(self, v) -> str:
        return "%" + self.names[v] if v in self.names else f"%undef.{getattr(v, 'name', '?')}"

    def fail(self, where: str, message: str):
        raise IRVerifyError(f"in func @{self.fn.name}: {where}: {message}")

    def define(self, v, where: str, visible: set):
        if v in self.defined:
            self.fail(where, f"value {self.name(v)} is defined twice")
        if not isinstance(v.type, TensorType):
            self.fail(where, f"value {self.name(v)} has no tensor type (got {v.type!r})")
        self.defined.add(v)
        visible.add(v)

    def use(self, v, where: str, visible: set, owner):
        """``v`` must be visible here: defined earlier in the same body (``owner``)."""
        if v in visible:
            return
        if v not in self.home:
            self.fail(where, f"value {getattr(v, 'name', v)!r} is not defined in this function")
        if self.home[v] is not owner:
            if owner is self.fn.body:
                self.fail(where, f"{self.name(v)} is defined inside a fused region and is not visible outside it")
            self.fail(where, f"the region uses {self.name(v)}, defined outside it; a region sees only its block "
                             f"params and the values defined inside it (pass the value as an operand)")
        self.fail(where, f"{self.name(v)} is used before its definition")

    # --- pieces ---------------------------------------------------------------------------
    def params(self, visible: set):
        """Param kinds are state/feed, and no key appears twice for the same kind."""
        seen = set()
        for p in self.fn.params:
            where = f'{p.kind} param "{p.key}" ({self.name(p.value)})'
            if p.kind not in PARAM_KINDS:
                self.fail(where, f"param kind must be one of {PARAM_KINDS}")
            if (p.kind, p.key) in seen:
                self.fail(where, f"duplicate {p.kind} param key {p.key!r}")
            seen.add((p.kind, p.key))
            self.define(p.value, where, visible)

    def body(self, body: list, owner, prefix: str = "") -> set:
        """Check every instr of ``body`` in order; returns the values visible at its end."""
        visible: set = set()
        if owner is self.fn.body:
            self.params(visible)
        else:
            for v in owner.params:
                self.define(v, f"instruction #{prefix[:-1]} block param {self.name(v)}", visible)
        for index, ins in enumerate(body):
            self.instr(f"{prefix}{index}", ins, visible, owner)
        return visible

    def instr(self, label: str, ins, visible: set, owner):
        """Operands visible, then the kind's own checks, then results defined and buffers checked."""
        loc = f' loc("{ins.loc}")' if ins.loc else ""
        outs = ", ".join(self.name(v) for v in ins.results) or "()"
        where = f"instruction #{label} {outs} = {ins.kind}(...){loc}"
        for v in ins.operands:
            self.use(v, where, visible, owner)
        if ins.kind in REGION_NAMES:
            self.control_flow_instr(label, ins, where)
        elif ins.kind in REGION_KINDS or ins.regions:
            self.region_instr(label, ins, where, owner)
        else:
            self.plain_instr(ins, where)
        for v in ins.results:
            self.define(v, where, visible)
        self.buffers(ins, where, owner)

    def plain_instr(self, ins, where: str):
        """One result; kind known and executable; declared type equal to the rule's."""
        if len(ins.results) != 1:
            self.fail(where, f"a plain {ins.kind} instr must have exactly one result, got {len(ins.results)}")
        opdef = REGISTRY.get(ins.kind)
        if opdef is None:
            self.fail(where, f"unknown op kind {ins.kind!r}")
        if opdef.evaluate is None:
            self.fail(where, f"op kind {ins.kind!r} is graph-only and cannot appear in the IR")
        if opdef.arity is not None and len(ins.operands) != opdef.arity:
            self.fail(where, f"{ins.kind} expects {opdef.arity} operands, got {len(ins.operands)}")
        self.check_type(ins, where)

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

    def region_instr(self, label: str, ins, where: str, owner):
        """A fused instr: flat region whose block params match the operands and yields the results."""
        region = ins.region
        if ins.kind not in REGION_KINDS:
            self.fail(where, f"only fused instrs carry a region (if and while carry two), not {ins.kind}")
        if len(ins.regions) != 1:
            self.fail(where, f"a {ins.kind} instr needs a region" + (f" (exactly one, got {len(ins.regions)})" if ins.regions else ""))
        if owner is not self.fn.body:
            self.fail(where, "fused regions are flat: a region cannot hold another region")
        if not ins.results:
            self.fail(where, f"a {ins.kind} instr needs at least one result")
        self._match("block param", region.params, "operand", ins.operands, where)
        visible = self.body(region.body, region, f"{label}.")
        for v in region.yields:
            self.use(v, f"{where} yield", visible, region)
        self._match("yield", region.yields, "result", ins.results, where)

    def control_flow_instr(self, label: str, ins, where: str):
        """``if``: a bool scalar predicate, then/else regions over the other operands, each
        yielding the results.  ``while``: cond/body regions over all operands; cond yields a
        bool scalar, body yields the next values (one per operand; the results have the
        operands' types).  Both may nest anywhere; their regions see only their params."""
        names = REGION_NAMES[ins.kind]
        if len(ins.regions) != 2:
            self.fail(where, f"a {ins.kind} instr needs two regions ({' and '.join(names)}), got {len(ins.regions)}")
        args = ins.operands
        if ins.kind == "if":
            if not ins.operands or not _is_bool_scalar(ins.operands[0].type):
                got = _type_str(ins.operands[0].type) if ins.operands else "no operands"
                self.fail(where, f"the first operand of if must be a bool scalar predicate, got {got}")
            args = ins.operands[1:]
        elif len(ins.results) != len(ins.operands):
            self.fail(where, f"a while instr has one result per operand: {len(ins.operands)} operands, "
                             f"{len(ins.results)} results")
        else:
            self._match("result", ins.results, "operand", ins.operands, where)
        for name, region in zip(names, ins.regions):
            at = f"{where} {name} region"
            self._match("block param", region.params, "operand" if ins.kind == "while" else "argument", args, at)
            visible = self.body(region.body, region, f"{label}.{name}.")
            for v in region.yields:
                self.use(v, f"{at} yield", visible, region)
            if name == "cond":
                if len(region.yields) != 1 or not _is_bool_scalar(region.yields[0].type):
                    self.fail(at, "the cond region must yield one bool scalar")
            else:
                self._match("yield", region.yields, "result", ins.results, at)

    def _match(self, inner_what: str, inner: list, outer_what: str, outer: list, where: str):
        """Region values line up one to one with the instr's, with equal types."""
        if len(inner) != len(outer):
            self.fail(where, f"the region has {len(inner)} {inner_what}s for {len(outer)} {outer_what}s")
        for i, (a, b) in enumerate(zip(inner, outer)):
            if not _same_type(a.type, b.type):
                self.fail(where, f"{inner_what} {i} ({self.name(a)}) has type {_type_str(a.type)} but "
                                 f"{outer_what} {i} ({self.name(b)}) has {_type_str(b.type)}")

    def buffers(self, ins, where: str, owner):
        """One valid Buffer per result, only on top-level instrs, inside the planned arenas."""
        if ins.buffers is None:
            return
        if owner is not self.fn.body:
            self.fail(where, "only top-level instrs have buffers (region values live in the kernel)")
        if len(ins.buffers) != len(ins.results):
            self.fail(where, f"{len(ins.buffers)} buffers for {len(ins.results)} results")
        for v, buf in zip(ins.results, ins.buffers):
            self.buffer(v, buf, f"{where} buffer of {self.name(v)}")

    def buffer(self, v, buf, where: str):
        if not isinstance(buf, Buffer):
            self.fail(where, f"expected a Buffer, got {buf!r}")
        if buf.space not in BUFFER_SPACES:
            self.fail(where, f"buffer space must be one of {BUFFER_SPACES}, got {buf.space!r}")
        if not isinstance(buf.offset, int) or isinstance(buf.offset, bool) or buf.offset < 0:
            self.fail(where, f"buffer offset must be an int >= 0, got {buf.offset!r}")
        if buf.space == "state":
            self.state_buffer(v, buf, where)
            return
        if buf.key:
            self.fail(where, f"a {buf.space} buffer has no key (got {buf.key!r})")
        batch_sized = isinstance(value_bytes(v.type), Sym)
        if batch_sized != (buf.space == "batch"):
            self.fail(where, f"a value of type {v.type} belongs in the {'batch' if batch_sized else 'static'} "
                             f"arena, not {buf.space}")
        size_key = ARENA_SIZE_KEYS[buf.space]
        limit = self.fn.memory.get(size_key)
        end = buffer_span(buf, v.type)[1]
        if isinstance(limit, int) and end > limit:
            self.fail(where, f"bytes [{buf.offset}, {end}) lie outside the {buf.space} arena ({size_key}={limit})")

    def state_buffer(self, v, buf, where: str):
        """Written over a variable of this function with the same dtype and element count."""
        if buf.offset:
            self.fail(where, f"a state buffer has no offset (got {buf.offset})")
        var_type = self.state_types.get(buf.key)
        if var_type is None:
            self.fail(where, f"state buffer {buf.key!r} is not a state param or state output of this function")
        if var_type.dtype != v.type.dtype or num_elements(var_type.shape) != num_elements(v.type.shape):
            self.fail(where, f"a {v.type} value does not fit state {buf.key!r} of type {var_type}")

    def memory(self):
        """The arena sizes in ``fn.memory`` (when given) are byte counts."""
        for key in ARENA_SIZE_KEYS.values():
            size = self.fn.memory.get(key)
            if key in self.fn.memory and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                self.fail("memory", f"{key} must be an int >= 0, got {size!r}")

    def outputs(self, visible: set):
        """Outputs refer to defined values; keys are unique; state keeps its parameter's type."""
        state_params = {p.key: p.value for p in self.fn.params if p.kind == "state"}
        for label, items in (("state", self.fn.state_out), ("fetch", self.fn.fetches)):
            seen = set()
            for key, v in items:
                where = f'{label} output "{key}" = {self.name(v)}'
                if key in seen:
                    self.fail(where, f"duplicate {label} output key {key!r}")
                seen.add(key)
                self.use(v, where, visible, self.fn.body)
                param = state_params.get(key) if label == "state" else None
                if param is not None and not _same_type(param.type, v.type):
                    self.fail(where, f"new value has type {_type_str(v.type)} but the state param has "
                                     f"{_type_str(param.type)}")


def verify(fn: Function) -> None:
    """Raise ``IRVerifyError`` unless ``fn`` is a well-formed, well-typed entry point."""
    checker = _Verifier(fn)
    checker.memory()
    visible = checker.body(fn.body, fn.body)
    checker.outputs(visible)

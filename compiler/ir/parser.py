"""Reads the IR text form (see printer.py and docs/IR.md) back into ``Function`` objects.

This module holds the statement grammar — functions, params, instructions, fused regions,
buffers, the ``memory`` line and outputs — on top of ``parse_attrs.LiteralParser`` (tokens,
types, attr values).  Types in the text are taken as declared; ``verifier.verify``
re-checks them against the op rules.  Every error is an ``IRParseError`` naming the line,
the column and the offending line.  IR printed with its large constants elided
(``dense<f32[300]>(__elided__)``, see printer.py) is refused with an error saying so.
"""
from __future__ import annotations

from .function import Buffer, Function, Instr, Param, Region, Value
from .parse_attrs import (
    DTYPES,
    IRParseError,
    LiteralParser,
    Token,
    fail_at,
    tokenize,
    unquote,
)
from .printer import ELIDED

__all__ = ["DTYPES", "IRParseError", "parse_function", "parse_module", "tokenize", "unquote"]

PARAM_KINDS = ("feed", "state")


class _Scope:
    """Value names visible in one body (the function's, or one region's).

    Uses may come before definitions in the text; ``resolve`` swaps them in when the body is
    closed (the verifier then reports the order).  ``taken`` is shared by every scope of a
    function, so a name is defined at most once in the whole function.
    """

    def __init__(self, parser: _Parser, taken: set, region: bool):
        self.parser, self.taken, self.region = parser, taken, region
        self.defs: dict = {}
        self.memory_seen = False
        self.pending: list = []  # (token, placeholder Value) for names not yet defined

    def define(self, tok: Token, value: Value):
        if tok.text in self.taken:
            self.parser.error(f"value {tok.text} is defined twice", tok)
        self.taken.add(tok.text)
        self.defs[tok.text] = value

    def use(self, tok: Token) -> Value:
        if tok.text in self.defs:
            return self.defs[tok.text]
        placeholder = Value(tok.text[1:], None)
        self.pending.append((tok, placeholder))
        return placeholder

    def swap(self) -> dict:
        """Placeholder -> defined value, for every forward reference (an error for unknown names)."""
        swap = {}
        for tok, placeholder in self.pending:
            if tok.text not in self.defs:
                if self.region:
                    self.parser.error(f"{tok.text} is not defined in this region (a region sees only its "
                                      f"block params and its own values; pass outer values as operands)", tok)
                if tok.text in self.taken:
                    self.parser.error(f"{tok.text} is defined inside a region and is not visible outside it", tok)
                self.parser.error(f"use of undefined value {tok.text}", tok)
            swap[placeholder] = self.defs[tok.text]
        return swap


def _swap_operands(body: list, swap: dict):
    for ins in body:
        ins.operands = [swap.get(v, v) for v in ins.operands]


class _Parser(LiteralParser):
    """Recursive descent over the token list; one instance per text."""

    def attr_value(self):
        """One attr literal (``LiteralParser.attr_value``); the values of an elided dense
        literal (``dense<f32[300]>(__elided__)``) are not in the text, so it is refused."""
        if self.tok.kind == "ident" and self.tok.text == ELIDED:
            self.error(f"the values of this constant were elided ({ELIDED}): elided IR is for reading "
                       "and does not parse back; print it in full (kiln ir/inspect --full-constants, "
                       "or print_function(fn) without elide_above)")
        return super().attr_value()

    # --- functions ------------------------------------------------------------------------
    def module(self) -> list:
        fns = []
        while self.tok.kind != "eof":
            fns.append(self.function())
        return fns

    def function(self) -> Function:
        """``func @name { stmt* }``; value names are resolved once the closing brace is read."""
        self.expect("func")
        self.expect("@")
        name = self.string() if self.tok.kind == "string" else self.expect_kind("ident", "a function name").text
        self.expect("{")
        fn, scope = Function(name), _Scope(self, set(), region=False)
        while not self.accept("}"):
            if self.tok.kind == "eof":
                self.error("missing '}' at the end of the function")
            self.statement(fn, scope)
        swap = scope.swap()
        _swap_operands(fn.body, swap)
        fn.state_out = [(k, swap.get(v, v)) for k, v in fn.state_out]
        fn.fetches = [(k, swap.get(v, v)) for k, v in fn.fetches]
        return fn

    def statement(self, fn: Function, scope: _Scope):
        """``memory {...}``, a param or instruction (``%v : type = ...``) or an output (``state``/``fetch`` ``"key" = %v``)."""
        if self.tok.kind == "ident" and self.tok.text == "memory":
            tok = self.next()
            if scope.memory_seen:
                self.error("the memory line is given twice", tok)
            scope.memory_seen = True
            fn.memory = self.attr_dict()
            return
        if self.tok.kind == "ident" and self.tok.text in ("state", "fetch"):
            kind = self.next().text
            key = self.string("an output key")
            self.expect("=")
            ref = scope.use(self.expect_kind("value", "a value like %3"))
            (fn.state_out if kind == "state" else fn.fetches).append((key, ref))
            return
        results = self.definitions(scope, "a value definition like '%3 : f32[] = ...', 'state' or 'fetch'")
        kind_tok = self.expect_kind("ident", "an op kind, 'feed' or 'state'")
        if kind_tok.text in PARAM_KINDS and self.tok.kind == "string":
            if len(results) != 1:
                self.error(f"a {kind_tok.text} param defines one value", kind_tok)
            fn.params.append(Param(kind_tok.text, self.string(), results[0]))
            return
        fn.body.append(self.instruction(kind_tok.text, results, scope))

    def definitions(self, scope: _Scope, what: str) -> list:
        """``%a, %b : T1, T2 =`` — the values a statement defines, with their declared types."""
        names = [self.expect_kind("value", what)]
        while self.accept(","):
            names.append(self.expect_kind("value", "a value name like %4"))
        self.expect(":")
        types_tok = self.tok
        types = [self.tensor_type()]
        while self.accept(","):
            types.append(self.tensor_type())
        if len(types) != len(names):
            self.error(f"{len(names)} values but {len(types)} types", types_tok)
        self.expect("=")
        values = [Value(tok.text[1:], t) for tok, t in zip(names, types)]
        for tok, value in zip(names, values):
            scope.define(tok, value)
        return values

    # --- instructions ---------------------------------------------------------------------
    def instruction(self, kind: str, results: list, scope: _Scope) -> Instr:
        """``kind(%a, %b) {attrs} {region}  loc("...")  -> buffers`` after the ``=``."""
        self.expect("(")
        operands = self.separated(")", lambda: scope.use(self.expect_kind("value", "an operand like %3")))
        attrs = self.attr_dict() if self.at("{") and not self._region_next() else {}
        regions = []
        while self.at("{"):
            regions.append(self.region(scope.taken))
        loc = ""
        if self.accept("loc"):
            self.expect("(")
            loc = self.string("a location string")
            self.expect(")")
        buffers = None
        if self.accept("->"):
            buffers = [self.buffer()]
            while self.accept(","):
                buffers.append(self.buffer())
        return Instr(kind, operands, attrs, results, loc, buffers=buffers, regions=regions)

    def _region_next(self) -> bool:
        """At ``{``: does a region (``{ ^(...)``) start here rather than an attr dict?"""
        return self.peek().text == "^" and self.peek().kind == "punct"

    def region(self, taken: set) -> Region:
        """``{ ^(%p : T, ...): stmt* yield %v, ... }`` — its own scope: no outer values visible."""
        self.expect("{")
        self.expect("^")
        self.expect("(")
        scope = _Scope(self, taken, region=True)
        params = self.separated(")", lambda: self.block_param(scope))
        self.expect(":")
        body = []
        while not self.at("yield"):
            if self.tok.kind != "value":
                self.error(f"expected an instruction or 'yield' in the region, got {self.describe()}")
            results = self.definitions(scope, "a value definition")
            kind_tok = self.expect_kind("ident", "an op kind")
            if kind_tok.text in PARAM_KINDS and self.tok.kind == "string":
                self.error("params cannot appear inside a region", kind_tok)
            body.append(self.instruction(kind_tok.text, results, scope))
        self.expect("yield")
        yields = []
        if self.tok.kind == "value":
            yields.append(scope.use(self.next()))
            while self.accept(","):
                yields.append(scope.use(self.expect_kind("value", "a value like %3")))
        self.expect("}")
        swap = scope.swap()
        _swap_operands(body, swap)
        return Region(params, body, [swap.get(v, v) for v in yields])

    def block_param(self, scope: _Scope) -> Value:
        """``%4 : f32[N,784]`` inside ``^(...)``."""
        tok = self.expect_kind("value", "a block param like %4")
        self.expect(":")
        value = Value(tok.text[1:], self.tensor_type())
        scope.define(tok, value)
        return value

    def buffer(self) -> Buffer:
        """``batch@64``, ``static@0`` or ``state "key"`` (generally: SPACE [STRING] [@INT])."""
        space = self.expect_kind("ident", "a buffer space (static, batch or state)").text
        key = self.string() if self.tok.kind == "string" else ""
        offset = self.integer() if self.accept("@") else 0
        return Buffer(space, offset, key)


def parse_module(text: str) -> list:
    """All functions in ``text``, in order."""
    return _Parser(text).module()


def parse_function(text: str) -> Function:
    """The one function in ``text`` (an IRParseError if there are none or several)."""
    fns = parse_module(text)
    if len(fns) != 1:
        fail_at(text, len(text) if not fns else 0, f"expected exactly one function, found {len(fns)}")
    return fns[0]

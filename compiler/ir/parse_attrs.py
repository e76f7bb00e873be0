"""Lexing and literal parsing for the IR text form: tokens, strings, types and attr values.

This is the lower half of the IR parser: ``parser.py`` builds functions, instructions and
regions on top of ``LiteralParser`` (a token cursor that also reads types such as
``f32[N,784]`` and attr values such as ``{axes=(0, 1), value=dense<f32[2]>([1.0, 2.0])}``).
A hand-written tokenizer plus recursive descent: no ``eval``, no pickle.  Every error is an
``IRParseError`` naming the line, the column and the offending line.
"""
from __future__ import annotations

import re

import numpy as np

from .types import ALL_DTYPES, Sym, TensorType

DTYPES = {d.short: d for d in ALL_DTYPES}
KEYWORDS = {"true": True, "false": False, "none": None, "inf": float("inf"), "nan": float("nan")}

_TOKEN = re.compile(r"""
    (?P<nl>\n)
  | (?P<ws>[ \t\r]+|//[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+|inf\b|nan\b))
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>->|[(){}\[\]<>,=:*@^])
""", re.VERBOSE)
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class IRParseError(ValueError):
    """A syntax or name error in IR text; ``line``/``col`` are 1-based."""

    def __init__(self, message: str, line: int, col: int, source_line: str):
        self.message, self.line, self.col, self.source_line = message, line, col, source_line
        super().__init__(f"line {line}, col {col}: {message}\n  {source_line}\n  {' ' * (col - 1)}^")


class Token:
    __slots__ = ("kind", "pos", "text")

    def __init__(self, kind: str, text: str, pos: int):
        self.kind, self.text, self.pos = kind, text, pos

    def __repr__(self):
        return f"{self.kind}:{self.text!r}"


def tokenize(text: str) -> list:
    """Split ``text`` into tokens (whitespace and ``//`` comments dropped); ends with an ``eof`` token."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            fail_at(text, pos, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind not in ("ws", "nl"):
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


def fail_at(text: str, pos: int, message: str):
    """Raise an IRParseError for character offset ``pos`` of ``text``."""
    line = text.count("\n", 0, pos) + 1
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    raise IRParseError(message, line, pos - start + 1, text[start:end if end >= 0 else len(text)])


def unquote(literal: str) -> str:
    """The value of a string token (quotes removed, escapes resolved); raises ValueError on a bad escape."""
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc in _HEX_ESCAPES:
            digits = body[i + 2:i + 2 + _HEX_ESCAPES[esc]]
            if len(digits) != _HEX_ESCAPES[esc] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"bad escape \\{esc}{digits}")
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        else:
            raise ValueError(f"unknown escape \\{esc}")
    return "".join(out)


class LiteralParser:
    """A cursor over the tokens of one text, with parsers for strings, types and attr values."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # --- token helpers --------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        """The token ``ahead`` places after the current one (``eof`` past the end)."""
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def error(self, message: str, tok: Token | None = None):
        fail_at(self.text, (tok or self.tok).pos, message)

    def next(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def at(self, text: str, kind: str | None = None) -> bool:
        return self.tok.text == text and self.tok.kind in ((kind,) if kind else ("punct", "ident"))

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        if not self.at(text):
            self.error(f"expected '{text}', got {self.describe()}")
        return self.next()

    def expect_kind(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            self.error(f"expected {what}, got {self.describe()}")
        return self.next()

    def describe(self) -> str:
        return "end of input" if self.tok.kind == "eof" else repr(self.tok.text)

    def separated(self, close: str, item) -> list:
        """``item()`` repeated, comma-separated, up to and including the ``close`` token."""
        items = []
        while not self.accept(close):
            if items:
                self.expect(",")
            items.append(item())
        return items

    def string(self, what: str = "a string") -> str:
        tok = self.expect_kind("string", what)
        try:
            return unquote(tok.text)
        except ValueError as err:
            self.error(str(err), tok)

    def integer(self) -> int:
        tok = self.expect_kind("number", "an integer")
        if not re.fullmatch(r"-?\d+", tok.text):
            self.error(f"expected an integer, got {tok.text!r}", tok)
        return int(tok.text)

    # --- types ----------------------------------------------------------------------------
    def dtype(self):
        tok = self.expect_kind("ident", "a dtype")
        if tok.text not in DTYPES:
            self.error(f"unknown dtype {tok.text!r} (known: {', '.join(DTYPES)})", tok)
        return DTYPES[tok.text]

    def tensor_type(self) -> TensorType:
        """``f32[N,784]``."""
        dtype = self.dtype()
        return TensorType(dtype, self.shape())

    def shape(self) -> tuple:
        self.expect("[")
        return tuple(self.separated("]", lambda: self.sym() if self.at("N") else self.integer()))

    def sym(self) -> Sym:
        """``N`` or ``N*k``."""
        self.expect("N")
        return Sym(self.integer()) if self.accept("*") else Sym(1)

    # --- attrs ----------------------------------------------------------------------------
    def attr_dict(self) -> dict:
        """``{key=value, ...}``; keys are identifiers or quoted strings."""
        self.expect("{")
        attrs: dict = {}

        def item():
            key_tok = self.tok
            key = self.string() if key_tok.kind == "string" else self.expect_kind("ident", "an attr name").text
            if key in attrs:
                self.error(f"attr {key!r} given twice", key_tok)
            self.expect("=")
            attrs[key] = self.attr_value()

        self.separated("}", item)
        return attrs

    def attr_value(self):
        """One attr literal: scalar, string, dtype, type, ``N*k``, list, tuple, dict or dense array."""
        tok = self.tok
        if tok.kind == "string":
            return self.string()
        if tok.kind == "number":
            self.next()
            return int(tok.text) if re.fullmatch(r"-?\d+", tok.text) else float(tok.text)
        if tok.kind == "punct" and tok.text in ("[", "(", "{"):
            return {"[": self.list_value, "(": self.tuple_value, "{": self.dict_value}[tok.text]()
        if tok.kind != "ident":
            self.error(f"expected an attr value, got {self.describe()}")
        if tok.text in KEYWORDS:
            self.next()
            return KEYWORDS[tok.text]
        if tok.text == "N":
            return self.sym()
        if tok.text == "dense":
            return self.dense()
        if tok.text in DTYPES:
            dtype = self.dtype()
            return TensorType(dtype, self.shape()) if self.at("[") else dtype
        self.error(f"unknown word {tok.text!r} in an attr value")

    def list_value(self) -> list:
        self.expect("[")
        return self.separated("]", self.attr_value)

    def tuple_value(self) -> tuple:
        """``()``, ``(a,)`` or ``(a, b, ...)``."""
        self.expect("(")
        items, trailing = [], False
        while not self.accept(")"):
            if items:
                self.expect(",")
                if self.accept(")"):
                    trailing = True
                    break
            items.append(self.attr_value())
        if len(items) == 1 and not trailing:
            self.error("a one-element tuple needs a trailing comma: (x,)")
        return tuple(items)

    def dict_value(self) -> dict:
        """``{"key": value, ...}`` with string keys."""
        self.expect("{")
        out: dict = {}

        def item():
            key = self.string("a string key")
            self.expect(":")
            out[key] = self.attr_value()

        self.separated("}", item)
        return out

    def dense(self) -> np.ndarray:
        """``dense<f32[2,2]>([[1.0, 2.0], [3.0, 4.0]])``."""
        self.expect("dense")
        self.expect("<")
        type_tok = self.tok
        ttype = self.tensor_type()
        self.expect(">")
        self.expect("(")
        body_tok = self.tok
        body = self.attr_value()
        self.expect(")")
        if any(isinstance(d, Sym) for d in ttype.shape):
            self.error("a dense literal needs a static shape", type_tok)
        try:
            return build_array(body, ttype)
        except (ValueError, TypeError, OverflowError) as err:
            self.error(f"bad dense literal: {err}", body_tok)


# ----------------------------------------------------------------------------- dense arrays
def _flatten(body, shape: tuple, out: list):
    """Append the elements of nested lists ``body`` to ``out``, checking they follow ``shape``."""
    if not shape:
        if isinstance(body, (list, tuple)):
            raise ValueError("more nesting than the shape has dims")
        out.append(body)
        return
    if not isinstance(body, list) or len(body) != shape[0]:
        got = f"{len(body)} items" if isinstance(body, list) else repr(body)
        raise ValueError(f"expected a list of {shape[0]} items, got {got}")
    for item in body:
        _flatten(item, shape[1:], out)


def _check_element(x, dtype):
    """Reject elements of the wrong kind (a float in an int array, a number in a bool array)."""
    if dtype.is_bool:
        ok = isinstance(x, bool)
    elif dtype.is_integer:
        ok = isinstance(x, int) and not isinstance(x, bool)
    else:
        ok = isinstance(x, (int, float)) and not isinstance(x, bool)
    if not ok:
        raise ValueError(f"{x!r} is not a {dtype.short} element")


def build_array(body, ttype: TensorType) -> np.ndarray:
    """A numpy array of the declared dtype/shape from the parsed nested list."""
    shape = tuple(ttype.shape)
    flat: list = []
    _flatten(body, shape, flat)
    for x in flat:
        _check_element(x, ttype.dtype)
    return np.array(flat, dtype=ttype.dtype.np).reshape(shape)

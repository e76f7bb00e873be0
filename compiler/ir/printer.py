"""Text form of the IR: one op per line, every value with its dtype and shape.

::

    func @train_step {
      %0 : f32[N,784] = feed "x:0"
      %1 : f32[784,256] = state "dense/kernel"
      %2 : f32[N,256] = matmul(%0, %1) {transpose_a=false, transpose_b=false}  loc("dense/MatMul")
      %3 : f32[] = constant() {value=dense<f32[]>(0.5)}
      state "dense/kernel" = %7
      fetch "loss:0" = %9
    }

A fused instr prints its region as an indented block (``{ ^(%4 : f32[N,784], ...): ...
yield %9 }``); an ``if``/``while`` prints its two regions one after the other
(``{ ^(...): ... yield %5 } { ^(...): ... yield %8 }``); planned buffers follow as ``-> batch@0, state "fc1/bias"`` and the memory
summary as a ``memory {...}`` line.  Values are renumbered ``%0, %1, ...`` in textual order
(parameters, then the body, regions included), attrs are printed in sorted key order, so
printing a parsed function gives the same text again.  ``compiler/ir/parser.py`` reads this
form back; docs/IR.md has the grammar.

For reading, ``print_function(fn, elide_above=16)`` shows a dense literal of more than 16
elements as ``dense<f32[2,100]>(__elided__)`` (dtype and shape kept, values left out), like
MLIR's ``--mlir-elide-elementsattrs-if-larger``; ``elide_constants(text)`` does the same to
text already printed (an IR dump file).  Elided text does not parse back, on purpose.
"""
from __future__ import annotations

import math
import re

import numpy as np

from .function import Function, Value
from .types import DType, Sym, TensorType, as_dtype, shape_str

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
ELIDED = "__elided__"  # stands for the values of an elided dense literal
ELIDE_ABOVE = 16  # the command line's default: dense literals of more elements are elided


# ----------------------------------------------------------------------------- scalars
def quote(text: str) -> str:
    """A double-quoted string literal; non-printable characters become ``\\xHH``/``\\uHHHH``/``\\UHHHHHHHH``."""
    out = []
    for ch in text:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def format_float(x) -> str:
    """A Python/float64 number that reads back exactly (``inf``, ``-inf``, ``nan`` spelled so)."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


def _format_narrow_float(x, np_type) -> str:
    """Shortest text for a float16/float32 element that parses back (via float64) to the same value."""
    if not math.isfinite(x):
        return format_float(x)
    text = str(np_type(x))
    if not any(c in text for c in ".en"):
        text += ".0"
    try:
        if np_type(float(text)) == x and math.copysign(1.0, float(text)) == math.copysign(1.0, float(x)):
            return text
    except ValueError:
        pass
    return format_float(x)


def format_name(name: str) -> str:
    """A function name or attr key: bare when it is an identifier, else quoted."""
    return name if _IDENT.match(name) else quote(name)


# ----------------------------------------------------------------------------- dense arrays
def _element_formatter(dtype: DType):
    """A function turning one array element into its literal text."""
    if dtype.is_bool:
        return lambda x: "true" if x else "false"
    if dtype.is_integer:
        return lambda x: str(int(x))
    if dtype.short == "f64":
        return format_float
    np_type = dtype.as_numpy_dtype
    return lambda x: _format_narrow_float(x, np_type)


def _nest(items: list, shape: tuple) -> str:
    """Lay out flat element texts as nested ``[...]`` lists following ``shape``."""
    if not shape:
        return items[0]
    if len(shape) == 1:
        return "[" + ", ".join(items) + "]"
    step = len(items) // shape[0] if shape[0] else 0
    return "[" + ", ".join(_nest(items[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def format_dense(arr: np.ndarray, elide_above: int | None = None) -> str:
    """``dense<f32[2,2]>([[1.0, 2.0], [3.0, 4.0]])`` — all values, exact for every Kiln dtype.

    With ``elide_above``, an array of more elements prints as ``dense<f32[300]>(__elided__)``.
    """
    dtype = as_dtype(arr.dtype)
    head = f"dense<{dtype.short}{shape_str(arr.shape)}>"
    if elide_above is not None and arr.size > elide_above:
        return f"{head}({ELIDED})"
    fmt = _element_formatter(dtype)
    items = [fmt(x) for x in arr.ravel().tolist()]
    return f"{head}({_nest(items, tuple(arr.shape))})"


_STRING_OR_DENSE = re.compile(r'"(?:[^"\\\n]|\\.)*"|\bdense<(?P<type>[^<>()]*)>\([^()]*\)')
_STATIC_TYPE = re.compile(r"[a-z0-9]+\[(?P<dims>[0-9,]*)\]\Z")


def _elide_match(m: re.Match, elide_above: int) -> str:
    """The replacement for one ``_STRING_OR_DENSE`` match: an elided literal, or the match as is."""
    static = _STATIC_TYPE.match(m.group("type") or "")
    if static is None:  # a string literal (or a type that is not static)
        return m.group()
    size = math.prod(int(d) for d in static.group("dims").split(",") if d)
    return f"dense<{m.group('type')}>({ELIDED})" if size > elide_above else m.group()


def elide_constants(text: str, elide_above: int | None = ELIDE_ABOVE) -> str:
    """Printed IR ``text`` with every dense literal of more than ``elide_above`` elements elided.

    The same as ``print_function(fn, elide_above)`` for text that is already printed (an IR
    dump file).  It rewrites ``dense<T>(...)`` literals in the text: string literals are
    skipped whole (a loc or string attr may hold anything), and a literal's body holds no
    parentheses — its elements are integers, ``true``/``false`` and ``format_float`` /
    ``_format_narrow_float`` texts (digits, ``.``, ``e``, signs, ``inf``, ``nan``) nested in
    ``[...]`` — so its closing ``)`` is the first one.  ``None`` elides nothing.
    """
    if elide_above is None:
        return text
    return _STRING_OR_DENSE.sub(lambda m: _elide_match(m, elide_above), text)


# ----------------------------------------------------------------------------- attr values
def format_attr(value, elide_above: int | None = None) -> str:
    """The literal text of one attr value (see docs/IR.md for the syntax); ``elide_above`` as
    for ``format_dense``."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_float(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, DType):
        return value.short
    if isinstance(value, np.dtype):
        return as_dtype(value).short
    if isinstance(value, Sym):
        return str(value)
    if isinstance(value, TensorType):
        return str(value)
    if isinstance(value, np.ndarray):
        return format_dense(value, elide_above)
    if isinstance(value, list):
        return "[" + ", ".join(format_attr(v, elide_above) for v in value) + "]"
    if isinstance(value, tuple):
        if len(value) == 1:
            return "(" + format_attr(value[0], elide_above) + ",)"
        return "(" + ", ".join(format_attr(v, elide_above) for v in value) + ")"
    if isinstance(value, dict):
        return _format_dict(value, elide_above)
    raise TypeError(f"cannot print attr value {value!r} of type {type(value).__name__}")


def _format_dict(value: dict, elide_above: int | None) -> str:
    """A dict attr with string keys, keys sorted: ``{"a": 1, "b": 2}``."""
    for k in value:
        if not isinstance(k, str):
            raise TypeError(f"dict attr keys must be strings, got {k!r}")
    return "{" + ", ".join(f"{quote(k)}: {format_attr(value[k], elide_above)}" for k in sorted(value)) + "}"


def format_attrs(attrs: dict, elide_above: int | None = None) -> str:
    """`` {a=1, b=[2, 3]}`` in sorted key order, or '' when there are none."""
    if not attrs:
        return ""
    parts = []
    for key in sorted(attrs):
        try:
            parts.append(f"{format_name(key)}={format_attr(attrs[key], elide_above)}")
        except TypeError as err:
            raise TypeError(f"attr {key!r}: {err}") from None
    return " {" + ", ".join(parts) + "}"


# ----------------------------------------------------------------------------- functions
def value_names(fn: Function) -> dict:
    """Printed name of every value defined in ``fn``: ``"0"``, ``"1"``, ... in textual order.

    Params first, then each body line: an instr's results, then (for a fused instr) its
    region's block params and region body, recursively.  So parsing the text and printing
    it again gives the same numbers.
    """
    names: dict = {}

    def visit(body):
        for ins in body:
            for v in ins.results:
                names.setdefault(v, str(len(names)))
            for region in ins.regions:
                for v in region.params:
                    names.setdefault(v, str(len(names)))
                visit(region.body)

    for p in fn.params:
        names.setdefault(p.value, str(len(names)))
    visit(fn.body)
    return names


def _ref(v: Value, names: dict) -> str:
    """``%3``; a value not defined in the function shows as ``%undef.<its name>`` (invalid IR)."""
    return "%" + names[v] if v in names else f"%undef.{getattr(v, 'name', '?')}"


def _refs(values, names: dict) -> str:
    return ", ".join(_ref(v, names) for v in values)


def format_buffer(buf) -> str:
    """``batch@64``, ``static@0``, ``state "fc1/bias"`` (a key or a non-zero offset is always shown)."""
    space, key, offset = getattr(buf, "space", "?"), getattr(buf, "key", ""), getattr(buf, "offset", 0)
    text = space + (" " + quote(key) if key else "")
    return text + (f"@{offset}" if space != "state" or offset else "")


def _suffix(ins) -> str:
    """What follows an instr's operands/attrs/region: ``  loc("...")`` and ``  -> buffers``."""
    loc = f"  loc({quote(ins.loc)})" if ins.loc else ""
    if ins.buffers is None:
        return loc
    return f"{loc}  -> " + ", ".join(format_buffer(b) for b in ins.buffers)


def instr_lines(ins, names: dict, indent: str = "", elide_above: int | None = None) -> list:
    """The text lines of one instr: one line, or several for a fused instr and its region."""
    types = ", ".join(str(v.type) for v in ins.results)
    head = f"{indent}{_refs(ins.results, names)} : {types} = {ins.kind}({_refs(ins.operands, names)})"
    head += format_attrs(ins.attrs, elide_above)
    if not ins.regions:
        return [head + _suffix(ins)]
    inner = indent + "  "
    lines = [head + " {"]
    for i, region in enumerate(ins.regions):
        if i:
            lines.append(indent + "} {")
        block = ", ".join(f"{_ref(v, names)} : {v.type}" for v in region.params)
        lines.append(f"{inner}^({block}):")
        for sub in region.body:
            lines += instr_lines(sub, names, inner, elide_above)
        lines.append(f"{inner}yield {_refs(region.yields, names)}".rstrip())
    lines.append(indent + "}" + _suffix(ins))
    return lines


def format_instr(ins, names: dict) -> str:
    """One body statement without leading indentation (several lines for a fused instr)."""
    return "\n".join(instr_lines(ins, names))


def print_function(fn: Function, elide_above: int | None = None) -> str:
    """The text form of ``fn`` (ends with a newline).

    With ``elide_above``, dense literals of more elements are elided (for reading; such text
    does not parse back); the default prints every value.
    """
    names = value_names(fn)
    lines = [f"func @{format_name(fn.name)} {{"]
    if fn.memory:
        lines.append("  memory" + format_attrs(fn.memory))
    for p in fn.params:
        lines.append(f"  {_ref(p.value, names)} : {p.value.type} = {p.kind} {quote(p.key)}")
    for ins in fn.body:
        lines += instr_lines(ins, names, "  ", elide_above)
    for key, v in fn.state_out:
        lines.append(f"  state {quote(key)} = {_ref(v, names)}")
    for key, v in fn.fetches:
        lines.append(f"  fetch {quote(key)} = {_ref(v, names)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def print_module(fns, elide_above: int | None = None) -> str:
    """Several functions, separated by a blank line."""
    return "\n".join(print_function(fn, elide_above) for fn in fns)

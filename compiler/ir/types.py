"""Types shared by the graph API and the IR: dtypes, the symbolic batch dimension, tensor types.

A shape is a tuple of dims; a dim is an ``int`` or a ``Sym`` — a multiple ``k*N`` of the
symbolic batch size N (a placeholder's leading ``None``).  Keeping the multiple lets a
reshape of ``[N,10]`` to ``[-1]`` give ``[N*10]`` and back, so one compiled step serves
every batch size.

Graph (frontend) types may also be partly unknown, as in TF1: a dim ``None`` is unknown
until the feed, and a shape ``None`` has unknown rank.  IR types never are: lowering a run
signature re-infers every type from the fed shapes (see docs/graph.md, "Shapes").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ShapeError(ValueError):
    """Raised by type inference when operands do not fit an op (message names the shapes)."""


# ----------------------------------------------------------------------------- dtypes
@dataclass(frozen=True)
class DType:
    """A tensor element type. ``name`` follows TensorFlow ('float32'), ``short`` is the IR spelling ('f32')."""

    name: str
    short: str
    np_name: str

    @property
    def as_numpy_dtype(self):
        return np.dtype(self.np_name).type

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.np_name)

    @property
    def is_floating(self) -> bool:
        return self.short in ("f16", "bf16", "f32", "f64")

    @property
    def is_integer(self) -> bool:
        return self.short in ("i8", "i16", "i32", "i64", "u8", "u16")

    @property
    def is_unsigned(self) -> bool:
        return self.short in ("u8", "u16")

    @property
    def is_bool(self) -> bool:
        return self.short == "bool"

    @property
    def base_dtype(self) -> "DType":
        return self

    @property
    def min(self):
        return np.finfo(self.np).min if self.is_floating else np.iinfo(self.np).min

    @property
    def max(self):
        return np.finfo(self.np).max if self.is_floating else np.iinfo(self.np).max

    def __repr__(self) -> str:
        return f"tf.{self.name}"

    def __str__(self) -> str:
        return f"<dtype: '{self.name}'>"


float16 = DType("float16", "f16", "float16")
float32 = DType("float32", "f32", "float32")
float64 = DType("float64", "f64", "float64")
int8 = DType("int8", "i8", "int8")
uint8 = DType("uint8", "u8", "uint8")
int16 = DType("int16", "i16", "int16")
uint16 = DType("uint16", "u16", "uint16")
int32 = DType("int32", "i32", "int32")
int64 = DType("int64", "i64", "int64")
bool_ = DType("bool", "bool", "bool")

ALL_DTYPES = (float16, float32, float64, int8, uint8, int16, uint16, int32, int64, bool_)
_BY_KEY = {}
for _d in ALL_DTYPES:
    _BY_KEY[_d.name] = _d
    _BY_KEY[_d.short] = _d
    _BY_KEY[np.dtype(_d.np_name)] = _d
_BY_KEY["float"] = float32
_BY_KEY["double"] = float64
_BY_KEY["half"] = float16


def as_dtype(value) -> DType:
    """Turn a DType, numpy dtype, python type or name ('float32', 'f32') into a DType."""
    if isinstance(value, DType):
        return value
    if value is float:
        return float32
    if value is int:
        return int32
    if value is bool:
        return bool_
    key = value if isinstance(value, str) else None
    if key is None:
        try:
            key = np.dtype(value)
        except TypeError:
            raise TypeError(f"Cannot convert {value!r} to a dtype") from None
    if key not in _BY_KEY:
        raise TypeError(f"Unsupported dtype {value!r}; Kiln supports {[d.name for d in ALL_DTYPES]}")
    return _BY_KEY[key]


# ----------------------------------------------------------------------------- dims
@dataclass(frozen=True)
class Sym:
    """The dim ``coef * N`` where N is the symbolic batch size."""

    coef: int = 1

    def __str__(self) -> str:
        return "N" if self.coef == 1 else f"N*{self.coef}"

    __repr__ = __str__


N = Sym(1)


def is_static(dim) -> bool:
    return isinstance(dim, (int, np.integer))


def dim_str(dim) -> str:
    return "?" if dim is None else str(dim)


def shape_str(shape) -> str:
    """``[N,784]``; an unknown dim prints ``?`` and an unknown rank ``[*]``."""
    if shape is None:
        return "[*]"
    return "[" + ",".join(dim_str(d) for d in shape) + "]"


def is_known_shape(shape) -> bool:
    """True when the rank and every dim are known (ints or batch dims): an IR-ready shape."""
    return shape is not None and all(d is not None for d in shape)


def resolve_dim(dim, n: int | None) -> int:
    if isinstance(dim, Sym):
        if n is None:
            raise ShapeError("batch size N is not known here")
        return dim.coef * n
    return int(dim)


def resolve_shape(shape, n: int | None) -> tuple:
    return tuple(resolve_dim(d, n) for d in shape)


def has_sym(shape) -> bool:
    return any(isinstance(d, Sym) for d in shape)


def dim_mul(a, b):
    """Product of two dims; at most one of them may be symbolic."""
    if isinstance(a, Sym) and isinstance(b, Sym):
        raise ShapeError("a product of two batch dims (N*N) is not supported")
    if isinstance(a, Sym):
        return Sym(a.coef * int(b)) if int(b) != 0 else 0
    if isinstance(b, Sym):
        return Sym(b.coef * int(a)) if int(a) != 0 else 0
    return int(a) * int(b)


def num_elements(shape):
    """Element count of a shape: an int, or a Sym when the shape holds the batch dim."""
    total = 1
    for d in shape:
        total = dim_mul(total, d)
    return total


def dim_div(a, b):
    """Exact quotient a / b of dims (raises ShapeError when it does not divide)."""
    if isinstance(a, Sym) and isinstance(b, Sym):
        if a.coef % b.coef:
            raise ShapeError(f"cannot divide {a} by {b}")
        return a.coef // b.coef
    if isinstance(a, Sym):
        b = int(b)
        if b == 0 or a.coef % b:
            raise ShapeError(f"cannot divide {a} into parts of {b}")
        return Sym(a.coef // b)
    if isinstance(b, Sym):
        raise ShapeError(f"cannot divide static {a} by batch dim {b}")
    if b == 0 or int(a) % int(b):
        raise ShapeError(f"{a} is not divisible by {b}")
    return int(a) // int(b)


def broadcast_shapes(a, b) -> tuple:
    """NumPy broadcasting of two shapes (dims may be Sym); ShapeError names both shapes."""
    out = []
    ra, rb = list(a), list(b)
    width = max(len(ra), len(rb))
    ra = [1] * (width - len(ra)) + ra
    rb = [1] * (width - len(rb)) + rb
    for da, db in zip(ra, rb):
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(f"shapes {shape_str(a)} and {shape_str(b)} are incompatible for broadcasting")
    return tuple(out)


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return axis % rank if rank else 0


@dataclass(frozen=True)
class TensorType:
    """dtype + shape of a value; the IR prints it as ``f32[N,784]``."""

    dtype: DType
    shape: tuple

    def __str__(self) -> str:
        return f"{self.dtype.short}{shape_str(self.shape)}"

    @property
    def rank(self) -> int | None:
        """The number of dims (None when a graph type's rank is unknown)."""
        return None if self.shape is None else len(self.shape)

"""TF1-style static shapes as users see them: a dim is an int or None (unknown), and the
whole shape may have unknown rank (``TensorShape(None)``).

The merge/compatibility rules are TF's: ``None`` is compatible with any size, an unknown
rank with any shape; ``merge_with`` keeps the more specific of two compatible shapes.
The symbolic batch dim of a graph type (``Sym``) shows as None here, as in TF.
"""
from __future__ import annotations

import numpy as np

from ..ir.types import Sym


def _as_dim(d):
    """One user dim (int, None, Sym, a Dimension-like ``.value``) as an int or None."""
    if d is None or isinstance(d, Sym):
        return None
    if hasattr(d, "value") and not isinstance(d, (int, np.integer)):
        d = d.value
        if d is None:
            return None
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
        raise TypeError(f"Dimension value must be integer or None, got {d!r}")
    if int(d) < 0:
        raise ValueError(f"Dimension {int(d)} must be >= 0")
    return int(d)


def _dims_compatible(a, b) -> bool:
    return a is None or b is None or a == b


class TensorShape:
    """TF1 static shape: a tuple of int-or-None dims, or None for an unknown rank."""

    def __init__(self, dims):
        if dims is None:
            self._dims = None
        elif isinstance(dims, TensorShape):
            self._dims = dims._dims
        elif isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
            self._dims = (_as_dim(dims),)
        else:
            self._dims = tuple(_as_dim(d) for d in dims)

    # --- what it holds ------------------------------------------------------------------
    @property
    def dims(self):
        return None if self._dims is None else list(self._dims)

    @property
    def ndims(self):
        return None if self._dims is None else len(self._dims)

    rank = ndims

    def as_list(self):
        if self._dims is None:
            raise ValueError("as_list() is not defined on an unknown TensorShape.")
        return list(self._dims)

    def is_fully_defined(self) -> bool:
        return self._dims is not None and None not in self._dims

    def assert_is_fully_defined(self):
        if not self.is_fully_defined():
            raise ValueError(f"Shape {self} is not fully defined")

    def num_elements(self):
        if not self.is_fully_defined():
            return None
        return int(np.prod(self._dims, dtype=np.int64))

    # --- TF's merge rules ---------------------------------------------------------------
    def is_compatible_with(self, other) -> bool:
        """True when some fully defined shape fits both (None matches any size or rank)."""
        other = as_shape(other)
        if self._dims is None or other._dims is None:
            return True
        return len(self._dims) == len(other._dims) and all(
            _dims_compatible(a, b) for a, b in zip(self._dims, other._dims))

    def assert_is_compatible_with(self, other):
        if not self.is_compatible_with(other):
            raise ValueError(f"Shapes {self} and {as_shape(other)} are incompatible")

    def merge_with(self, other) -> "TensorShape":
        """The most specific shape compatible with both; ValueError when they conflict."""
        other = as_shape(other)
        if self._dims is None:
            return other
        if other._dims is None:
            return self
        if not self.is_compatible_with(other):
            raise ValueError(f"Shapes {self} and {other} are not compatible")
        return TensorShape([a if a is not None else b for a, b in zip(self._dims, other._dims)])

    def most_specific_compatible_shape(self, other) -> "TensorShape":
        """The most specific shape that both are compatible with (unequal dims become None)."""
        other = as_shape(other)
        if self._dims is None or other._dims is None or len(self._dims) != len(other._dims):
            return TensorShape(None)
        return TensorShape([a if a == b else None for a, b in zip(self._dims, other._dims)])

    def concatenate(self, other) -> "TensorShape":
        other = as_shape(other)
        if self._dims is None or other._dims is None:
            return TensorShape(None)
        return TensorShape(self._dims + other._dims)

    __add__ = concatenate

    def __radd__(self, other):
        return as_shape(other).concatenate(self)

    def with_rank(self, rank) -> "TensorShape":
        try:
            return self.merge_with(unknown_shape(rank))
        except ValueError:
            raise ValueError(f"Shape {self} must have rank {rank}") from None

    def with_rank_at_least(self, rank) -> "TensorShape":
        if self._dims is not None and len(self._dims) < rank:
            raise ValueError(f"Shape {self} must have rank at least {rank}")
        return self

    def with_rank_at_most(self, rank) -> "TensorShape":
        if self._dims is not None and len(self._dims) > rank:
            raise ValueError(f"Shape {self} must have rank at most {rank}")
        return self

    def assert_has_rank(self, rank):
        if self._dims is not None and len(self._dims) != rank:
            raise ValueError(f"Shape {self} must have rank {rank}")

    def assert_same_rank(self, other):
        other = as_shape(other)
        if self._dims is not None and other._dims is not None and len(self._dims) != len(other._dims):
            raise ValueError(f"Shapes {self} and {other} must have the same rank")

    # --- python protocol ------------------------------------------------------------------
    def __len__(self):
        if self._dims is None:
            raise ValueError("Cannot take the length of shape with unknown rank.")
        return len(self._dims)

    def __bool__(self):
        return self._dims is not None

    def __iter__(self):
        if self._dims is None:
            raise ValueError("Cannot iterate over a shape with unknown rank.")
        return iter(self._dims)

    def __getitem__(self, item):
        if self._dims is None:
            return TensorShape(None) if isinstance(item, slice) else None
        if isinstance(item, slice):
            return TensorShape(self._dims[item])
        return self._dims[item]

    def __eq__(self, other):
        try:
            other = as_shape(other)
        except (TypeError, ValueError):
            return NotImplemented
        return self._dims == other._dims

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self._dims)

    def __repr__(self):
        if self._dims is None:
            return "TensorShape(None)"
        return "TensorShape([" + ", ".join("None" if d is None else str(d) for d in self._dims) + "])"

    def __str__(self):
        if self._dims is None:
            return "<unknown>"
        return "(" + ", ".join("?" if d is None else str(d) for d in self._dims) + ("," if len(self._dims) == 1 else "") + ")"


def as_shape(shape) -> TensorShape:
    """tf.compat.v1 ``as_shape``: a TensorShape from a TensorShape, list, tuple or None."""
    return shape if isinstance(shape, TensorShape) else TensorShape(shape)


def unknown_shape(rank=None) -> TensorShape:
    """A shape of unknown rank, or of ``rank`` unknown dims."""
    return TensorShape(None if rank is None else [None] * rank)


def dimension_value(d):
    """tf.compat.dimension_value: the int (or None) of a dim."""
    return _as_dim(d) if d is not None else None


def graph_dims(shape):
    """A user shape as graph dims (None entries stay None; None for an unknown rank); the
    batch dims ``Sym`` of a graph type's tuple are kept."""
    if isinstance(shape, (tuple, list)):
        return tuple(d if isinstance(d, Sym) else _as_dim(d) for d in shape)
    shape = as_shape(shape)
    return None if shape.dims is None else tuple(shape.dims)

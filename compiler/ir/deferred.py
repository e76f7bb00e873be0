"""Attr values known only when a run signature is lowered (shapes from unknown dims).

A graph op's shape-like attr may hold, where a static dim is not known when the graph is
built:

* ``DimOf(tensor, axis)`` — dim ``axis`` of ``tensor``'s type (e.g. ``tf.expand_dims`` of an
  ``[N, ?]`` tensor gets the shape attr ``(N, 1, DimOf(x, 1))``);
* ``ValueOf(tensor)`` — the value of an int tensor (``tf.random_normal(tf.shape(z))``
  when ``z``'s rank is unknown, ``tf.reshape(x, [tf.shape(x)[0] * 2, -1])``);
* ``ShapeOf(tensor)`` / ``AllAxes(tensor)`` — a tensor's whole shape / all its axes (its
  rank unknown); ``SumAxes(x, target)`` — the axes that sum a broadcast ``x`` to ``target``
  (gradients of broadcasting ops).

The graph's own type rules see their *partial* values (``graph_view``: None where
unknown); lowering (``from_graph``) replaces them with the lowered types and the values it
computes for shape tensors, so IR attrs are always plain ints and batch dims (``Sym``).
"""
from __future__ import annotations

import copy


class Deferred:
    """Base of the deferred attr parts: ``tensors`` they read, ``partial()`` (graph view)
    and ``lowered(type_of, value_of)`` (the IR value)."""

    __slots__ = ()
    tensors: tuple = ()

    def partial(self):
        return None


class DimOf(Deferred):
    """Dim ``axis`` of ``tensor`` (a graph Tensor), resolved when lowering."""

    __slots__ = ("tensor", "axis")

    def __init__(self, tensor, axis: int):
        self.tensor = tensor
        self.axis = int(axis)

    @property
    def tensors(self):
        return (self.tensor,)

    def partial(self):
        """The dim as the graph knows it: an int, a ``Sym`` or None."""
        shape = self.tensor.type.shape
        return None if shape is None else shape[self.axis]

    def lowered(self, type_of, value_of):
        return type_of(self.tensor).shape[self.axis]

    def __repr__(self):
        return f"dim({self.tensor.name}, {self.axis})"


class ShapeOf(Deferred):
    """The whole shape of ``tensor`` (a shape attr copying a tensor of unknown rank)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor

    @property
    def tensors(self):
        return (self.tensor,)

    def partial(self):
        return self.tensor.type.shape

    def lowered(self, type_of, value_of):
        return tuple(type_of(self.tensor).shape)

    def __repr__(self):
        return f"shape({self.tensor.name})"


class AllAxes(ShapeOf):
    """Every axis of ``tensor`` (a reduction over all axes of a tensor of unknown rank)."""

    __slots__ = ()

    def partial(self):
        shape = self.tensor.type.shape
        return None if shape is None else tuple(range(len(shape)))

    def lowered(self, type_of, value_of):
        return tuple(range(len(type_of(self.tensor).shape)))

    def __repr__(self):
        return f"all_axes({self.tensor.name})"


class SumAxes(Deferred):
    """The axes to sum ``x`` over (keepdims) to reduce a broadcast result to ``target``'s shape."""

    __slots__ = ("x", "target")

    def __init__(self, x, target):
        self.x, self.target = x, target

    @property
    def tensors(self):
        return (self.x, self.target)

    def lowered(self, type_of, value_of):
        xs, ts = type_of(self.x).shape, type_of(self.target).shape
        lead = len(xs) - len(ts)
        return tuple(range(lead)) + tuple(lead + i for i, d in enumerate(ts) if d == 1 and xs[lead + i] != 1)

    def __repr__(self):
        return f"sum_axes({self.x.name} -> {self.target.name})"


class SliceOf(Deferred):
    """``begin`` or ``size`` of python slice ``start:stop:step`` over dim ``axis`` of ``tensor``
    (``x[1:]`` of a dim known only at the feed)."""

    __slots__ = ("tensor", "axis", "bounds", "part")

    def __init__(self, tensor, axis: int, bounds: tuple, part: str):
        self.tensor, self.axis, self.bounds, self.part = tensor, int(axis), tuple(bounds), part

    @property
    def tensors(self):
        return (self.tensor,)

    def lowered(self, type_of, value_of):
        d = type_of(self.tensor).shape[self.axis]
        begin, end, step = slice(*self.bounds).indices(d)
        count = len(range(begin, end, step))
        return count if self.part == "size" else (begin if count else 0)

    def __repr__(self):
        return f"slice_{self.part}({self.tensor.name}, {self.axis}, {self.bounds})"


class DimSum(Deferred):
    """The sum of dim ``axis`` over ``tensors`` (a concat gradient's window offset)."""

    __slots__ = ("parts", "axis")

    def __init__(self, parts, axis: int):
        self.parts, self.axis = tuple(parts), int(axis)

    @property
    def tensors(self):
        return self.parts

    def lowered(self, type_of, value_of):
        from .ops.array import dim_add

        total = 0
        for t in self.parts:
            total = dim_add(total, type_of(t).shape[self.axis])
        return total

    def __repr__(self):
        return f"dim_sum({', '.join(t.name for t in self.parts)}; {self.axis})"


class ValueOf(Deferred):
    """The value of int tensor ``tensor`` (a scalar, or a 1-D shape vector), resolved when lowering.

    ``partial`` is what is known of it when the graph is built: for a vector, a tuple of
    ints/``Sym``/None (None: unknown length); for a scalar an int, ``Sym`` or None.
    """

    __slots__ = ("tensor", "partial_value")

    def __init__(self, tensor, partial=None):
        self.tensor = tensor
        self.partial_value = partial

    @property
    def tensors(self):
        return (self.tensor,)

    def partial(self):
        return self.partial_value

    def lowered(self, type_of, value_of):
        return value_of(self)

    def __repr__(self):
        return f"value({self.tensor.name})"


DEFERRED = Deferred


def graph_view(value):
    """``value`` (an attr, maybe nested in tuples/lists) with deferred parts replaced by their
    partial values (None where unknown)."""
    if isinstance(value, DEFERRED):
        return value.partial()
    if isinstance(value, (tuple, list)) and any(_holds_deferred(v) for v in value):
        return type(value)(graph_view(v) for v in value)
    return value


def _holds_deferred(value) -> bool:
    if isinstance(value, DEFERRED):
        return True
    return isinstance(value, (tuple, list)) and any(_holds_deferred(v) for v in value)


def attr_tensors(attrs: dict) -> list:
    """The graph tensors the deferred parts of ``attrs`` refer to (lowering needs them)."""
    out = []

    def walk(v):
        if isinstance(v, DEFERRED):
            out.extend(v.tensors)
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x)
    for v in attrs.values():
        walk(v)
    return out


def remap(value, mapping: dict):
    """``value`` (an attr) with the tensors its deferred parts read replaced by ``mapping[t]``
    where given (an op copied onto other inputs, e.g. a body graph rebuilt for a gradient)."""
    if isinstance(value, DEFERRED):
        new = copy.copy(value)
        for cls in type(value).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                setattr(new, slot, _remap_part(getattr(value, slot), mapping))
        return new
    if isinstance(value, (tuple, list)) and any(_holds_deferred(v) for v in value):
        return type(value)(remap(v, mapping) for v in value)
    return value


def _remap_part(part, mapping):
    if isinstance(part, tuple):
        return tuple(_remap_part(p, mapping) for p in part)
    return mapping.get(part, part) if hasattr(part, "op") else part


def resolve(value, type_of, value_of):
    """``value`` with its deferred parts resolved: ``type_of(tensor)`` gives a graph tensor's
    lowered type, ``value_of(ref)`` a ``ValueOf``'s known value (callables from the lowering)."""
    if isinstance(value, DEFERRED):
        return value.lowered(type_of, value_of)
    if isinstance(value, (tuple, list)) and any(_holds_deferred(v) for v in value):
        return type(value)(resolve(v, type_of, value_of) for v in value)
    return value

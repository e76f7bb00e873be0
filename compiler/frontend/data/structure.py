"""Element structures of tf.data: nesting (tuples, namedtuples, dicts) and TensorSpec.

As in ``tf.data``, tuples (namedtuples included) and dicts are structure, while a list is
a value (``from_tensor_slices([1, 2, 3])`` slices one tensor); dict entries are flattened
in sorted key order.  A component's static shape is a tuple of ints and ``None`` (unknown);
:func:`ir_dims` turns it into graph dims, where Kiln allows only a leading unknown dim
(the symbolic batch size).
"""
from __future__ import annotations

from ...ir.types import N, as_dtype
from ..graph import Tensor
from ..tensor_shape import TensorShape


def is_nested(value) -> bool:
    """Whether ``value`` is structure (tuple, namedtuple, dict) rather than a component."""
    return isinstance(value, (tuple, dict))


def flatten(value) -> list:
    """The components of a nested structure, depth first (dicts in sorted key order)."""
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in flatten(value[k])]
    if isinstance(value, tuple):
        return [x for v in value for x in flatten(v)]
    return [value]


def flatten_up_to(template, value) -> list:
    """``value``'s parts at the places of ``template``'s components (a part may itself be a
    tuple, e.g. a shape): ``padded_shapes`` follow the element's structure this way."""
    if isinstance(template, dict):
        if not isinstance(value, dict) or sorted(value) != sorted(template):
            check_same_structure(template, value)
        return [x for k in sorted(template) for x in flatten_up_to(template[k], value[k])]
    if isinstance(template, tuple):
        if not isinstance(value, (tuple, list)) or len(value) != len(template):
            check_same_structure(template, value)
        return [x for t, v in zip(template, value) for x in flatten_up_to(t, v)]
    return [value]


def pack(template, flat):
    """Rebuild ``template``'s structure around the components ``flat`` (inverse of flatten)."""
    items = iter(flat)

    def build(t):
        if isinstance(t, dict):
            built = {k: build(t[k]) for k in sorted(t)}
            return type(t)((k, built[k]) for k in t)
        if isinstance(t, tuple):
            parts = [build(v) for v in t]
            return type(t)(*parts) if hasattr(t, "_fields") else type(t)(parts)
        return next(items)

    return build(template)


def map_structure(fn, value):
    """``value``'s structure with ``fn`` applied to each component."""
    return pack(value, [fn(x) for x in flatten(value)])


def same_structure(a, b) -> bool:
    """Whether two structures nest the same way (same containers, keys and lengths)."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and sorted(a) == sorted(b) and \
            all(same_structure(a[k], b[k]) for k in a)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and \
            all(same_structure(x, y) for x, y in zip(a, b))
    return True


def check_same_structure(a, b) -> None:
    """Raise TF's ValueError when ``a`` and ``b`` do not nest the same way."""
    if not same_structure(a, b):
        raise ValueError("The two structures don't have the same nested structure.\n\n"
                         f"First structure: {a!r}\n\nSecond structure: {b!r}")


def to_tuple(value):
    """A map function's result: lists become tuples (as tf.data does), recursively."""
    if isinstance(value, list):
        return tuple(to_tuple(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, to_tuple(v)) for k, v in value.items())
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(to_tuple(v) for v in value)
    return value


class TensorSpec:
    """tf.TensorSpec: the static shape and dtype of one component of a dataset element."""

    def __init__(self, shape, dtype="float32", name=None):
        dims = shape.dims if isinstance(shape, TensorShape) else shape
        if dims is None:
            raise ValueError("Kiln needs a known rank for a TensorSpec")
        self.dims = tuple(None if d is None else int(d) for d in dims)
        self.dtype = as_dtype(dtype)
        self.name = name

    @property
    def shape(self) -> TensorShape:
        return TensorShape(self.dims)

    @classmethod
    def from_tensor(cls, tensor, name=None):
        """The spec of a graph tensor (the batch dim becomes None)."""
        return cls(tensor.shape, tensor.dtype, name)

    def is_compatible_with(self, other) -> bool:
        """Same dtype and rank, and every pair of dims equal or one of them unknown."""
        return self.dtype == other.dtype and len(self.dims) == len(other.dims) and \
            all(a is None or b is None or a == b for a, b in zip(self.dims, other.dims))

    def __eq__(self, other):
        return isinstance(other, TensorSpec) and (self.dims, self.dtype, self.name) == \
            (other.dims, other.dtype, other.name)

    def __hash__(self):
        return hash((self.dims, self.dtype.name, self.name))

    def __repr__(self):
        dims = "(" + ", ".join(str(d) for d in self.dims) + ("," if len(self.dims) == 1 else "") + ")"
        return f"TensorSpec(shape={dims}, dtype={self.dtype!r}, name={self.name!r})"


def output_types(structure):
    return map_structure(lambda s: s.dtype, structure)


def output_shapes(structure):
    return map_structure(lambda s: s.shape, structure)


def output_classes(structure):
    return map_structure(lambda s: Tensor, structure)


def specs_from(types, shapes):
    """The TensorSpec structure of ``Iterator.from_structure(types, shapes)``."""
    if shapes is None:
        raise ValueError("Iterator.from_structure: Kiln needs output_shapes (static shapes "
                         "with at most a leading None) to build get_next's tensors")
    check_same_structure(types, shapes)
    flat_shapes = [s if isinstance(s, TensorShape) else TensorShape(s) for s in flatten(shapes)]
    return pack(types, [TensorSpec(s, t) for t, s in zip(flatten(types), flat_shapes)])


def ir_dims(dims, what: str) -> tuple:
    """Graph dims for a component's shape: a leading None is the batch dim N; Kiln has no
    other unknown dims, so any other None is refused with the component named."""
    if any(d is None for d in dims[1:]):
        shown = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
        raise ValueError(f"{what} has shape {shown}: Kiln allows only the leading dim to be "
                         "unknown (its symbolic batch size); e.g. batch a dataset once, or use "
                         "drop_remainder=True for an inner batch")
    return tuple(N if d is None else d for d in dims)

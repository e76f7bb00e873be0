"""Pipeline sources: tensor slices, whole tensors, ranges, Python generators, zips.

Python and numpy values are converted once, at construction, with TF's default dtypes
(``constant_value_array``: Python floats -> float32, ints -> int32, numpy keeps its dtype),
so later changes to the caller's arrays do not leak in.  Graph tensors (a placeholder for
an initializable iterator, a variable, ...) are captured: the Session evaluates them when
the iterator is initialized, with that run's feeds.
"""
from __future__ import annotations

import numpy as np

from ...ir.types import as_dtype
from .. import errors
from ..convert import constant_value_array
from ..graph import Tensor
from .pipeline import Node
from .structure import TensorSpec, flatten, is_nested, pack


def _component(value):
    """A source component: a graph tensor as is, anything else as a numpy array."""
    return value if isinstance(value, Tensor) else constant_value_array(value)


def _dims(value) -> tuple:
    return tuple(value.shape.dims) if isinstance(value, Tensor) else value.shape


class _Values(Node):
    """A source built from a nested structure of tensors and arrays."""

    def __init__(self, value, spec_of):
        self.components = [_component(v) for v in flatten(value)]
        specs = [TensorSpec(spec_of(_dims(c)), c.dtype)
                 for c in self.components]
        super().__init__(pack(value, specs))

    def own_captured(self):
        return [c for c in self.components if isinstance(c, Tensor)]

    def _arrays(self, ctx) -> list:
        return [ctx.value(c) if isinstance(c, Tensor) else c for c in self.components]


class Tensors(_Values):
    """``from_tensors``: the whole value is the single element."""

    def __init__(self, value):
        super().__init__(value, tuple)

    def elements(self, ctx):
        yield tuple(self._arrays(ctx))


class TensorSlices(_Values):
    """``from_tensor_slices``: element i holds row i of every component."""

    def __init__(self, value):
        super().__init__(value, self._row_dims)
        known = {_dims(c)[0] for c in self.components} - {None}
        if len(known) > 1:
            a, b = sorted(known)[:2]
            raise ValueError(f"Dimensions {a} and {b} are not compatible")

    @staticmethod
    def _row_dims(dims):
        if len(dims) == 0:
            raise ValueError("Unbatching a tensor is only supported for rank >= 1")
        return tuple(dims[1:])

    def elements(self, ctx):
        arrays = self._arrays(ctx)
        sizes = {len(a) for a in arrays}
        if len(sizes) > 1:
            shapes = ", ".join(str(list(a.shape)) for a in arrays)
            raise errors.InvalidArgumentError(None, None, "from_tensor_slices: all components must "
                                              f"have the same size in dimension 0, got shapes {shapes}")
        for i in range(sizes.pop() if sizes else 0):
            yield tuple(a[i] for a in arrays)


class Range(Node):
    """``range(start, stop, step)`` as scalars of ``dtype``."""

    def __init__(self, args, dtype):
        if not 1 <= len(args) <= 3:
            raise TypeError(f"Dataset.range takes 1 to 3 positional arguments, got {len(args)}")
        self.range = range(*(int(a) for a in args))
        self.dtype = as_dtype(dtype)
        super().__init__(TensorSpec((), self.dtype))

    def elements(self, ctx):
        for v in self.range:
            yield (np.array(v, self.dtype.np),)


class Generator(Node):
    """``from_generator``: each pass calls ``generator(*args)`` and converts what it yields
    to the declared dtypes, checking the declared shapes."""

    def __init__(self, generator, structure, args):
        self.generator, self.args = generator, tuple(args or ())
        super().__init__(structure)

    def elements(self, ctx):
        for item in self.generator(*self.args):
            yield tuple(self._convert(item))

    def _convert(self, item):
        """One yielded element as arrays of the declared dtypes, shapes checked."""
        values = flatten(item) if is_nested(self.structure) else [item]
        specs = self.specs
        if len(values) != len(specs):
            raise TypeError(f"from_generator: `generator` yielded an element of structure {item!r} "
                            f"where an element of structure {self.structure!r} was expected")
        out = []
        for value, spec in zip(values, specs):
            arr = np.asarray(value, dtype=spec.dtype.np)
            if len(arr.shape) != len(spec.dims) or any(d is not None and d != s for d, s in zip(spec.dims, arr.shape)):
                raise errors.InvalidArgumentError(
                    None, None, f"`generator` yielded an element of shape {tuple(arr.shape)} where an "
                                f"element of shape {spec.shape} was expected.")
            out.append(arr)
        return out


class Zip(Node):
    """``zip``: element i combines element i of every input; stops at the shortest."""

    def __init__(self, nodes_structure):
        nodes = flatten(nodes_structure)
        super().__init__(pack(nodes_structure, [n.structure for n in nodes]), nodes)

    def elements(self, ctx):
        for parts in zip(*(node.elements(ctx) for node in self.inputs)):
            yield tuple(c for part in parts for c in part)

"""tf.placeholder_with_default: a feed that takes the value of ``input`` when it is not fed.

TF lets ``shape`` be less specific than ``input``'s shape; in Kiln the only unknown dim is
the leading batch dim (``None`` -> N); an unknown shape or inner dim keeps the input's.
Two cases:

* ``shape`` adds nothing Kiln's types can express (it equals the input's shape, or the
  input already has the batch dim): the op is an identity of ``input`` — Kiln can feed any
  tensor, so feeding it replaces the default exactly as in TF.
* ``shape`` relaxes a static leading dim of a build-time constant ``input`` to the batch
  dim: the op is a placeholder ``[N, ...]`` whose default value is remembered on the graph;
  ``Session.run`` feeds that value (via :func:`feeds_with_defaults`) when the op is needed
  and not fed, which also binds N to the default's batch.
"""
from __future__ import annotations

import numpy as np

from ..ir.from_graph import needed_ops
from ..ir.types import Sym, TensorType, shape_str
from .convert import convert_to_tensor
from .graph import Tensor, TensorShape, make_op

#: graph collection of (placeholder tensor, default numpy value) pairs
DEFAULTS_KEY = "kiln_placeholder_defaults"


def _relaxed_shape(x: Tensor, shape, name):
    """``shape`` as IR dims, checked against ``x``'s: equal rank, equal static dims.

    Kiln's only unknown dim is the leading batch dim, so ``shape=None`` (unknown) and a
    ``None`` past the first entry keep ``x``'s dims (a feed must then match them).
    """
    from .core_api import static_shape  # core_api -> session -> this module

    have = x.type.shape
    if shape is None:
        return have
    if isinstance(shape, TensorShape):
        shape = shape.as_list()
    if isinstance(shape, (list, tuple)):
        shape = [have[i] if d is None and 0 < i < len(have) else d for i, d in enumerate(shape)]
    dims = static_shape(shape, f"placeholder_with_default '{name}'")
    where = f"for '{name}' (placeholder_with_default) with input shapes: {shape_str(have)}"
    if len(dims) != len(have):
        raise ValueError(f"Shapes must be equal rank, but are {len(have)} and {len(dims)} {where}")
    for i, (d, h) in enumerate(zip(dims, have)):
        if not isinstance(d, Sym) and d != h:
            raise ValueError(f"Dimension {i} in both shapes must be equal, but are {h} and {d}. Shapes are "
                             f"{shape_str(have)} and {shape_str(dims)}. {where}")
    return dims


def placeholder_with_default(input, shape, name=None):
    """tf.placeholder_with_default(input, shape, name): ``input`` unless fed (see the module doc)."""
    from .ops.array_ops import static_value

    x = convert_to_tensor(input)
    name = name or "PlaceholderWithDefault"
    dims = _relaxed_shape(x, shape, name)
    if tuple(dims) == tuple(x.type.shape):
        return make_op("identity", [x], name=name)
    value = static_value(x)
    if value is None or not isinstance(value, np.ndarray):
        raise ValueError(f"placeholder_with_default '{name}': Kiln can relax a leading dim of the default "
                         f"({shape_str(x.type.shape)} to {shape_str(dims)}) only for a value known when the "
                         f"graph is built (a constant or numpy array); this one is computed by {x.op.name}")
    graph = x.graph
    op = graph.create_op("placeholder", (), {"dtype": x.dtype, "shape": dims}, name,
                         ttype=TensorType(x.dtype, tuple(dims)))
    graph.add_to_collection(DEFAULTS_KEY, (op.outputs[0], np.asarray(value, dtype=x.dtype.np)))
    return op.outputs[0]


def feeds_with_defaults(graph, feeds: dict, tensors, targets) -> dict:
    """``feeds`` plus the default value of each relaxed placeholder_with_default the run needs."""
    pending = [(t, v) for t, v in graph.get_collection(DEFAULTS_KEY) if t not in feeds]
    if not pending:
        return feeds
    needed = needed_ops([t.op for t in tensors if t not in feeds] + list(targets), set(feeds))
    return {**feeds, **{t: v for t, v in pending if t.op in needed}}


TF_API = {"tf": {"placeholder_with_default": placeholder_with_default}}

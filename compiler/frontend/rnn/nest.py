"""Nested structures of RNN states and outputs (TF's ``nest`` for tuples, lists, namedtuples).

A state is a tensor, a python int (a ``state_size``) or a tuple/list/namedtuple of them
(``LSTMStateTuple``, a ``MultiRNNCell``'s tuple of cell states); these helpers walk such
structures the way TF's ``tensorflow.python.util.nest`` does for the cases RNN code uses.
"""
from __future__ import annotations


def is_nested(x) -> bool:
    """True for a tuple or list (namedtuples included): a structure, not a leaf."""
    return isinstance(x, (tuple, list))


def _rebuild(like, items):
    """A sequence of ``like``'s kind (tuple, list or namedtuple) holding ``items``."""
    if isinstance(like, tuple) and hasattr(like, "_fields"):
        return type(like)(*items)
    return type(like)(items)


def flatten(structure) -> list:
    """The leaves of ``structure`` in order (a leaf alone gives a one-element list)."""
    if not is_nested(structure):
        return [structure]
    return [leaf for item in structure for leaf in flatten(item)]


def pack_sequence_as(structure, flat):
    """Rebuild ``structure``'s shape from the leaves ``flat`` (the inverse of flatten)."""
    flat = list(flat)
    if len(flat) != len(flatten(structure)):
        raise ValueError(f"Structure had {len(flatten(structure))} elements, but flat_sequence had {len(flat)}")
    leaves = iter(flat)

    def build(node):
        if not is_nested(node):
            return next(leaves)
        return _rebuild(node, [build(item) for item in node])

    return build(structure)


def assert_same_structure(a, b, what="structures"):
    """Raise ValueError when ``a`` and ``b`` do not nest the same way."""
    if is_nested(a) != is_nested(b) or (is_nested(a) and len(a) != len(b)):
        raise ValueError(f"The two {what} don't have the same nested structure: {a!r} and {b!r}")
    if is_nested(a):
        for x, y in zip(a, b):
            assert_same_structure(x, y, what)


def map_structure(fn, *structures):
    """Apply ``fn`` leaf-wise over structures of one shape; keep the first one's kinds."""
    for other in structures[1:]:
        assert_same_structure(structures[0], other)
    flats = [flatten(s) for s in structures]
    return pack_sequence_as(structures[0], [fn(*leaves) for leaves in zip(*flats)])

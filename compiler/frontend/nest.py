"""Nested structures of tensors (TF's ``nest``): lists, tuples, namedtuples and dicts.

``flatten`` lists the leaves in order (dict values in sorted key order, as TF does);
``pack_like`` rebuilds a structure of the same shape from a flat list of new leaves.
Control-flow ops use them for loop variables and branch results.
"""
from __future__ import annotations


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def flatten(structure, leaf=None) -> list:
    """The leaves of ``structure``; ``leaf(x)`` True stops the descent at ``x``."""
    if leaf is not None and leaf(structure):
        return [structure]
    if isinstance(structure, dict):
        return [x for k in sorted(structure) for x in flatten(structure[k], leaf)]
    if isinstance(structure, (list, tuple)):
        return [x for item in structure for x in flatten(item, leaf)]
    return [structure]


def pack_like(structure, flat: list):
    """``structure`` with its leaves replaced, in order, by the items of ``flat``."""
    flat = list(flat)
    count = len(flatten(structure))
    if count != len(flat):
        raise ValueError(f"the structure has {count} leaves but {len(flat)} values were given")
    it = iter(flat)

    def build(s):
        if isinstance(s, dict):
            items = {k: build(s[k]) for k in sorted(s)}
            return type(s)((k, items[k]) for k in s)
        if _is_namedtuple(s):
            return type(s)(*[build(x) for x in s])
        if isinstance(s, (list, tuple)):
            return type(s)(build(x) for x in s)
        return next(it)

    return build(structure)

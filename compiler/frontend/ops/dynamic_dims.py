"""Helpers for shapes known only when a run is lowered (docs/graph.md, "Shapes known at run
time"): a tensor's dims as deferred attr parts, its rank where Kiln needs it, and whether a
shape tensor's value can be known before the step runs."""
from __future__ import annotations

from ...ir.deferred import DimOf, ShapeOf, ValueOf


def dims_of(x) -> tuple:
    """``x``'s dims for a shape attr: ints and batch dims, ``DimOf(x, i)`` where unknown
    (resolved when lowering); a ``ShapeOf(x)`` when even its rank is unknown."""
    shape = x.type.shape
    if shape is None:
        return ShapeOf(x)
    return tuple(DimOf(x, i) if d is None else d for i, d in enumerate(shape))


def value_source(t):
    """The op whose run-time value ``t``'s value depends on (a placeholder, variable, random
    draw), or None when it is computed from shapes and constants alone (known when lowering)."""
    from ...ir.opdef import REGISTRY

    seen, stack = set(), [t.op]
    while stack:
        op = stack.pop()
        if op in seen or op.type in ("shape", "constant"):
            continue
        seen.add(op)
        opdef = REGISTRY.get(op.type)
        if opdef is None or opdef.evaluate is None or opdef.stateful:
            return op
        stack.extend(i.op for i in op.inputs)
    return None


def deferred_value(t, what, partial=None):
    """``ValueOf(t)`` for a shape tensor computed from shapes; a clear error for one that
    depends on run-time values (Kiln's shapes are fixed when a run is lowered)."""
    src = value_source(t)
    if src is not None:
        raise ValueError(f"{what}: Kiln needs a static shape; the value of {t.name} depends on the "
                         f"{src.type} '{src.name}', which is not known before the step runs")
    return ValueOf(t, partial)


def known_rank(x, what) -> int:
    """``x``'s rank, or a clear error where Kiln needs it while building the graph."""
    if x.type.rank is None:
        raise ValueError(f"{what}: the rank of {x.name} is unknown here; give it a shape "
                         f"(tf.placeholder(..., shape=[...]) or {x.name.split(':')[0]}.set_shape)")
    return x.type.rank

"""Static shape inference of graph ops with partly unknown shapes, following TF's rules.

Graph types may hold unknown dims (None) and unknown ranks (shape None), and the batch dim
``Sym`` is, for compatibility, as unknown as None (TF sees ``?``): ``[N,4]`` meets ``[3,4]``
as ``[3,4]``.  ``graph_infer`` first tries the op kind's IR type rule (exact, keeps the
batch dim); when an operand or shape attr is unknown, or the rule refuses a batch dim that
TF would merge, it uses the partial rules here:

* elementwise kinds broadcast like ``tf.broadcast_static_shape`` (an unknown dim against 1 is
  unknown, against a size > 1 is that size, an unknown rank gives an unknown rank);
* ``add_n``/``concat``/``matmul``/``reshape``/``broadcast_to``/``tile``/``pad`` merge or compute
  what is known, and raise ``ShapeError`` on a definite conflict;
* any other kind runs its IR rule on the known rank with None dims, and falls back to an
  unknown shape when that rule needs a dim it does not have.

Lowering a run signature re-infers every type with the fed shapes (``ir/from_graph.py``),
so the IR never sees these partial types.
"""
from __future__ import annotations

from ..ir.deferred import attr_tensors, graph_view
from ..ir.opdef import infer_type
from ..ir.ops import math as M
from ..ir.types import ShapeError, Sym, TensorType, dim_mul, is_known_shape, normalize_axis, shape_str

ELEMENTWISE = frozenset(M.UNARY) | frozenset(M.ARITH) | frozenset(M.COMPARE) | frozenset(M.LOGICAL) \
    | frozenset({"select", "cast", "identity", "stop_gradient", "check_range"})
_SHAPE_ATTRS = ("shape", "multiples", "input_shape", "filter_shape")


def _unknown(d) -> bool:
    return d is None or isinstance(d, Sym)


def merge_dim(a, b, what="dims"):
    """TF's Dimension.merge_with: equal, or the known one of a known and an unknown dim."""
    if a == b:
        return a
    if _unknown(a) and _unknown(b):
        return None
    if _unknown(a):
        return b
    if _unknown(b):
        return a
    raise ShapeError(f"{what} must be equal, but are {a} and {b}")


def merge_shapes(a, b):
    """TF's TensorShape.merge_with on graph shapes (None: unknown rank)."""
    if a is None:
        return b
    if b is None:
        return a
    if len(a) != len(b):
        raise ShapeError(f"shapes {shape_str(a)} and {shape_str(b)} differ in rank")
    try:
        return tuple(merge_dim(x, y) for x, y in zip(a, b))
    except ShapeError as err:
        raise ShapeError(f"shapes {shape_str(a)} and {shape_str(b)} are not compatible: {err}") from None


def compatible(a, b) -> bool:
    """TF's TensorShape.is_compatible_with on graph shapes (batch dims count as unknown)."""
    try:
        merge_shapes(a, b)
    except ShapeError:
        return False
    return True


def broadcast_dim(a, b):
    """One dim of tf.broadcast_static_shape."""
    if a == b:
        return a
    if not _unknown(a) and not _unknown(b):
        if a == 1:
            return b
        if b == 1:
            return a
        raise ShapeError(f"dimensions {a} and {b} are incompatible for broadcasting")
    known = b if _unknown(a) else a
    if _unknown(known):
        return None
    return (a if known is b else b) if known == 1 else known


def broadcast_partial(a, b):
    """tf.broadcast_static_shape of two graph shapes (None: unknown rank)."""
    if a is None or b is None:
        return None
    width = max(len(a), len(b))
    ra = (1,) * (width - len(a)) + tuple(a)
    rb = (1,) * (width - len(b)) + tuple(b)
    try:
        return tuple(broadcast_dim(x, y) for x, y in zip(ra, rb))
    except ShapeError:
        raise ShapeError(f"shapes {shape_str(a)} and {shape_str(b)} are incompatible for broadcasting") from None


def _scalar_probe(kind, inputs, attrs):
    """The result dtype (and the rule's dtype checks) from the kind's rule on scalars."""
    return infer_type(kind, [TensorType(t.dtype, ()) for t in inputs], attrs).dtype


# ----------------------------------------------------------------------------- partial rules
def _elementwise(kind, inputs, attrs):
    shape = inputs[0].shape
    for t in inputs[1:]:
        shape = broadcast_partial(shape, t.shape)
    return TensorType(_scalar_probe(kind, inputs, attrs), shape)


def _add_n(kind, inputs, attrs):
    shape = inputs[0].shape
    for t in inputs[1:]:
        if t.dtype != inputs[0].dtype:
            raise ShapeError(f"add_n inputs must have the same dtype: {inputs[0].dtype.name} vs {t.dtype.name}")
        shape = merge_shapes(shape, t.shape)
    return TensorType(inputs[0].dtype, shape)


def _matmul(kind, inputs, attrs):
    a, b = inputs
    dtype = _scalar_probe_matmul(a, b, attrs)
    if a.shape is None or b.shape is None:
        return TensorType(dtype, None)
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ShapeError(f"matmul needs rank >= 2 operands, got {shape_str(a.shape)} and {shape_str(b.shape)}")
    ta, tb = attrs.get("transpose_a"), attrs.get("transpose_b")
    m, ka = (a.shape[-1], a.shape[-2]) if ta else (a.shape[-2], a.shape[-1])
    kb, n = (b.shape[-1], b.shape[-2]) if tb else (b.shape[-2], b.shape[-1])
    try:
        merge_dim(ka, kb)
    except ShapeError:
        raise ShapeError(f"inner dimensions differ: {shape_str(a.shape)} x {shape_str(b.shape)} ({ka} vs {kb})") from None
    return TensorType(dtype, broadcast_partial(a.shape[:-2], b.shape[:-2]) + (m, n))


def _scalar_probe_matmul(a, b, attrs):
    return infer_type("matmul", [TensorType(a.dtype, (1, 1)), TensorType(b.dtype, (1, 1))], attrs).dtype


def _known_count(shape):
    if shape is None or any(d is None for d in shape):
        return None
    try:
        return dim_mul_all(shape)
    except ShapeError:
        return None


def dim_mul_all(shape):
    total = 1
    for d in shape:
        total = dim_mul(total, d)
    return total


def _reshape(kind, inputs, attrs):
    (x,) = inputs
    shape = attrs["shape"]
    if shape is None:
        return TensorType(x.dtype, None)
    dims = tuple(shape)
    holes = [i for i, d in enumerate(dims) if isinstance(d, int) and d == -1]
    rest = [d for i, d in enumerate(dims) if i not in holes]
    total, known = _known_count(x.shape), _known_count(rest) if all(d is not None for d in rest) else None
    if holes:
        fill = None
        if total is not None and known is not None and not isinstance(total, Sym) and not isinstance(known, Sym):
            if known == 0 or total % known:
                raise ShapeError(f"cannot reshape a tensor of shape {shape_str(x.shape)} ({total} elements) "
                                 f"to {shape_str(dims)}")
            fill = total // known
        dims = dims[:holes[0]] + (fill,) + dims[holes[0] + 1:]
    elif total is not None and known is not None and not isinstance(total, Sym) and not isinstance(known, Sym) \
            and total != known:
        raise ShapeError(f"cannot reshape a tensor of shape {shape_str(x.shape)} ({total} elements) to "
                         f"{shape_str(dims)} ({known} elements)")
    return TensorType(x.dtype, dims)


def _broadcast_to(kind, inputs, attrs):
    (x,) = inputs
    shape = attrs["shape"]
    if shape is None:
        return TensorType(x.dtype, None)
    shape = tuple(shape)
    if x.shape is not None:
        if len(x.shape) > len(shape):
            raise ShapeError(f"cannot broadcast shape {shape_str(x.shape)} to {shape_str(shape)}")
        out = broadcast_partial(x.shape, shape)
        shape = tuple(s if s is not None else o for s, o in zip(shape, out))
    return TensorType(x.dtype, shape)


def _concat(kind, inputs, attrs):
    ranks = {len(t.shape) for t in inputs if t.shape is not None}
    dtype = inputs[0].dtype
    if any(t.dtype != dtype for t in inputs):
        raise ShapeError("concat inputs differ in dtype")
    if len(ranks) > 1:
        raise ShapeError(f"concat inputs differ in rank: {', '.join(shape_str(t.shape) for t in inputs)}")
    if not ranks:
        return TensorType(dtype, None)
    rank = ranks.pop()
    axis = normalize_axis(attrs["axis"], rank)
    out, total = [None] * rank, 0
    for t in inputs:
        if t.shape is None:
            total = None
            continue
        for i, d in enumerate(t.shape):
            if i != axis:
                try:
                    out[i] = merge_dim(out[i], d) if out[i] is not None else d
                except ShapeError:
                    raise ShapeError(f"shapes {', '.join(shape_str(s.shape) for s in inputs)} differ outside "
                                     f"the concat axis {axis}") from None
        d = t.shape[axis]
        total = None if total is None or _unknown(d) else total + d
    out[axis] = total
    return TensorType(dtype, tuple(out))


def _tile(kind, inputs, attrs):
    (x,) = inputs
    mult = attrs["multiples"]
    if x.shape is None:
        return TensorType(x.dtype, None if mult is None else (None,) * len(mult))
    if mult is None:
        return TensorType(x.dtype, (None,) * len(x.shape))
    return TensorType(x.dtype, tuple(None if d is None or m is None else dim_mul(d, m) for d, m in zip(x.shape, mult)))


def _pad(kind, inputs, attrs):
    (x,) = inputs
    if x.shape is None:
        return TensorType(x.dtype, None)
    pads = attrs["paddings"]
    return TensorType(x.dtype, tuple(None if _unknown(d) and (lo or hi) else (d if _unknown(d) else d + lo + hi)
                                     for d, (lo, hi) in zip(x.shape, pads)))


def _reduce(kind, inputs, attrs):
    (x,) = inputs
    axes, keep = attrs["axes"], attrs["keepdims"]
    if axes is None:  # every axis of a tensor of unknown rank
        return TensorType(x.dtype, None if keep else ())
    if x.shape is None:
        return TensorType(x.dtype, None)
    return infer_type(kind, inputs, attrs)


def _slice(kind, inputs, attrs):
    (x,) = inputs
    if x.shape is not None and len(attrs["size"]) != len(x.shape):
        raise ShapeError(f"begin/size/strides need {len(x.shape)} entries for shape {shape_str(x.shape)}")
    return TensorType(x.dtype, tuple(attrs["size"]))


PARTIAL_RULES = {"add_n": _add_n, "matmul": _matmul, "reshape": _reshape, "broadcast_to": _broadcast_to,
                 "concat": _concat, "tile": _tile, "pad": _pad, **{k: _reduce for k in M.REDUCE},
                 "shape": infer_type, "slice": _slice}  # (its rule gives [?] for an unknown rank)


def _fallback(kind, inputs, attrs):
    """The IR rule on the known rank with None dims; an unknown shape when it needs more."""
    if all(t.shape is not None for t in inputs) and all(attrs.get(a, ()) is not None for a in _SHAPE_ATTRS):
        try:
            return infer_type(kind, inputs, attrs)
        except (ShapeError, TypeError):
            pass
    dtype = attrs.get("dtype") or attrs.get("out_type") or attrs.get("output_type")
    from ..ir.types import as_dtype

    return TensorType(as_dtype(dtype) if dtype is not None else inputs[0].dtype, None)


def partial_infer(kind, inputs, attrs) -> TensorType:
    """The graph type of a ``kind`` op whose operands or attrs are partly unknown."""
    if kind in ELEMENTWISE:
        return _elementwise(kind, inputs, attrs)
    rule = PARTIAL_RULES.get(kind)
    return rule(kind, inputs, attrs) if rule else _fallback(kind, inputs, attrs)


def _attrs_known(view, attrs) -> bool:
    """No shape attr has an unknown dim and no deferred attr is unknown in the graph view."""
    for name, value in view.items():
        deferred_here = bool(attr_tensors({name: attrs[name]}))
        if name in _SHAPE_ATTRS or deferred_here and isinstance(value, (tuple, list)):
            if not (isinstance(value, (tuple, list)) and is_known_shape(value)):
                return False
        elif deferred_here and value is None:
            return False
    return True


def graph_infer(kind, input_types, attrs) -> TensorType:
    """The graph type of a new op (see the module doc); ``ShapeError`` on a definite conflict."""
    view = {k: graph_view(v) for k, v in attrs.items()}
    known = all(is_known_shape(t.shape) for t in input_types) and _attrs_known(view, attrs)
    if known:
        try:
            return infer_type(kind, input_types, view)
        except ShapeError:
            # TF merges a batch dim with a static size; kinds without a partial rule keep
            # the IR rule's verdict (their operands are all known here)
            shape_attrs = [view[a] for a in _SHAPE_ATTRS if isinstance(view.get(a), (tuple, list))]
            sym = any(isinstance(d, Sym) for dims in [t.shape for t in input_types] + shape_attrs for d in dims)
            if not sym or not (kind in ELEMENTWISE or kind in PARTIAL_RULES):
                raise
    return partial_infer(kind, list(input_types), view)

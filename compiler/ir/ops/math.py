"""Math op kinds: elementwise unary/binary (numpy broadcasting), select, cast, add_n,
reductions, arg-reductions and batched matmul."""
from __future__ import annotations

import numpy as np

from ..opdef import register_op
from ..types import ShapeError, TensorType, as_dtype, bool_, broadcast_shapes, normalize_axis, shape_str


# ----------------------------------------------------------------------------- unary
def _erf(x):
    from math import erf

    return np.vectorize(erf, otypes=[x.dtype])(x) if x.size else x.copy()


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


def _elu(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(x.dtype)


def _softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


UNARY = {
    "neg": np.negative, "abs": np.abs, "sign": np.sign, "exp": np.exp, "log": np.log,
    "log1p": np.log1p, "expm1": np.expm1, "sqrt": np.sqrt,
    "rsqrt": lambda x: (1 / np.sqrt(x)).astype(x.dtype), "square": np.square,
    "reciprocal": lambda x: (1 / x).astype(x.dtype), "tanh": np.tanh, "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0).astype(x.dtype), "elu": _elu, "softplus": _softplus,
    "sin": np.sin, "cos": np.cos, "floor": np.floor, "ceil": np.ceil,
    "round": lambda x: np.rint(x).astype(x.dtype),  # half to even, like TF's Round
    "erf": _erf, "logical_not": np.logical_not, "is_nan": np.isnan, "is_finite": np.isfinite,
}
FLOAT_ONLY = {"exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "tanh", "sigmoid", "elu", "softplus",
              "sin", "cos", "floor", "ceil", "erf", "is_nan", "is_finite"}
BOOL_RESULT_UNARY = {"is_nan", "is_finite", "logical_not"}


def _unary_rule(kind):
    def infer(inputs):
        (x,) = inputs
        if kind == "logical_not" and not x.dtype.is_bool:
            raise ShapeError(f"logical_not needs a bool operand, got {x.dtype.name}")
        if kind in FLOAT_ONLY and not x.dtype.is_floating:
            raise ShapeError(f"{kind} needs a floating operand, got {x.dtype.name}")
        if x.dtype.is_bool and kind not in ("logical_not",):
            raise ShapeError(f"{kind} is not defined for bool")
        return TensorType(bool_, x.shape) if kind in BOOL_RESULT_UNARY else x

    return infer


def _elementwise_eval(fn):
    """Wrap a numpy function of the operands (unary or binary) as an evaluate; IEEE warnings off."""
    def evaluate(ctx, *xs):
        with np.errstate(all="ignore"):
            return fn(*xs)

    return evaluate


for _kind, _fn in UNARY.items():
    register_op(_kind, _unary_rule(_kind), _elementwise_eval(_fn), arity=1)


# ----------------------------------------------------------------------------- binary
def _check_int_divisor(a, b):
    """TF fails on an integer division (or modulo) by zero instead of returning garbage."""
    if np.issubdtype(a.dtype, np.integer) and np.any(b == 0):
        raise ZeroDivisionError("Integer division by zero")


def _floordiv(a, b):
    _check_int_divisor(a, b)
    if np.issubdtype(a.dtype, np.integer):
        return np.floor_divide(a, b)
    return np.floor(a / b)


def _floormod(a, b):
    _check_int_divisor(a, b)
    return np.mod(a, b)


def _truncdiv_or_div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return _floordiv(a, b)  # TF1 tf.div on ints rounds toward -inf like python //
    return np.true_divide(a, b)


def _pow(a, b):
    if np.issubdtype(a.dtype, np.integer) and np.any(b < 0):
        raise ValueError("Integers to negative integer powers are not allowed")
    return np.power(a, b)


ARITH = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": _truncdiv_or_div,
    "floordiv": _floordiv, "mod": _floormod, "pow": _pow,
    "maximum": np.maximum, "minimum": np.minimum,
}
COMPARE = {
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
}
LOGICAL = {"logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor}


def _binary_rule(kind):
    def infer(inputs):
        a, b = inputs
        if a.dtype != b.dtype:
            raise ShapeError(f"operand dtypes differ: {a.dtype.name} vs {b.dtype.name}")
        shape = broadcast_shapes(a.shape, b.shape)
        if kind in LOGICAL:
            if not a.dtype.is_bool:
                raise ShapeError(f"{kind} needs bool operands, got {a.dtype.name}")
            return TensorType(bool_, shape)
        if kind in COMPARE:
            return TensorType(bool_, shape)
        if a.dtype.is_bool:
            raise ShapeError(f"{kind} is not defined for bool operands")
        return TensorType(a.dtype, shape)

    return infer


for _table in (ARITH, COMPARE, LOGICAL):
    for _kind, _fn in _table.items():
        register_op(_kind, _binary_rule(_kind), _elementwise_eval(_fn), arity=2)


def _infer_select(inputs):
    cond, a, b = inputs
    if not cond.dtype.is_bool:
        raise ShapeError(f"condition must be bool, got {cond.dtype.name}")
    if a.dtype != b.dtype:
        raise ShapeError(f"branches differ in dtype: {a.dtype.name} vs {b.dtype.name}")
    return TensorType(a.dtype, broadcast_shapes(cond.shape, broadcast_shapes(a.shape, b.shape)))


register_op("select", _infer_select, lambda ctx, c, a, b: np.where(c, a, b), arity=3,
            doc="elementwise choice with broadcasting (tf.where with x and y)")


def _infer_cast(inputs, *, dtype):
    return TensorType(as_dtype(dtype), inputs[0].shape)


def _eval_cast(ctx, x, *, dtype):
    dtype = as_dtype(dtype)
    if dtype.is_integer and np.issubdtype(x.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            return np.trunc(x).astype(dtype.np)
    return x.astype(dtype.np)


register_op("cast", _infer_cast, _eval_cast, arity=1)


def _infer_add_n(inputs):
    if not inputs:
        raise ShapeError("add_n needs at least one input")
    first = inputs[0]
    for t in inputs[1:]:
        if t != first:
            raise ShapeError(f"add_n inputs must have the same type: {first} vs {t}")
    return first


def _eval_add_n(ctx, *xs):
    out = xs[0].copy()
    for x in xs[1:]:
        out = out + x
    return out


register_op("add_n", _infer_add_n, _eval_add_n)


# ----------------------------------------------------------------------------- reductions
def reduction_axes(rank, axes):
    """Sorted, deduplicated, non-negative reduction axes (a scalar has none to reduce)."""
    if rank == 0 and axes:
        raise ShapeError(f"invalid reduction axes {list(axes)} for a scalar (rank 0)")
    out = sorted({normalize_axis(a, rank) for a in axes})
    return tuple(out)


def _reduce_rule(kind):
    def infer(inputs, *, axes, keepdims):
        (x,) = inputs
        if kind in ("reduce_all", "reduce_any"):
            if not x.dtype.is_bool:
                raise ShapeError(f"{kind} needs bool input, got {x.dtype.name}")
        elif x.dtype.is_bool:
            raise ShapeError(f"{kind} is not defined for bool input")
        axes = reduction_axes(x.rank, axes)
        shape = tuple((1 if i in axes else d) for i, d in enumerate(x.shape) if keepdims or i not in axes)
        return TensorType(x.dtype, shape)

    return infer


def _mean(x, axis, keepdims):
    """Mean; integer means truncate toward zero (TF divides the integer sum by the count)."""
    if np.issubdtype(x.dtype, np.integer):
        s = np.sum(x, axis=axis, keepdims=keepdims, dtype=np.int64)
        n = max(1, int(np.prod([x.shape[a] for a in axis], dtype=np.int64)))
        return (np.sign(s) * (np.abs(s) // n)).astype(x.dtype)
    return np.mean(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


def _extreme(fn, lowest):
    """reduce_max (lowest=True) / reduce_min: an empty reduction gives the dtype's lowest/highest value like TF."""
    def reduce(x, axis, keepdims):
        if x.size:
            return fn(x, axis=axis, keepdims=keepdims)
        shape = np.sum(x, axis=axis, keepdims=keepdims).shape
        if np.issubdtype(x.dtype, np.floating):
            fill = -np.inf if lowest else np.inf
        else:
            fill = np.iinfo(x.dtype).min if lowest else np.iinfo(x.dtype).max
        return np.full(shape, fill, x.dtype)

    return reduce


REDUCE = {
    "reduce_sum": lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype),
    "reduce_mean": _mean,
    "reduce_max": _extreme(np.max, True),
    "reduce_min": _extreme(np.min, False),
    "reduce_prod": lambda x, axis, keepdims: np.prod(x, axis=axis, keepdims=keepdims, dtype=x.dtype),
    "reduce_all": lambda x, axis, keepdims: np.all(x, axis=axis, keepdims=keepdims),
    "reduce_any": lambda x, axis, keepdims: np.any(x, axis=axis, keepdims=keepdims),
}


def _reduce_eval(fn):
    def evaluate(ctx, x, *, axes, keepdims):
        return fn(x, reduction_axes(x.ndim, axes), keepdims)

    return evaluate


for _kind, _fn in REDUCE.items():
    register_op(_kind, _reduce_rule(_kind), _reduce_eval(_fn), arity=1,
                doc="attrs: axes (tuple, empty = no reduction), keepdims")


def _arg_rule(inputs, *, axis, output_type):
    (x,) = inputs
    if x.dtype.is_bool:
        raise ShapeError("argmax/argmin are not defined for bool")
    if x.rank == 0:
        raise ShapeError("argmax/argmin need a tensor of rank >= 1")
    if as_dtype(output_type).short not in ("i32", "i64"):
        raise ShapeError(f"output_type must be int32 or int64, got {as_dtype(output_type).name}")
    axis = normalize_axis(axis, x.rank)
    return TensorType(as_dtype(output_type), tuple(d for i, d in enumerate(x.shape) if i != axis))


register_op("argmax", _arg_rule, lambda ctx, x, *, axis, output_type: np.argmax(x, axis=axis).astype(as_dtype(output_type).np), arity=1)
register_op("argmin", _arg_rule, lambda ctx, x, *, axis, output_type: np.argmin(x, axis=axis).astype(as_dtype(output_type).np), arity=1)


# ----------------------------------------------------------------------------- matmul
def _infer_matmul(inputs, *, transpose_a, transpose_b):
    a, b = inputs
    if a.dtype != b.dtype:
        raise ShapeError(f"operand dtypes differ: {a.dtype.name} vs {b.dtype.name}")
    if a.dtype.is_bool:
        raise ShapeError("matmul is not defined for bool")
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul needs rank >= 2 operands, got {shape_str(a.shape)} and {shape_str(b.shape)}")
    m, ka = (a.shape[-1], a.shape[-2]) if transpose_a else (a.shape[-2], a.shape[-1])
    kb, n = (b.shape[-1], b.shape[-2]) if transpose_b else (b.shape[-2], b.shape[-1])
    if ka != kb:
        raise ShapeError(f"inner dimensions differ: {shape_str(a.shape)}{'ᵀ' if transpose_a else ''} x "
                         f"{shape_str(b.shape)}{'ᵀ' if transpose_b else ''} ({ka} vs {kb})")
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ShapeError:
        raise ShapeError(f"batch dimensions of {shape_str(a.shape)} and {shape_str(b.shape)} do not broadcast") from None
    return TensorType(a.dtype, batch + (m, n))


def _eval_matmul(ctx, a, b, *, transpose_a, transpose_b):
    if transpose_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


register_op("matmul", _infer_matmul, _eval_matmul, arity=2, doc="batched a@b with transpose flags")

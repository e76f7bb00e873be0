"""Math op constructors (tf.add, tf.matmul, tf.reduce_sum, ...) and Tensor operator overloads."""
from __future__ import annotations

import numpy as np

from ...ir.types import as_dtype
from ..convert import convert_pair, convert_to_tensor
from ..graph import Tensor, make_op


def _unary(kind, default_name):
    def op(x, name=None):
        return make_op(kind, [convert_to_tensor(x)], name=name or default_name)

    op.__name__ = kind
    op.__doc__ = f"tf.{kind}: elementwise {kind}."
    return op


def _binary(kind, default_name):
    def op(x, y, name=None):
        a, b = convert_pair(x, y)
        return make_op(kind, [a, b], name=name or default_name)

    op.__name__ = kind
    op.__doc__ = f"tf.{kind}: elementwise {kind} with numpy broadcasting."
    return op


negative = _unary("neg", "Neg")
abs = _unary("abs", "Abs")  # noqa: A001
sign = _unary("sign", "Sign")
exp = _unary("exp", "Exp")
log = _unary("log", "Log")
log1p = _unary("log1p", "Log1p")
expm1 = _unary("expm1", "Expm1")
sqrt = _unary("sqrt", "Sqrt")
rsqrt = _unary("rsqrt", "Rsqrt")
square = _unary("square", "Square")
reciprocal = _unary("reciprocal", "Reciprocal")
tanh = _unary("tanh", "Tanh")
sigmoid = _unary("sigmoid", "Sigmoid")
relu = _unary("relu", "Relu")
elu = _unary("elu", "Elu")
softplus = _unary("softplus", "Softplus")
sin = _unary("sin", "Sin")
cos = _unary("cos", "Cos")
floor = _unary("floor", "Floor")
ceil = _unary("ceil", "Ceil")
round = _unary("round", "Round")  # noqa: A001
erf = _unary("erf", "Erf")
logical_not = _unary("logical_not", "LogicalNot")
is_nan = _unary("is_nan", "IsNan")
is_finite = _unary("is_finite", "IsFinite")

add = _binary("add", "Add")
subtract = _binary("sub", "Sub")
multiply = _binary("mul", "Mul")
floordiv = _binary("floordiv", "FloorDiv")
floormod = _binary("mod", "FloorMod")
maximum = _binary("maximum", "Maximum")
minimum = _binary("minimum", "Minimum")
pow = _binary("pow", "Pow")  # noqa: A001
equal = _binary("equal", "Equal")
not_equal = _binary("not_equal", "NotEqual")
less = _binary("less", "Less")
less_equal = _binary("less_equal", "LessEqual")
greater = _binary("greater", "Greater")
greater_equal = _binary("greater_equal", "GreaterEqual")
logical_and = _binary("logical_and", "LogicalAnd")
logical_or = _binary("logical_or", "LogicalOr")
logical_xor = _binary("logical_xor", "LogicalXor")
_div_op = _binary("div", "Div")


def div(x, y, name=None):
    """tf.div (TF1): true division for floats, floor division for integers."""
    return _div_op(x, y, name=name)


def truediv(x, y, name=None):
    """tf.truediv / `/`: integers are cast to float64 (int32 -> float64 like TF) first."""
    a, b = convert_pair(x, y)
    if a.dtype.is_integer:
        a, b = cast(a, "float64"), cast(b, "float64")
    return _div_op(a, b, name=name or "truediv")


def divide(x, y, name=None):
    return truediv(x, y, name=name)


def squared_difference(x, y, name=None):
    a, b = convert_pair(x, y)
    return square(subtract(a, b), name=name or "SquaredDifference")


def cast(x, dtype, name=None):
    """tf.cast: float -> int truncates toward zero."""
    x = convert_to_tensor(x)
    dtype = as_dtype(dtype)
    if x.dtype == dtype:
        return x
    return make_op("cast", [x], {"dtype": dtype}, name=name or "Cast")


def to_float(x, name=None):
    return cast(x, "float32", name=name)


def to_int32(x, name=None):
    return cast(x, "int32", name=name)


def to_int64(x, name=None):
    return cast(x, "int64", name=name)


def add_n(inputs, name=None):
    inputs = [convert_to_tensor(t) for t in inputs]
    if len(inputs) == 1:
        return inputs[0]
    return make_op("add_n", inputs, name=name or "AddN")


def scalar_mul(scalar, x, name=None):
    return multiply(scalar, x, name=name)


def where(condition, x=None, y=None, name=None):
    """tf.where (TF1): with x and y an elementwise select (broadcasting); alone, not supported."""
    if x is None and y is None:
        raise ValueError("tf.where(condition) without x and y returns a data-dependent shape, "
                         "which Kiln's static shapes cannot express; pass x and y")
    cond = convert_to_tensor(condition)
    a, b = convert_pair(x, y)
    return make_op("select", [cond, a, b], name=name or "Select")


where_v2 = where


def matmul(a, b, transpose_a=False, transpose_b=False, adjoint_a=False, adjoint_b=False,
           a_is_sparse=False, b_is_sparse=False, name=None):
    """tf.matmul: (batched) matrix product; batch dims broadcast."""
    a, b = convert_pair(a, b)
    attrs = {"transpose_a": bool(transpose_a or adjoint_a), "transpose_b": bool(transpose_b or adjoint_b)}
    return make_op("matmul", [a, b], attrs, name=name or "MatMul")


def _axes_attr(x, axis):
    if axis is None:
        return tuple(range(x.type.rank))
    if isinstance(axis, Tensor):
        raise TypeError("Kiln needs a static reduction axis (python int or list), not a tensor")
    if isinstance(axis, (int, np.integer)):
        return (int(axis),)
    return tuple(int(a) for a in axis)


def _reduce(kind, default_name):
    def op(input_tensor, axis=None, keepdims=None, name=None, reduction_indices=None, keep_dims=None):
        x = convert_to_tensor(input_tensor)
        if axis is None:
            axis = reduction_indices
        keep = bool(keepdims if keepdims is not None else (keep_dims or False))
        return make_op(kind, [x], {"axes": _axes_attr(x, axis), "keepdims": keep}, name=name or default_name)

    op.__name__ = kind
    op.__doc__ = f"tf.{kind}: axis None/int/list, keepdims (keep_dims and reduction_indices accepted)."
    return op


reduce_sum = _reduce("reduce_sum", "Sum")
reduce_mean = _reduce("reduce_mean", "Mean")
reduce_max = _reduce("reduce_max", "Max")
reduce_min = _reduce("reduce_min", "Min")
reduce_prod = _reduce("reduce_prod", "Prod")
reduce_all = _reduce("reduce_all", "All")
reduce_any = _reduce("reduce_any", "Any")


def reduce_logsumexp(input_tensor, axis=None, keepdims=False, name=None, keep_dims=None):
    """log(sum(exp(x))) computed stably around the (gradient-stopped) max."""
    x = convert_to_tensor(input_tensor)
    m = stop_gradient_(reduce_max(x, axis, keepdims=True))
    out = add(log(reduce_sum(exp(subtract(x, m)), axis, keepdims=True)), m)
    # summing over the kept size-1 axes drops them unless keepdims is asked for
    return reduce_sum(out, axis, keepdims=bool(keepdims or keep_dims), name=name or "ReduceLogSumExp")


def stop_gradient_(x):
    return make_op("stop_gradient", [x], name="StopGradient")


def _arg(kind, default_name):
    def op(input, axis=None, name=None, dimension=None, output_type="int64"):
        x = convert_to_tensor(input)
        if axis is None:
            axis = dimension if dimension is not None else 0
        return make_op(kind, [x], {"axis": int(axis), "output_type": as_dtype(output_type)}, name=name or default_name)

    op.__name__ = kind
    return op


argmax = _arg("argmax", "ArgMax")
argmin = _arg("argmin", "ArgMin")


def norm(tensor, ord="euclidean", axis=None, keepdims=None, name=None, keep_dims=None):
    """tf.norm for ord 'euclidean'/2 (sqrt of sum of squares), 1 and inf over the given axes."""
    x = convert_to_tensor(tensor)
    keep = bool(keepdims or keep_dims)
    if ord in ("euclidean", "fro", 2, 2.0):
        return sqrt(reduce_sum(square(x), axis, keepdims=keep), name=name or "norm")
    if ord in (1, 1.0):
        return reduce_sum(abs(x), axis, keepdims=keep, name=name or "norm")
    if ord == np.inf:
        return reduce_max(abs(x), axis, keepdims=keep, name=name or "norm")
    raise ValueError(f"tf.norm: ord={ord!r} is not supported (use 'euclidean', 1, 2 or np.inf)")


def count_nonzero(input_tensor, axis=None, keepdims=False, dtype="int64", name=None):
    x = convert_to_tensor(input_tensor)
    nz = cast(not_equal(x, convert_to_tensor(0, dtype=x.dtype) if not x.dtype.is_bool else False), dtype)
    return reduce_sum(nz, axis, keepdims=keepdims, name=name)


# ----------------------------------------------------------------------------- overloads
def _getitem(self, key):
    from .array_ops import strided_slice_from_key

    return strided_slice_from_key(self, key)


def _install_overloads():
    def binop(fn):
        return lambda self, other: fn(self, other)

    def rbinop(fn):
        return lambda self, other: fn(other, self)

    table = {"add": add, "sub": subtract, "mul": multiply, "truediv": truediv, "floordiv": floordiv,
             "mod": floormod, "pow": pow, "matmul": matmul, "and": logical_and, "or": logical_or,
             "xor": logical_xor}
    for name, fn in table.items():
        setattr(Tensor, f"__{name}__", binop(fn))
        setattr(Tensor, f"__r{name}__", rbinop(fn))
    Tensor.__lt__ = binop(less)
    Tensor.__le__ = binop(less_equal)
    Tensor.__gt__ = binop(greater)
    Tensor.__ge__ = binop(greater_equal)
    Tensor.__neg__ = lambda self: negative(self)
    Tensor.__abs__ = lambda self: abs(self)
    Tensor.__invert__ = lambda self: logical_not(self)
    Tensor.__getitem__ = _getitem


_install_overloads()

TF_API = {
    "tf": {
        "negative": negative, "abs": abs, "sign": sign, "exp": exp, "log": log, "log1p": log1p,
        "expm1": expm1, "sqrt": sqrt, "rsqrt": rsqrt, "square": square, "reciprocal": reciprocal,
        "tanh": tanh, "sigmoid": sigmoid, "sin": sin, "cos": cos, "floor": floor, "ceil": ceil,
        "round": round, "erf": erf, "logical_not": logical_not, "is_nan": is_nan, "is_finite": is_finite,
        "add": add, "subtract": subtract, "multiply": multiply, "div": div, "divide": divide,
        "truediv": truediv, "floordiv": floordiv, "floor_div": floordiv, "mod": floormod,
        "floormod": floormod, "maximum": maximum, "minimum": minimum, "pow": pow,
        "equal": equal, "not_equal": not_equal, "less": less, "less_equal": less_equal,
        "greater": greater, "greater_equal": greater_equal, "logical_and": logical_and,
        "logical_or": logical_or, "logical_xor": logical_xor, "squared_difference": squared_difference,
        "cast": cast, "to_float": to_float, "to_int32": to_int32, "to_int64": to_int64,
        "add_n": add_n, "scalar_mul": scalar_mul, "where": where, "where_v2": where_v2,
        "matmul": matmul, "reduce_sum": reduce_sum, "reduce_mean": reduce_mean,
        "reduce_max": reduce_max, "reduce_min": reduce_min, "reduce_prod": reduce_prod,
        "reduce_all": reduce_all, "reduce_any": reduce_any, "reduce_logsumexp": reduce_logsumexp,
        "argmax": argmax, "argmin": argmin, "norm": norm, "count_nonzero": count_nonzero,
    },
    "tf.math": {
        "add": add, "subtract": subtract, "multiply": multiply, "divide": divide, "exp": exp,
        "log": log, "sqrt": sqrt, "square": square, "tanh": tanh, "sigmoid": sigmoid, "abs": abs,
        "reduce_sum": reduce_sum, "reduce_mean": reduce_mean, "reduce_max": reduce_max,
        "argmax": argmax, "maximum": maximum, "minimum": minimum, "pow": pow, "equal": equal,
        "reduce_logsumexp": reduce_logsumexp, "log1p": log1p, "erf": erf, "softplus": softplus,
        "squared_difference": squared_difference, "floormod": floormod, "floordiv": floordiv,
        "reciprocal": reciprocal, "is_nan": is_nan, "is_finite": is_finite, "sign": sign,
    },
    "tf.nn": {"relu": relu, "elu": elu, "sigmoid": sigmoid, "tanh": tanh, "softplus": softplus},
}

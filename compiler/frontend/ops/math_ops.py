"""Math op constructors (tf.add, tf.matmul, tf.reduce_sum, ...) and Tensor operator overloads."""
from __future__ import annotations

import numpy as np

from ...ir.types import TensorType, as_dtype, normalize_axis
from ..convert import convert_pair, convert_to_tensor
from ..graph import Tensor, make_op
from ..shape_inference import compatible, merge_shapes


def _unary(kind, default_name):
    def op(x, name=None):
        return make_op(kind, [convert_to_tensor(x)], name=name or default_name)

    op.__name__ = kind
    op.__doc__ = f"tf.{kind}: elementwise {kind}."
    return op


def _same_dtype(op_name, a, b, names=("x", "y")):
    """TF1 refuses mixed dtypes in a binary op with a TypeError naming the op and both dtypes."""
    if a.dtype != b.dtype:
        raise TypeError(f"Input '{names[1]}' of '{op_name}' Op has type {b.dtype.name} that does not "
                        f"match type {a.dtype.name} of argument '{names[0]}'.")
    return a, b


def _binary(kind, default_name):
    def op(x, y, name=None):
        a, b = _same_dtype(default_name, *convert_pair(x, y))
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


_TRUEDIV_FLOAT = {"i8": "float32", "u8": "float32", "i16": "float32", "u16": "float32", "i32": "float64",
                  "i64": "float64"}


def truediv(x, y, name=None):
    """tf.truediv / `/`: (u)int8/(u)int16 are cast to float32 and int32/int64 to float64 first (TF's rule)."""
    a, b = _same_dtype("truediv", *convert_pair(x, y))
    if a.dtype.is_bool:
        raise TypeError("Invalid dtype bool in __truediv__")
    if a.dtype.is_integer:
        a, b = cast(a, _TRUEDIV_FLOAT[a.dtype.short]), cast(b, _TRUEDIV_FLOAT[a.dtype.short])
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
    """tf.add_n: elementwise sum of a list of tensors of one dtype and shape (no broadcasting)."""
    if isinstance(inputs, Tensor) or not isinstance(inputs, (list, tuple)) or not inputs:
        raise ValueError("inputs must be a list of at least one Tensor with the same dtype and shape")
    inputs = [convert_to_tensor(t) for t in inputs]
    if len(inputs) == 1:
        return inputs[0]
    return make_op("add_n", inputs, name=name or "AddN")


def scalar_mul(scalar, x, name=None):
    return multiply(scalar, x, name=name)


def where_v2(condition, x=None, y=None, name=None):
    """tf.where_v2: elementwise select with numpy broadcasting of condition, x and y."""
    if x is None or y is None:
        raise ValueError("tf.where(condition) without x and y returns a data-dependent shape, "
                         "which Kiln's static shapes cannot express; pass x and y")
    cond = convert_to_tensor(condition)
    a, b = _same_dtype("Select", *convert_pair(x, y), names=("t", "e"))
    return make_op("select", [cond, a, b], name=name or "SelectV2")


def where(condition, x=None, y=None, name=None):
    """tf.where (TF1): x and y of one shape; condition a scalar, of that shape, or a vector over
    x's first dim (shapes compared by TF's compatibility rules: unknown dims match)."""
    if x is None or y is None:
        return where_v2(condition, x, y, name)
    cond = convert_to_tensor(condition)
    a, b = _same_dtype("Select", *convert_pair(x, y), names=("t", "e"))
    if not compatible(a.type.shape, b.type.shape):
        raise ValueError(f"Select: x and y must have the same shape, got {a.shape} and {b.shape}")
    if cond.type.rank not in (None, 0) and not compatible(cond.type.shape, a.type.shape):
        if not (cond.type.rank == 1 and a.type.rank is not None and a.type.rank > 1
                and compatible(cond.type.shape, a.type.shape[:1])):
            raise ValueError(f"Select: condition of shape {cond.shape} must have the shape of x {a.shape} "
                             f"or be a vector of its first dimension")
        kept = (cond.type.shape[0],) + (1,) * (a.type.rank - 1)
        cond = make_op("reshape", [cond], {"shape": kept}, name="Reshape")
    out = make_op("select", [cond, a, b], name=name or "Select")
    if out.type.shape is None:  # TF's Select: the shape of x and y, whatever the condition's
        merged = a.type.shape if a.type.shape == b.type.shape else merge_shapes(a.type.shape, b.type.shape)
        out.type = TensorType(out.type.dtype, merged)
    return out


def matmul(a, b, transpose_a=False, transpose_b=False, adjoint_a=False, adjoint_b=False,
           a_is_sparse=False, b_is_sparse=False, name=None):
    """tf.matmul: (batched) matrix product; batch dims broadcast."""
    a, b = _same_dtype("MatMul", *convert_pair(a, b), names=("a", "b"))
    attrs = {"transpose_a": bool(transpose_a or adjoint_a), "transpose_b": bool(transpose_b or adjoint_b)}
    return make_op("matmul", [a, b], attrs, name=name or "MatMul")


def _axes_attr(x, axis):
    """A static reduction axis spec (None / int / list) as the IR's tuple of axes."""
    if axis is None:
        if x.type.rank is None:
            from ...ir.deferred import AllAxes

            return AllAxes(x)  # every axis, counted when lowering
        return tuple(range(x.type.rank))
    if isinstance(axis, Tensor):
        from .array_ops import static_value

        if static_value(axis) is None:
            raise TypeError("Kiln needs a static reduction axis (python int, list or constant), "
                            f"not the computed tensor {axis.name}")
        axis = static_value(axis)
    if isinstance(axis, (int, np.integer)):
        return (int(axis),)
    return tuple(int(a) for a in np.asarray(axis).reshape(-1))


def _pick(op_name, new, new_name, old, old_name):
    """Resolve a TF1 deprecated kwarg alias (e.g. reduction_indices for axis); both is an error."""
    if new is not None and old is not None:
        raise ValueError(f"{op_name}: cannot specify both '{new_name}' and '{old_name}'")
    return new if new is not None else old


def _reduce(kind, default_name):
    def op(input_tensor, axis=None, keepdims=None, name=None, reduction_indices=None, keep_dims=None):
        x = convert_to_tensor(input_tensor)
        axis = _pick(kind, axis, "axis", reduction_indices, "reduction_indices")
        keep = bool(_pick(kind, keepdims, "keepdims", keep_dims, "keep_dims") or False)
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


def _drop_axes(t, axis, keepdims, name):
    """Finish a computation done with keepdims=True: drop the (size-1) reduced axes unless kept."""
    return t if keepdims else reduce_sum(t, axis, name=name)


def stop_gradient_(x):
    return make_op("stop_gradient", [x], name="StopGradient")


def reduce_logsumexp(input_tensor, axis=None, keepdims=None, name=None, reduction_indices=None, keep_dims=None):
    """log(sum(exp(x))) computed stably around the (gradient-stopped, finite) max, as TF does."""
    x = convert_to_tensor(input_tensor)
    axis = _pick("reduce_logsumexp", axis, "axis", reduction_indices, "reduction_indices")
    keep = bool(_pick("reduce_logsumexp", keepdims, "keepdims", keep_dims, "keep_dims") or False)
    raw_max = reduce_max(x, axis, keepdims=True)
    m = stop_gradient_(where_v2(is_finite(raw_max), raw_max, 0))
    out = add(log(reduce_sum(exp(subtract(x, m)), axis, keepdims=True)), m)
    return _drop_axes(out, axis, keep, name or "ReduceLogSumExp")


def _arg(kind, default_name):
    def op(input, axis=None, name=None, dimension=None, output_type="int64"):
        x = convert_to_tensor(input)
        axis = _pick(kind, axis, "axis", dimension, "dimension")
        axes = _axes_attr(x, 0 if axis is None else axis)
        if len(axes) != 1:
            raise ValueError(f"{kind}: axis must be a single integer, got {list(axes)}")
        return make_op(kind, [x], {"axis": axes[0], "output_type": as_dtype(output_type)}, name=name or default_name)

    op.__name__ = kind
    op.__doc__ = f"tf.{kind}: index along axis (default 0), int64 unless output_type says int32."
    return op


argmax = _arg("argmax", "ArgMax")
argmin = _arg("argmin", "ArgMin")


def _vector_norm(x, ord, axis):
    """p-norm over the given axes (kept): (sum |x|^p)^(1/p), max |x| for inf."""
    if ord in ("euclidean", 2, 2.0):
        return sqrt(reduce_sum(square(x), axis, keepdims=True))
    if ord == np.inf:
        return reduce_max(abs(x), axis, keepdims=True)
    if ord in (1, 1.0):
        return reduce_sum(abs(x), axis, keepdims=True)
    if isinstance(ord, (int, float)) and ord > 0:
        return pow(reduce_sum(pow(abs(x), float(ord)), axis, keepdims=True), 1.0 / ord)
    raise ValueError(f"'ord' must be a supported vector norm, got {ord!r}")


def _matrix_norm(x, ord, axis):
    """Matrix norm over two axes (kept): Frobenius, 1 (max column sum), inf (max row sum)."""
    if ord in ("euclidean", "fro"):
        return sqrt(reduce_sum(square(x), axis, keepdims=True))
    if ord in (1, 1.0, np.inf):
        sum_axis, max_axis = (axis[0], axis[1]) if ord != np.inf else (axis[1], axis[0])
        return reduce_max(reduce_sum(abs(x), sum_axis, keepdims=True), max_axis, keepdims=True)
    raise ValueError(f"'ord' must be a supported matrix norm in ['euclidean', 'fro', 1, inf], got {ord!r}")


def norm(tensor, ord="euclidean", axis=None, keepdims=None, name=None, keep_dims=None):
    """tf.norm: a vector norm (axis None or int) or a matrix norm (axis a pair of ints)."""
    x = convert_to_tensor(tensor)
    keep = bool(_pick("norm", keepdims, "keepdims", keep_dims, "keep_dims") or False)
    if isinstance(axis, (list, tuple)) and len(axis) == 2:
        axis = tuple(int(a) for a in axis)
        if normalize_axis(axis[0], x.type.rank) == normalize_axis(axis[1], x.type.rank):
            raise ValueError(f"'axis' must be a pair of distinct dimensions, got {axis}")
        out = _matrix_norm(x, ord, axis)
    else:
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise ValueError(f"'axis' must be None, an integer, or a tuple of 2 unique integers, got {axis}")
            axis = axis[0]
        if ord == "fro":
            raise ValueError("'ord' 'fro' is only a matrix norm; pass axis as a pair of ints")
        out = _vector_norm(x, ord, axis)
    return _drop_axes(out, axis, keep, name or "norm")


def count_nonzero(input_tensor, axis=None, keepdims=None, dtype="int64", name=None,
                  reduction_indices=None, keep_dims=None):
    """tf.count_nonzero: number of non-zero (non-False) elements over the axes, as ``dtype``."""
    x = convert_to_tensor(input_tensor)
    axis = _pick("count_nonzero", axis, "axis", reduction_indices, "reduction_indices")
    keep = bool(_pick("count_nonzero", keepdims, "keepdims", keep_dims, "keep_dims") or False)
    nz = cast(not_equal(x, False if x.dtype.is_bool else 0), "int64")
    return cast(reduce_sum(nz, axis, keepdims=keep), dtype, name=name)


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

_TF_NAMES = {
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
}
# names TF1 also offers under tf.math (tf.math.softplus exists while tf.softplus does not)
_TF_MATH = ["negative", "abs", "sign", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "square",
            "reciprocal", "tanh", "sigmoid", "sin", "cos", "floor", "ceil", "round", "erf",
            "logical_not", "is_nan", "is_finite", "add", "subtract", "multiply", "divide", "truediv",
            "floordiv", "floormod", "mod", "maximum", "minimum", "pow", "equal", "not_equal", "less",
            "less_equal", "greater", "greater_equal", "logical_and", "logical_or", "logical_xor",
            "squared_difference", "add_n", "scalar_mul", "reduce_sum", "reduce_mean", "reduce_max",
            "reduce_min", "reduce_prod", "reduce_all", "reduce_any", "reduce_logsumexp", "argmax",
            "argmin", "count_nonzero"]

TF_API = {
    "tf": _TF_NAMES,
    "tf.math": {**{k: _TF_NAMES[k] for k in _TF_MATH}, "softplus": softplus},
    "tf.nn": {"relu": relu, "elu": elu, "sigmoid": sigmoid, "tanh": tanh, "softplus": softplus},
    "tf.linalg": {"matmul": matmul, "norm": norm},
    "tf.dtypes": {"cast": cast},
}

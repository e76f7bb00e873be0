"""Math ops against numpy: elementwise, broadcasting, reductions, matmul, TF1 semantics and errors."""
from math import erf

import numpy as np
import pytest

from compiler import tf
from tests.helpers import ev, run_fn

RNG = np.random.default_rng(42)


def rand(*shape, low=-2.0, high=2.0, dtype=np.float32):
    return RNG.uniform(low, high, size=shape).astype(dtype)


# ----------------------------------------------------------------------------- unary
def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


UNARY_FLOAT = {
    # tf function, numpy reference, input domain (low, high)
    "negative": (tf.negative, lambda x: -x, (-2, 2)),
    "abs": (tf.abs, lambda x: np.where(x < 0, -x, x), (-2, 2)),
    "sign": (tf.sign, lambda x: (x > 0).astype(np.float32) - (x < 0), (-2, 2)),
    "exp": (tf.exp, lambda x: np.e ** x.astype(np.float64), (-2, 2)),
    "log": (tf.log, lambda x: np.log(x), (0.1, 3)),
    "log1p": (tf.log1p, lambda x: np.log(1 + x.astype(np.float64)), (-0.5, 3)),
    "expm1": (tf.expm1, lambda x: np.exp(x.astype(np.float64)) - 1, (-2, 2)),
    "sqrt": (tf.sqrt, lambda x: x.astype(np.float64) ** 0.5, (0.1, 3)),
    "rsqrt": (tf.rsqrt, lambda x: x.astype(np.float64) ** -0.5, (0.1, 3)),
    "square": (tf.square, lambda x: x * x, (-2, 2)),
    "reciprocal": (tf.reciprocal, lambda x: 1.0 / x, (0.5, 3)),
    "tanh": (tf.tanh, lambda x: (np.exp(2.0 * x) - 1) / (np.exp(2.0 * x) + 1), (-2, 2)),
    "sigmoid": (tf.sigmoid, _np_sigmoid, (-4, 4)),
    "relu": (tf.nn.relu, lambda x: x * (x > 0), (-2, 2)),
    "elu": (tf.nn.elu, lambda x: np.where(x > 0, x, np.exp(x.astype(np.float64)) - 1), (-2, 2)),
    "softplus": (tf.nn.softplus, lambda x: np.log(1 + np.exp(x.astype(np.float64))), (-4, 4)),
    "sin": (tf.sin, np.sin, (-3, 3)),
    "cos": (tf.cos, np.cos, (-3, 3)),
    "floor": (tf.floor, lambda x: x - np.mod(x, 1.0), (-3, 3)),
    "ceil": (tf.ceil, lambda x: -(-x - np.mod(-x, 1.0)), (-3, 3)),
    "erf": (tf.erf, np.vectorize(erf), (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(UNARY_FLOAT))
def test_unary_float32_against_numpy(name):
    fn, ref, (low, high) = UNARY_FLOAT[name]
    x = rand(3, 4, low=low, high=high)
    out = run_fn(fn, x)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_allclose(out, ref(x), rtol=2e-6, atol=2e-6)


def test_round_is_half_to_even_like_tf():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6], np.float32)
    np.testing.assert_array_equal(run_fn(tf.round, x), [-2, -2, -0, 0, 2, 2, 0, -1])


def test_relu_seed_example():
    np.testing.assert_array_equal(ev(tf.nn.relu([1.0, -2, 0, 4, -5, 6])), [1, 0, 0, 4, 0, 6])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_unary_integer_kinds(dtype):
    x = np.array([[-3, 0, 2], [5, -1, 7]], dtype)
    for fn, ref in [(tf.negative, -x), (tf.abs, np.where(x < 0, -x, x)), (tf.square, x * x),
                    (tf.sign, (x > 0).astype(dtype) - (x < 0)), (tf.nn.relu, x * (x > 0)), (tf.round, x)]:
        out = run_fn(fn, x)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, ref)


def test_float_only_unary_rejects_integers_and_predicates():
    i = tf.placeholder(tf.int32, [2, 3], name="i")
    with pytest.raises(ValueError, match=r"exp.*floating operand.*int32"):
        tf.exp(i)
    with pytest.raises(ValueError, match="bool"):
        tf.negative(tf.constant([True, False]))
    x = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(run_fn(tf.is_nan, x), [False, True, False, False])
    np.testing.assert_array_equal(run_fn(tf.is_finite, x), [True, False, False, False])
    np.testing.assert_array_equal(ev(tf.logical_not([True, False])), [False, True])


# ----------------------------------------------------------------------------- binary
def _np_floordiv(a, b):
    return np.floor(a.astype(np.float64) / b)


BINARY_FLOAT = {
    "add": (tf.add, lambda a, b: a + b),
    "subtract": (tf.subtract, lambda a, b: a - b),
    "multiply": (tf.multiply, lambda a, b: a * b),
    "div": (tf.div, lambda a, b: a / b),
    "truediv": (tf.truediv, lambda a, b: a / b),
    "floordiv": (tf.floordiv, _np_floordiv),
    "mod": (tf.mod, lambda a, b: a - b * _np_floordiv(a, b)),
    "pow": (tf.pow, lambda a, b: np.abs(a).astype(np.float64) ** b),
    "maximum": (tf.maximum, lambda a, b: np.where(a >= b, a, b)),
    "minimum": (tf.minimum, lambda a, b: np.where(a <= b, a, b)),
    "squared_difference": (tf.squared_difference, lambda a, b: (a - b) ** 2),
    "equal": (tf.equal, lambda a, b: a == b),
    "not_equal": (tf.not_equal, lambda a, b: a != b),
    "less": (tf.less, lambda a, b: a < b),
    "less_equal": (tf.less_equal, lambda a, b: a <= b),
    "greater": (tf.greater, lambda a, b: a > b),
    "greater_equal": (tf.greater_equal, lambda a, b: a >= b),
}
BROADCAST_SHAPES = [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((1,), (2, 3)), ((4, 1, 3), (2, 1))]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY_FLOAT))
def test_binary_float32_with_broadcasting(name, shapes):
    fn, ref = BINARY_FLOAT[name]
    a, b = rand(*shapes[0]), rand(*shapes[1], low=0.5, high=2.0)
    if name == "pow":
        a = np.abs(a)
    if name in ("equal", "not_equal", "less_equal", "greater_equal"):
        b = np.round(b).astype(np.float32)
        a = np.round(a).astype(np.float32)  # make ties happen
    out = run_fn(fn, a, b)
    expect = ref(a, b)
    assert out.shape == np.broadcast(a, b).shape
    assert out.dtype == (np.bool_ if expect.dtype == np.bool_ else np.float32)
    np.testing.assert_allclose(out, expect, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_binary_integer_kinds(dtype):
    a = np.array([[7, -7, 6], [-6, 5, 0]], dtype)
    b = np.array([2, 2, -4], dtype)
    cases = {tf.add: a + b, tf.subtract: a - b, tf.multiply: a * b, tf.maximum: np.where(a > b, a, b),
             tf.minimum: np.where(a < b, a, b), tf.floordiv: a // b, tf.mod: a % b,
             tf.div: a // b}
    for fn, expect in cases.items():
        out = run_fn(fn, a, b)
        assert out.dtype == dtype, fn.__name__
        np.testing.assert_array_equal(out, expect, err_msg=fn.__name__)
    np.testing.assert_array_equal(run_fn(tf.pow, a, np.array([2, 3, 0], dtype)), [[49, -343, 1], [36, 125, 1]])


def test_integer_division_semantics_follow_tf1():
    a = tf.constant([7, -7, 7, -7])
    b = tf.constant([2, 2, -2, -2])
    np.testing.assert_array_equal(ev(tf.div(a, b)), [3, -4, -4, 3])  # floors like python //
    q = a / b
    assert q.dtype == tf.float64  # int32 truediv -> float64
    np.testing.assert_array_equal(ev(q), [3.5, -3.5, -3.5, 3.5])
    small = tf.constant([3], dtype=tf.int8) / tf.constant([2], dtype=tf.int8)
    assert small.dtype == tf.float32  # int8 truediv -> float32
    np.testing.assert_array_equal(ev(a % b), [1, 1, -1, -1])
    with pytest.raises(ValueError, match="[Dd]ivision by zero"):
        ev(tf.floordiv(a, tf.constant([1, 0, 1, 1])))
    with pytest.raises(ValueError, match="[Dd]ivision by zero"):
        ev(tf.mod(a, tf.constant([1, 0, 1, 1])))
    with pytest.raises(ValueError, match="negative integer powers"):
        ev(tf.pow(a, tf.constant([1, -1, 1, 1])))


def test_logical_ops_on_bool():
    a, b = np.array([True, True, False, False]), np.array([True, False, True, False])
    for fn, expect in [(tf.logical_and, a & b), (tf.logical_or, a | b), (tf.logical_xor, a ^ b)]:
        np.testing.assert_array_equal(run_fn(fn, a, b), expect)
    x, y = tf.constant(a), tf.constant(b)
    np.testing.assert_array_equal(ev([x & y, x | y, x ^ y, ~x]), [a & b, a | b, a ^ b, ~a])
    with pytest.raises(ValueError, match="logical_and needs bool operands"):
        tf.logical_and(tf.constant([1.0]), tf.constant([0.0]))


def test_binary_dtype_and_shape_errors_name_op_and_shapes():
    a = tf.placeholder(tf.float32, [2, 3], name="a")
    b = tf.placeholder(tf.float32, [4], name="b")
    with pytest.raises(ValueError, match=r"add 'Add'.*\[2,3\] and \[4\].*broadcast"):
        tf.add(a, b)
    with pytest.raises(ValueError, match=r"\[2,3\] and \[4\]"):
        a * b
    i = tf.placeholder(tf.int32, [2, 3], name="i")
    with pytest.raises(TypeError, match="float32 that does not match type int32"):
        i + a
    with pytest.raises(TypeError, match="does not match"):
        i + 1.5  # a python float cannot become an int32 operand
    with pytest.raises(ValueError, match="not defined for bool"):
        tf.add(tf.constant([True]), tf.constant([False]))


# ----------------------------------------------------------------------------- overloads
def test_operator_overloads_with_python_scalars_on_both_sides():
    xv = np.array([[1.5, -2.0], [3.0, 4.0]], np.float32)
    x = tf.placeholder(tf.float32, [2, 2])
    outs = [x + 2, 2 + x, x - 2, 2 - x, x * 3, 3 * x, x / 2, 2 / x, x // 2, 7 // x, x % 2, 7 % x,
            x ** 2, 2 ** x, -x, abs(x), x @ x, x < 1, 1 < x, x > 1, x <= 3, x >= 3]
    res = ev(outs, {x: xv})
    expect = [xv + 2, 2 + xv, xv - 2, 2 - xv, xv * 3, 3 * xv, xv / 2, 2 / xv, np.floor(xv / 2),
              np.floor(7 / xv), xv - 2 * np.floor(xv / 2), 7 - xv * np.floor(7 / xv), xv * xv, 2.0 ** xv,
              -xv, np.where(xv < 0, -xv, xv), xv @ xv, xv < 1, 1 < xv, xv > 1, xv <= 3, xv >= 3]
    for out, want, t in zip(res, expect, outs):
        assert out.dtype == (np.bool_ if t.dtype == tf.bool else np.float32)
        np.testing.assert_allclose(out, want, rtol=1e-6)
    i = tf.constant([5, -5])
    out = ev([i // 2, i % 3, 2 ** tf.constant([3]), 10 - i])
    for got, want in zip(out, [[2, -3], [2, 1], [8], [5, 15]]):
        np.testing.assert_array_equal(got, want)
    assert (i + 1).dtype == tf.int32 and (i / 2).dtype == tf.float64


def test_tensor_equality_is_identity_not_elementwise():
    a = tf.constant(1.0)
    assert (a == a) is True and (a == tf.constant(1.0)) is False
    assert len({a, a}) == 1


# ----------------------------------------------------------------------------- batch dim
def test_batch_placeholder_broadcasting_at_two_batch_sizes():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    bias = tf.constant([1.0, 2.0, 3.0])
    w = tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2))
    y = tf.matmul(x + bias, w)
    col = tf.reduce_mean(x, axis=0)
    total = tf.reduce_mean(x)
    scaled = x * tf.reduce_sum(x, 1, keepdims=True)
    assert y.shape.as_list() == [None, 2] and col.shape.as_list() == [3] and scaled.shape.as_list() == [None, 3]
    with tf.Session() as sess:
        for n in (2, 5):
            xv = rand(n, 3)
            out = sess.run([y, col, total, scaled], {x: xv})
            np.testing.assert_allclose(out[0], (xv + [1, 2, 3]) @ np.arange(6).reshape(3, 2), rtol=1e-5)
            np.testing.assert_allclose(out[1], xv.sum(0) / n, rtol=1e-5)
            np.testing.assert_allclose(out[2], xv.sum() / (3 * n), rtol=1e-5)
            np.testing.assert_allclose(out[3], xv * xv.sum(1, keepdims=True), rtol=1e-5)


def test_batch_placeholder_argmax_and_where():
    x = tf.placeholder(tf.float32, [None, 4])
    best = tf.argmax(x, 1)
    masked = tf.where(x > 0, x, tf.zeros_like(x))
    with tf.Session() as sess:
        for n in (1, 3):
            xv = rand(n, 4)
            b, m = sess.run([best, masked], {x: xv})
            np.testing.assert_array_equal(b, [int(np.nonzero(r == r.max())[0][0]) for r in xv])
            np.testing.assert_array_equal(m, xv * (xv > 0))


# ----------------------------------------------------------------------------- cast, select, add_n
def test_cast_semantics():
    f = tf.constant([-1.7, -0.2, 0.0, 2.9])
    np.testing.assert_array_equal(ev(tf.cast(f, tf.int32)), [-1, 0, 0, 2])  # truncates toward zero
    np.testing.assert_array_equal(ev(tf.cast(f, tf.bool)), [True, True, False, True])
    np.testing.assert_array_equal(ev(tf.cast(tf.constant([True, False]), tf.float32)), [1.0, 0.0])
    d = tf.cast(tf.constant([1, 2], dtype=tf.int64), tf.float64)
    assert d.dtype == tf.float64 and ev(d).dtype == np.float64
    assert tf.cast(f, tf.float32) is f  # same dtype: no op (TF1)
    assert tf.to_float(tf.constant([1])).dtype == tf.float32
    assert tf.to_int64(f).dtype == tf.int64 and tf.to_int32(f).dtype == tf.int32


def test_where_tf1_and_v2():
    c = np.array([[True, False, True], [False, True, False]])
    x, y = rand(2, 3), rand(2, 3)
    np.testing.assert_array_equal(run_fn(tf.where, c, x, y), np.choose(c.astype(int), [y, x]))
    rows = tf.constant([True, False])
    np.testing.assert_array_equal(ev(tf.where(rows, tf.constant(x), tf.constant(y))), np.stack([x[0], y[1]]))
    np.testing.assert_array_equal(ev(tf.where_v2(tf.constant([True, False, True]), tf.constant(x), 0.0)),
                                  x * [1, 0, 1])
    with pytest.raises(ValueError, match="same shape"):
        tf.where(tf.constant(c), tf.constant(x), tf.constant([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="condition"):
        tf.where(tf.constant([True, False, True]), tf.constant(x), tf.constant(y))
    with pytest.raises(ValueError, match="data-dependent"):
        tf.where(tf.constant(c))
    with pytest.raises(ValueError, match="condition must be bool"):
        tf.where_v2(tf.constant(x), tf.constant(x), tf.constant(y))


def test_add_n():
    a, b, c = rand(2, 3), rand(2, 3), rand(2, 3)
    np.testing.assert_allclose(run_fn(lambda *t: tf.add_n(list(t)), a, b, c), a + b + c, rtol=1e-6)
    one = tf.constant(a)
    assert tf.add_n([one]) is one
    with pytest.raises(ValueError, match="same type"):
        tf.add_n([tf.constant(a), tf.constant([1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="list"):
        tf.add_n([])


# ----------------------------------------------------------------------------- reductions
def test_reduce_mean_seed_example():
    x = tf.constant([[1.0, 1.0], [2.0, 2.0]])
    out = ev([tf.reduce_mean(x), tf.reduce_mean(x, 0), tf.reduce_mean(x, 1)])
    assert out[0] == 1.5
    np.testing.assert_array_equal(out[1], [1.5, 1.5])
    np.testing.assert_array_equal(out[2], [1.0, 2.0])
    i = tf.constant([[1, 1], [2, 2]])
    assert ev(tf.reduce_mean(i)) == 1  # integer mean stays integer (TF)
    assert ev(tf.reduce_mean(tf.constant([-1, -2]))) == -1  # and truncates toward zero


REDUCERS = {
    "reduce_sum": (tf.reduce_sum, np.sum), "reduce_mean": (tf.reduce_mean, np.mean),
    "reduce_max": (tf.reduce_max, np.max), "reduce_min": (tf.reduce_min, np.min),
    "reduce_prod": (tf.reduce_prod, np.prod),
}
AXES = [None, 0, 1, -1, [0, 2], (-1, 0), [0, 1, 2]]


@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_reductions_against_numpy(name, axis):
    fn, ref = REDUCERS[name]
    x = rand(2, 3, 4, low=0.5, high=1.5)
    np_axis = tuple(axis) if isinstance(axis, list) else axis
    for keep in (False, True):
        out = run_fn(lambda t: fn(t, axis, keepdims=keep), x)
        expect = ref(x.astype(np.float64), axis=np_axis, keepdims=keep)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expect, rtol=1e-5)


def test_reduction_kwarg_spellings_and_ints():
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    out = run_fn(lambda t: [tf.reduce_sum(t, reduction_indices=[1], keep_dims=True),
                            tf.reduce_max(t, reduction_indices=0), tf.reduce_min(t, keep_dims=True),
                            tf.reduce_prod(t + 1, 0), tf.math.reduce_sum(t, axis=tf.constant(-1))], x)
    np.testing.assert_array_equal(out[0], x.sum(1, keepdims=True))
    np.testing.assert_array_equal(out[1], x.max(0))
    np.testing.assert_array_equal(out[2], [[0]])
    np.testing.assert_array_equal(out[3], (x + 1).prod(0))
    np.testing.assert_array_equal(out[4], x.sum(-1))
    assert out[0].dtype == np.int32
    b = np.array([[True, False], [True, True]])
    out = run_fn(lambda t: [tf.reduce_all(t, 1), tf.reduce_any(t, 0), tf.reduce_all(t)], b)
    for got, want in zip(out, [[False, True], [True, True], False]):
        np.testing.assert_array_equal(got, want)


def test_reduction_errors():
    x = tf.placeholder(tf.float32, [2, 3], name="x")
    with pytest.raises(ValueError, match=r"reduce_sum.*axis 2 is out of range.*rank 2"):
        tf.reduce_sum(x, 2)
    with pytest.raises(ValueError, match="both 'axis' and 'reduction_indices'"):
        tf.reduce_sum(x, 0, reduction_indices=1)
    with pytest.raises(ValueError, match="scalar"):
        tf.reduce_sum(tf.constant(1.0), 0)
    with pytest.raises(ValueError, match="bool"):
        tf.reduce_all(x)
    with pytest.raises(ValueError, match="bool"):
        tf.reduce_sum(tf.constant([True]))


def test_argmax_argmin():
    x = np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 7.0]], np.float32)
    t = tf.constant(x)
    am = tf.argmax(t, 1)
    assert am.dtype == tf.int64  # TF default output type
    out = ev([am, tf.argmin(t, 0), tf.argmax(t, dimension=0), tf.argmax(t, 1, output_type=tf.int32), tf.argmax(t),
              tf.argmax(t, tf.constant(1))])
    np.testing.assert_array_equal(out[0], [1, 0])  # ties: first index
    np.testing.assert_array_equal(out[1], [0, 1, 0])
    np.testing.assert_array_equal(out[2], [1, 0, 1])
    assert out[3].dtype == np.int32 and out[4].dtype == np.int64
    np.testing.assert_array_equal(out[5], out[0])
    with pytest.raises(ValueError, match="output_type"):
        tf.argmax(t, 1, output_type=tf.float32)
    with pytest.raises(ValueError, match="out of range"):
        tf.argmax(t, 2)


def test_reduce_logsumexp():
    x = rand(3, 4)
    ref = np.log(np.exp(x.astype(np.float64)).sum(1))
    np.testing.assert_allclose(run_fn(lambda t: tf.reduce_logsumexp(t, 1), x), ref, rtol=1e-6)
    np.testing.assert_allclose(run_fn(lambda t: tf.reduce_logsumexp(t, 1, keepdims=True), x), ref[:, None], rtol=1e-6)
    np.testing.assert_allclose(run_fn(tf.reduce_logsumexp, x), np.log(np.exp(x.astype(np.float64)).sum()), rtol=1e-6)
    big = np.array([[1000.0, 1000.0], [-np.inf, -np.inf]], np.float32)
    out = run_fn(lambda t: tf.reduce_logsumexp(t, axis=1), big)
    np.testing.assert_allclose(out, [1000 + np.log(2), -np.inf], rtol=1e-6)


def test_norm():
    x = rand(3, 4)
    x64 = x.astype(np.float64)
    cases = [
        (lambda t: tf.norm(t), np.sqrt((x64 ** 2).sum())),
        (lambda t: tf.norm(t, axis=1), np.sqrt((x64 ** 2).sum(1))),
        (lambda t: tf.norm(t, ord=1, axis=0, keepdims=True), np.abs(x64).sum(0, keepdims=True)),
        (lambda t: tf.norm(t, ord=np.inf, axis=-1), np.abs(x64).max(-1)),
        (lambda t: tf.norm(t, ord=3, axis=1), (np.abs(x64) ** 3).sum(1) ** (1 / 3)),
        (lambda t: tf.norm(t, ord="fro", axis=(0, 1)), np.sqrt((x64 ** 2).sum())),
        (lambda t: tf.norm(t, ord=1, axis=[0, 1]), np.abs(x64).sum(0).max()),
        (lambda t: tf.norm(t, ord=np.inf, axis=[0, 1], keep_dims=True), np.abs(x64).sum(1).max().reshape(1, 1)),
        (lambda t: tf.linalg.norm(t, axis=[-2, -1]), np.sqrt((x64 ** 2).sum())),
    ]
    for fn, expect in cases:
        out = run_fn(fn, x)
        assert out.shape == np.shape(expect)
        np.testing.assert_allclose(out, expect, rtol=1e-5)
    with pytest.raises(ValueError, match="matrix norm"):
        tf.norm(tf.constant(x), ord=2, axis=(0, 1))
    with pytest.raises(ValueError, match="fro"):
        tf.norm(tf.constant(x), ord="fro", axis=1)


def test_count_nonzero():
    x = np.array([[0.0, 1.5, 0.0], [2.0, -1.0, 0.0]], np.float32)
    out = run_fn(lambda t: [tf.count_nonzero(t), tf.count_nonzero(t, 1), tf.count_nonzero(t, 0, keepdims=True),
                            tf.count_nonzero(t, dtype=tf.int32)], x)
    assert out[0] == 3 and out[0].dtype == np.int64
    np.testing.assert_array_equal(out[1], [1, 2])
    np.testing.assert_array_equal(out[2], [[1, 2, 0]])
    assert out[3].dtype == np.int32
    assert ev(tf.count_nonzero(tf.constant([True, False, True]))) == 2
    assert ev(tf.count_nonzero(tf.constant([0, 3, 0, 4]))) == 2


# ----------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_transposes(ta, tb):
    a, b = rand(2, 3), rand(3, 4)
    a_in, b_in = (a.T.copy() if ta else a), (b.T.copy() if tb else b)
    out = run_fn(lambda x, y: tf.matmul(x, y, transpose_a=ta, transpose_b=tb), a_in, b_in)
    np.testing.assert_allclose(out, np.einsum("ik,kj->ij", a, b), rtol=1e-5)


def test_batched_matmul_seed_shape_and_broadcasting():
    a, b = rand(4, 2, 3), rand(4, 3, 5)
    out = run_fn(tf.matmul, a, b)
    assert out.shape == (4, 2, 5)
    np.testing.assert_allclose(out, np.einsum("bik,bkj->bij", a, b), rtol=1e-5)
    c = rand(2, 3)
    np.testing.assert_allclose(run_fn(tf.matmul, c, b), np.einsum("ik,bkj->bij", c, b), rtol=1e-5)
    d = rand(3, 1, 2, 3)
    np.testing.assert_allclose(run_fn(lambda x, y: x @ y, d, b), np.einsum("pqik,bkj->pbij", d, b), rtol=1e-5)
    i = np.arange(6, dtype=np.int32).reshape(2, 3)
    np.testing.assert_array_equal(run_fn(lambda x: tf.matmul(x, x, transpose_b=True), i), i @ i.T)


def test_matmul_errors():
    a = tf.placeholder(tf.float32, [2, 3], name="a")
    with pytest.raises(ValueError, match=r"matmul 'MatMul'.*inner dimensions.*\[2,3\].*\[4,5\].*3 vs 4"):
        tf.matmul(a, tf.placeholder(tf.float32, [4, 5]))
    with pytest.raises(ValueError, match="rank >= 2"):
        tf.matmul(a, tf.constant([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="batch dimensions"):
        tf.matmul(tf.zeros([2, 2, 3]), tf.zeros([3, 3, 4]))
    with pytest.raises(TypeError, match="Input 'b' of 'MatMul'"):
        tf.matmul(a, tf.constant([[1], [2], [3]]))

"""tf.gradients of the math ops: finite differences, TF1 semantics (None, stop_gradient,
grad_ys, sums over fan-out), the batch dim, and gradients of gradients."""
import numpy as np
import pytest

from compiler import tf
from tests.helpers import ev, check_gradients

RNG = np.random.default_rng(7)


def rand(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, size=shape)


def away_from_zero(*shape, low=0.3, high=2.0):
    """Values with |v| in [low, high] and random signs (keeps |x|, relu, ... off their kinks)."""
    return rand(*shape, low=low, high=high) * RNG.choice([-1.0, 1.0], size=shape)


# ----------------------------------------------------------------------------- unary
UNARY = {
    "negative": (tf.negative, rand), "abs": (tf.abs, away_from_zero), "exp": (tf.exp, rand),
    "log": (tf.log, lambda *s: rand(*s, low=0.2)), "log1p": (tf.log1p, lambda *s: rand(*s, low=-0.5)),
    "expm1": (tf.expm1, rand), "sqrt": (tf.sqrt, lambda *s: rand(*s, low=0.2)),
    "rsqrt": (tf.rsqrt, lambda *s: rand(*s, low=0.2)), "square": (tf.square, rand),
    "reciprocal": (tf.reciprocal, away_from_zero), "tanh": (tf.tanh, rand), "sigmoid": (tf.sigmoid, rand),
    "relu": (tf.nn.relu, away_from_zero), "elu": (tf.nn.elu, away_from_zero),
    "softplus": (tf.nn.softplus, rand), "sin": (tf.sin, rand), "cos": (tf.cos, rand), "erf": (tf.erf, rand),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradients(name):
    fn, make = UNARY[name]
    check_gradients(fn, make(2, 3))


def test_piecewise_constant_ops_have_no_gradient_and_sign_has_zeros():
    x = tf.placeholder(tf.float32, [3])
    assert tf.gradients(tf.floor(x), x) == [None]
    assert tf.gradients(tf.ceil(x), x) == [None]
    assert tf.gradients(tf.round(x), x) == [None]
    g = tf.gradients(tf.sign(x), x)[0]
    np.testing.assert_array_equal(ev(g, {x: [1.0, -2.0, 0.0]}), [0, 0, 0])


# ----------------------------------------------------------------------------- binary
SHAPES = [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((1,), (2, 2)), ((2, 1, 3), (2, 1))]
BINARY = {
    "add": (tf.add, rand, rand), "subtract": (tf.subtract, rand, rand), "multiply": (tf.multiply, rand, rand),
    "div": (tf.div, rand, away_from_zero), "truediv": (lambda a, b: a / b, rand, away_from_zero),
    "pow": (tf.pow, lambda *s: rand(*s, low=0.3), rand),
    "maximum": (tf.maximum, rand, rand), "minimum": (tf.minimum, rand, rand),
    "squared_difference": (tf.squared_difference, rand, rand),
    # x/y kept off the integers so floor(x/y) is locally constant
    "mod": (tf.mod, lambda *s: rand(*s, low=0.1, high=0.9) + 2.0, lambda *s: np.full(s, 1.0) + rand(*s, low=0.0, high=0.02)),
}


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_gradients_with_broadcasting(name, shapes):
    fn, make_x, make_y = BINARY[name]
    check_gradients(fn, make_x(*shapes[0]), make_y(*shapes[1]))


def test_maximum_minimum_ties_go_to_x():
    x, y = tf.constant([1.0, 2.0, 3.0]), tf.constant([1.0, 5.0, 0.0])
    out = ev(tf.gradients(tf.maximum(x, y), [x, y]) + tf.gradients(tf.minimum(x, y), [x, y]))
    np.testing.assert_array_equal(out, [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_pow_gradient_at_zero_base_is_finite():
    x, y = tf.constant([0.0, 0.0, 2.0]), tf.constant([2.0, 3.0, 3.0])
    gx, gy = ev(tf.gradients(tf.pow(x, y), [x, y]))
    np.testing.assert_array_equal(gx, [0.0, 0.0, 12.0])
    np.testing.assert_allclose(gy, [0.0, 0.0, 8 * np.log(2.0)], rtol=1e-6)


def test_select_gradients_go_to_chosen_branch_and_none_to_condition():
    cond = np.array([[True, False, True], [False, False, True]])
    check_gradients(lambda c, a, b: tf.where(c, a, b), cond, rand(2, 3), rand(2, 3))
    check_gradients(lambda c, a, b: tf.where_v2(c, a, b), cond[0], rand(2, 3), rand(2, 1))
    c = tf.constant(cond)
    a = tf.constant(rand(2, 3))
    ga, gc = tf.gradients(tf.where(c, a, tf.zeros_like(a)), [a, c])
    assert gc is None
    np.testing.assert_array_equal(ev(ga), cond.astype(np.float64))


def test_cast_gradients():
    check_gradients(lambda x: tf.cast(tf.cast(x, tf.float32), tf.float64) * 2.0, rand(3), rtol=1e-4, atol=1e-4, eps=1e-3)
    x = tf.placeholder(tf.float32, [3])
    g = tf.gradients(tf.cast(x, tf.float64), x)[0]
    assert g.dtype == tf.float32
    assert tf.gradients(tf.cast(tf.cast(x, tf.int32), tf.float32), x) == [None]


def test_add_n_gradient():
    check_gradients(lambda a, b, c: tf.add_n([a, b * b, c]), rand(2, 2), rand(2, 2), rand(2, 2))


# ----------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("axis", [None, 0, 1, -1, [0, 2]], ids=str)
@pytest.mark.parametrize("reduce", [tf.reduce_sum, tf.reduce_mean, tf.reduce_max, tf.reduce_min, tf.reduce_prod],
                         ids=lambda f: f.__name__)
def test_reduction_gradients(reduce, axis):
    x = rand(2, 3, 2)
    for keep in (False, True):
        check_gradients(lambda t: reduce(t, axis, keepdims=keep), x)


def test_reduce_max_splits_gradient_among_ties():
    x = tf.constant([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(ev(tf.gradients(tf.reduce_max(x, 1), x)[0]), [[0, 0.5, 0.5], [1 / 3] * 3])
    np.testing.assert_allclose(ev(tf.gradients(tf.reduce_min(x), x)[0]), [[1, 0, 0], [0, 0, 0]])


def test_reduce_prod_gradient_with_zeros():
    x = np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 4.0], [1.0, 2.0, 3.0]])
    g = check_gradients(lambda t: tf.reduce_prod(t, 1), x)[0]
    assert np.all(np.isfinite(g))
    t = tf.constant(x)
    np.testing.assert_array_equal(ev(tf.gradients(tf.reduce_prod(t, 1), t)[0]),
                                  [[6, 0, 0], [0, 0, 0], [6, 3, 2]])


def test_reduce_mean_gradient_over_batch_dim_at_two_batch_sizes():
    x = tf.placeholder(tf.float32, [None, 3])
    g_all = tf.gradients(tf.reduce_mean(x), x)[0]
    g_rows = tf.gradients(tf.reduce_mean(x, axis=0), x)[0]
    g_cols = tf.gradients(tf.reduce_mean(x * x, axis=1, keep_dims=True), x)[0]
    assert g_all.shape.as_list() == [None, 3]
    with tf.Session() as sess:
        for n in (2, 5):
            xv = rand(n, 3).astype(np.float32)
            a, r, c = sess.run([g_all, g_rows, g_cols], {x: xv})
            np.testing.assert_allclose(a, np.full((n, 3), 1 / (3 * n)), rtol=1e-6)
            np.testing.assert_allclose(r, np.full((n, 3), 1 / n), rtol=1e-6)
            np.testing.assert_allclose(c, 2 * xv / 3, rtol=1e-6)


def test_batch_dim_gradients_through_broadcast_and_matmul():
    x = tf.placeholder(tf.float32, [None, 3])
    w = tf.constant(rand(3, 2).astype(np.float32))
    b = tf.constant([0.5, -0.5])
    loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b))
    gw, gb, gx = tf.gradients(loss, [w, b, x])
    with tf.Session() as sess:
        for n in (1, 4):
            xv = rand(n, 3).astype(np.float32)
            out = sess.run([gw, gb, gx], {x: xv})
            err = 2 * (xv @ sess.run(w) + [0.5, -0.5]) / (2 * n)
            np.testing.assert_allclose(out[0], xv.T @ err, rtol=1e-5)
            np.testing.assert_allclose(out[1], err.sum(0), rtol=1e-5)
            np.testing.assert_allclose(out[2], err @ sess.run(w).T, rtol=1e-5)


def test_norm_and_logsumexp_gradients():
    x = away_from_zero(2, 3)
    check_gradients(lambda t: tf.norm(t, axis=1), x)
    check_gradients(lambda t: tf.norm(t, ord=1), x)
    check_gradients(lambda t: tf.norm(t, ord=3, axis=0, keepdims=True), x)
    check_gradients(lambda t: tf.reduce_logsumexp(t, 1), rand(2, 3))
    check_gradients(lambda t: tf.reduce_logsumexp(t), rand(2, 3))


# ----------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_gradients_all_transposes(ta, tb):
    a = rand(3, 2) if ta else rand(2, 3)
    b = rand(4, 3) if tb else rand(3, 4)
    check_gradients(lambda x, y: tf.matmul(x, y, transpose_a=ta, transpose_b=tb), a, b)


@pytest.mark.parametrize("shapes", [((4, 2, 3), (4, 3, 5)), ((2, 3), (2, 3, 2)), ((1, 2, 3), (3, 3, 2)),
                                    ((2, 1, 2, 3), (3, 3, 1))], ids=str)
def test_batched_matmul_gradients(shapes):
    check_gradients(tf.matmul, rand(*shapes[0]), rand(*shapes[1]))


def test_batched_matmul_gradient_with_transposes():
    check_gradients(lambda x, y: tf.matmul(x, y, transpose_a=True, transpose_b=True), rand(2, 3, 2), rand(4, 3))


# ----------------------------------------------------------------------------- tf.gradients semantics
def test_seed_matmul_gradient_example():
    w1 = tf.constant([[1.0, 2.0]])
    g = tf.gradients(tf.matmul(w1, [[2.0], [1.0]]), w1)
    np.testing.assert_array_equal(ev(g), [[[2.0, 1.0]]])


def test_seed_matmul_gradient_example_with_variable():
    w1 = tf.Variable([[1.0, 2.0]])
    w2 = tf.Variable([[2.0], [1.0]])
    y = tf.matmul(w1, w2)
    g = tf.gradients(y, w1)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_array_equal(sess.run(g), [[[2.0, 1.0]]])


def _grad_ys_example(make):
    w1, w2, w3, w4 = (make([2.0, 1.0, 3.0]) for _ in range(4))
    z1 = w1 + w2 + w3
    z2 = w3 + w4
    return tf.gradients([z1, z2], [w1, w2, w3, w4],
                        grad_ys=[tf.convert_to_tensor([2.0, 2.0, 3.0]), tf.convert_to_tensor([3.0, 2.0, 4.0])])


def test_seed_grad_ys_example():
    expect = [[2, 2, 3], [2, 2, 3], [5, 4, 7], [3, 2, 4]]
    np.testing.assert_array_equal(ev(_grad_ys_example(tf.constant)), expect)
    grads = _grad_ys_example(tf.Variable)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_array_equal(sess.run(grads), expect)


def test_unconnected_inputs_get_none():
    x, y = tf.placeholder(tf.float32, [2]), tf.placeholder(tf.float32, [2])
    z = tf.reduce_sum(x * 2.0)
    assert tf.gradients(z, [x, y])[1] is None
    unused = tf.Variable([1.0, 2.0])
    assert tf.gradients(z, unused) == [None]


def test_stop_gradient_is_honoured():
    x = tf.placeholder(tf.float32, [3])
    y = x * tf.stop_gradient(x) + x
    g = tf.gradients(y, x)[0]
    np.testing.assert_array_equal(ev(g, {x: [1.0, 2.0, 3.0]}), [2.0, 3.0, 4.0])
    assert tf.gradients(tf.stop_gradient(x), x) == [None]
    g2 = tf.gradients(x * x, x, stop_gradients=[x])[0]
    np.testing.assert_array_equal(ev(g2, {x: [1.0, 2.0, 3.0]}), [2.0, 4.0, 6.0])


def test_integer_tensors_get_no_gradient():
    i = tf.placeholder(tf.int32, [3])
    f = tf.placeholder(tf.float32, [3])
    y = tf.reduce_sum(tf.cast(i * 2, tf.float32) * f)
    gi, gf = tf.gradients(y, [i, f])
    assert gi is None
    np.testing.assert_array_equal(ev(gf, {i: [1, 2, 3], f: [1.0, 1.0, 1.0]}), [2.0, 4.0, 6.0])
    mask = tf.cast(tf.greater(f, 0.0), tf.float32)  # comparisons are not differentiable
    g = tf.gradients(tf.reduce_sum(mask * f), f)[0]
    np.testing.assert_array_equal(ev(g, {f: [1.0, -1.0, 2.0]}), [1.0, 0.0, 1.0])
    assert tf.gradients(tf.cast(tf.argmax(f), tf.float32), f) == [None]


def test_gradient_through_a_tensor_used_twice_sums():
    check_gradients(lambda x: x * x + x, rand(3))
    x = tf.constant([1.0, 2.0])
    y = tf.exp(x)
    np.testing.assert_allclose(ev(tf.gradients(y + y * 3.0, x)[0]), 4 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_second_derivative_of_cube():
    x = tf.placeholder(tf.float64, [3])
    xv = np.array([1.0, -2.0, 0.5])
    for y in (x * x * x, tf.pow(x, 3.0), x ** 3):
        g = tf.gradients(y, x)[0]
        gg = tf.gradients(g, x)[0]
        out = ev([g, gg], {x: xv})
        np.testing.assert_allclose(out[0], 3 * xv ** 2, rtol=1e-12)
        np.testing.assert_allclose(out[1], 6 * xv, rtol=1e-12)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "maximum", "pow", "reduce_mean", "reduce_max", "matmul",
                                  "div", "softplus", "reduce_prod"])
def test_gradients_of_gradients_against_finite_differences(name):
    """Hessian-vector products: differentiate each rule's own gradient graph."""
    fns = {
        "sigmoid": lambda x, y: tf.sigmoid(x) * y, "tanh": lambda x, y: tf.tanh(x * y),
        "maximum": lambda x, y: tf.maximum(x * x, y), "pow": lambda x, y: tf.pow(tf.abs(x) + 1.0, y),
        "reduce_mean": lambda x, y: tf.reduce_mean(x * x * y, 0), "reduce_max": lambda x, y: tf.reduce_max(x * y, 1),
        "matmul": lambda x, y: tf.matmul(x * x, y, transpose_b=True), "div": lambda x, y: x / (y * y + 1.0),
        "softplus": lambda x, y: tf.nn.softplus(x * y), "reduce_prod": lambda x, y: tf.reduce_prod(x * y, 1),
    }

    def grad_fn(x, y):
        return tf.gradients(tf.reduce_sum(fns[name](x, y)), x)[0]

    check_gradients(grad_fn, away_from_zero(2, 3), rand(2, 3), rtol=1e-4, atol=1e-6)


def test_gradients_of_non_float_ys_is_an_error():
    i = tf.placeholder(tf.int32, [2])
    with pytest.raises(TypeError, match="int32"):
        tf.gradients(i * 2, i)

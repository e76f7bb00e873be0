"""tf.train optimizers: each update rule step by step against numpy, slots, minimize/apply_gradients."""
import numpy as np
import pytest

from compiler import tf

RNG = np.random.default_rng(7)
X = RNG.standard_normal((8, 3)).astype(np.float32)
Y = RNG.standard_normal((8, 1)).astype(np.float32)
W0 = RNG.standard_normal((3, 1)).astype(np.float32)
B0 = np.array([0.5], np.float32)


def _regression(x=X, y=Y, dtype=tf.float32):
    """Linear regression W [3,1], b [1] with loss mean((xW + b - y)^2)."""
    w = tf.Variable(W0.astype(dtype.np), name="w")
    b = tf.Variable(B0.astype(dtype.np), name="b")
    loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
    return w, b, loss


def _np_grads(w, b, x=X, y=Y):
    """The gradients of the regression loss, written out by hand."""
    r = x.astype(np.float64) @ w + b - y
    return [2.0 / r.size * x.T @ r, 2.0 / r.size * r.sum(axis=0)]


def _session():
    sess = tf.Session()
    sess.run(tf.global_variables_initializer())
    return sess


# ----------------------------------------------------------------------------- numpy update rules
def np_sgd(lr):
    def step(p, g, s, t):
        p -= lr * g
    return step


def np_momentum(lr, mu, nesterov=False):
    def step(p, g, s, t):
        s.setdefault("momentum", np.zeros_like(p))
        s["momentum"] = mu * s["momentum"] + g
        p -= lr * g + lr * mu * s["momentum"] if nesterov else lr * s["momentum"]
    return step


def np_adam(lr, b1=0.9, b2=0.999, eps=1e-8):
    def step(p, g, s, t):
        s.setdefault("m", np.zeros_like(p))
        s.setdefault("v", np.zeros_like(p))
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p -= lr_t * s["m"] / (np.sqrt(s["v"]) + eps)
    return step


def np_adagrad(lr, init=0.1):
    def step(p, g, s, t):
        s.setdefault("accumulator", np.full_like(p, init))
        s["accumulator"] += g * g
        p -= lr * g / np.sqrt(s["accumulator"])
    return step


def np_rmsprop(lr, decay=0.9, mu=0.0, eps=1e-10, centered=False):
    def step(p, g, s, t):
        s.setdefault("rms", np.ones_like(p))  # TF1 starts the mean square at ONE
        s.setdefault("momentum", np.zeros_like(p))
        s["rms"] = decay * s["rms"] + (1 - decay) * g * g
        denom = s["rms"]
        if centered:
            s.setdefault("mg", np.zeros_like(p))
            s["mg"] = decay * s["mg"] + (1 - decay) * g
            denom = s["rms"] - s["mg"] ** 2
        s["momentum"] = mu * s["momentum"] + lr * g / np.sqrt(denom + eps)
        p -= s["momentum"]
    return step


def np_adadelta(lr, rho=0.95, eps=1e-8):
    def step(p, g, s, t):
        s.setdefault("accum", np.zeros_like(p))
        s.setdefault("accum_update", np.zeros_like(p))
        s["accum"] = rho * s["accum"] + (1 - rho) * g * g
        update = np.sqrt(s["accum_update"] + eps) / np.sqrt(s["accum"] + eps) * g
        s["accum_update"] = rho * s["accum_update"] + (1 - rho) * update * update
        p -= lr * update
    return step


def np_ftrl(lr, power=-0.5, init=0.1, l1=0.0, l2=0.0):
    def step(p, g, s, t):
        s.setdefault("accum", np.full_like(p, init))
        s.setdefault("linear", np.zeros_like(p))
        new = s["accum"] + g * g
        s["linear"] += g - (new ** -power - s["accum"] ** -power) / lr * p
        quadratic = new ** -power / lr + 2 * l2
        p[...] = np.where(np.abs(s["linear"]) > l1, (np.sign(s["linear"]) * l1 - s["linear"]) / quadratic, 0.0)
        s["accum"] = new
    return step


CASES = {
    "sgd": (lambda: tf.train.GradientDescentOptimizer(0.1), np_sgd(0.1)),
    "momentum": (lambda: tf.train.MomentumOptimizer(0.05, 0.9), np_momentum(0.05, 0.9)),
    "nesterov": (lambda: tf.train.MomentumOptimizer(0.05, 0.9, use_nesterov=True), np_momentum(0.05, 0.9, True)),
    "adam": (lambda: tf.train.AdamOptimizer(0.1), np_adam(0.1)),
    "adam_custom": (lambda: tf.train.AdamOptimizer(0.05, 0.8, 0.99, 1e-3), np_adam(0.05, 0.8, 0.99, 1e-3)),
    "adagrad": (lambda: tf.train.AdagradOptimizer(0.3, initial_accumulator_value=0.2), np_adagrad(0.3, 0.2)),
    "rmsprop": (lambda: tf.train.RMSPropOptimizer(0.01), np_rmsprop(0.01)),
    "rmsprop_momentum": (lambda: tf.train.RMSPropOptimizer(0.01, decay=0.8, momentum=0.5, epsilon=1e-6),
                         np_rmsprop(0.01, 0.8, 0.5, 1e-6)),
    "rmsprop_centered": (lambda: tf.train.RMSPropOptimizer(0.01, momentum=0.3, centered=True),
                         np_rmsprop(0.01, 0.9, 0.3, 1e-10, True)),
    "adadelta": (lambda: tf.train.AdadeltaOptimizer(1.0), np_adadelta(1.0)),
    "ftrl": (lambda: tf.train.FtrlOptimizer(0.5, l1_regularization_strength=0.01, l2_regularization_strength=0.1),
             np_ftrl(0.5, l1=0.01, l2=0.1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_update_rule_matches_numpy_step_by_step(case):
    make_opt, np_step = CASES[case]
    w, b, loss = _regression()
    opt = make_opt()
    train = opt.minimize(loss)
    sess = _session()
    params = [W0.astype(np.float64), B0.astype(np.float64)]
    slots = [{}, {}]
    for t in range(1, 6):
        grads = _np_grads(*params)
        for p, g, s in zip(params, grads, slots):
            np_step(p, g, s, t)
        sess.run(train)
        for var, p, s in zip((w, b), params, slots):
            np.testing.assert_allclose(sess.run(var), p, rtol=2e-5, atol=2e-6, err_msg=f"{case} {var.op.name} step {t}")
            assert sorted(s) == opt.get_slot_names()
            for name, value in s.items():
                np.testing.assert_allclose(sess.run(opt.get_slot(var, name)), value, rtol=2e-5, atol=2e-6,
                                           err_msg=f"{case} slot {name} of {var.op.name} step {t}")


def test_seed_plane_fit_reaches_the_true_plane():
    """Seed 002 §3: fit y = [0.1, 0.2] x + 0.3 by gradient descent."""
    np.random.seed(0)
    x_data = np.float32(np.random.rand(2, 100))
    y_data = np.dot([0.100, 0.200], x_data) + 0.300
    b = tf.Variable(tf.zeros([1]))
    W = tf.Variable(tf.random_uniform([1, 2], -1.0, 1.0))
    y = tf.matmul(W, x_data) + b
    loss = tf.reduce_mean(tf.square(y - y_data))
    train = tf.train.GradientDescentOptimizer(0.5).minimize(loss)
    sess = _session()
    for _ in range(201):
        sess.run(train)
    np.testing.assert_allclose(sess.run(W), [[0.1, 0.2]], atol=1e-2)
    np.testing.assert_allclose(sess.run(b), [0.3], atol=1e-2)


def test_adam_slot_and_beta_power_variables_follow_tf_names():
    w, b, loss = _regression()
    opt = tf.train.AdamOptimizer(0.1)
    train = opt.minimize(loss)
    names = [v.op.name for v in tf.global_variables()]
    assert names == ["w", "b", "beta1_power", "beta2_power", "w/Adam", "w/Adam_1", "b/Adam", "b/Adam_1"]
    assert tf.trainable_variables() == [w, b]
    assert opt.get_slot(w, "m").op.name == "w/Adam" and opt.get_slot(w, "v").op.name == "w/Adam_1"
    assert opt.get_slot(w, "nope") is None and opt.get_slot_names() == ["m", "v"]
    assert [v.op.name for v in opt.variables()] == ["b/Adam", "b/Adam_1", "beta1_power", "beta2_power",
                                                     "w/Adam", "w/Adam_1"]
    assert train.name == "Adam" and train in tf.get_collection(tf.GraphKeys.TRAIN_OP)
    sess = _session()
    b1p, b2p = opt._get_beta_accumulators()
    for t in range(1, 4):
        np.testing.assert_allclose(sess.run([b1p, b2p]), [0.9 ** t, 0.999 ** t], rtol=1e-6)
        sess.run(train)


def test_rmsprop_slots_start_at_one_and_zero_with_tf_names():
    w, b, loss = _regression()
    opt = tf.train.RMSPropOptimizer(0.01, centered=True, momentum=0.9)
    opt.minimize(loss, var_list=[w])
    assert [v.op.name for v in opt.variables()] == ["w/RMSProp", "w/RMSProp_1", "w/RMSProp_2"]
    sess = _session()
    np.testing.assert_array_equal(sess.run(opt.get_slot(w, "rms")), np.ones((3, 1)))
    np.testing.assert_array_equal(sess.run(opt.get_slot(w, "mg")), np.zeros((3, 1)))
    np.testing.assert_array_equal(sess.run(opt.get_slot(w, "momentum")), np.zeros((3, 1)))


def test_minimize_with_global_step_increments_it_after_the_updates():
    w, b, loss = _regression()
    step = tf.train.get_or_create_global_step()
    lr = tf.train.exponential_decay(0.1, step, 2, 0.5, staircase=True)
    train = tf.train.GradientDescentOptimizer(lr).minimize(loss, global_step=step)
    assert train.name == "GradientDescent" and train.type == "assign_add"
    sess = _session()
    params = [W0.astype(np.float64), B0.astype(np.float64)]
    for i in range(5):
        rate = 0.1 * 0.5 ** (i // 2)  # the step count before this step
        params = [p - rate * g for p, g in zip(params, _np_grads(*params))]
        sess.run(train)
        assert sess.run(step) == i + 1
    np.testing.assert_allclose(sess.run(w), params[0], rtol=1e-5)


def test_var_list_restricts_the_update_and_the_slots():
    w, b, loss = _regression()
    opt = tf.train.MomentumOptimizer(0.1, 0.9)
    train = opt.minimize(loss, var_list=[b])
    assert opt.get_slot(w, "momentum") is None and opt.get_slot(b, "momentum") is not None
    sess = _session()
    sess.run(train)
    np.testing.assert_array_equal(sess.run(w), W0)
    np.testing.assert_allclose(sess.run(b), B0 - 0.1 * _np_grads(W0, B0)[1], rtol=1e-5)


def test_unconnected_variable_gets_none_and_is_skipped():
    w, b, loss = _regression()
    other = tf.Variable([1.0, 2.0], name="other")
    opt = tf.train.GradientDescentOptimizer(0.1)
    gv = opt.compute_gradients(loss)
    assert [v for _, v in gv] == [w, b, other] and gv[2][0] is None
    train = opt.apply_gradients(gv)
    sess = _session()
    sess.run(train)
    np.testing.assert_array_equal(sess.run(other), [1.0, 2.0])


def test_no_gradients_at_all_is_an_error():
    v = tf.Variable(1.0, name="v")
    loss = tf.constant(3.0) * 2.0
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        tf.train.GradientDescentOptimizer(0.1).minimize(loss)
    with pytest.raises(ValueError, match=r"No gradients provided for any variable: \[\"<tf.Variable 'v:0'"):
        tf.train.AdamOptimizer().apply_gradients([(None, v)])
    with pytest.raises(ValueError, match="No variables provided"):
        tf.train.AdamOptimizer().apply_gradients([])


def test_apply_gradients_with_clipped_gradients():
    w, b, loss = _regression()
    opt = tf.train.GradientDescentOptimizer(0.1)
    grads, variables = zip(*opt.compute_gradients(loss))
    clipped, norm = tf.clip_by_global_norm(grads, 0.5)
    train = opt.apply_gradients(zip(clipped, variables))
    sess = _session()
    g = _np_grads(W0.astype(np.float64), B0.astype(np.float64))
    total = np.sqrt(sum((x ** 2).sum() for x in g))
    assert total > 0.5
    np.testing.assert_allclose(sess.run(norm), total, rtol=1e-5)
    sess.run(train)
    np.testing.assert_allclose(sess.run(w), W0 - 0.1 * g[0] * 0.5 / total, rtol=1e-5)
    np.testing.assert_allclose(sess.run(b), B0 - 0.1 * g[1] * 0.5 / total, rtol=1e-5)


def test_batch_dim_placeholder_at_two_batch_sizes():
    x = tf.placeholder(tf.float32, [None, 3])
    y = tf.placeholder(tf.float32, [None, 1])
    w, b, loss = _regression(x, y)
    train = tf.train.AdamOptimizer(0.1).minimize(loss)
    sess = _session()
    params, slots, step = [W0.astype(np.float64), B0.astype(np.float64)], [{}, {}], np_adam(0.1)
    for t, n in enumerate([4, 8, 4], start=1):
        for p, g, s in zip(params, _np_grads(*params, X[:n], Y[:n]), slots):
            step(p, g, s, t)
        sess.run(train, {x: X[:n], y: Y[:n]})
    np.testing.assert_allclose(sess.run(w), params[0], rtol=2e-5, atol=2e-6)


def test_float64_variables_with_float32_hyperparameters():
    w, b, loss = _regression(X.astype(np.float64), Y.astype(np.float64), tf.float64)
    train = tf.train.AdamOptimizer(0.1).minimize(loss)
    sess = _session()
    params, slots, step = [W0.astype(np.float64), B0.astype(np.float64)], [{}, {}], np_adam(0.1)
    for t in range(1, 4):
        for p, g, s in zip(params, _np_grads(*params), slots):
            step(p, g, s, t)
        sess.run(train)
    assert sess.run(w).dtype == np.float64
    # as in TF, python hyper-parameters and the beta powers are float32, cast to float64
    np.testing.assert_allclose(sess.run(w), params[0], rtol=1e-5)


def test_slots_are_created_under_a_reuse_scope():
    with tf.variable_scope("model"):
        w = tf.get_variable("w", [3, 1], initializer=tf.constant_initializer(W0))
    with tf.variable_scope("model", reuse=True):
        assert tf.get_variable("w") is w
        loss = tf.reduce_sum(tf.square(tf.matmul(X, w)))
        opt = tf.train.AdamOptimizer(0.1)
        opt.minimize(loss)
    assert opt.get_slot(w, "m").op.name == "model/model/w/Adam"  # TF prefixes the current var scope
    assert not opt.get_slot(w, "m").trainable
    sess = _session()
    sess.run(tf.get_collection(tf.GraphKeys.TRAIN_OP))


def test_two_optimizers_on_one_variable_get_unique_names():
    w, b, loss = _regression()
    tf.train.AdamOptimizer(0.1).minimize(loss, var_list=[w])
    opt2 = tf.train.AdamOptimizer(0.1)
    train2 = opt2.minimize(loss, var_list=[w])
    assert opt2.get_slot(w, "m").op.name == "w/Adam_2" and opt2.get_slot(w, "v").op.name == "w/Adam_3"
    assert [v.op.name for v in opt2.variables()][:2] == ["beta1_power_1", "beta2_power_1"]
    assert train2.name == "Adam_1"


def test_gate_graph_and_minimizing_twice_reuses_slots():
    w, b, loss = _regression()
    opt = tf.train.MomentumOptimizer(0.1, 0.5)
    opt.minimize(loss, gate_gradients=tf.train.Optimizer.GATE_GRAPH)
    slot = opt.get_slot(w, "momentum")
    opt.minimize(loss * 2.0)
    assert opt.get_slot(w, "momentum") is slot
    assert len(opt.variables()) == 2


def test_construction_errors():
    w, b, loss = _regression()
    with pytest.raises(ValueError, match=r"Shapes of gradient .* \(3,\) and variable w \(3, 1\)"):
        tf.train.GradientDescentOptimizer(0.1).apply_gradients([(tf.constant([1.0, 2.0, 3.0]), w)])
    with pytest.raises(ValueError, match="Invalid type tf.int32"):
        tf.train.GradientDescentOptimizer(0.1).minimize(tf.constant(3))
    with pytest.raises(ValueError, match="No variables to optimize"):
        tf.train.GradientDescentOptimizer(0.1).minimize(loss, var_list=[])
    with pytest.raises(NotImplementedError, match="unsupported type"):
        tf.train.GradientDescentOptimizer(0.1).minimize(loss, var_list=[loss])
    with pytest.raises(ValueError, match="initial_accumulator_value must be positive"):
        tf.train.AdagradOptimizer(0.1, initial_accumulator_value=0.0)
    with pytest.raises(ValueError, match="learning_rate_power"):
        tf.train.FtrlOptimizer(0.1, learning_rate_power=0.5)
    with pytest.raises(ValueError, match="Must specify the optimizer name"):
        tf.train.Optimizer(False, "")

"""RNN cells in Kiln: gradients vs central differences (float64), dropout statistics, the
initializer / forget_bias / state options, variable sharing, and the errors TF gives."""
import numpy as np
import pytest

from compiler import tf

rnn = tf.nn.rnn_cell
B, T, D = 2, 3, 2


def _numeric(sess, loss, feed, get, put, eps=1e-6):
    """Central differences of ``loss`` over the array that ``get()`` returns and ``put`` sets."""
    base = get().copy()
    grad = np.zeros_like(base)
    for j in range(base.size):
        for sign in (1, -1):
            bumped = base.copy()
            bumped.reshape(-1)[j] += sign * eps
            put(bumped)
            grad.reshape(-1)[j] += sign * sess.run(loss, feed) / (2 * eps)
    put(base)
    return grad


def check_rnn_gradients(make_cell, sequence_length=None, time_major=False, seed=0):
    """tf.gradients of a weighted sum of dynamic_rnn's outputs and final state vs central
    differences, w.r.t. the inputs, the initial state and every weight (float64)."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        cell = make_cell()
        shape = [T, B, D] if time_major else [B, T, D]
        x = tf.placeholder(tf.float64, shape)
        zero = cell.zero_state(B, tf.float64)
        flat_zero = _flatten(zero)
        init_phs = [tf.placeholder(tf.float64, z.shape.as_list()) for z in flat_zero]
        init = _pack(zero, init_phs)
        outputs, state = tf.nn.dynamic_rnn(cell, x, sequence_length=sequence_length, initial_state=init,
                                           time_major=time_major)
        leaves = [outputs] + _flatten(state)
        loss = tf.add_n([tf.reduce_sum(t * tf.constant(rng.standard_normal(t.shape.as_list())))
                         for t in leaves])
        variables = tf.trainable_variables()
        assert variables, "the cell made no variables"
        grads = tf.gradients(loss, [x] + init_phs + variables)
        feed = {x: rng.uniform(-1, 1, shape)}
        feed.update({p: rng.uniform(-1, 1, p.shape.as_list()) for p in init_phs})
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for v in variables:
                v.load(rng.uniform(-0.7, 0.7, v.shape.as_list()), sess)
            symbolic = sess.run(grads, feed)
            for i, ph in enumerate([x] + init_phs):
                def put(a, ph=ph):
                    feed[ph] = a
                numeric = _numeric(sess, loss, feed, lambda ph=ph: feed[ph], put)
                np.testing.assert_allclose(symbolic[i], numeric, rtol=1e-6, atol=1e-8, err_msg=ph.name)
            for v, g in zip(variables, symbolic[1 + len(init_phs):]):
                value = [sess.run(v)]

                def put(a, v=v):
                    value[0] = a
                    v.load(a, sess)
                numeric = _numeric(sess, loss, feed, lambda: value[0], put)
                np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8, err_msg=v.name)


def _flatten(s):
    return [leaf for item in s for leaf in _flatten(item)] if isinstance(s, (tuple, list)) else [s]


def _pack(structure, flat):
    from compiler.frontend.rnn import nest

    return nest.pack_sequence_as(structure, flat)


LENGTHS = np.array([3, 1], np.int32)
CELLS = {
    "basic_rnn": lambda: rnn.BasicRNNCell(3),
    "basic_rnn_relu": lambda: rnn.BasicRNNCell(3, activation=tf.nn.relu),
    "gru": lambda: rnn.GRUCell(3),
    "basic_lstm": lambda: rnn.BasicLSTMCell(3, forget_bias=0.3),
    "basic_lstm_concat": lambda: rnn.BasicLSTMCell(2, state_is_tuple=False),
    "lstm_peephole_proj": lambda: rnn.LSTMCell(3, use_peepholes=True, num_proj=2, forget_bias=0.5),
    "lstm_concat": lambda: rnn.LSTMCell(2, state_is_tuple=False),
    "multi": lambda: rnn.MultiRNNCell([rnn.BasicLSTMCell(2), rnn.GRUCell(2)]),
    "dropout_keep_1": lambda: rnn.DropoutWrapper(rnn.GRUCell(2), output_keep_prob=1.0),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cell_gradients_vs_finite_differences(name):
    check_rnn_gradients(CELLS[name])


@pytest.mark.parametrize("name", ["basic_lstm", "gru"])
def test_gradients_with_sequence_length_time_major(name):
    check_rnn_gradients(CELLS[name], sequence_length=LENGTHS, time_major=True)


def _run_once(build, feed_fn=None, seed=0):
    """Build ``build()`` in a fresh graph, initialize, and return its values."""
    with tf.Graph().as_default():
        fetches = build()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return sess.run(fetches, feed_fn() if feed_fn else None)


def test_lstm_initializer_and_bias_defaults():
    """initializer= sets kernel, peepholes and projection; biases start at zero (TF's choices)."""
    def build():
        cell = rnn.LSTMCell(3, use_peepholes=True, num_proj=2, initializer=tf.constant_initializer(0.25))
        cell(tf.zeros([B, D]), cell.zero_state(B, tf.float32))
        return {v.op.name: v for v in tf.global_variables()}
    values = _run_once(build)
    assert sorted(values) == ["lstm_cell/bias", "lstm_cell/kernel", "lstm_cell/projection/kernel",
                              "lstm_cell/w_f_diag", "lstm_cell/w_i_diag", "lstm_cell/w_o_diag"]
    for name, value in values.items():
        np.testing.assert_array_equal(value, 0.0 if name.endswith("bias") else 0.25, err_msg=name)
    assert values["lstm_cell/kernel"].shape == (D + 2, 12)


def test_gru_gate_bias_starts_at_one_and_scope_initializer_applies():
    def build():
        with tf.variable_scope("m", initializer=tf.constant_initializer(0.5)):
            cell = rnn.GRUCell(2)
            tf.nn.static_rnn(cell, [tf.ones([1, 1])] * 2, dtype=tf.float32)
        return {v.op.name: v for v in tf.global_variables()}
    values = _run_once(build)
    np.testing.assert_array_equal(values["m/rnn/gru_cell/gates/bias"], 1.0)
    np.testing.assert_array_equal(values["m/rnn/gru_cell/candidate/bias"], 0.0)
    np.testing.assert_array_equal(values["m/rnn/gru_cell/gates/kernel"], 0.5)


def test_lstm_cell_clip_bounds_the_cell_state():
    def build():
        cell = rnn.LSTMCell(4, cell_clip=0.05, initializer=tf.constant_initializer(1.0))
        _, state = tf.nn.dynamic_rnn(cell, tf.ones([B, 5, D]) * 3.0, dtype=tf.float32)
        return state.c
    c = _run_once(build)
    np.testing.assert_allclose(c, 0.05)


def test_state_sizes_and_zero_state():
    cell = rnn.LSTMCell(4, num_proj=3)
    assert cell.state_size == rnn.LSTMStateTuple(4, 3) and cell.output_size == 3
    assert rnn.BasicLSTMCell(5, state_is_tuple=False).state_size == 10
    multi = rnn.MultiRNNCell([rnn.GRUCell(2), rnn.BasicLSTMCell(3)])
    assert multi.state_size == (2, rnn.LSTMStateTuple(3, 3)) and multi.output_size == 3
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 6])
        zero = multi.zero_state(tf.shape(x)[0], tf.float32)
        assert zero[0].shape.as_list() == [None, 2] and isinstance(zero[1], rnn.LSTMStateTuple)
        assert multi.get_initial_state(x)[1].h.shape.as_list() == [None, 3]


def test_one_cell_shares_weights_across_steps_and_auto_reuse():
    with tf.Graph().as_default():
        xs = [tf.ones([1, 2])] * 3
        cell = rnn.BasicLSTMCell(2)
        tf.nn.static_rnn(cell, xs, dtype=tf.float32)
        assert [v.op.name for v in tf.global_variables()] == ["rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/bias"]
        assert len(cell.variables) == 2
        for _ in range(2):  # a model function called twice under AUTO_REUSE shares one set
            with tf.variable_scope("model", reuse=tf.AUTO_REUSE):
                tf.nn.dynamic_rnn(rnn.GRUCell(2), tf.ones([1, 3, 2]), dtype=tf.float32)
        assert len(tf.global_variables()) == 6
        with tf.variable_scope("model", reuse=True):  # reuse=True with a fresh cell: same names
            tf.nn.dynamic_rnn(rnn.GRUCell(2), tf.ones([1, 3, 2]), dtype=tf.float32)
        assert len(tf.global_variables()) == 6
        with pytest.raises(ValueError, match="rnn/basic_lstm_cell/kernel already exists"):
            tf.nn.static_rnn(rnn.BasicLSTMCell(2), xs, dtype=tf.float32)


def test_dropout_wrapper_statistics():
    """keep_prob < 1: each output is 0 or output/keep; about keep of them survive; state c is never dropped."""
    keep = 0.6

    def build():
        tf.set_random_seed(3)
        x = tf.random_uniform([400, 6, 3], 0.5, 1.0, seed=1)
        base = rnn.BasicLSTMCell(8)
        plain, _ = tf.nn.dynamic_rnn(base, x, dtype=tf.float32, scope="s")
        dropped_cell = rnn.DropoutWrapper(base, output_keep_prob=tf.constant(keep), state_keep_prob=1.0)
        dropped, _ = tf.nn.dynamic_rnn(dropped_cell, x, dtype=tf.float32, scope="s")
        state_cell = rnn.DropoutWrapper(base, state_keep_prob=keep)
        _, state = tf.nn.dynamic_rnn(state_cell, x, dtype=tf.float32, scope="s")
        return plain, dropped, state
    plain, dropped, state = _run_once(build)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], plain[kept] / keep, rtol=1e-5)
    assert abs(kept.mean() - keep) < 0.02
    assert np.all(state.c != 0) and abs((state.h != 0).mean() - keep) < 0.03


def test_dropout_keep_prob_placeholder_and_range():
    with tf.Graph().as_default():
        p = tf.placeholder(tf.float32, [])
        cell = rnn.DropoutWrapper(rnn.GRUCell(2), input_keep_prob=p)
        out, _ = tf.nn.dynamic_rnn(cell, tf.ones([50, 4, 3]), dtype=tf.float32)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            a, b = sess.run(out, {p: 1.0}), sess.run(out, {p: 1.0})
            np.testing.assert_array_equal(a, b)
            assert not np.allclose(sess.run(out, {p: 0.3}), a)
    with pytest.raises(ValueError, match="output_keep_prob must be between 0 and 1"):
        rnn.DropoutWrapper(rnn.GRUCell(2), output_keep_prob=1.5)


def test_variational_dropout_mask_fixed_across_steps():
    with tf.Graph().as_default():
        cell = rnn.DropoutWrapper(rnn.BasicRNNCell(64, activation=lambda v: v * 0 + 1.0), output_keep_prob=0.5,
                                  variational_recurrent=True, dtype=tf.float32, seed=5)
        out, _ = tf.nn.dynamic_rnn(cell, tf.ones([2, 5, 3]), dtype=tf.float32)
        value = _session_value(out)
    for t in range(1, 5):
        np.testing.assert_array_equal(value[:, t], value[:, 0])
    assert set(np.unique(value)) == {0.0, 2.0}
    with pytest.raises(ValueError, match="input_size must be provided"):
        rnn.DropoutWrapper(rnn.GRUCell(2), input_keep_prob=0.5, variational_recurrent=True, dtype=tf.float32)


def _session_value(t):
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        return sess.run(t)


def test_errors():
    with tf.Graph().as_default():
        cell = rnn.BasicLSTMCell(2)
        with pytest.raises(ValueError, match="you must give a dtype"):
            tf.nn.dynamic_rnn(cell, tf.ones([2, 3, 3]))
        with pytest.raises(ValueError, match="dtype must be specified"):
            tf.nn.static_rnn(cell, [tf.ones([2, 3])])
        with pytest.raises(TypeError, match="inputs must be a sequence"):
            tf.nn.static_rnn(cell, tf.ones([2, 3]), dtype=tf.float32)
        with pytest.raises(ValueError, match="sequence_length must be a vector"):
            tf.nn.dynamic_rnn(cell, tf.ones([2, 3, 3]), sequence_length=[[1, 2]], dtype=tf.float32)
        with pytest.raises(ValueError, match=r"sequence_length of shape \(2,\) does not match .*tf.int32, \[None\]"):
            tf.nn.dynamic_rnn(cell, tf.placeholder(tf.float32, [None, 3, 3]), sequence_length=[1, 2], dtype=tf.float32)
        with pytest.raises(ValueError, match="expected ndim=2, found ndim=3"):
            cell(tf.ones([2, 3, 3]), cell.zero_state(2, tf.float32))
        with pytest.raises(ValueError, match="only supports floating point inputs"):
            rnn.GRUCell(2)(tf.ones([2, 3], tf.int32), tf.zeros([2, 2], tf.int32))
        with pytest.raises(TypeError, match="is not an RNNCell"):
            tf.nn.dynamic_rnn(object(), tf.ones([2, 3, 3]), dtype=tf.float32)
        with pytest.raises(ValueError, match="state_is_tuple is not set"):
            rnn.MultiRNNCell([rnn.BasicLSTMCell(2)], state_is_tuple=False)


class SimpleCell(rnn.RNNCell):
    """A user cell in the TF1 style: its ``call`` makes its weight with tf.get_variable."""

    def __init__(self, n):
        super().__init__()
        self._n = n

    @property
    def state_size(self):
        return self._n

    @property
    def output_size(self):
        return self._n

    def call(self, inputs, state):
        w = tf.get_variable("w", [inputs.shape[1] + self._n, self._n])
        h = tf.tanh(tf.matmul(tf.concat([inputs, state], 1), w))
        return h, h


def test_user_defined_cell_reuses_its_get_variable_weight():
    """Names as TF 2.21's legacy RNNCell gives them: rnn/simple_cell/w, d/simple_cell/w."""
    with tf.Graph().as_default():
        cell = SimpleCell(4)
        outputs, state = tf.nn.static_rnn(cell, [tf.ones([2, 3])] * 3, dtype=tf.float32)
        tf.nn.dynamic_rnn(SimpleCell(4), tf.ones([2, 3, 3]), dtype=tf.float32, scope="d")
        assert [v.op.name for v in tf.global_variables()] == ["rnn/simple_cell/w", "d/simple_cell/w"]
        assert cell.variables == tf.global_variables()[:1]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            w, outs = sess.run([tf.global_variables()[0], outputs])
    h = np.zeros((2, 4), np.float32)
    for t in range(3):
        h = np.tanh(np.concatenate([np.ones((2, 3), np.float32), h], 1) @ w)
        np.testing.assert_allclose(outs[t], h, rtol=1e-5, atol=1e-6)


def test_wrapper_variables_are_the_wrapped_cells():
    with tf.Graph().as_default():
        lstm = rnn.BasicLSTMCell(2)
        wrapped = rnn.DropoutWrapper(lstm, output_keep_prob=0.5)
        multi = rnn.MultiRNNCell([wrapped, rnn.GRUCell(2)])
        tf.nn.dynamic_rnn(multi, tf.ones([1, 2, 3]), dtype=tf.float32)
        assert wrapped.weights == lstm.weights == tf.global_variables()[:2]
        assert multi.trainable_weights == tf.trainable_variables()

"""dynamic_rnn with a time dimension unknown until the feed: a tf.while_loop over time
(rnn.rnn_loop).  Its outputs, states and gradients must equal the unrolled (static-T) path's
for the same data and weights, with and without sequence_length, batch- and time-major, two
time lengths fed to one session; gradients also against central differences; the while
loop's ``maximum_iterations`` from a shape value sizes its gradient stacks."""
import numpy as np
import pytest

from compiler import tf
from compiler.frontend.rnn import nest

rnn = tf.nn.rnn_cell


def _lstm():
    return rnn.BasicLSTMCell(3)


def _stacked():
    return rnn.MultiRNNCell([rnn.GRUCell(2), rnn.BasicLSTMCell(3)])


def _weights(variables):
    """Fixed values for the cell's variables (the same in the unrolled and the looped graphs)."""
    rng = np.random.default_rng(7)
    return [rng.uniform(-0.6, 0.6, v.shape.as_list()).astype(np.float32) for v in variables]


def _run(shape, feeds, cell_fn=_lstm, time_major=False, lengths=False, bidirectional=False, config=None):
    """Build a dynamic_rnn over a placeholder of ``shape`` and run (outputs, flat states, grads
    w.r.t. the variables and the inputs) for each ``(x, lengths)`` in ``feeds``, in one session."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, shape)
        # time-major [None, None, d]: the leading None (Kiln's batch symbol) is the time, the batch
        # is an unknown dim: sequence_length gets a static size (the batch the state takes)
        sl = tf.placeholder(tf.int32, [3] if time_major else [None]) if lengths else None
        if bidirectional:
            outs, states = tf.nn.bidirectional_dynamic_rnn(cell_fn(), cell_fn(), x, sequence_length=sl,
                                                           dtype=tf.float32, time_major=time_major)
        else:
            outs, states = tf.nn.dynamic_rnn(cell_fn(), x, sequence_length=sl, dtype=tf.float32,
                                             time_major=time_major)
        outs, states = nest.flatten(outs), nest.flatten(states)
        loss = sum(tf.reduce_sum(o * o) for o in outs) + sum(tf.reduce_sum(s * 0.5) for s in states)
        variables = tf.trainable_variables()
        grads = tf.gradients(loss, variables + [x])
        with tf.Session(config=config) as sess:
            sess.run([tf.assign(v, w) for v, w in zip(variables, _weights(variables))])
            results = []
            for xv, lv in feeds:
                feed = {x: xv, sl: lv} if lengths else {x: xv}
                results.append(sess.run([outs, states, grads], feed))
            return [v.name for v in variables], results


def _assert_same(got, want, rtol=1e-5, atol=1e-6):
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _data(steps_list, batch=3, depth=2, time_major=False, seed=0):
    rng = np.random.default_rng(seed)
    feeds = []
    for steps in steps_list:
        x = rng.uniform(-1, 1, (steps, batch, depth) if time_major else (batch, steps, depth)).astype(np.float32)
        feeds.append((x, np.array([steps, 1, 0][:batch], np.int32)))
    return feeds


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
def test_unknown_time_matches_unrolled(time_major, lengths):
    feeds = _data([4, 6], time_major=time_major)
    names, looped = _run([None, None, 2], feeds, time_major=time_major, lengths=lengths)
    for feed, got in zip(feeds, looped):
        static = list(feed[0].shape)
        if not time_major:
            static[0] = None  # the batch stays symbolic, the time dim is static
        unrolled_names, (want,) = _run(static, [feed], time_major=time_major, lengths=lengths)
        assert names == unrolled_names == ["rnn/basic_lstm_cell/kernel:0", "rnn/basic_lstm_cell/bias:0"]
        _assert_same(got, want)
        if lengths:  # zeros past each row's length (row 2 has length 0: all zeros, state = zero state)
            out = got[0][0] if time_major else np.swapaxes(got[0][0], 0, 1)
            assert not out[1:, 1].any() and not out[:, 2].any() and out[1:, 0].all()
            assert not got[1][0][2].any()


def test_bidirectional_nested_cells_with_lengths():
    feeds = _data([5, 3])
    names, looped = _run([None, None, 2], feeds, cell_fn=_stacked, lengths=True, bidirectional=True)
    assert len(names) == 12
    for feed, got in zip(feeds, looped):
        _, (want,) = _run([None, feed[0].shape[1], 2], [feed], cell_fn=_stacked, lengths=True, bidirectional=True)
        _assert_same(got, want)


def test_old_error_path_runs():
    """A time-major input with a None leading (time) dim used to be refused at build time."""
    feeds = _data([2, 5], batch=2, depth=3, time_major=True)
    _, looped = _run([None, 2, 3], feeds, time_major=True)
    for feed, got in zip(feeds, looped):
        _, (want,) = _run(list(feed[0].shape), [feed], time_major=True)
        _assert_same(got, want)
        assert got[0][0].shape == (feed[0].shape[0], 2, 3)


def test_compiled_backend_matches_unrolled_interpreter():
    feeds = _data([4, 2], seed=3)
    _, compiled = _run([None, None, 2], feeds, lengths=True, config={"backend": "compiled"})
    for feed, got in zip(feeds, compiled):
        _, (want,) = _run([None, feed[0].shape[1], 2], [feed], lengths=True)
        _assert_same(got, want, rtol=1e-4, atol=1e-5)


def _central_differences(sess, loss, feed, x, xv, eps=1e-6):
    numeric = np.zeros_like(xv)
    for j in range(xv.size):
        for sign in (1, -1):
            moved = xv.copy()
            moved.reshape(-1)[j] += sign * eps
            numeric.reshape(-1)[j] += sign * sess.run(loss, {**feed, x: moved}) / (2 * eps)
    return numeric


@pytest.mark.parametrize("lengths", [False, True])
def test_gradients_match_central_differences(lengths):
    """d loss / d(inputs, initial state) of the looped RNN in float64, two time lengths."""
    rng = np.random.default_rng(1)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float64, [None, None, 2])
        h0 = tf.placeholder(tf.float64, [None, 3])
        sl = tf.placeholder(tf.int32, [None]) if lengths else None
        with tf.variable_scope("m", initializer=tf.random_uniform_initializer(-0.7, 0.7, seed=4)):
            out, state = tf.nn.dynamic_rnn(rnn.GRUCell(3), x, sequence_length=sl, initial_state=h0)
        w = tf.placeholder(tf.float64, [None, None, 3])
        loss = tf.reduce_sum(out * w) + tf.reduce_sum(state * state)
        gx, gh = tf.gradients(loss, [x, h0])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for steps in (3, 5):
                xv, hv = rng.standard_normal((2, steps, 2)), rng.standard_normal((2, 3))
                feed = {h0: hv, w: rng.standard_normal((2, steps, 3))}
                if lengths:
                    feed[sl] = [steps - 1, 2]
                got_x, got_h = sess.run([gx, gh], {**feed, x: xv})
                np.testing.assert_allclose(got_x, _central_differences(sess, loss, feed, x, xv), rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(got_h, _central_differences(sess, loss, {**feed, x: xv}, h0, hv),
                                           rtol=1e-5, atol=1e-7)


def test_while_loop_bound_from_shape_value():
    """maximum_iterations = tf.shape(x)[1] (unknown until the feed) sizes the gradient stacks;
    one from a fed value still cannot be differentiated (clear error)."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float64, [2, None])
        steps = tf.shape(x)[1]

        def body(t, acc):
            return t + 1, tf.sin(acc) * 1.5 + tf.gather(x, t, axis=1)

        _, y = tf.while_loop(lambda t, acc: t < steps, body, [tf.constant(0), tf.zeros([2], tf.float64)],
                             maximum_iterations=steps)
        loss = tf.reduce_sum(y * y)
        (g,) = tf.gradients(loss, [x])
        with tf.Session() as sess:
            for n in (3, 6):
                xv = np.random.default_rng(n).standard_normal((2, n))
                np.testing.assert_allclose(sess.run(g, {x: xv}), _central_differences(sess, loss, {}, x, xv),
                                           rtol=1e-5, atol=1e-7)
        n = tf.placeholder(tf.int32, [])
        _, z = tf.while_loop(lambda t, acc: t < n, body, [tf.constant(0), tf.zeros([2], tf.float64)],
                             maximum_iterations=n)
        with pytest.raises(ValueError, match="needs maximum_iterations"):
            tf.gradients(tf.reduce_sum(z), [x])

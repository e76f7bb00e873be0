"""RNN graphs built the same way under real TF (tests/goldens/record_rnn.py) and Kiln (tests/test_rnn_*.py).

Each case takes an ``api`` (``api.tf`` the tf module, ``api.cell`` the rnn_cell namespace,
``api.nn`` the namespace with static_rnn/dynamic_rnn/...) and a ``feed`` helper; it builds
placeholders (fed from seeded arrays) and returns the (nested) tensors to compare.
:func:`run_case` loads the weights (recorded from TF, or drawn by TF's recorder), runs the
outputs, and the gradients of ``sum_k sum(out_k * w_k)`` (fixed random ``w_k``) with respect
to the float inputs and every trainable variable.  This module imports neither TF nor Kiln.
"""
from __future__ import annotations

import numpy as np

B, T, D = 3, 4, 2   # batch, time steps, input depth
LENGTHS = np.array([4, 2, 1], np.int32)


def _array(rng, shape):
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


class Feeder:
    """Makes placeholders and remembers the arrays they are fed with."""

    def __init__(self, tf, seed):
        self.tf, self.rng, self.feed, self.floats = tf, np.random.default_rng(seed), {}, []

    def __call__(self, name, shape, dtype="float32", value=None, batch_none=False):
        ph_shape = [None] + list(shape[1:]) if batch_none else list(shape)
        ph = self.tf.placeholder(getattr(self.tf, dtype), ph_shape, name=name)
        self.feed[ph] = _array(self.rng, shape) if value is None else value
        if dtype == "float32" and value is None:
            self.floats.append((name, ph))
        return ph

    def steps(self, name, count=T, batch=B, depth=D):
        return [self(f"{name}_{t}", [batch, depth]) for t in range(count)]


def basic_rnn_static(api, f):
    return api.nn.static_rnn(api.cell.BasicRNNCell(3), f.steps("x"), dtype=api.tf.float32)


def gru_dynamic(api, f):
    return api.nn.dynamic_rnn(api.cell.GRUCell(3), f("x", [B, T, D]), dtype=api.tf.float32)


def basic_lstm_seqlen(api, f):
    cell = api.cell.BasicLSTMCell(3, forget_bias=0.5)
    return api.nn.dynamic_rnn(cell, f("x", [B, T, D], batch_none=True),
                              sequence_length=f("len", [B], "int32", LENGTHS, batch_none=True),
                              dtype=api.tf.float32)


def basic_lstm_concat_static_seqlen(api, f):
    cell = api.cell.BasicLSTMCell(3, state_is_tuple=False)
    return api.nn.static_rnn(cell, f.steps("x"), dtype=api.tf.float32,
                             sequence_length=f("len", [B], "int32", LENGTHS))


def lstm_full_time_major(api, f):
    cell = api.cell.LSTMCell(4, use_peepholes=True, cell_clip=0.6, num_proj=3, proj_clip=0.5, forget_bias=0.7)
    return api.nn.dynamic_rnn(cell, f("x", [T, B, D]), sequence_length=f("len", [B], "int32", LENGTHS),
                              dtype=api.tf.float32, time_major=True)


def lstm_concat_proj(api, f):
    cell = api.cell.LSTMCell(3, num_proj=2, state_is_tuple=False)
    return api.nn.dynamic_rnn(cell, f("x", [B, T, D]), dtype=api.tf.float32, scope="encoder")


def multi_lstm(api, f):
    cell = api.cell.MultiRNNCell([api.cell.BasicLSTMCell(4), api.cell.BasicLSTMCell(3)])
    return api.nn.dynamic_rnn(cell, f("x", [B, T, D]), dtype=api.tf.float32,
                              sequence_length=f("len", [B], "int32", LENGTHS))


def multi_concat_static(api, f):
    cell = api.cell.MultiRNNCell([api.cell.GRUCell(3), api.cell.BasicRNNCell(2)], state_is_tuple=False)
    return api.nn.static_rnn(cell, f.steps("x"), dtype=api.tf.float32)


def dropout_keep_one(api, f):
    keep = f("keep", [], value=np.float32(1.0))
    cell = api.cell.DropoutWrapper(api.cell.BasicLSTMCell(3), input_keep_prob=1.0, output_keep_prob=keep,
                                   state_keep_prob=keep)
    return api.nn.dynamic_rnn(cell, f("x", [B, T, D]), dtype=api.tf.float32)


def initial_state_given(api, f):
    h0 = f("h0", [B, 3])
    return api.nn.dynamic_rnn(api.cell.BasicRNNCell(3), f("x", [B, T, D]), initial_state=h0)


def lstm_initial_tuple(api, f):
    state = api.cell.LSTMStateTuple(f("c0", [B, 3]), f("h0", [B, 3]))
    return api.nn.static_rnn(api.cell.BasicLSTMCell(3), f.steps("x"), initial_state=state,
                             sequence_length=f("len", [B], "int32", LENGTHS))


def bidi_dynamic_seqlen(api, f):
    return api.nn.bidirectional_dynamic_rnn(
        api.cell.LSTMCell(3), api.cell.GRUCell(2), f("x", [B, T, D]),
        sequence_length=f("len", [B], "int32", LENGTHS), dtype=api.tf.float32)


def bidi_dynamic_time_major(api, f):
    return api.nn.bidirectional_dynamic_rnn(
        api.cell.BasicRNNCell(2), api.cell.BasicRNNCell(3), f("x", [T, B, D]), dtype=api.tf.float32,
        time_major=True, scope="birnn")


def bidi_static_seqlen(api, f):
    return api.nn.static_bidirectional_rnn(
        api.cell.BasicLSTMCell(3), api.cell.BasicLSTMCell(2), f.steps("x"), dtype=api.tf.float32,
        sequence_length=f("len", [B], "int32", LENGTHS))


def cell_scope_calls(api, f):
    """A cell called directly twice: the scope argument names the weights; the second call reuses them."""
    cell = api.cell.GRUCell(3)
    h = f("h0", [B, 3])
    out1, h1 = cell(f("x0", [B, D]), h, scope="my_gru")
    out2, h2 = cell(f("x1", [B, D]), h1, scope="my_gru")
    return out1, out2, h2


CASES = [basic_rnn_static, gru_dynamic, basic_lstm_seqlen, basic_lstm_concat_static_seqlen,
         lstm_full_time_major, lstm_concat_proj, multi_lstm, multi_concat_static, dropout_keep_one,
         initial_state_given, lstm_initial_tuple, bidi_dynamic_seqlen, bidi_dynamic_time_major,
         bidi_static_seqlen, cell_scope_calls]


def flatten(x):
    """Leaves of nested tuples/lists (LSTMStateTuple included)."""
    if isinstance(x, (tuple, list)):
        return [leaf for item in x for leaf in flatten(item)]
    return [x]


def run_case(api, case, weights=None, seed=0):
    """Build ``case`` in a fresh graph; return {"names", "weights", "outputs", "grad_inputs", "grad_weights"}.

    ``weights`` maps variable names to arrays to load; None draws them (uniform(-0.5, 0.5),
    seeded, in sorted-name order) as the recorder does.
    """
    tf = api.tf
    with tf.Graph().as_default():
        f = Feeder(tf, seed)
        outputs = flatten(case(api, f))
        variables = sorted(tf.trainable_variables(), key=lambda v: v.op.name)
        names = [v.op.name for v in variables]
        rng = np.random.default_rng(seed + 1)
        drawn = {n: rng.uniform(-0.5, 0.5, v.shape.as_list()).astype(np.float32)
                 for n, v in zip(names, variables)}
        weights = drawn if weights is None else weights
        w = []
        for k, o in enumerate(outputs):
            dims = o.shape.as_list()
            shape = [B if d is None else d for d in dims]
            w.append(f(f"w{k}", shape, value=rng.standard_normal(shape).astype(np.float32),
                       batch_none=dims[:1] == [None]))
        loss = tf.add_n([tf.reduce_sum(o * wk) for o, wk in zip(outputs, w)])
        xs = [ph for _, ph in f.floats] + variables
        grads = tf.gradients(loss, xs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for n, v in zip(names, variables):
                if n in weights:
                    v.load(weights[n], sess)
            outs, gs = sess.run([outputs, grads], f.feed)
    k = len(f.floats)
    return {"names": names, "weights": weights, "outputs": outs,
            "grad_inputs": dict(zip([n for n, _ in f.floats], gs[:k])),
            "grad_weights": dict(zip(names, gs[k:]))}

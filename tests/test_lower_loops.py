"""Lowering of loop / reduce groups to kernel IR, checked against the IR interpreter.

Each graph goes graph -> lower_graph -> run_pipeline -> lower_function -> run_program at batch
sizes 1 and 3 and is compared with ``run_function`` on the optimized function (the oracle).
"""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from compiler.ir.from_graph import lower_graph
from compiler.ir.interpreter import run_function
from compiler.ir.types import Sym, float32, int64
from compiler.lower import indexing as ix
from compiler.lower import kernel_ir as K
from compiler.lower import program as program_mod
from compiler.lower.kernel_interp import KernelError, run_program
from compiler.lower.kernel_printer import print_program
from compiler.lower.loops import coalesce
from compiler.lower.program import lower_function
from compiler.passes.manager import run_pipeline

BATCHES = (1, 3)


# ----------------------------------------------------------------------------- harness
def build(make, feed_specs, seed=0):
    """``make(*placeholders) -> (fetch tensors, target ops)`` in a fresh graph.

    ``feed_specs``: [(name, dtype, shape with None)].  Returns (optimized fn, program, state).
    """
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        phs = [tf.placeholder(dtype, shape, name=name) for name, dtype, shape in feed_specs]
        fetches, targets = make(*phs)
        fn = lower_graph(list(fetches), list(targets), phs)
        with tf.Session(config={"backend": "interpreter"}) as sess:  # initial values only
            sess.run(tf.global_variables_initializer())
            state = {p.key: np.int64(7) if p.key == "kiln/rng_step" else sess.variable_value(p.key)
                     for p in fn.state_in()}
    opt = run_pipeline(fn).fn
    return opt, lower_function(opt), state


def random_feeds(fn, batch, rng):
    """Random feeds for every feed param of ``fn`` at ``batch`` (ints in [-3, 5), bools half true)."""
    feeds = {}
    for p in fn.feeds():
        shape = tuple(d.coef * batch if isinstance(d, Sym) else d for d in p.value.type.shape)
        dt = p.value.type.dtype
        if dt.is_floating:
            feeds[p.key] = rng.standard_normal(shape).astype(dt.np)
        elif dt.is_bool:
            feeds[p.key] = rng.random(shape) < 0.5
        else:
            feeds[p.key] = rng.integers(-3, 5, shape).astype(dt.np)
    return feeds


def check_against_interpreter(fn, prog, state, feeds_for=None, rtol=1e-5, atol=1e-6, batches=BATCHES):
    """run_program == run_function (state outputs and fetches) at every batch size."""
    rng = np.random.default_rng(1)
    for batch in batches:
        feeds = feeds_for(batch, rng) if feeds_for else random_feeds(fn, batch, rng)
        want_state, want = run_function(fn, state, feeds)
        got_state, got = run_program(prog, state, feeds, batch)
        assert set(got) == set(want)
        assert set(got_state) == set(want_state)
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=f"fetch {key} N={batch}")
        for key in want_state:
            np.testing.assert_allclose(got_state[key], want_state[key], rtol=rtol, atol=atol,
                                       err_msg=f"state {key} N={batch}")


def kernel_origins(prog):
    return [k.origin.split(" ")[0] for k in prog.kernels]


# ----------------------------------------------------------------------------- loop groups
def test_elementwise_chain_with_broadcasting():
    def make(x, k):
        c = tf.Variable(np.linspace(-1, 1, 4, dtype=np.float32).reshape(4, 1), name="c")
        b = tf.constant(np.arange(3, dtype=np.float32))
        y = tf.tanh(x * c + b) - tf.sigmoid(x)
        mask = y > 0.1
        z = tf.where(mask, tf.exp(y), tf.cast(k, tf.float32) * 0.5)
        q = tf.floordiv(k, 2) + tf.mod(k, 3)
        return [y, mask, z, q], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 4, 3]), ("k", tf.int32, [None, 4, 3])])
    assert set(kernel_origins(prog)) == {"fused[loop]"}
    check_against_interpreter(fn, prog, state)


def test_loop_dims_are_coalesced():
    # [N,4,3] with a [3] operand keeps two loops (N*4, 3); with only full operands one flat loop
    assert coalesce((Sym(1), 4, 3), [(Sym(1), 4, 3), (3,)]) == ((Sym(4), 3), [(Sym(4), 3), (1, 3)])
    assert coalesce((Sym(1), 4, 3), [(Sym(1), 4, 3), ()]) == ((Sym(12),), [(Sym(12),), (1,)])
    assert coalesce((2, 1, 5), [(2, 1, 5), (1, 1, 5)]) == ((2, 5), [(2, 5), (1, 5)])
    assert coalesce((), [()]) == ((), [()])


def test_dropout_and_random_draws():
    def make(x):
        y = tf.nn.dropout(x, keep_prob=0.6, seed=3)
        noise = tf.random_normal([4, 5], seed=4) + tf.truncated_normal([4, 5], seed=5)
        dropped = tf.nn.dropout(x, keep_prob=0.5, seed=6)  # a draw in reduce prologues
        return [y, x * noise, tf.reduce_sum(dropped, 2), tf.reduce_max(dropped, 0)], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 4, 5])])
    assert "kiln/rng_step" in state
    check_against_interpreter(fn, prog, state)
    text = print_program(prog)
    assert "random_uniform<" in text and "random_normal<" in text and "random_truncated_normal<" in text


def test_view_of_feed_is_copied_and_arena_view_is_shared():
    def make(x):
        flat = tf.reshape(x, [-1])  # a view of a feed: copied into the arena
        y = tf.reshape(x * 2.0, [-1, 2])  # a view of an arena value: shares its bytes
        return [flat * 3.0, y + 1.0], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 4])])
    copies = [k for k in prog.kernels if k.origin.startswith("reshape")]
    assert len(copies) == 1 and copies[0].reads == ["feed_x_0"]
    check_against_interpreter(fn, prog, state)


# ----------------------------------------------------------------------------- reduce groups
AXES = [(0,), (1,), (2,), (-1,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axes", AXES)
def test_reductions_over_every_axis_pattern(axes, keepdims):
    def make(x, m):
        p = tf.exp(x * 0.5)  # a prologue
        outs = [tf.reduce_sum(p, axes, keepdims=keepdims), tf.reduce_mean(x, axes, keepdims=keepdims),
                tf.reduce_max(x, axes, keepdims=keepdims), tf.reduce_min(x, axes, keepdims=keepdims),
                tf.reduce_prod(x * 0.5 + 1.0, axes, keepdims=keepdims),
                tf.reduce_all(m, axes, keepdims=keepdims), tf.reduce_any(m, axes, keepdims=keepdims)]
        outs.append(tf.log(outs[0]) * 2.0)  # an epilogue
        return outs + [p], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 3, 4]), ("m", tf.bool, [None, 3, 4])])
    assert "fused[reduce]" in kernel_origins(prog)
    check_against_interpreter(fn, prog, state)


def _loops(stmt):
    """Every For in a statement tree, outermost first."""
    if isinstance(stmt, K.Block):
        return [f for sub in stmt.body for f in _loops(sub)]
    if isinstance(stmt, K.For):
        return [stmt] + _loops(stmt.body)
    return []


def test_leading_axes_reduce_accumulates_into_the_output():
    def make(x):
        return [tf.reduce_sum(x, 0), tf.reduce_mean(x * x, 0, keepdims=True) + 1.0,
                tf.log(tf.reduce_sum(tf.exp(x), 0))], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 6])])
    sum_buffer = dict(prog.copies)["fetch_Sum_0"]
    assert sum_buffer in prog.kernels[0].reads and sum_buffer in prog.kernels[0].writes  # accumulated in place
    for kernel in prog.kernels:
        init, outer, inner = _loops(kernel.body)[:3]
        # init loop over the outputs; then the batch loop outside, the kept axis inside (vectorized)
        assert init.stop == ix.i64(6) and outer.stop == K.Batch(int64) and not outer.vectorize
        assert inner.stop == ix.i64(6) and inner.vectorize
    scratch = [d for d in prog.buffers.values() if d.role == "scratch"]
    # mean and log(sum) accumulate in scratch; two instrs, so both start at offset 0
    assert [d.offset for d in scratch] == [0, 0] and prog.scratch_static_bytes == 64
    check_against_interpreter(fn, prog, state)


def test_integer_reductions():
    def make(k):
        return [tf.reduce_mean(k, 1), tf.reduce_sum(k, 0), tf.reduce_max(k, [0, 1]), tf.reduce_min(k, 1)], []

    fn, prog, state = build(make, [("k", tf.int32, [None, 5])])
    check_against_interpreter(fn, prog, state)


def test_reduce_mean_over_the_batch_divides_by_n():
    def make(x):
        return [tf.reduce_mean(x), tf.reduce_mean(tf.square(x), axis=0)], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 2])])
    assert "f32(N" in print_program(prog)
    check_against_interpreter(fn, prog, state)


def test_softmax_and_log_softmax():
    def make(x):
        return [tf.nn.softmax(x), tf.nn.log_softmax(x)], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 5])])
    check_against_interpreter(fn, prog, state)


def test_sparse_xent_loss_pieces():
    def make(logits, labels):
        z = logits - tf.reduce_max(logits, 1, keepdims=True)
        lse = tf.log(tf.reduce_sum(tf.exp(z), 1, keepdims=True))
        onehot = tf.one_hot(labels, 5)
        xent = tf.reduce_sum(onehot * (lse - z), 1)
        prob = tf.exp(z - lse)
        return [tf.reduce_mean(xent), prob - onehot], []

    def feeds(batch, rng):
        return {"logits:0": rng.standard_normal((batch, 5)).astype(np.float32),
                "labels:0": rng.integers(0, 5, batch).astype(np.int64)}

    fn, prog, state = build(make, [("logits", tf.float32, [None, 5]), ("labels", tf.int64, [None])])
    check_against_interpreter(fn, prog, state, feeds_for=feeds)


def test_adam_update_of_a_bias():
    def make(x):
        bias = tf.Variable(np.array([0.1, -0.2, 0.3, 0.0], np.float32), name="bias")
        loss = tf.reduce_sum(tf.square(x + bias))
        train = tf.train.AdamOptimizer(0.01).minimize(loss)
        return [loss], [train]

    fn, prog, state = build(make, [("x", tf.float32, [None, 4])])
    multi = [ins for ins in fn.body if ins.kind == "fused" and ins.attrs["pattern"] == "loop" and len(ins.results) > 1]
    assert multi, "the Adam update is a multi-output loop group"
    check_against_interpreter(fn, prog, state)
    _, fetches = run_program(prog, state, {"x:0": np.ones((2, 4), np.float32)}, 2)
    assert fetches["Sum:0"].shape == ()


def test_swapping_two_variables_snapshots_the_sources():
    def make(x):
        a = tf.Variable(np.float32([1, 2]), name="a")
        b = tf.Variable(np.float32([3, 4]), name="b")
        return [x * 1.0], [tf.assign(a, b).op, tf.assign(b, a).op]

    fn, prog, state = build(make, [("x", tf.float32, [None])])
    new_state, _ = run_program(prog, state, {"x:0": np.ones(2, np.float32)}, 2)
    want_state, _ = run_function(fn, state, {"x:0": np.ones(2, np.float32)})
    for key in want_state:
        np.testing.assert_array_equal(new_state[key], want_state[key])


# ----------------------------------------------------------------------------- pieces
def test_index_folding():
    i = K.Var("i", int64)
    assert ix.add(i, 0) is i and ix.mul(i, 1) is i and ix.mul(i, 0) == ix.i64(0)
    assert ix.add(ix.add(i, 2), 3) == K.Op("add", (i, ix.i64(5)), int64)
    assert ix.mul(ix.mul(i, 2), 3) == K.Op("mul", (i, ix.i64(6)), int64)
    assert ix.idiv(ix.i64(7), 2) == ix.i64(3) and ix.imod(i, 1) == ix.i64(0)
    assert ix.dim_expr(Sym(2)) == K.Op("mul", (K.Batch(int64), ix.i64(2)), int64)
    assert ix.strides((Sym(1), 4, 3)) == [ix.i64(12), ix.i64(3), ix.i64(1)]
    assert ix.broadcast_index([i, i, i], (Sym(1), 4, 3), (4, 1)) == ix.mul(i, 1)


def _tiny_program(store_index):
    decl = K.BufferDecl("out", float32, (3,), "fetch", key="y:0", index=0)
    v = K.Var("i0", int64)
    loop = K.For(v, ix.i64(0), ix.i64(3), K.Store("out", store_index(v), K.Const(1.0, float32)))
    return K.Program("p", {"out": decl}, [K.Kernel("k", [], ["out"], loop)], fetches=["y:0"])


def test_interpreter_rejects_out_of_bounds_and_undeclared_access():
    _, fetches = run_program(_tiny_program(lambda v: v), {}, {}, 1)
    np.testing.assert_array_equal(fetches["y:0"], np.ones(3, np.float32))
    with pytest.raises(KernelError, match="out of bounds"):
        run_program(_tiny_program(lambda v: ix.add(v, 1)), {}, {}, 1)
    prog = _tiny_program(lambda v: v)
    prog.kernels[0].writes = []
    with pytest.raises(KernelError, match="not in its writes"):
        run_program(prog, {}, {}, 1)


def test_interpreter_runs_vectorized_loops_as_lanes_and_checks_independence():
    v = K.Var("i0", int64)
    decl = K.BufferDecl("out", float32, (3,), "fetch", key="y:0", index=0)
    same = K.For(v, ix.i64(0), ix.i64(3), K.Store("out", ix.i64(0), K.Cast(v, float32)), vectorize=True)
    prog = K.Program("p", {"out": decl}, [K.Kernel("k", [], ["out"], same)], fetches=["y:0"])
    with pytest.raises(KernelError, match="same element"):
        run_program(prog, {}, {}, 1)
    same.vectorize = False  # sequential: the last iteration wins
    np.testing.assert_array_equal(run_program(prog, {}, {}, 1)[1]["y:0"], [2, 0, 0])


def _gemm_program(trans_a, trans_b, batch, epilogue):
    """C_b = A_b' @ B' (B shared by the batch) over buffers holding A, B and a bias."""
    m, n, k = 2, 4, 3
    a_rows, a_cols = (k, m) if trans_a else (m, k)
    b_rows, b_cols = (n, k) if trans_b else (k, n)
    bufs = {"a": K.BufferDecl("a", float32, (batch, a_rows, a_cols), "feed", key="a", index=0),
            "b": K.BufferDecl("b", float32, (b_rows, b_cols), "feed", key="b", index=1),
            "bias": K.BufferDecl("bias", float32, (n,), "feed", key="bias", index=2),
            "c": K.BufferDecl("c", float32, (batch, m, n), "fetch", key="c", index=0)}
    acc = K.Var("acc", float32)
    row, col, bidx = K.Var("row", int64), K.Var("col", int64), K.Var("bidx", int64)
    out_index = ix.add(ix.mul(bidx, m * n), ix.add(ix.mul(row, n), col))
    body = K.Store("c", out_index, K.Op("relu", (K.Op("add", (acc, K.Load("bias", col, float32)), float32),), float32))
    gemm = K.Gemm(ix.i64(m), ix.i64(n), ix.i64(k),
                  K.Operand("a", ix.i64(0), ix.i64(a_cols), trans_a, ix.i64(a_rows * a_cols)),
                  K.Operand("b", ix.i64(0), ix.i64(b_cols), trans_b, ix.i64(0)),
                  K.Operand("c", ix.i64(0), ix.i64(n), False, ix.i64(m * n)),
                  batch=ix.i64(batch), epilogue=body if epilogue else None)
    return K.Program("g", bufs, [K.Kernel("k", ["a", "b", "bias"], ["c"], gemm)], fetches=["c"])


@pytest.mark.parametrize("epilogue", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_interpreter_gemm(trans_a, trans_b, epilogue):
    rng = np.random.default_rng(0)
    prog = _gemm_program(trans_a, trans_b, 2, epilogue)
    feeds = {name: rng.standard_normal(prog.buffers[name].shape).astype(np.float32) for name in ("a", "b", "bias")}
    a = np.swapaxes(feeds["a"], 1, 2) if trans_a else feeds["a"]
    b = feeds["b"].T if trans_b else feeds["b"]
    want = a @ b
    if epilogue:
        want = np.maximum(want + feeds["bias"], 0)
    np.testing.assert_allclose(run_program(prog, {}, feeds, 1)[1]["c"], want, rtol=1e-6)


def test_missing_lowering_module_names_the_kind(monkeypatch):
    monkeypatch.setattr(program_mod, "PLAIN_LOWERING", ("no_such_module", "lower_plain"))

    def make(x):
        return [tf.transpose(x * 2.0) + 1.0], []

    with pytest.raises(NotImplementedError, match="transpose"):
        build(make, [("x", tf.float32, [None, 3])])


GOLDEN = """\
program @step
  workspace: arena 0 B + 128 B*N, scratch 0 B + 0 B*N
  feeds: 'x:0'
  fetches: 'Relu:0', 'Sum:0'

buffers:
  feed_x_0      f32[N,2]  feed #0 'x:0'
  fetch_Relu_0  f32[N,2]  fetch #0 'Relu:0'
  fetch_Sum_0   f32[N]    fetch #1 'Sum:0'
  v3            f32[N,2]  arena batch@0
  v4            f32[N]    arena batch@64

kernel reduce_Sum  (fused[reduce] Sum)
  reads feed_x_0  writes v3 v4
  for i0 in [0, N) parallel:
    acc acc0: f32 = 0.0
    for i1 in [0, 2) vectorize:
      let t0: f32 = relu(add(feed_x_0[(i0 * 2) + i1], 1.0))
      v3[(i0 * 2) + i1] = t0
      acc0 = add(acc0, t0)
    v4[i0] = acc0

copies:
  fetch_Relu_0 <- v3
  fetch_Sum_0 <- v4
"""


def test_printer_golden():
    def make(x):
        y = tf.nn.relu(x + 1.0)
        return [y, tf.reduce_sum(y, 1)], []

    fn, prog, state = build(make, [("x", tf.float32, [None, 2])])
    assert print_program(prog) == GOLDEN
    check_against_interpreter(fn, prog, state)


# ----------------------------------------------------------------------------- random graphs
UNARY_OPS = [tf.tanh, tf.sigmoid, tf.nn.relu, tf.square, tf.negative, tf.abs, lambda t: tf.exp(tf.tanh(t))]
BINARY_OPS = [tf.add, tf.subtract, tf.multiply, tf.maximum, tf.minimum]
REDUCE_OPS = [tf.reduce_sum, tf.reduce_mean, tf.reduce_max, tf.reduce_min]


def _grow(draw, st, pool):
    """One random elementwise / broadcast / reduction op over the pool ([N,3,4] tensors)."""
    x = draw(st.sampled_from(pool))
    choice = draw(st.sampled_from(["unary", "binary", "scalar", "bcast", "reduce"]))
    if choice == "unary":
        return draw(st.sampled_from(UNARY_OPS))(x)
    if choice == "binary":
        return draw(st.sampled_from(BINARY_OPS))(x, draw(st.sampled_from(pool)))
    if choice == "scalar":
        return x * draw(st.sampled_from([0.5, 2.0, -1.0])) + draw(st.sampled_from([0.0, 1.0]))
    if choice == "bcast":
        shape = draw(st.sampled_from([(4,), (3, 1), (1, 4), (3, 4)]))
        return x + tf.constant(np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape))
    axes = draw(st.sampled_from(AXES))
    reduced = draw(st.sampled_from(REDUCE_OPS))(x, axes, keepdims=True)
    return reduced * 0.5 + x  # broadcast back to keep the pool's shape


def test_random_loop_and_reduce_graphs():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @st.composite
    def graphs(draw):
        with tf.Graph().as_default():
            x = tf.placeholder(tf.float32, [None, 3, 4], name="x")
            pool = [x]
            for _ in range(draw(st.integers(3, 8))):
                pool.append(_grow(draw, st, pool))
            outs = [pool[-1], tf.reduce_sum(pool[-1], draw(st.sampled_from(AXES)))]
            return run_pipeline(lower_graph(outs, [], [x])).fn

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(graphs())
    def check(fn):
        check_against_interpreter(fn, lower_function(fn), {}, rtol=1e-4, atol=1e-5)

    check()

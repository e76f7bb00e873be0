"""Convolutions planned one batch item at a time (compiler/lower/conv_chunks.py).

The planned program is checked against the unplanned one and the IR interpreter with the
kernel interpreter for several slot counts and batch sizes (cheap: no LLVM), then once
compiled for this host (and for a slot count that does not divide the taps) against the
interpreter over training steps, at batch 1 (one slot: the slot loop stays on the calling
thread and the item's product uses the threads) and 5.
"""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from compiler.ir.from_graph import RNG_STATE, lower_graph
from compiler.ir.interpreter import run_function
from compiler.lower.capabilities import Capabilities
from compiler.lower.conv_chunks import MIN_ITEM_WORK
from compiler.lower.kernel_interp import run_program
from compiler.lower import kernel_ir as K
from compiler.lower.kernel_walk import iter_stmts
from compiler.lower.program import lower_function
from compiler.lower.schedule import plan_program
from compiler.passes.manager import run_pipeline


def conv_net():
    """Two convolutions (bias + relu, a strided VALID one), their gradients and an Adam step:
    forward, filter-gradient (with the Adam epilogue) and input-gradient products."""
    x = tf.placeholder(tf.float32, [None, 7, 6, 4], name="x")
    init = tf.truncated_normal_initializer(stddev=0.3, seed=1)
    h = tf.layers.conv2d(x, 5, 3, padding="same", activation=tf.nn.relu, kernel_initializer=init, name="c1")
    h = tf.layers.conv2d(h, 3, 3, strides=2, padding="valid", kernel_initializer=init, name="c2")
    loss = tf.reduce_sum(tf.square(h), name="loss")
    train = tf.train.AdamOptimizer(0.01).minimize(loss)
    return x, loss, train


def features(batch, seed=0):
    return np.random.default_rng(seed + batch).standard_normal((batch, 7, 6, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def lowered():
    """(optimized function, program, initial state) of ``conv_net``'s train step."""
    with tf.Graph().as_default():
        x, loss, train = conv_net()
        fn = lower_graph([loss], [train], [x])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            state = {p.key: np.int64(3) if p.key == RNG_STATE else sess.variable_value(p.key) for p in fn.state_in()}
    opt = run_pipeline(fn).fn
    return opt, lower_function(opt), state


def split_products(program) -> list:
    """The ItemSplit hints of a program's Gemms."""
    return [s.split for k in program.kernels for s in iter_stmts(k.body) if isinstance(s, K.Gemm) and s.split]


def slot_loops(kernel) -> list:
    """Parallel loops of a planned kernel that hold a Gemm (a split convolution)."""
    return [s for s in iter_stmts(kernel.body) if isinstance(s, K.For) and s.parallel
            and any(isinstance(t, K.Gemm) for t in iter_stmts(s.body))]


def test_lowering_marks_the_three_products(lowered):
    _, program, _ = lowered
    kinds = sorted(sp.kind for sp in split_products(program))
    assert kinds == ["k", "k", "rows", "rows", "rows"]  # 2 filter grads, 2 forwards, 1 input grad (c1's x has none)


BATCHES = (1, 5)  # one item (fewer than the slots) and more items than slots, uneven


@pytest.fixture(scope="module")
def references(lowered):
    """Per batch: the feeds, the IR interpreter's state and the unplanned program's results
    (computed once for every slot count)."""
    fn, program, state = lowered
    out = {}
    for batch in BATCHES:
        feeds = {"x:0": features(batch)}
        want_state, _ = run_function(fn, dict(state), feeds)
        out[batch] = feeds, want_state, run_program(program, dict(state), feeds, batch)
    return out


@pytest.mark.parametrize("slots", [1, 2, 3, 8])
def test_planned_products_match_the_whole_batch(lowered, references, slots):
    _, program, state = lowered
    caps = Capabilities(name="cpu", threads=slots, vector_width=16, min_parallel_work=1, nested_gemm=True)
    planned = plan_program(program, caps)
    convs = [k for k in planned.kernels if k.name.startswith("conv_")]
    assert len(convs) == 5 and all(slot_loops(k) for k in convs)
    assert not split_products(planned)  # every hint was used
    for batch, (feeds, want_state, (whole_state, whole)) in references.items():
        got_state, got = run_program(planned, dict(state), feeds, batch)
        for key in want_state:
            np.testing.assert_allclose(got_state[key], want_state[key], rtol=1e-4, atol=1e-5, err_msg=f"{key} N={batch}")
            np.testing.assert_allclose(got_state[key], whole_state[key], rtol=1e-5, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(got["loss:0"], whole["loss:0"], rtol=1e-6)


def test_filter_gradient_splits_at_tap_boundaries(lowered):
    """16 slots over a 3x3 window (9 taps): at most 9 slots, each a whole number of taps."""
    _, program, _ = lowered
    caps = Capabilities(name="cpu", threads=16, min_parallel_work=1, nested_gemm=True)
    planned = plan_program(program, caps)
    filt = [k for k in planned.kernels if k.name.startswith("conv_conv2d_backprop_filter") and "c2" in k.name]
    (loop,) = slot_loops(filt[0])
    assert loop.stop == K.Const(9, loop.stop.dtype)


def test_small_products_keep_the_whole_batch(lowered):
    """Per-slot products below MIN_ITEM_WORK x min_parallel_work multiply-adds stay whole:
    here c1's filter gradient (3 slots: 3 taps x 4 channels x 5 x 42 rows = 2520 per slot
    and item) splits when 16 x min_parallel_work is 2512 but not when it is 2528."""
    _, program, _ = lowered

    def split_filters(min_work):
        caps = Capabilities(name="cpu", threads=3, min_parallel_work=min_work, nested_gemm=True)
        planned = plan_program(program, caps)
        return sorted(k.name for k in planned.kernels if k.name.startswith("conv_conv2d_backprop_filter")
                      and slot_loops(k))
    assert any("c1" in name for name in split_filters(2520 // MIN_ITEM_WORK))
    assert not any("c1" in name for name in split_filters(2520 // MIN_ITEM_WORK + 1))


def test_small_filter_gradients_split_into_batch_parts(lowered, references):
    """Filter gradients too small for the tap split take the batch in ``reduction_parts``
    parts (partial results summed in part order), also with fewer items than parts; the
    forward and input-gradient products stay whole."""
    _, program, state = lowered
    caps = Capabilities(name="cpu", threads=2, vector_width=16, min_parallel_work=10 ** 9, nested_gemm=True,
                        reduction_parts=8)
    planned = plan_program(program, caps)
    filters = [k for k in planned.kernels if k.name.startswith("conv_conv2d_backprop_filter")]
    assert len(filters) == 2 and all(len(slot_loops(k)) == 1 for k in filters)
    assert all(slot_loops(k)[0].stop == K.Const(8, slot_loops(k)[0].stop.dtype) for k in filters)
    assert len(split_products(planned)) == 3  # the other convolutions keep their hints (whole batch)
    for batch, (feeds, want_state, (whole_state, _)) in references.items():
        got_state, _ = run_program(planned, dict(state), feeds, batch)
        for key in want_state:
            np.testing.assert_allclose(got_state[key], whole_state[key], rtol=1e-5, atol=1e-6, err_msg=f"{key} N={batch}")


def test_other_targets_keep_the_whole_batch(lowered):
    _, program, _ = lowered
    planned = plan_program(program, Capabilities(name="cpu", threads=4, min_parallel_work=1))
    assert len(split_products(planned)) == 5
    assert not any(slot_loops(k) for k in planned.kernels)


@pytest.mark.parametrize("cores,min_work", [(None, 1), (3, 1), (None, 10 ** 9)])
def test_compiled_split_convolutions_train_like_the_interpreter(cores, min_work, monkeypatch, tmp_path):
    """Three Adam steps compiled for this host (or as if it had 3 cores: 3 slots on however
    many threads run) against the interpreter, at batch 1 (one slot) and 5; every product
    split (``min_work`` 1), or none but the filter gradients, in batch parts (10**9)."""
    import compiler.codegen.llvm.capabilities as host

    if cores is not None:
        monkeypatch.setattr(host, "host_cores", lambda: cores)
    monkeypatch.setattr(host, "PARALLEL_MIN_WORK", min_work)
    monkeypatch.setenv("KILN_CACHE", "0")

    def losses(backend):
        with tf.Graph().as_default():
            x, loss, train = conv_net()
            with tf.Session(config={"backend": backend}) as sess:
                sess.run(tf.global_variables_initializer())
                return [sess.run([loss, train], {x: features(b, step)})[0] for step in range(3) for b in (1, 5)]

    np.testing.assert_allclose(losses("compiled"), losses("interpreter"), rtol=2e-5)


def test_profile_costs_are_counted_before_planning(lowered):
    """The split kernels' loop bounds are not polynomials in N; their FLOPs in a profiling
    build's record come from the unplanned kernels of the same name."""
    from compiler.lower.profile_table import profile_record

    _, program, _ = lowered
    planned = plan_program(program, Capabilities(name="cpu", threads=2, min_parallel_work=1, nested_gemm=True))

    def conv_flops(record):
        return {e["name"]: e["flops"] for e in record["events"] if e["name"].startswith("conv_")}
    counted = conv_flops(profile_record({"step": planned}, unplanned={"step": program}))
    assert counted == conv_flops(profile_record({"step": program}))
    assert len(counted) == 5 and all(f is not None for f in counted.values())
    assert set(conv_flops(profile_record({"step": planned})).values()) == {None}

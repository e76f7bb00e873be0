"""Reductions over leading axes split into parts (compiler/lower/split_reduce.py, a step of
the scheduling pass for targets that thread loops in place).

* the plan: a bias-gradient-shaped reduce kernel becomes parallel parts over partial rows
  (a scratch buffer after the program's scratch region) and a combine loop; the plan is
  the same for every thread count of the capabilities;
* each planned program means the interpreter's program: sums, max/min/prod, mean and
  log-sum-exp (the result reused in the kernel's epilogue), integers, bools, keepdims, a
  static leading dim not divisible by the parts, batch sizes below and above the parts;
* what stays as it was: too little work, fewer iterations than parts, partial rows over
  ``SPLIT_MAX_BYTES``, a result read in the loop, grid targets, no ``reduction_parts``;
* the CPU backend (one compile): the host's capabilities split the kernels, the compiled
  step gives the interpreter's numbers and the same bits with 1, 2 and 3 threads.
"""
from __future__ import annotations

import ctypes
from dataclasses import replace

import numpy as np
import pytest

from compiler import tf
from compiler.ir.types import N
from compiler.lower import kernel_ir as K
from compiler.lower.capabilities import Capabilities
from compiler.lower.kernel_interp import run_program
from compiler.lower.kernel_printer import print_program
from compiler.lower.schedule import plan_program
from compiler.lower.split_reduce import SPLIT_MAX_BYTES
from tests.kernel_ir_kit import F32, I64
from tests.kernel_ir_kit import const as _c
from tests.test_lower_loops import build, check_against_interpreter

PARTS = 4
SPLIT = Capabilities("split", threads=2, reduction_parts=PARTS, min_parallel_work=1)
GRID = Capabilities("grid", threads=256, blocks=65535, max_threads_per_block=1024, shared_memory_bytes=48 * 1024,
                    reduction_parts=PARTS)
BATCHES = (1, 2, 5, 9)  # fewer rows than parts (empty parts), and not a multiple of them


def _split_loops(program) -> list:
    """The parts loops of a planned program (top-level parallel loops over the parts)."""
    return [s for k in program.kernels for s in k.body.body
            if isinstance(s, K.For) and s.parallel and s.var.name.startswith("kiln_part")]


def _bias_grad(x, g):
    """The conv bias gradient's kernel: a ReLU gradient stored and summed over N, H, W."""
    relu_grad = tf.where(x > 0, g, tf.zeros_like(g))
    return [tf.reduce_sum(relu_grad, [0, 1, 2]), relu_grad], []


NHWC = [("x", tf.float32, [None, 5, 3, 7]), ("g", tf.float32, [None, 5, 3, 7])]


# ----------------------------------------------------------------------------- the plan
def test_bias_gradient_kernel_is_split_into_parts():
    fn, program, state = build(_bias_grad, NHWC)
    planned = plan_program(program, SPLIT)
    (loop,) = _split_loops(planned)
    assert loop.stop == _c(PARTS) and loop.start == _c(0)
    init, rows = loop.body.body
    assert init.vectorize and init.stop == _c(7)  # the part's row starts at the combine's identity
    assert not isinstance(rows.start, K.Const) and not rows.parallel  # its share of the N rows, in order
    (kernel,) = [k for k in planned.kernels if any(s is loop for s in k.body.body)]
    combine = kernel.body.body[kernel.body.body.index(loop) + 1]
    assert combine.vectorize and combine.stop == _c(7)
    part = planned.buffers[init.body.buffer]
    assert (part.role, part.space, part.shape) == ("scratch", "static", (PARTS, 16))  # rows of whole cache lines
    assert part.offset >= program.scratch_static_bytes
    assert planned.scratch_static_bytes >= part.offset + PARTS * 64
    assert init.body.buffer in kernel.reads and init.body.buffer in kernel.writes
    assert "1 reductions split into parts" in planned.plan_summary
    text = print_program(planned)
    assert f"  for {loop.var.name} in [0, 4) parallel:\n" in text
    assert f"    for {rows.var.name} in [({loop.var.name} * N) // 4, (({loop.var.name} + 1) * N) // 4):\n" in text
    assert init.body.buffer not in program.buffers and not _split_loops(program)  # the input is not changed
    check_against_interpreter(fn, planned, state, batches=BATCHES)


def test_partial_rows_follow_the_scratch_region():
    """A kernel that also uses scratch (a mean accumulates there) keeps its bytes."""
    def make(x):
        return [tf.reduce_mean(x * x, [0, 1]) + 1.0], []
    fn, program, state = build(make, [("x", tf.float32, [None, 3, 6])])
    planned = plan_program(program, SPLIT)
    assert len(_split_loops(planned)) == 1
    old = [d for d in program.buffers.values() if d.role == "scratch"]
    (part,) = [d for n, d in planned.buffers.items() if n not in program.buffers]
    assert old and all(part.offset >= d.offset + 4 * 6 for d in old)
    check_against_interpreter(fn, planned, state, batches=BATCHES)


def test_plan_does_not_depend_on_the_thread_count():
    fn, program, state = build(_bias_grad, NHWC)
    texts = set()
    for threads in (1, 2, 16):
        planned = plan_program(program, replace(SPLIT, threads=threads, min_parallel_work=64))
        assert len(_split_loops(planned)) == 1
        texts.add(print_program(planned).split("\nbuffers:")[1])
    assert len(texts) == 1


# ----------------------------------------------------------------------------- meaning
def _sums(x):
    return [tf.reduce_sum(x, 0), tf.reduce_sum(x, 0, keepdims=True) * 2.0], []


def _extremes(x):
    return [tf.reduce_max(x, [0, 1], keepdims=True), tf.reduce_min(x, [0, 1]), tf.reduce_prod(x * 0.1 + 1.0, [0, 1])], []


def _reused(x):
    """Results reused in the reduce kernel's epilogue: a mean divides, log-sum-exp logs."""
    return [tf.reduce_mean(x * x, 0) + 1.0, tf.log(tf.reduce_sum(tf.exp(x), 0)) - tf.reduce_max(x, 0)], []


def _integers(k):
    return [tf.reduce_sum(k, 0), tf.reduce_max(k, 0), tf.reduce_mean(k, 0)], []


def _bools(x):
    return [tf.reduce_any(x > 0.5, 0), tf.reduce_all(x > -1.0, 0)], []


CASES = {
    "sums": (_sums, [("x", tf.float32, [None, 6])]),
    "extremes": (_extremes, [("x", tf.float32, [None, 5, 7])]),
    "reused": (_reused, [("x", tf.float32, [None, 6])]),
    "integers": (_integers, [("k", tf.int32, [None, 5])]),
    "bools": (_bools, [("x", tf.float32, [None, 4])]),
    "static_rows": (_sums, [("x", tf.float32, [11, 6])]),  # 11 rows in 4 parts: 2, 3, 3, 3
    "bias_grad": (_bias_grad, NHWC),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_split_reductions_mean_the_program(name):
    make, specs = CASES[name]
    fn, program, state = build(make, specs)
    planned = plan_program(program, SPLIT)
    assert _split_loops(planned)
    check_against_interpreter(fn, planned, state, batches=BATCHES)


# ----------------------------------------------------------------------------- not split
def test_loops_that_do_not_pay_or_fit_stay_as_they_are():
    fn, program, _ = build(_bias_grad, NHWC)
    assert not _split_loops(plan_program(program, replace(SPLIT, min_parallel_work=10 ** 6)))
    assert not _split_loops(plan_program(program, replace(SPLIT, reduction_parts=0)))
    _, static, _ = build(_sums, [("x", tf.float32, [3, 6])])  # 3 rows, 4 parts
    assert not _split_loops(plan_program(static, SPLIT))
    assert _split_loops(plan_program(static, replace(SPLIT, reduction_parts=3)))
    cols = SPLIT_MAX_BYTES // (4 * PARTS) + 1
    _, wide, _ = build(lambda x: ([tf.reduce_sum(x, 0)], []), [("x", tf.float32, [None, cols])])
    assert not _split_loops(plan_program(wide, SPLIT))
    assert _split_loops(plan_program(wide, replace(SPLIT, reduction_parts=2)))


def test_grid_targets_plan_their_own_reductions():
    _, program, _ = build(_bias_grad, NHWC)
    planned = plan_program(program, GRID)
    assert not _split_loops(planned) and planned.buffers == program.buffers
    assert any(isinstance(launch, K.BlockReduce) for k in planned.kernels for launch in k.launches)


def test_a_result_read_inside_the_loop_is_not_split():
    """acc[c] += x[r, c]; y[r, c] = acc[c] (a running sum): the parts would see other sums."""
    r, c = K.Var("r", I64), K.Var("c", I64)
    at = K.Op("add", (K.Op("mul", (r, _c(3)), I64), c), I64)
    update = K.Store("acc", c, K.Op("add", (K.Load("acc", c, F32), K.Load("x", at, F32)), F32))
    body = K.For(r, _c(0), K.Batch(I64), K.For(c, _c(0), _c(3), K.Block([update, K.Store("y", at, K.Load("acc", c, F32))])))
    bufs = {"x": K.BufferDecl("x", F32, (N, 3), "feed", index=0, key="x:0"),
            "y": K.BufferDecl("y", F32, (N, 3), "fetch", index=0, key="y:0"),
            "acc": K.BufferDecl("acc", F32, (3,), "fetch", index=1, key="acc:0")}
    program = K.Program("p", bufs, [K.Kernel("k", ["x", "acc"], ["acc", "y"], K.Block([body]))],
                        feeds=["x:0"], fetches=["y:0", "acc:0"])
    planned = plan_program(program, SPLIT)
    assert not _split_loops(planned)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    _, got = run_program(planned, {}, {"x:0": x}, 4)
    np.testing.assert_array_equal(got["y:0"], np.cumsum(x, 0))


# ----------------------------------------------------------------------------- the CPU backend
BIG = [("x", tf.float32, [None, 16, 16, 32]), ("g", tf.float32, [None, 16, 16, 32])]


def _big_bias_grad(x, g):
    """Sum and max over N, H, W, the stored ReLU gradient, a mean over N: enough work per row
    of [N, 16, 16, 32] for the host's capabilities to split."""
    relu_grad = tf.where(x > 0, g, tf.zeros_like(g))
    return [tf.reduce_sum(relu_grad, [0, 1, 2]), tf.reduce_max(g, [0, 1, 2]), relu_grad, tf.reduce_mean(x, 0)], []


def test_cpu_backend_runs_the_split_kernels():
    from compiler.codegen.llvm.capabilities import host_capabilities

    _, program, _ = build(_big_bias_grad, BIG)
    assert len(_split_loops(plan_program(program, host_capabilities()))) >= 2
    gomp = ctypes.CDLL("libgomp.so.1")
    before = gomp.omp_get_max_threads()
    rng = np.random.default_rng(5)
    with tf.Graph().as_default():
        phs = [tf.placeholder(dtype, shape, name=name) for name, dtype, shape in BIG]
        fetches, _ = _big_bias_grad(*phs)
        with tf.Session(config={"backend": "compiled"}) as sess:
            try:
                for batch in (1, 3, 10):
                    feed = {p: rng.standard_normal((batch, 16, 16, 32)).astype(np.float32) for p in phs}
                    runs = []
                    for threads in (1, 2, 3):
                        gomp.omp_set_num_threads(threads)
                        runs.append(sess.run(fetches, feed))
                    for other in runs[1:]:  # the same bits whatever the team
                        for a, b in zip(runs[0], other):
                            np.testing.assert_array_equal(a, b)
                    with tf.Session(config={"backend": "interpreter"}) as ref:
                        want = ref.run(fetches, feed)
                    for got, exp in zip(runs[0], want):
                        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-4)
            finally:
                gomp.omp_set_num_threads(before)

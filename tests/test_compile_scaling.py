"""Compile work that grows linearly with the graph (issue 12): an unrolled LSTM.

Structure, not timing: the distinct kernel functions of an unrolled LSTM do not grow with
its step count (``lower/dedup.py``), fusion's cycle-check work per op stays flat as the
graph grows (``passes/fusion_order.py``), the incremental topological order answers like a
brute-force search over random graphs and merges, and memory planning's vectorized
best fit places blocks exactly where the plain loop did.  Numerics: the compiled LSTM
(CPU, and CUDA on the host emulator) against the interpreter and the CPU.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.codegen.registry import make_target
from compiler.compile import finish_entry, plan_entry
from compiler.frontend.compile_graph import compile_entries
from compiler.ir.from_graph import lower_graph
from compiler.lower.dedup import kernel_functions
from compiler.passes import fusion
from compiler.passes.fusion_order import UnitOrder
from compiler.passes.liveness import Interval
from compiler.passes.manager import run_pipeline
from compiler.passes.memory_plan import Block, assign_offsets
from tests import models
from tests.cuda_kit import MODES


def _lstm_fn(steps, hidden=8, optimizer="adam"):
    with tf.Graph().as_default():
        t = models.lstm_tensors(steps, hidden, optimizer=optimizer)
        return lower_graph([t["loss"]], [t["train"]], [t["x"], t["labels"]], name="train")


def _program(steps):
    return plan_entry(finish_entry("train", _lstm_fn(steps)), make_target("cpu")).program


# ----------------------------------------------------------------------------- kernels
def test_distinct_kernels_do_not_grow_with_steps():
    small, large = _program(4), _program(12)
    assert len(large.kernels) >= len(small.kernels) + 8 * 15  # every step adds its cell kernels
    distinct = [len(kernel_functions(p)[0]) for p in (small, large)]
    assert distinct[0] == distinct[1], distinct
    assert distinct[1] * 4 < len(large.kernels)


def test_calls_bind_buffers_like_the_kernels():
    """Every call names the buffers its kernel touches, in the function's parameter order,
    and a shared function's parameters have those buffers' dtypes and shapes."""
    program = _program(5)
    functions, calls = kernel_functions(program)
    assert len(calls) == len(program.kernels)
    assert any(f.calls > 1 for f in functions) and any(c.offsets for c in calls)  # the per-row slices
    for kernel, call in zip(program.kernels, calls):
        assert set(kernel.reads) | set(kernel.writes) <= set(call.args)
        params = list(functions[call.function].program.buffers.values())
        for arg, param in zip(call.args, params):
            decl = program.buffers[arg]
            assert (param.dtype, tuple(param.shape), param.role) == (decl.dtype, tuple(decl.shape), decl.role)


# ----------------------------------------------------------------------------- fusion
def _fusion_work(steps):
    """(cycle-check units visited, body ops) of fusion on the LSTM's step after the passes before it."""
    fn = _lstm_fn(steps)
    seen = {}
    original = fusion._grow

    def grow(graph):
        original(graph)
        seen["work"] = graph.order.work
    fusion._grow = grow
    try:
        run_pipeline(fn)
    finally:
        fusion._grow = original
    return seen["work"], len(fn.body)


def test_fusion_cycle_checks_stay_linear():
    (w_small, n_small), (w_large, n_large) = _fusion_work(4), _fusion_work(16)
    assert n_large > 2.5 * n_small
    assert w_large / n_large < 2 * w_small / n_small, (w_small, n_small, w_large, n_large)


class _Node:
    """A unit of a random DAG: the instrs it holds and its neighbours by those instrs."""

    def __init__(self, i):
        self.members = {i}


def _brute_path(succ, a, b):
    """A path a -> X -> ... -> b through a unit other than a and b."""
    stack, seen = [x for x in succ(a) if x is not b], set()
    while stack:
        x = stack.pop()
        for y in succ(x):
            if y is b:
                return True
            if y is not a and y not in seen:
                seen.add(y)
                stack.append(y)
    return False


@pytest.mark.parametrize("seed", range(6))
def test_unit_order_matches_brute_force(seed):
    rng = random.Random(seed)
    n = 60
    edges = [(i, j) for j in range(n) for i in range(max(0, j - 8), j) if rng.random() < 0.25]
    unit = {i: _Node(i) for i in range(n)}
    succ = (lambda g: list(dict.fromkeys(unit[j] for i, j in edges if i in g.members and j not in g.members)))
    pred = (lambda g: list(dict.fromkeys(unit[i] for i, j in edges if j in g.members and i not in g.members)))
    order = UnitOrder([unit[i] for i in range(n)], succ, pred)
    merges = 0
    for _ in range(150):
        a, b = unit[rng.randrange(n)], unit[rng.randrange(n)]
        if a is b:
            continue
        plan = order.merge_plan(a, b)
        assert (plan is None) == (_brute_path(succ, a, b) or _brute_path(succ, b, a))
        if plan is None:
            continue
        a.members |= b.members
        for i in b.members:
            unit[i] = a
        order.merged(plan, a, b)
        merges += 1
        for i, j in edges:  # still a topological numbering of the merged graph
            if unit[i] is not unit[j]:
                assert order.pos[unit[i]] < order.pos[unit[j]]
    assert merges > 10


def test_sibling_sweep_matches_brute_force():
    rng = random.Random(7)
    n = 50
    edges = [(i, j) for j in range(n) for i in range(max(0, j - 6), j) if rng.random() < 0.3]
    unit = {i: _Node(i) for i in range(n)}
    succ = (lambda g: [unit[j] for i, j in edges if i in g.members])
    pred = (lambda g: [unit[i] for i, j in edges if j in g.members])
    order = UnitOrder([unit[i] for i in range(n)], succ, pred)
    sources = [unit[i] for i in sorted(rng.sample(range(n), 15))]
    near = order.related(sources)
    for x in sources:
        for j, y in enumerate(sources):
            related = x is y or _brute_path(succ, x, y) or _brute_path(succ, y, x)
            assert bool(near[x] >> j & 1) == related


# ----------------------------------------------------------------------------- memory plan
def _reference_offsets(blocks):
    """The plain best-fit loop (the plan before vectorizing)."""
    placed = []
    for block in sorted(blocks, key=lambda b: (-b.size, b.interval.start, b.order)):
        live = sorted((p for p in placed if p.interval.overlaps(block.interval)), key=lambda p: p.offset)
        best, top = None, 0
        for other in live:
            gap = other.offset - top
            if gap >= block.size and (best is None or gap < best[1]):
                best = (top, gap)
            top = max(top, other.offset + other.size)
        block.offset = best[0] if best else top
        placed.append(block)
    return [b.offset for b in blocks]


@pytest.mark.parametrize("seed", range(5))
def test_best_fit_matches_the_plain_loop(seed):
    rng = random.Random(seed)
    spec = []
    for order in range(200):
        start = rng.randrange(100)
        spec.append((rng.choice([64, 128, 256, 512, 1024, 4096]), start, start + rng.randrange(30), order))
    mine = [Block(None, s, Interval(a, b), o) for s, a, b, o in spec]
    ref = [Block(None, s, Interval(a, b), o) for s, a, b, o in spec]
    size = assign_offsets(mine)
    assert [b.offset for b in mine] == _reference_offsets(ref)
    assert size == max(b.offset + b.size for b in ref)


# ----------------------------------------------------------------------------- numerics
def test_compiled_lstm_matches_interpreter():
    """Loss and gradients of a 3-step LSTM: the compiled CPU step against the interpreter."""
    results = {}
    for backend in ("interpreter", "compiled"):
        with tf.Graph().as_default():
            t = models.lstm_tensors(3, 8, optimizer="sgd")
            params = tf.trainable_variables()
            grads = tf.gradients(t["loss"], params)
            with tf.Session(config={"backend": backend}) as sess:
                sess.run(tf.global_variables_initializer())
                results[backend] = sess.run([t["loss"]] + grads, models.lstm_feeds(3, batch=4))
    for got, want in zip(results["compiled"], results["interpreter"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_lstm_losses_match_cpu(tmp_path, mode):
    """Three training steps of a 3-step LSTM: CUDA (shared kernel functions, offset
    arguments) against the CPU backend."""
    graph = tf.Graph()
    with graph.as_default():
        t = models.lstm_tensors(3, 8)
    entries = {"train": ([t["loss"]], [t["train"]], [t["x"], t["labels"]])}
    losses = {}
    for target in ("cpu", "cuda"):
        options = {"emulate": mode == "emulated"} if target == "cuda" else {}
        path = compile_entries(graph, entries, tmp_path / target, target=target, dump_ir=False, **options)
        with runtime.load_artifact(path).new_state() as state:
            losses[target] = [float(state.run("train", models.lstm_feeds(3, batch=2, seed=s))["loss:0"])
                              for s in range(3)]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=2e-4, atol=1e-5)

"""Loops holding checks, run on the host emulator (race checking on) against the CPU
backend: a full reduction whose tail (thread 0) fails a check, ordered loops with float and
integer checks failing within and across chunks of 1024 threads (the first failure in loop
order, with the CPU backend's message), and the label range and gather index checks of a
graph.  Their launch shapes: test_cuda_kernels_parallel.py.
"""
from __future__ import annotations


import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.codegen.cuda import program_variables, render_module
from compiler.lower import kernel_ir as K
from compiler.lower.launches import launch_groups
from tests.cuda_kit import RawAbiLib, needs_emulator
from tests.kernel_ir_kit import ordered_checks_program, sum_with_check_program


@pytest.fixture
def race_check(monkeypatch):
    """Libraries loaded in the test check every launch for races (kiln_cuda_emulate.h)."""
    monkeypatch.setenv("KILN_EMU_RACECHECK", "1")


@needs_emulator
def test_reduction_tail_check_on_emulator(tmp_path):
    from compiler.codegen.cuda.build import compile_cuda

    program = sum_with_check_program()
    (plan,) = launch_groups(program.kernels[0].body.body, program.buffers)
    assert isinstance(plan, K.BlockReduce) and not plan.par
    compile_cuda(render_module({"p": program}, program_variables([program])), tmp_path / "p.so", emulate=True)
    lib = RawAbiLib(tmp_path / "p.so")
    try:
        for x in (np.linspace(-1, 2, 600, dtype=np.float32), np.linspace(-2, 1, 600, dtype=np.float32)):
            out = np.zeros((), np.float32)
            code, message = lib.run("p", [x], [out], len(x))
            if x.sum() >= 0:
                assert code == 0 and out == pytest.approx(float(x.astype(np.float64).sum()), rel=1e-5)
            else:
                assert code == 3 and "negative sum -300" in message
    finally:
        lib.close()


def _run(lib, x):
    """The one-feed, one-fetch program ``p`` on ``x``: (code, message, output)."""
    out = np.zeros_like(x)
    code, message = lib.run("p", [x], [out], len(x))
    return code, message, out


@needs_emulator
def test_ordered_checks_report_the_first_failure_like_cpu(tmp_path):
    """Batch 1500: two chunks of 1024 threads.  Failures in the first chunk, in the second
    only, in one iteration (the first failing check of it), float and integer values: the
    CUDA module's message is the CPU backend's, the valid batch gives its results, and the
    race checker sees no race."""
    from compiler.codegen.cuda.build import compile_cuda
    from compiler.codegen.llvm.build import compile_module
    from compiler.codegen.llvm.module import build_module

    program = ordered_checks_program()
    (plan,) = launch_groups(program.kernels[0].body.body, program.buffers)
    assert isinstance(plan, K.Ordered)
    compile_cuda(render_module({"p": program}, program_variables([program])), tmp_path / "cuda.so", emulate=True)
    compile_module(build_module({"p": program}, []), str(tmp_path / "cpu.so"))
    cuda, cpu = RawAbiLib(tmp_path / "cuda.so", race=True), RawAbiLib(tmp_path / "cpu.so")
    rng = np.random.default_rng(5)
    cases = {"valid": {}, "first chunk": {5: 700.0, 900: np.nan, 1300: -2e6}, "second chunk": {1100: np.nan, 1300: 900.0},
             "at 0": {0: -3e6, 1: np.nan}, "last": {1499: 501.5}, "one iteration": {1200: 2e6, 1400: np.nan},
             "integer value": {1030: -5e6, 1031: 600.0}}
    seen = set()
    for name, bad in cases.items():
        x = rng.uniform(-400, 400, 1500).astype(np.float32)
        for pos, value in bad.items():
            x[pos] = value
        (rc_gpu, msg_gpu, out_gpu), (rc_cpu, msg_cpu, out_cpu) = _run(cuda, x), _run(cpu, x)
        assert cuda.last_race() == b"", name
        assert (rc_gpu, msg_gpu) == (rc_cpu, msg_cpu), name
        if bad:
            assert rc_gpu == 3 and msg_gpu.startswith("checks (hand-made): "), (name, msg_gpu)
            seen.add(msg_gpu)
        else:
            assert rc_gpu == 0
            np.testing.assert_array_equal(out_gpu, out_cpu)
    assert seen == {"checks (hand-made): 2x = 1400 is too big", "checks (hand-made): x is nan",
                    "checks (hand-made): x[0] is huge", "checks (hand-made): 2x = 1003 is too big",
                    "checks (hand-made): 2x = 4e+06 is too big", "checks (hand-made): x[1030] is huge"}


def _label_and_gather_entries():
    """A sparse-softmax loss (the label range check over N) and a gather over [N, 3] indices
    (its index check flattens both loops)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 10], name="x")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        idx = tf.placeholder(tf.int32, [None, 3], name="idx")
        table = tf.constant(np.arange(14, dtype=np.float32).reshape(7, 2))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x * 2.0), name="loss")
        picked = tf.identity(tf.gather(table, idx) * 1.5, name="picked")
        entries = {"f": ([loss, picked], [], [x, labels, idx])}
    return graph, entries


@needs_emulator
def test_label_and_index_checks_match_cpu(tmp_path, race_check):
    """Bad labels at 3 and 200 of a batch of 300, at 0, and at 1100 / 1400 of 1500 (the
    second chunk); a bad gather index at [250, 2] before one at [260, 0]: the CPU backend's
    message; valid feeds: its results.  Race checking is on (a race fails the step)."""
    from tests.cuda_kit import load_pair

    graph, entries = _label_and_gather_entries()
    cpu, gpu = load_pair(graph, entries, tmp_path)
    rng = np.random.default_rng(6)

    def feeds(n, bad_labels=(), bad_idx=()):
        f = {"x:0": rng.standard_normal((n, 10)).astype(np.float32), "labels:0": rng.integers(0, 10, n).astype(np.int64),
             "idx:0": rng.integers(0, 7, (n, 3)).astype(np.int32)}
        for pos, value in bad_labels:
            f["labels:0"][pos] = value
        for pos, value in bad_idx:
            f["idx:0"][pos] = value
        return f

    with cpu.new_state() as c, gpu.new_state() as g:
        for n in (300, 1500):
            f = feeds(n)
            want, got = c.run("f", f), g.run("f", f)
            np.testing.assert_allclose(got["loss:0"], want["loss:0"], rtol=1e-5)
            np.testing.assert_array_equal(got["picked:0"], want["picked:0"])
        cases = [(300, [(3, 12), (200, -1)], []), (300, [(0, 10)], []), (1500, [(1100, 11), (1400, -7)], []),
                 (300, [], [((250, 2), 9), ((260, 0), -1)]), (1500, [], [((1499, 1), 7)])]
        for n, bad_labels, bad_idx in cases:
            f = feeds(n, bad_labels, bad_idx)
            messages = []
            for state in (c, g):
                with pytest.raises(runtime.KilnRuntimeError) as info:
                    state.run("f", f)
                assert info.value.code == 3, info.value.message
                messages.append(info.value.message)
            assert messages[1] == messages[0], (n, bad_labels, bad_idx)
            first = (bad_labels or bad_idx)[0][1]
            assert f"value of {first} " in messages[1] or f"index {first} " in messages[1], messages[1]
        assert np.isfinite(g.run("f", feeds(9))["loss:0"])  # the state still works

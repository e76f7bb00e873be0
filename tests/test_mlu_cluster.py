"""The cluster half of the MLU emulator (templates/mlu/kiln_mlu_emulate_cluster.h) on
hand-written BANG C (tests/mlu/cluster_rules.mlu): a matmul whose filter one core shares with
its cluster through SRAM matches numpy under every task schedule, tasks really meet at
``__sync_cluster`` (a neighbour exchange through SRAM), each new rule refuses a kernel planting
its violation, and the header's capacities are the ones capabilities.py states."""
from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from compiler.codegen.mlu.capabilities import MLU370
from tests.mlu_kit import emulated_library

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).parent / "mlu" / "cluster_rules.mlu"
SCHEDULES = [(0, 0), (1, 0), (2, 7), (2, 11)]  # forward, reverse, shuffle:7, shuffle:11


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The kernels built once with g++ against the emulator."""
    so = emulated_library(SOURCE, tmp_path_factory.mktemp("mlu"))
    yield so
    so.kiln_mlu_set_schedule(0, 0)


def _ptr(a, ctype=ctypes.c_float):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("rows,tasks", [(1, 4), (5, 8), (64, 4)])
def test_matmul_through_cluster_sram_matches_numpy(lib, schedule, rows, tasks):
    rng = np.random.default_rng(rows * tasks)
    a = rng.standard_normal((rows * tasks, 32)).astype(np.float32)
    bt = rng.standard_normal((64, 32)).astype(np.float32)
    out = np.zeros((rows * tasks, 64), np.float32)
    lib.kiln_mlu_set_schedule(*schedule)
    assert lib.run_sram_matmul(_ptr(a), _ptr(bt), _ptr(out), rows, tasks) == 0, lib.kiln_mlu_last_error()
    np.testing.assert_allclose(out, a @ bt.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_tasks_meet_at_the_cluster_barrier(lib, schedule):
    """Each task reads the SRAM slot its right neighbour wrote before the barrier: only right
    when every task of the cluster has written before any reads."""
    tasks = 12
    out = np.zeros(tasks, np.int32)
    lib.kiln_mlu_set_schedule(*schedule)
    assert lib.run_exchange(_ptr(out, ctypes.c_int), tasks) == 0, lib.kiln_mlu_last_error()
    t = np.arange(tasks)
    np.testing.assert_array_equal(out, (t + 1) * 10 + (t // 4 * 4 + (t % 4 + 1) % 4))


@pytest.mark.parametrize("schedule", [(0, 0), (1, 0)])
@pytest.mark.parametrize("which,kernel,rule", [
    (0, "wram_overflow", "WRAM capacity"),
    (1, "sram_overflow", "SRAM capacity"),
    (2, "matmul_nram_filter", "matmul operand space"),
    (3, "matmul_misaligned", "matmul alignment"),
    (4, "matmul_bad_n", "matmul size"),
    (5, "matmul_bad_k", "matmul size"),
    (6, "barrier_skipped", "cluster barrier"),
    (7, "sram_race", "SRAM race"),
    (8, "block_barrier", "cluster barrier"),
    (9, "sram_direction", "__memcpy direction"),
])
def test_planted_violation_is_refused(lib, schedule, which, kernel, rule):
    lib.kiln_mlu_set_schedule(*schedule)
    lib.kiln_mlu_clear_error()
    try:
        assert lib.run_cluster_violation(which) != 0
        message = lib.kiln_mlu_last_error().decode()
        assert message.startswith(f"kernel {kernel}: {rule}: "), message
    finally:
        lib.kiln_mlu_clear_error()


def test_a_correct_kernel_runs_after_a_refused_one(lib):
    """A violation stops tasks parked at a barrier; the next launch starts clean."""
    lib.kiln_mlu_set_schedule(0, 0)
    lib.kiln_mlu_clear_error()
    assert lib.run_cluster_violation(6) != 0
    lib.kiln_mlu_clear_error()
    out = np.zeros(8, np.int32)
    assert lib.run_exchange(_ptr(out, ctypes.c_int), 8) == 0, lib.kiln_mlu_last_error()
    assert out[0] == 10 + 1


def test_barrier_kernels_on_two_threads_at_once(lib):
    """Each host thread runs its launches on its own fibers, cores and SRAM: two threads
    exchanging through SRAM at the same time both get their own neighbours' values."""
    lib.kiln_mlu_set_schedule(2, 3)
    results, errors = {}, []

    def work(tag, tasks):
        for _ in range(20):
            out = np.zeros(tasks, np.int32)
            if lib.run_exchange(_ptr(out, ctypes.c_int), tasks):
                errors.append(lib.kiln_mlu_last_error())
            results.setdefault(tag, []).append(out)

    threads = [threading.Thread(target=work, args=(tag, tasks)) for tag, tasks in (("a", 8), ("b", 32))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for tag, tasks in (("a", 8), ("b", 32)):
        t = np.arange(tasks)
        for out in results[tag]:
            np.testing.assert_array_equal(out, (t + 1) * 10 + (t // 4 * 4 + (t % 4 + 1) % 4))


def test_header_capacities_match_capabilities():
    """The emulator's WRAM/SRAM/matmul numbers are capabilities.py's (one fact, two languages)."""
    text = (ROOT / "templates" / "mlu" / "kiln_mlu_emulate_cluster.h").read_text()
    macro = {m: eval(v) for m, v in re.findall(r"#define (KILN_MLU_\w+) \(?([0-9 *+-]+)\)?", text)}
    assert macro["KILN_MLU_WRAM_BYTES"] == MLU370.wram_bytes
    assert macro["KILN_MLU_SRAM_BYTES"] == MLU370.usable_sram_bytes
    assert macro["KILN_MLU_MATMUL_K_ALIGN"] == MLU370.matmul_k_align_bytes
    assert macro["KILN_MLU_MATMUL_N_ALIGN"] == MLU370.matmul_n_align

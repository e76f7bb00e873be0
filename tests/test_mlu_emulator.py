"""The MLU emulator (templates/mlu/kiln_mlu_emulate.h) on hand-written BANG C
(tests/mlu/emulator_rules.mlu): a tiled vector add over tasks matches numpy under every task
schedule, task orders vary with the schedule, and each rule the emulator enforces refuses a
kernel planting its violation, naming the kernel and the rule."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from compiler.codegen.mlu.build import MluToolchainError, compile_mlu, find_cncc
from compiler.codegen.mlu.capabilities import MLU370
from tests.mlu_kit import emulated_library

SOURCE = Path(__file__).parent / "mlu" / "emulator_rules.mlu"
FORWARD, REVERSE, SHUFFLE = 0, 1, 2


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The rules kernels built once with g++ against the emulator."""
    so = emulated_library(SOURCE, tmp_path_factory.mktemp("mlu"))
    yield so
    so.kiln_mlu_set_schedule(FORWARD, 0)


def _ptr(a, ctype=ctypes.c_float):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


@pytest.mark.parametrize("schedule", [(FORWARD, 0), (REVERSE, 0), (SHUFFLE, 7)])
@pytest.mark.parametrize("n,tasks", [(1, 4), (1000, 4), (5000, 8), (33, 32)])
def test_tiled_vector_add_matches_numpy(lib, schedule, n, tasks):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = np.zeros(n, np.float32)
    lib.kiln_mlu_set_schedule(*schedule)
    assert lib.run_vec_add(_ptr(a), _ptr(b), _ptr(out), n, tasks) == 0, lib.kiln_mlu_last_error()
    np.testing.assert_array_equal(out, a + b)


def test_task_orders_follow_the_schedule(lib):
    tasks = 16
    orders = {}
    for name, schedule in {"forward": (FORWARD, 0), "reverse": (REVERSE, 0), "s1": (SHUFFLE, 1),
                           "s2": (SHUFFLE, 2)}.items():
        lib.kiln_mlu_set_schedule(*schedule)
        log = np.zeros(tasks + 1, np.int32)
        assert lib.run_order_log(_ptr(log, ctypes.c_int), tasks) == 0
        assert log[0] == tasks
        assert sorted(log[1:]) == list(range(tasks))  # every task ran once
        orders[name] = list(log[1:])
    assert orders["forward"] == list(range(tasks))
    assert orders["reverse"] == list(range(tasks))[::-1]
    assert orders["s1"] != orders["s2"] and orders["s1"] not in (orders["forward"], orders["reverse"])


@pytest.mark.parametrize("which,kernel,rule", [
    (0, "nram_overflow", "NRAM capacity"),
    (1, "bad_length", "vector length"),
    (2, "gdram_operand", "vector operand not in NRAM"),
    (3, "misaligned", "vector alignment"),
    (4, "memcpy_direction", "__memcpy direction"),
    (5, "memcpy_bounds", "__memcpy direction"),
    (6, "order_log", "task dimension"),
])
def test_planted_violation_is_refused(lib, which, kernel, rule):
    lib.kiln_mlu_set_schedule(FORWARD, 0)
    lib.kiln_mlu_clear_error()
    try:
        assert lib.run_violation(which) != 0
        message = lib.kiln_mlu_last_error().decode()
        assert message.startswith(f"kernel {kernel}: {rule}: "), message
    finally:
        lib.kiln_mlu_clear_error()
    # the emulator works again once the error is cleared
    a = np.ones(64, np.float32)
    out = np.zeros(64, np.float32)
    assert lib.run_vec_add(_ptr(a), _ptr(a), _ptr(out), 64, 4) == 0
    np.testing.assert_array_equal(out, 2 * a)


def test_nram_limit_is_the_part_less_the_stack_reserve(lib):
    """The capacity the header enforces is the one capabilities.py documents."""
    lib.kiln_mlu_clear_error()
    assert lib.run_violation(0) != 0
    message = lib.kiln_mlu_last_error().decode()
    lib.kiln_mlu_clear_error()
    assert f"past the {MLU370.usable_nram_bytes} bytes of NRAM" in message


def test_non_emulated_build_needs_cncc(monkeypatch, tmp_path):
    monkeypatch.delenv("KILN_CNCC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("NEUWARE_HOME", str(tmp_path))
    with pytest.raises(MluToolchainError, match="cncc not found"):
        find_cncc()
    with pytest.raises(MluToolchainError, match="cncc not found"):
        compile_mlu("int x;", tmp_path / "x.so", emulate=False)


def test_non_emulated_target_fails_early_without_cncc(monkeypatch, tmp_path):
    """`--target mlu` without emulation is refused when the target is made, before rendering."""
    from compiler.codegen.registry import make_target

    monkeypatch.delenv("KILN_CNCC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("NEUWARE_HOME", str(tmp_path))
    with pytest.raises(MluToolchainError, match="cncc not found"):
        make_target("mlu", emulate=False)
    monkeypatch.setenv("KILN_MLU_EMULATE", "0")
    with pytest.raises(MluToolchainError, match="cncc not found"):
        make_target("mlu")
    monkeypatch.delenv("KILN_MLU_EMULATE")
    assert make_target("mlu").get("emulate") is True


def test_schedule_comes_from_the_environment(lib, tmp_path, monkeypatch):
    """$KILN_MLU_SCHEDULE is read by a freshly loaded library at its first kernel."""
    import shutil

    monkeypatch.setenv("KILN_MLU_SCHEDULE", "reverse")
    fresh = tmp_path / "fresh.so"
    shutil.copyfile(lib._name, fresh)  # another file: its own emulator state
    so = ctypes.CDLL(str(fresh))
    log = np.zeros(9, np.int32)
    assert so.run_order_log(_ptr(log, ctypes.c_int), 8) == 0
    assert list(log[1:]) == list(range(8))[::-1]

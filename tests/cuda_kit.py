"""Helpers for tests of the CUDA backend: build for the host emulator (always possible with
g++) or for a real GPU (when one is usable), and compare against the CPU backend.

``MODES`` lists where CUDA artifacts can run here: ``"emulated"`` (g++ + the emulator
header) and ``"device"`` (a GPU, nvcc and the driver: ``runtime.cuda.device_count() > 0``).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil

import numpy as np
import pytest

import runtime
from compiler.codegen.cuda.build import EMULATOR_HEADER
from compiler.compile import compile_entries
from runtime import cuda

HAVE_EMULATOR = shutil.which("g++") is not None and EMULATOR_HEADER.is_file()
HAVE_GPU = cuda.device_count() > 0 and shutil.which("nvcc") is not None
needs_emulator = pytest.mark.skipif(not HAVE_EMULATOR, reason="g++ or templates/cuda/kiln_cuda_emulate.h missing")
MODES = [pytest.param("emulated", marks=needs_emulator),
         pytest.param("device", marks=pytest.mark.skipif(not HAVE_GPU, reason=f"no usable GPU: {cuda.why_no_device() or 'nvcc missing'}"))]


def compile_cuda(graph, entries, out_dir, mode="emulated"):
    """``compile_entries`` for the CUDA target (``mode``: "emulated" or "device")."""
    return compile_entries(graph, entries, out_dir, target="cuda", emulate=(mode == "emulated"), dump_ir=False)


def load_pair(graph, entries, tmp_path, mode="emulated"):
    """(CPU artifact, CUDA artifact) of the same entries, loaded."""
    cpu = runtime.load_artifact(compile_entries(graph, entries, tmp_path / "cpu", dump_ir=False))
    gpu = runtime.load_artifact(compile_cuda(graph, entries, tmp_path / "cuda", mode))
    return cpu, gpu


def emu_configure(artifact, devices=1, fail_malloc_at=0) -> None:
    """Fault injection in an emulated library (see templates/cuda/kiln_cuda_emulate.h)."""
    fn = artifact.library.lib.kiln_emu_configure
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_longlong], None
    fn(devices, fail_malloc_at)


@contextlib.contextmanager
def race_checking():
    """Emulated libraries first launched inside the block check every kernel-IR load and
    store for data races ($KILN_EMU_RACECHECK, docs/cuda-emulator.md): a race fails the step."""
    old = os.environ.get("KILN_EMU_RACECHECK")
    os.environ["KILN_EMU_RACECHECK"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["KILN_EMU_RACECHECK"]
        else:
            os.environ["KILN_EMU_RACECHECK"] = old


def assert_weights_close(got, want, name, rtol=1e-4, atol=1e-5, outlier_atol=5e-3):
    """``got`` equals ``want`` to float rounding, but for a few elements (at most 2 + one per
    million) within ``outlier_atol``: Adam moves a weight by about its learning rate in the
    direction of m/sqrt(v), so a gradient that is zero up to rounding may step either way on
    two backends that sum in different orders."""
    got, want = np.asarray(got), np.asarray(want)
    off = ~np.isclose(got, want, rtol=rtol, atol=atol)
    allowed = 2 + want.size // 1_000_000
    assert off.sum() <= allowed, f"{name}: {off.sum()} of {want.size} elements differ (allowed {allowed})"
    np.testing.assert_allclose(got, want, rtol=0, atol=outlier_atol, err_msg=name)


def assert_states_close(a, b, rtol=1e-4, atol=1e-5):
    """Every variable of two states agrees (see :func:`assert_weights_close`)."""
    for name in a.variable_names():
        assert_weights_close(b.read_variable(name), a.read_variable(name), name, rtol, atol)

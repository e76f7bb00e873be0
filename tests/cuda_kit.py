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
from compiler.frontend.compile_graph import compile_entries
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
    """``got`` equals ``want`` to float rounding, but for a few elements (at most 2 + ten per
    million) within ``outlier_atol``: Adam moves a weight by about its learning rate in the
    direction of m/sqrt(v), so a gradient that is zero up to rounding may step either way on
    two backends that sum in different orders."""
    got, want = np.asarray(got), np.asarray(want)
    off = ~np.isclose(got, want, rtol=rtol, atol=atol)
    allowed = 2 + want.size // 100_000
    assert off.sum() <= allowed, f"{name}: {off.sum()} of {want.size} elements differ (allowed {allowed})"
    np.testing.assert_allclose(got, want, rtol=0, atol=outlier_atol, err_msg=name)


def assert_states_close(a, b, rtol=1e-4, atol=1e-5):
    """Every variable of two states agrees (see :func:`assert_weights_close`)."""
    for name in a.variable_names():
        assert_weights_close(b.read_variable(name), a.read_variable(name), name, rtol, atol)


class RawAbiLib:
    """A library built straight from kernel-IR programs (no manifest), called through the
    raw ABI: one state, ``run(entry, inputs, outputs, batch) -> (code, error message)``.
    ``race``: turn on the emulator's race checker (emulated libraries only)."""

    def __init__(self, path, race=False):
        vp = ctypes.c_void_p
        self.lib = lib = ctypes.CDLL(str(path))
        lib.kiln_create.restype, lib.kiln_destroy.argtypes = vp, [vp]
        lib.kiln_last_error.restype, lib.kiln_last_error.argtypes = ctypes.c_char_p, [vp]
        if race:
            lib.kiln_emu_set_race_check.argtypes = [ctypes.c_int]
            lib.kiln_emu_last_race.restype = ctypes.c_char_p
            lib.kiln_emu_set_race_check(1)
        self.state = lib.kiln_create()
        assert self.state, f"kiln_create failed for {path}"

    def run(self, entry, inputs, outputs, batch):
        vp = ctypes.c_void_p
        fn = getattr(self.lib, f"kiln_entry_{entry}")
        fn.restype, fn.argtypes = ctypes.c_int32, [vp, ctypes.c_int64, ctypes.POINTER(vp), ctypes.POINTER(vp)]
        code = fn(self.state, batch, (vp * max(len(inputs), 1))(*[a.ctypes.data for a in inputs]),
                  (vp * max(len(outputs), 1))(*[a.ctypes.data for a in outputs]))
        return code, (self.lib.kiln_last_error(self.state) or b"").decode() if code else ""

    def last_race(self) -> bytes:
        return self.lib.kiln_emu_last_race()

    def close(self):
        self.lib.kiln_destroy(self.state)

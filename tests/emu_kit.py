"""Helpers for the CUDA host emulator tests (tests/test_cuda_emulator_*.py; the emulator is
templates/cuda/kiln_cuda_emulate.h, docs/cuda-emulator.md).

Small handwritten .cu sources, written the way generated code is (kernels launched only
through KILN_LAUNCH / KILN_LAUNCH_SYNC, cuda_runtime.h behind #ifndef KILN_CUDA_EMULATE),
are built with g++ against the emulator header, run through ctypes and checked against
numpy; the same sources are compiled by nvcc to prove they are valid CUDA.  Host-API
checks run inside the C++ (the emulated runtime is internal to each library) and report
the first mismatch as (source line, returned error code).

Here: ``PRELUDE`` (what every test source starts with), building (``build_libraries``, one
module fixture per test file) and loading libraries, ``Device`` (numpy arrays in emulated
device memory), ``check`` (run a host-API check), ``best_time``, ``run_isolated`` (for
aborts and stderr), ``assert_aborts`` and ``nvcc_compile``.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "templates" / "cuda" / "kiln_cuda_emulate.h"
GXX = shutil.which("g++")
NVCC = shutil.which("nvcc")
needs_gxx = pytest.mark.skipif(GXX is None, reason="g++ is not on PATH: cannot build emulated libraries")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not on PATH: cannot check the sources are valid CUDA")
UCONTEXT = ("-DKILN_EMU_USE_UCONTEXT",)  # g++ flags: fibers switch with swapcontext

# CUDA error codes the tests expect (CUDA 12/13 values).
SUCCESS, INVALID_VALUE, MEMORY_ALLOCATION, INVALID_CONFIGURATION = 0, 1, 2, 9
NO_DEVICE, CAPTURE_UNSUPPORTED, CAPTURE_INVALIDATED = 100, 900, 901

PRELUDE = r"""
#ifndef KILN_CUDA_EMULATE
#include <cuda_runtime.h>
#define KILN_LAUNCH(fn, grid, block, stream, ...) fn<<<grid, block, 0, stream>>>(__VA_ARGS__)
#define KILN_LAUNCH_SYNC(fn, grid, block, stream, ...) fn<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif
#include <stdint.h>
#include <string.h>
#include <math.h>

#define EXPORT extern "C" __attribute__((visibility("default")))
#define TRY(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return (int)e_; } while (0)

// Host-API checks: the first mismatch is reported as (line, error code got).
struct Fail { int line; int got; };
#define EXPECT(call, want) do { cudaError_t got_ = (call); \
  if (got_ != (want)) { fail->line = __LINE__; fail->got = (int)got_; return 1; } } while (0)
#define EXPECT_TRUE(cond) do { if (!(cond)) { fail->line = __LINE__; fail->got = -1; return 1; } } while (0)

EXPORT void* dev_alloc(long long bytes) { void* p = 0; return cudaMalloc(&p, (size_t)bytes) == cudaSuccess ? p : 0; }
EXPORT int dev_free(void* p) { return (int)cudaFree(p); }
EXPORT int to_device(void* dst, const void* src, long long bytes) { return (int)cudaMemcpy(dst, src, (size_t)bytes, cudaMemcpyHostToDevice); }
EXPORT int to_host(void* dst, const void* src, long long bytes) { return (int)cudaMemcpy(dst, src, (size_t)bytes, cudaMemcpyDeviceToHost); }
"""


class Fail(ctypes.Structure):
    _fields_ = [("line", ctypes.c_int), ("got", ctypes.c_int)]


def run_tool(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stderr[-4000:]}"


def gxx(src: Path, out: Path, extra=()):
    run_tool([GXX, "-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", *extra, "-x", "c++",
              "-DKILN_CUDA_EMULATE", "-include", str(HEADER), str(src), "-o", str(out)])


def build_libraries(tmp_path_factory, libraries: dict) -> dict:
    """Emulated libraries, built in parallel: ``libraries`` maps name -> (CUDA source, extra
    g++ flags); returns name -> .so path.  Skips the test without g++."""
    if GXX is None:
        pytest.skip("g++ is not on PATH: cannot build emulated libraries")
    d = tmp_path_factory.mktemp("cuda_emu")
    jobs = {}
    for name, (text, extra) in libraries.items():
        (d / f"{name}.cu").write_text(text)
        jobs[name] = (d / f"{name}.cu", d / f"{name}.so", extra)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for f in [pool.submit(gxx, *job) for job in jobs.values()]:
            f.result()
    return {name: job[1] for name, job in jobs.items()}


def load(path: Path, copy_to: Path | None = None):
    """Load a library; copy_to gives a fresh copy with its own emulator state."""
    if copy_to is not None:
        shutil.copy(path, copy_to)
        path = copy_to
    lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
    lib.dev_alloc.restype = ctypes.c_void_p
    lib.dev_alloc.argtypes = [ctypes.c_longlong]
    lib.dev_free.argtypes = [ctypes.c_void_p]
    for fn in (lib.to_device, lib.to_host):
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong]
    lib.kiln_emu_configure.argtypes = [ctypes.c_int, ctypes.c_longlong]
    return lib


def ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


class Device:
    """numpy arrays in emulated device memory (cudaMalloc / cudaMemcpy of the library)."""

    def __init__(self, lib):
        self.lib, self.ptrs = lib, []

    def put(self, a: np.ndarray):
        a = np.ascontiguousarray(a)
        p = self.empty(a.nbytes)
        assert self.lib.to_device(p, ptr(a), a.nbytes) == SUCCESS
        return p

    def empty(self, nbytes: int):
        p = self.lib.dev_alloc(nbytes)
        assert p, "cudaMalloc failed"
        self.ptrs.append(p)
        return ctypes.c_void_p(p)

    def get(self, p, shape, dtype):
        out = np.empty(shape, dtype)
        assert self.lib.to_host(ptr(out), p, out.nbytes) == SUCCESS
        return out

    def free(self):
        for p in self.ptrs:
            assert self.lib.dev_free(ctypes.c_void_p(p)) == SUCCESS


def check(fn, *args):
    fail = Fail(0, 0)
    assert fn(ctypes.byref(fail), *args) == 0, f"check failed at .cu line {fail.line}: got CUDA error {fail.got}"


def best_time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        assert fn() == SUCCESS
        best = min(best, time.perf_counter() - t0)
    return best


def run_isolated(path: Path, calls: str):
    """Run ``calls`` (Python; ``lib`` is the library at ``path``, ``lib.dev_alloc`` returns a
    pointer) in a fresh interpreter: for calls that abort, and to see what goes to stderr."""
    code = f"import ctypes; lib = ctypes.CDLL({str(path)!r}); lib.dev_alloc.restype = ctypes.c_void_p; {calls}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def assert_aborts(path: Path, entry: str, message: str):
    """Calling ``entry`` of the library at ``path`` (on a 4 KiB device buffer) aborts the
    process, with ``message`` (a regular expression) on stderr."""
    proc = run_isolated(path, f"lib.{entry}(ctypes.c_void_p(lib.dev_alloc(4096)))")
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr


def nvcc_compile(tmp_path: Path, sources: dict):
    """Compile every source (name -> CUDA text) with nvcc for sm_90, in parallel."""
    def nvcc(name):
        src = tmp_path / f"{name}.cu"
        src.write_text(sources[name])
        run_tool([NVCC, "-arch=sm_90", "-Xcompiler", "-fPIC", "-shared", str(src), "-o", str(tmp_path / f"{name}.so")])

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        for f in [pool.submit(nvcc, name) for name in sources]:
            f.result()

"""The CUDA host emulator's race checking of KILN_LD / KILN_ST (docs/cuda-emulator.md, "Race
checking"; helpers in tests/emu_kit.py): write/write and write/read races within and across
blocks with their messages, race-free kernels and barrier-ordered exchanges, a race reported
like a kernel fault (once), the switch and its environment default, one message per launch,
the cost of checking, and the generated MLP training step checked.
"""
from __future__ import annotations

import ctypes
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.emu_kit import PRELUDE, SUCCESS, Device, best_time, build_libraries, check, load, needs_gxx, run_isolated

LAUNCH_FAILURE = 719

RACES = PRELUDE + r"""
// Kernel-IR loads and stores go through these (the generated prelude's nvcc definitions);
// the emulator header defines checked ones.
#ifndef KILN_LD
#define KILN_LD(p, i) ((p)[i])
#define KILN_ST(p, i, v) ((p)[i] = (v))
#endif

// ---- racy: every thread stores element 0
__global__ void k_race_store(float* y) { KILN_ST(y, 0LL, (float)threadIdx.x); }
EXPORT int race_store(float* d_y, int blocks, int threads) {
  KILN_LAUNCH(k_race_store, blocks, threads, 0, d_y);
  return (int)cudaGetLastError();
}

// ---- racy: block `reader` reads y[3 + t], which thread t of the other block writes
struct Bufs { void* p[2]; };
__global__ void k_cross_block(Bufs bufs, int reader) {
  float* out = (float*)bufs.p[0];
  float* y = (float*)bufs.p[1];
  const long long t = threadIdx.x;
  if ((int)blockIdx.x == reader) KILN_ST(out, t, KILN_LD(y, 3 + t));
  else KILN_ST(y, 3 + t, (float)t);
}
EXPORT int cross_block(float* d_out, float* d_y, int reader) {
  Bufs b;
  b.p[0] = d_out;
  b.p[1] = d_y;
  KILN_LAUNCH(k_cross_block, 2, 32, 0, b, reader);
  return (int)cudaGetLastError();
}

// ---- race-free: elementwise (grid-stride), in place, and a stencil reading neighbours of
// a buffer nobody writes
__global__ void k_scale(const float* x, float* y, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    KILN_ST(y, i, 2.0f * KILN_LD(x, i));
}
__global__ void k_inplace(float* y, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    KILN_ST(y, i, KILN_LD(y, i) + 1.0f);
}
__global__ void k_stencil(const float* x, float* y, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float left = i > 0 ? KILN_LD(x, i - 1) : 0.0f, right = i + 1 < n ? KILN_LD(x, i + 1) : 0.0f;
  KILN_ST(y, i, left + KILN_LD(x, i) + right);
}
EXPORT int elementwise(const float* d_x, float* d_y, float* d_z, long long n) {
  const unsigned blocks = (unsigned)((n + 127) / 128);
  KILN_LAUNCH(k_scale, blocks > 4 ? 4 : blocks, 128, 0, d_x, d_y, n);
  TRY(cudaGetLastError());
  KILN_LAUNCH(k_inplace, blocks, 128, 0, d_y, n);
  TRY(cudaGetLastError());
  KILN_LAUNCH(k_stencil, blocks, 128, 0, d_y, d_z, n);
  return (int)cudaGetLastError();
}

// ---- a block exchange through global memory: each thread writes its element, then (after a
// barrier, if `sync`) reads its neighbours' and, after another barrier, overwrites its own
__global__ void k_exchange(float* y, float* out, int sync) {
  const long long base = (long long)blockIdx.x * blockDim.x, t = threadIdx.x, n = blockDim.x;
  KILN_ST(y, base + t, (float)(base + t));
  if (sync) __syncthreads();
  const float v = KILN_LD(y, base + (t + 1) % n) + KILN_LD(y, base + (t + n - 1) % n);
  if (sync) __syncthreads();
  KILN_ST(y, base + t, v);
  KILN_ST(out, base + t, v);
}
EXPORT int exchange(float* d_y, float* d_out, int blocks, int threads, int sync) {
  KILN_LAUNCH_SYNC(k_exchange, blocks, threads, 0, d_y, d_out, sync);
  return (int)cudaGetLastError();
}

// ---- 1M threads, one checked store each (the cost of the checks)
__global__ void k_fill_checked(int* y, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) KILN_ST(y, i, (int)i);
}
EXPORT int fill_checked(int* d_y, long long n) {
  KILN_LAUNCH(k_fill_checked, (unsigned)((n + 255) / 256), 256, 0, d_y, n);
  return (int)cudaGetLastError();
}

// ---- a race is a kernel fault: the next cudaGetLastError / synchronization / graph launch
// reports cudaErrorLaunchFailure, once
EXPORT int race_reporting(Fail* fail, float* d_y) {
  KILN_LAUNCH(k_race_store, 1, 2, 0, d_y);
  EXPECT(cudaPeekAtLastError(), cudaErrorLaunchFailure);
  EXPECT(cudaStreamSynchronize(0), cudaErrorLaunchFailure);
  EXPECT(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT(cudaGetLastError(), cudaErrorLaunchFailure);  // the failed call set the last error
  EXPECT(cudaGetLastError(), cudaSuccess);
  KILN_LAUNCH(k_race_store, 1, 2, 0, d_y);
  EXPECT(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT(cudaGetLastError(), cudaSuccess);

  cudaStream_t s;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  EXPECT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  KILN_LAUNCH(k_race_store, 1, 2, s, d_y);
  EXPECT(cudaGetLastError(), cudaSuccess);  // recorded, not run
  EXPECT(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT(cudaGraphLaunch(exec, s), cudaErrorLaunchFailure);
  EXPECT(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT(cudaGetLastError(), cudaSuccess);
  EXPECT(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT(cudaStreamDestroy(s), cudaSuccess);
  return 0;
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The emulated libraries of this file (built in parallel): name -> .so path."""
    return build_libraries(tmp_path_factory, {"races": (RACES, ())})


def race_lib(path: Path, copy_to: Path | None = None):
    """A library built from RACES, with the race-checking functions typed."""
    lib = load(path, copy_to)
    lib.kiln_emu_set_race_check.argtypes, lib.kiln_emu_set_race_check.restype = [ctypes.c_int], None
    lib.kiln_emu_last_race.argtypes, lib.kiln_emu_last_race.restype = [], ctypes.c_char_p
    lib.elementwise.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_longlong]
    lib.fill_checked.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
    return lib


def last_race(lib) -> str:
    return lib.kiln_emu_last_race().decode()


@pytest.fixture
def races(built):
    lib = race_lib(built["races"])
    lib.kiln_emu_set_race_check(1)
    yield lib
    lib.kiln_emu_set_race_check(0)


@needs_gxx
def test_race_all_threads_store_one_element(races):
    d = Device(races)
    y = d.empty(64)
    assert races.race_store(y, 4, 64) == LAUNCH_FAILURE
    assert re.fullmatch(rf"race in k_race_store: element {hex(y.value)} \(float, index 0 of {hex(y.value)} = argument 0; "
                        rf"allocation {hex(y.value)} \+ 0 bytes\) written by block 0 thread 0 and by block 0 thread 1",
                        last_race(races)), last_race(races)
    assert races.race_store(y, 1, 1) == SUCCESS  # one thread: no race (and the fault was reported once)
    d.free()


@needs_gxx
@pytest.mark.parametrize("reader", [0, 1])  # reads before the writes, or after
def test_race_write_read_across_blocks(races, reader):
    d = Device(races)
    out, y = d.empty(32 * 4), d.put(np.zeros(64, np.float32))
    assert races.cross_block(out, y, reader) == LAUNCH_FAILURE
    elem = hex(y.value + 12)
    want = (rf"race in k_cross_block: element {elem} \(float, index 3 of {hex(y.value)} = argument 0 word 1; "
            rf"allocation {hex(y.value)} \+ 12 bytes\) written by block {1 - reader} thread 0 and read by block {reader} thread 0")
    assert re.fullmatch(want, last_race(races)), last_race(races)
    d.free()


@needs_gxx
def test_race_free_kernels_pass(races):
    d = Device(races)
    n = 1000
    x = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    px, py, pz = d.put(x), d.empty(n * 4), d.empty(n * 4)
    assert races.elementwise(px, py, pz, n) == SUCCESS
    y = 2 * x + 1
    np.testing.assert_allclose(d.get(py, n, np.float32), y, rtol=1e-6)
    np.testing.assert_allclose(d.get(pz, n, np.float32), np.convolve(y, np.ones(3), "same"), rtol=1e-5, atol=1e-5)
    assert last_race(races) == ""
    d.free()


@needs_gxx
def test_race_barrier_orders_a_block_exchange(races):
    d = Device(races)
    blocks, threads = 3, 96
    py, pout = d.empty(blocks * threads * 4), d.empty(blocks * threads * 4)
    assert races.exchange(py, pout, blocks, threads, 1) == SUCCESS
    assert last_race(races) == ""
    v = np.arange(blocks * threads, dtype=np.float32).reshape(blocks, threads)
    want = np.roll(v, -1, axis=1) + np.roll(v, 1, axis=1)
    np.testing.assert_array_equal(d.get(pout, (blocks, threads), np.float32), want)
    np.testing.assert_array_equal(d.get(py, (blocks, threads), np.float32), want)
    # without the barriers, thread 0 reads thread 1's element in the same epoch
    assert races.exchange(py, pout, blocks, threads, 0) == LAUNCH_FAILURE
    assert re.search(r"race in k_exchange: element \S+ \(float, index 1 of .*\) written by block 0 thread 1 "
                     r"and read by block 0 thread 0$", last_race(races)), last_race(races)
    d.free()


@needs_gxx
def test_race_is_reported_like_a_kernel_fault(races):
    d = Device(races)
    check(races.race_reporting, d.empty(64))
    assert "race in k_race_store" in last_race(races)
    d.free()


@needs_gxx
def test_race_checking_off(built, tmp_path, monkeypatch):
    monkeypatch.delenv("KILN_EMU_RACECHECK", raising=False)
    lib = race_lib(built["races"], tmp_path / "default.so")  # off by default
    d = Device(lib)
    y = d.empty(64)
    assert lib.race_store(y, 4, 64) == SUCCESS and last_race(lib) == ""
    lib.kiln_emu_set_race_check(1)
    assert lib.race_store(y, 4, 64) == LAUNCH_FAILURE and "k_race_store" in last_race(lib)
    lib.kiln_emu_set_race_check(0)  # also forgets the last race
    assert last_race(lib) == ""
    assert lib.race_store(y, 4, 64) == SUCCESS and last_race(lib) == ""
    d.free()

    monkeypatch.setenv("KILN_EMU_RACECHECK", "1")
    lib = race_lib(built["races"], tmp_path / "env.so")
    d = Device(lib)
    assert lib.race_store(d.empty(64), 2, 32) == LAUNCH_FAILURE and "k_race_store" in last_race(lib)
    d.free()


@needs_gxx
def test_race_message_printed_once_per_launch(built):
    proc = run_isolated(built["races"], "lib.kiln_emu_set_race_check(1); "
                                        "print(lib.race_store(ctypes.c_void_p(lib.dev_alloc(64)), 8, 256))")
    assert proc.returncode == 0 and proc.stdout.strip() == str(LAUNCH_FAILURE), proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kiln cuda emulator: race in k_race_store: element"), proc.stderr


@needs_gxx
def test_race_checking_cost(built, tmp_path):
    lib = race_lib(built["races"], tmp_path / "cost.so")
    d = Device(lib)
    n = 1 << 20
    p = d.empty(n * 4)
    seconds = {}
    for on in (0, 1):
        lib.kiln_emu_set_race_check(on)
        seconds[on] = best_time(lambda: lib.fill_checked(p, n), repeat=2)
        np.testing.assert_array_equal(d.get(p, n, np.int32), np.arange(n))
    print(f"KILN_LAUNCH, 1M threads, one KILN_ST each: {seconds[0] * 1e3:.1f} ms unchecked, "
          f"{seconds[1] * 1e3:.1f} ms with race checking")
    assert seconds[0] < 0.2 and seconds[1] < 5.0
    assert last_race(lib) == ""
    d.free()


@needs_gxx
def test_race_checking_generated_mlp_training_step(tmp_path):
    """The generated MLP training step (compiler.compile, emulated) has no race, and checking
    it keeps the step fast."""
    import runtime
    from compiler.frontend.compile_graph import compile_entries
    from tests.test_cuda_runtime import _batch, _mlp_entries

    graph, entries = _mlp_entries()
    artifact = runtime.load_artifact(compile_entries(graph, entries, tmp_path / "mlp", target="cuda", emulate=True,
                                                     dump_ir=False))
    lib = artifact.library.lib
    lib.kiln_emu_set_race_check.argtypes, lib.kiln_emu_set_race_check.restype = [ctypes.c_int], None
    lib.kiln_emu_last_race.argtypes, lib.kiln_emu_last_race.restype = [], ctypes.c_char_p
    losses, seconds = {}, {}
    try:
        for on in (1, 0):
            lib.kiln_emu_set_race_check(on)
            with artifact.new_state() as state:
                t0 = time.perf_counter()
                losses[on] = [float(state.run("train", _batch(8, step))["loss:0"]) for step in range(2)]
                seconds[on] = (time.perf_counter() - t0) / 2
                state.run("eval", _batch(8, 5))
            if on:
                assert lib.kiln_emu_last_race() == b""
    finally:
        lib.kiln_emu_set_race_check(0)
    print(f"MLP training step, batch 8: {seconds[0] * 1e3:.0f} ms unchecked, {seconds[1] * 1e3:.0f} ms with race checking")
    assert losses[1] == losses[0] and all(np.isfinite(losses[1]))
    assert seconds[1] < 10.0

"""The CUDA host emulator's runtime API (docs/cuda-emulator.md; helpers in tests/emu_kit.py):
stream capture and graph replay, the calls that invalidate a capture, launch configuration
checks, 0xFF-filled aligned memory and bad frees, device attributes, fault injection (by
kiln_emu_configure and from the environment), separate state per loaded library, and the
three exported emulator functions.  The host-API checks run inside the C++ and report the
first mismatch as (.cu line, CUDA error code).
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

from tests.emu_kit import (MEMORY_ALLOCATION, NO_DEVICE, PRELUDE, SUCCESS, build_libraries, check, load, needs_gxx,
                           ptr)

HOST_API = PRELUDE + r"""
#include <vector>

__global__ void k_add_one(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}
__global__ void k_count(int* c) { atomicAdd(c, 1); }

// Capture a launch and a copy into a graph; nothing runs until the graph is launched.
EXPORT int graph_replay(Fail* fail, float* result, int n) {
  cudaStream_t s;
  float *d, *pinned;
  EXPECT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  EXPECT(cudaMalloc(&d, n * sizeof(float)), cudaSuccess);
  EXPECT(cudaMallocHost(&pinned, n * sizeof(float)), cudaSuccess);
  EXPECT(cudaMemset(d, 0, n * sizeof(float)), cudaSuccess);
  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  cudaStreamCaptureStatus status;
  EXPECT(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_TRUE(status == cudaStreamCaptureStatusActive);
  KILN_LAUNCH(k_add_one, (n + 127) / 128, 128, s, d, n);
  EXPECT(cudaGetLastError(), cudaSuccess);
  EXPECT(cudaMemcpyAsync(pinned, d, n * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
  cudaGraph_t graph;
  EXPECT(cudaStreamEndCapture(s, &graph), cudaSuccess);
  float probe = -1.0f;
  EXPECT(cudaMemcpy(&probe, d, sizeof probe, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(probe == 0.0f);  // captured, not run
  cudaGraphExec_t exec;
  EXPECT(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT(cudaStreamSynchronize(s), cudaSuccess);
  memcpy(result, pinned, n * sizeof(float));
  EXPECT(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT(cudaGraphDestroy(graph), cudaErrorInvalidResourceHandle);
  EXPECT(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT(cudaFreeHost(pinned), cudaSuccess);
  EXPECT(cudaFree(d), cudaSuccess);
  EXPECT(cudaStreamDestroy(s), cudaSuccess);
  return 0;
}

// Calls that are illegal during a capture fail and invalidate it.
EXPORT int capture_rules(Fail* fail) {
  cudaStream_t s;
  cudaGraph_t graph;
  float *d, *pinned;
  const int n = 64;
  std::vector<float> pageable(n, 1.0f);
  EXPECT(cudaStreamCreate(&s), cudaSuccess);
  EXPECT(cudaMalloc(&d, n * sizeof(float)), cudaSuccess);
  EXPECT(cudaHostAlloc(&pinned, n * sizeof(float), cudaHostAllocDefault), cudaSuccess);

  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT(cudaMemcpy(d, pageable.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaErrorStreamCaptureUnsupported);
  cudaStreamCaptureStatus status;
  EXPECT(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_TRUE(status == cudaStreamCaptureStatusInvalidated);
  graph = (cudaGraph_t)1;
  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_TRUE(graph == 0);
  EXPECT(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
  EXPECT(cudaGetLastError(), cudaSuccess);

  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT(cudaMemset(d, 0, n * sizeof(float)), cudaErrorStreamCaptureUnsupported);
  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);  // pageable async copy
  EXPECT(cudaMemcpyAsync(d, pageable.data(), n * sizeof(float), cudaMemcpyHostToDevice, s),
         cudaErrorStreamCaptureUnsupported);
  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);  // pinned: fine
  EXPECT(cudaMemcpyAsync(d, pinned, n * sizeof(float), cudaMemcpyHostToDevice, s), cudaSuccess);
  EXPECT(cudaMemsetAsync(d, 0, n * sizeof(float), s), cudaSuccess);
  EXPECT(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT(cudaGraphDestroy(graph), cudaSuccess);

  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);  // legacy-stream work
  KILN_LAUNCH(k_add_one, 1, 64, 0, d, n);
  EXPECT(cudaGetLastError(), cudaErrorStreamCaptureImplicit);
  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

  void* p = 0;
  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT(cudaMalloc(&p, 16), cudaErrorStreamCaptureUnsupported);
  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT(cudaMalloc(&p, 16), cudaSuccess);  // Relaxed tolerates unsafe calls
  EXPECT(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT(cudaFree(p), cudaSuccess);

  EXPECT(cudaStreamEndCapture(s, &graph), cudaErrorIllegalState);
  EXPECT(cudaStreamBeginCapture(0, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
  EXPECT(cudaGetLastError(), cudaErrorStreamCaptureUnsupported);
  EXPECT(cudaFreeHost(pinned), cudaSuccess);
  EXPECT(cudaFree(d), cudaSuccess);
  EXPECT(cudaStreamDestroy(s), cudaSuccess);
  return 0;
}

// Invalid launch configurations launch nothing and are reported by cudaGetLastError.
EXPORT int launch_config(Fail* fail) {
  int* d;
  int count = -1;
  EXPECT(cudaMalloc(&d, sizeof(int)), cudaSuccess);
  EXPECT(cudaMemset(d, 0, sizeof(int)), cudaSuccess);
  const dim3 bad[][2] = {
      {dim3(1), dim3(0)},          {dim3(1), dim3(1025)},        {dim3(1), dim3(1, 1, 65)},
      {dim3(1), dim3(32, 32, 2)},  {dim3(0), dim3(32)},          {dim3(1, 65536), dim3(32)},
      {dim3(1, 1, 65536), dim3(1)}, {dim3(2147483648u), dim3(1)}, {dim3(1), dim3(1, 1025)}};
  for (const auto& cfg : bad) {
    KILN_LAUNCH(k_count, cfg[0], cfg[1], 0, d);
    EXPECT(cudaPeekAtLastError(), cudaErrorInvalidConfiguration);
    EXPECT(cudaGetLastError(), cudaErrorInvalidConfiguration);
    EXPECT(cudaGetLastError(), cudaSuccess);
    KILN_LAUNCH_SYNC(k_count, cfg[0], cfg[1], 0, d);
    EXPECT(cudaGetLastError(), cudaErrorInvalidConfiguration);
  }
  EXPECT(cudaMemcpy(&count, d, sizeof count, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(count == 0);
  KILN_LAUNCH(k_count, dim3(2, 1, 1), dim3(4, 2, 2), 0, d);
  KILN_LAUNCH_SYNC(k_count, dim3(1, 1, 2), dim3(32, 32), 0, d);
  EXPECT(cudaGetLastError(), cudaSuccess);
  EXPECT(cudaMemcpy(&count, d, sizeof count, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(count == 32 + 2048);
  EXPECT(cudaFree(d), cudaSuccess);
  return 0;
}

// Run after kiln_emu_configure(0, 0): every device call reports cudaErrorNoDevice.
EXPORT int no_device(Fail* fail) {
  int count = -1, device = -1, value = -1;
  void* p = 0;
  EXPECT(cudaGetDeviceCount(&count), cudaErrorNoDevice);
  EXPECT_TRUE(count == 0);
  EXPECT(cudaSetDevice(0), cudaErrorNoDevice);
  EXPECT(cudaGetDevice(&device), cudaErrorNoDevice);
  EXPECT(cudaMalloc(&p, 16), cudaErrorNoDevice);
  EXPECT(cudaDeviceSynchronize(), cudaErrorNoDevice);
  EXPECT(cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, 0), cudaErrorNoDevice);
  KILN_LAUNCH(k_count, 1, 1, 0, (int*)0);
  EXPECT(cudaGetLastError(), cudaErrorNoDevice);
  return 0;
}

// Three cudaMalloc calls; codes[i] gets the result of call i.
EXPORT void malloc_three(int* codes) {
  for (int i = 0; i < 3; ++i) {
    void* p = 0;
    codes[i] = (int)cudaMalloc(&p, 64);
    if (p) cudaFree(p);
  }
}
EXPORT int device_count(int* count) { return (int)cudaGetDeviceCount(count); }

// Fresh device memory is 0xFF bytes, 256-byte aligned; pinned host memory likewise.
EXPORT int memory_fill(Fail* fail, unsigned char* dev_bytes, unsigned char* host_bytes, long long n) {
  void *d, *d2, *h;
  EXPECT(cudaMalloc(&d, n), cudaSuccess);
  EXPECT(cudaMalloc(&d2, 3), cudaSuccess);
  EXPECT_TRUE((uintptr_t)d % 256 == 0 && (uintptr_t)d2 % 256 == 0);
  EXPECT(cudaMemcpy(dev_bytes, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT(cudaHostAlloc(&h, n, cudaHostAllocDefault), cudaSuccess);
  memcpy(host_bytes, h, n);
  EXPECT(cudaMemcpy(dev_bytes, d2, 4, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);  // past the end
  EXPECT(cudaFree(d2), cudaSuccess);
  EXPECT(cudaFree(d2), cudaErrorInvalidValue);  // double free
  EXPECT(cudaFree(h), cudaErrorInvalidValue);   // pinned memory is freed with cudaFreeHost
  EXPECT(cudaFreeHost(h), cudaSuccess);
  EXPECT(cudaFree(d), cudaSuccess);
  EXPECT(cudaGetLastError(), cudaErrorInvalidValue);
  return 0;
}

EXPORT int device_info(Fail* fail, int* values) {
  int count = 0;
  EXPECT(cudaGetDeviceCount(&count), cudaSuccess);
  EXPECT(cudaSetDevice(0), cudaSuccess);
  EXPECT(cudaSetDevice(count), cudaErrorInvalidDevice);
  EXPECT(cudaGetDevice(&values[0]), cudaSuccess);
  EXPECT(cudaDeviceGetAttribute(&values[1], cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  EXPECT(cudaDeviceGetAttribute(&values[2], cudaDevAttrMaxSharedMemoryPerBlock, 0), cudaSuccess);
  EXPECT(cudaDeviceGetAttribute(&values[3], cudaDevAttrWarpSize, 0), cudaSuccess);
  EXPECT_TRUE(strcmp(cudaGetErrorName(cudaErrorStreamCaptureInvalidated), "cudaErrorStreamCaptureInvalidated") == 0);
  EXPECT_TRUE(strcmp(cudaGetErrorName(cudaSuccess), "cudaSuccess") == 0);
  EXPECT_TRUE(strlen(cudaGetErrorString(cudaErrorMemoryAllocation)) > 0);
  cudaGetLastError();
  return 0;
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The emulated libraries of this file (built in parallel): name -> .so path."""
    return build_libraries(tmp_path_factory, {"host_api": (HOST_API, ())})


@pytest.fixture(scope="module")
def api(built):
    return load(built["host_api"])


@needs_gxx
def test_capture_graph_launch_twice_reproduces_the_work(api):
    n = 300
    out = np.zeros(n, np.float32)
    check(api.graph_replay, ptr(out), n)
    np.testing.assert_array_equal(out, 2.0)


@needs_gxx
def test_illegal_calls_during_capture_invalidate_it(api):
    check(api.capture_rules)


@needs_gxx
def test_invalid_launch_configuration_is_reported(api):
    check(api.launch_config)


@needs_gxx
def test_device_memory_is_0xff_and_aligned(api):
    n = 1000
    dev_bytes, host_bytes = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    check(api.memory_fill, ptr(dev_bytes), ptr(host_bytes), n)
    assert (dev_bytes == 0xFF).all() and (host_bytes == 0xFF).all()
    assert np.isnan(dev_bytes.view(np.float32)).all()


@needs_gxx
def test_device_info(api):
    values = np.zeros(4, np.int32)
    check(api.device_info, ptr(values))
    assert list(values) == [0, 132, 48 * 1024, 32]


@needs_gxx
def test_fault_injection(built, tmp_path):
    lib = load(built["host_api"], tmp_path / "faults.so")
    lib.kiln_emu_configure(0, 0)
    check(lib.no_device)
    lib.kiln_emu_configure(1, 2)
    codes = np.full(3, -1, np.int32)
    lib.malloc_three(ptr(codes))
    assert list(codes) == [SUCCESS, MEMORY_ALLOCATION, SUCCESS]
    lib.kiln_emu_configure(1, 0)
    lib.malloc_three(ptr(codes))
    assert list(codes) == [SUCCESS] * 3


@needs_gxx
def test_fault_injection_defaults_from_the_environment(built, tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_EMU_DEVICES", "0")
    lib = load(built["host_api"], tmp_path / "env_devices.so")
    count = ctypes.c_int(-1)
    assert (lib.device_count(ctypes.byref(count)), count.value) == (NO_DEVICE, 0)
    monkeypatch.setenv("KILN_EMU_DEVICES", "1")
    monkeypatch.setenv("KILN_EMU_FAIL_MALLOC_AT", "1")
    lib = load(built["host_api"], tmp_path / "env_malloc.so")
    codes = np.full(3, -1, np.int32)
    lib.malloc_three(ptr(codes))
    assert list(codes) == [MEMORY_ALLOCATION, SUCCESS, SUCCESS]


@needs_gxx
def test_libraries_keep_separate_state(built, tmp_path):
    a, b = load(built["host_api"], tmp_path / "a.so"), load(built["host_api"], tmp_path / "b.so")
    a.kiln_emu_configure(0, 0)
    count = ctypes.c_int(-1)
    assert (b.device_count(ctypes.byref(count)), count.value) == (SUCCESS, 1)
    assert (a.device_count(ctypes.byref(count)), count.value) == (NO_DEVICE, 0)


@needs_gxx
def test_only_the_configuration_function_is_exported(built):
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not on PATH")
    out = subprocess.run(["nm", "-D", "--defined-only", str(built["host_api"])], capture_output=True, text=True,
                         check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    exported = set(re.findall(r"EXPORT \w+\*? (\w+)\(", PRELUDE + HOST_API))
    assert names - exported - {"_init", "_fini"} == {"kiln_emu_configure", "kiln_emu_set_race_check",
                                                    "kiln_emu_last_race", "kiln_emu_set_schedule"}

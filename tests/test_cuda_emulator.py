"""The CUDA host emulator (templates/cuda/kiln_cuda_emulate.h, docs/cuda-emulator.md).

Small handwritten .cu sources, written the way generated code is (kernels launched only
through KILN_LAUNCH / KILN_LAUNCH_SYNC, cuda_runtime.h behind #ifndef KILN_CUDA_EMULATE),
are built with g++ against the emulator header, run through ctypes and checked against
numpy; the same sources are compiled by nvcc to prove they are valid CUDA.  Host-API
checks run inside the C++ (the emulated runtime is internal to each library) and report
the first mismatch as (source line, returned error code).
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import threading
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

KERNELS = PRELUDE + r"""
// ---- grid-stride elementwise (the shape of generated loops): y = a * x + y
struct Bufs { void* p[2]; };
__global__ void __launch_bounds__(256) k_axpy(Bufs bufs, long long n, float a) {
  const float* __restrict__ x = (const float*)bufs.p[0];
  float* __restrict__ y = (float*)bufs.p[1];
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    y[i] = a * __ldg(x + i) + y[i];
}
EXPORT int axpy(float* x, float* y, long long n, float a, int blocks, int threads) {
  Bufs b;
  TRY(cudaMalloc(&b.p[0], n * sizeof(float)));
  TRY(cudaMalloc(&b.p[1], n * sizeof(float)));
  TRY(cudaMemcpy(b.p[0], x, n * sizeof(float), cudaMemcpyHostToDevice));
  TRY(cudaMemcpy(b.p[1], y, n * sizeof(float), cudaMemcpyHostToDevice));
  KILN_LAUNCH(k_axpy, blocks, threads, 0, b, n, a);
  TRY(cudaGetLastError());
  TRY(cudaDeviceSynchronize());
  TRY(cudaMemcpy(y, b.p[1], n * sizeof(float), cudaMemcpyDeviceToHost));
  TRY(cudaFree(b.p[0]));
  TRY(cudaFree(b.p[1]));
  return 0;
}

// ---- 3-D launch: every thread records its coordinates
__global__ void k_ids(int* out) {
  const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  out[block * threads + thread] = ((blockIdx.x * 4 + blockIdx.y) * 4 + blockIdx.z) * 1000 +
                                  (threadIdx.x * 8 + threadIdx.y) * 8 + threadIdx.z;
}
EXPORT int ids(int* d_out) {
  KILN_LAUNCH(k_ids, dim3(3, 2, 2), dim3(4, 3, 2), 0, d_out);
  return (int)cudaGetLastError();
}

// ---- shared-memory tiled matmul with __syncthreads (the gemm template's skeleton)
#define TILE 16
__global__ void __launch_bounds__(TILE * TILE) k_matmul(const float* A, const float* B, float* C, int m, int k, int n) {
  __shared__ float As[TILE][TILE + 1];
  __shared__ float Bs[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
  float acc = 0.0f;
  for (int k0 = 0; k0 < k; k0 += TILE) {
    As[ty][tx] = (row < m && k0 + tx < k) ? A[row * k + k0 + tx] : 0.0f;
    Bs[ty][tx] = (k0 + ty < k && col < n) ? B[(k0 + ty) * n + col] : 0.0f;
    __syncthreads();
    for (int t = 0; t < TILE; ++t) acc += As[ty][t] * Bs[t][tx];
    __syncthreads();
  }
  if (row < m && col < n) C[row * n + col] = acc;
}
EXPORT int matmul(const float* d_a, const float* d_b, float* d_c, int m, int k, int n) {
  KILN_LAUNCH_SYNC(k_matmul, dim3((n + TILE - 1) / TILE, (m + TILE - 1) / TILE), dim3(TILE, TILE), 0,
                   d_a, d_b, d_c, m, k, n);
  return (int)cudaGetLastError();
}

// ---- block reduction: warp shuffles, then shared memory, then warp 0 alone shuffles again
__global__ void k_sum(const double* x, long long n, double* out) {
  __shared__ double partial[32];
  double v = 0.0;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    v += x[i];
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp != 0) return;
  v = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.0;
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) atomicAdd(out, v);
}
EXPORT int sum(const double* d_x, long long n, double* d_out, int blocks, int threads) {
  TRY(cudaMemset(d_out, 0, sizeof(double)));
  KILN_LAUNCH_SYNC(k_sum, blocks, threads, 0, d_x, n, d_out);
  return (int)cudaGetLastError();
}

// ---- every warp primitive, 64 threads (two warps); row r of out holds primitive r
__global__ void k_warp_ops(int* out, int width) {
  const int t = threadIdx.x, v = t * 10 + 1;
  out[0 * 64 + t] = __shfl_sync(0xffffffffu, v, t * 3 + 1, width);
  out[1 * 64 + t] = __shfl_up_sync(0xffffffffu, v, 3, width);
  out[2 * 64 + t] = __shfl_down_sync(0xffffffffu, v, 3, width);
  out[3 * 64 + t] = __shfl_xor_sync(0xffffffffu, v, 9, width);
  out[4 * 64 + t] = (int)(__shfl_xor_sync(0xffffffffu, (long long)v << 33, 1, width) >> 33);
  out[5 * 64 + t] = (int)__shfl_down_sync(0xffffffffu, (double)v + 0.5, 1, width);
  out[6 * 64 + t] = (int)__shfl_up_sync(0xffffffffu, (float)v, 1, width);
  out[7 * 64 + t] = (int)__ballot_sync(0xffffffffu, t % 3 == 0);
  out[8 * 64 + t] = __any_sync(0xffffffffu, t == 40);
  out[9 * 64 + t] = __all_sync(0xffffffffu, t != 5);
  __syncwarp();
  out[10 * 64 + t] = (int)__shfl_sync(0xffffffffu, (unsigned)v, 0);
}
EXPORT int warp_ops(int* d_out, int width) {
  KILN_LAUNCH_SYNC(k_warp_ops, 1, 64, 0, d_out, width);
  return (int)cudaGetLastError();
}

// ---- atomics: a float histogram, a once-flag with atomicCAS, integer max/min/exch
__global__ void k_hist(const float* v, const float* w, long long n, float* bins, int nbins) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int b = (int)(v[i] * nbins);
  if (b >= nbins) b = nbins - 1;
  atomicAdd(&bins[b], w[i]);
}
__global__ void k_once(int* flag, int* winners, int* maxv, int* minv, int* last) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (atomicCAS(flag, 0, t + 1) == 0) atomicAdd(winners, 1);
  atomicMax(maxv, (t * 37) % 101);
  atomicMin(minv, (t * 37) % 101 - 50);
  atomicExch(last, 7);
}
EXPORT int hist(const float* d_v, const float* d_w, long long n, float* d_bins, int nbins) {
  TRY(cudaMemset(d_bins, 0, nbins * sizeof(float)));
  KILN_LAUNCH(k_hist, (unsigned)((n + 255) / 256), 256, 0, d_v, d_w, n, d_bins, nbins);
  return (int)cudaGetLastError();
}
EXPORT int once(int* d_ints, int blocks, int threads) {  // d_ints: flag, winners, max, min, last
  const int init[5] = {0, 0, -1000, 1000, 0};
  TRY(cudaMemcpy(d_ints, init, sizeof init, cudaMemcpyHostToDevice));
  KILN_LAUNCH(k_once, blocks, threads, 0, d_ints, d_ints + 1, d_ints + 2, d_ints + 3, d_ints + 4);
  return (int)cudaGetLastError();
}

// ---- a kernel without arguments and a __device__ variable reached through the symbol API
__device__ int d_counter;
__global__ void k_bump() { d_counter += 1; }
EXPORT int bump_twice(int* out) {
  const int start = 40;
  TRY(cudaMemcpyToSymbol(d_counter, &start, sizeof start));
  KILN_LAUNCH(k_bump, 1, 1, 0);
  KILN_LAUNCH(k_bump, 1, 1, 0);
  TRY(cudaGetLastError());
  return (int)cudaMemcpyFromSymbol(out, d_counter, sizeof(int));
}

// ---- the two performance targets
__global__ void k_fill(int* y, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = (int)i;
}
EXPORT int fill(int* d_y, long long n) {
  KILN_LAUNCH(k_fill, (unsigned)((n + 255) / 256), 256, 0, d_y, n);
  return (int)cudaGetLastError();
}
__global__ void k_barriers(float* out) {  // 32 barriers per block
  __shared__ float s[256];
  const int t = threadIdx.x;
  float v = (float)(t + blockIdx.x);
  for (int r = 0; r < 16; ++r) {
    s[t] = v;
    __syncthreads();
    v = 0.5f * (v + s[(t + 1) & 255]);
    __syncthreads();
  }
  out[blockIdx.x * 256 + t] = v;
}
EXPORT int barriers(float* d_out) {
  KILN_LAUNCH_SYNC(k_barriers, 64, 256, 0, d_out);
  return (int)cudaGetLastError();
}

// ---- code generator bugs the emulator must stop with a message
__global__ void k_sync_in_plain(int* y) { y[threadIdx.x] = 1; __syncthreads(); }
EXPORT void sync_in_plain(int* d_y) { KILN_LAUNCH(k_sync_in_plain, 1, 32, 0, d_y); }
__global__ void k_mixed_barriers(int* y) {
  if (threadIdx.x == 0) __syncwarp(); else __syncthreads();
  y[threadIdx.x] = 1;
}
EXPORT void mixed_barriers(int* d_y) { KILN_LAUNCH_SYNC(k_mixed_barriers, 1, 32, 0, d_y); }
__global__ void k_shuffle_exited(int* y) {
  if (threadIdx.x >= 16) return;
  y[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 8);
}
EXPORT void shuffle_exited(int* d_y) { KILN_LAUNCH_SYNC(k_shuffle_exited, 1, 32, 0, d_y); }

// ---- warp matrix operations: TF32 m16n16k8 (nvcuda::wmma, as the --cuda-tf32 GEMMs use them)
#ifndef KILN_CUDA_EMULATE
#include <mma.h>
#endif
__global__ void k_to_tf32(const float* x, float* y, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = nvcuda::wmma::__float_to_tf32(x[i]);
}
EXPORT int to_tf32(const float* d_x, float* d_y, int n) {
  KILN_LAUNCH(k_to_tf32, 2, 64, 0, d_x, d_y, n);
  return (int)cudaGetLastError();
}
// D = A.B + C for one 16x16x8 tile: A (16x8) and B (8x16) in the given layouts (ld 8 and 16,
// or 16 and 8 for col-major), C read row-major, D stored col-major (ld 16); the fragments'
// elements are converted in registers, like CUDA's sample.
template <class LA, class LB>
__global__ void k_mma(const float* a, const float* b, const float* c, float* d) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 1e30f);  // overwritten by the load
  wmma::load_matrix_sync(fa, a, std::is_same<LA, wmma::row_major>::value ? 8 : 16);
  wmma::load_matrix_sync(fb, b, std::is_same<LB, wmma::row_major>::value ? 16 : 8);
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
  for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_col_major);
}
EXPORT int mma_row_col(const float* a, const float* b, const float* c, float* d) {
  KILN_LAUNCH_SYNC((k_mma<nvcuda::wmma::row_major, nvcuda::wmma::col_major>), 1, 32, 0, a, b, c, d);
  return (int)cudaGetLastError();
}
EXPORT int mma_col_row(const float* a, const float* b, const float* c, float* d) {
  KILN_LAUNCH_SYNC((k_mma<nvcuda::wmma::col_major, nvcuda::wmma::row_major>), 1, 32, 0, a, b, c, d);
  return (int)cudaGetLastError();
}
__global__ void k_wmma_partial_warp(float* y) {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> acc;
  nvcuda::wmma::load_matrix_sync(acc, y, 16, nvcuda::wmma::mem_row_major);
}
EXPORT void wmma_partial_warp(float* d_y) { KILN_LAUNCH_SYNC(k_wmma_partial_warp, 1, 16, 0, d_y); }
__global__ void k_wmma_bad_ldm(float* y) {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> acc;
  nvcuda::wmma::load_matrix_sync(acc, y, 18, nvcuda::wmma::mem_row_major);
}
EXPORT void wmma_bad_ldm(float* d_y) { KILN_LAUNCH_SYNC(k_wmma_bad_ldm, 1, 32, 0, d_y); }
"""

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

SOURCES = {"kernels": KERNELS, "host_api": HOST_API, "races": RACES}
# name -> (source, extra g++ flags)
EMULATED = {"kernels": ("kernels", ()), "host_api": ("host_api", ()), "races": ("races", ()),
            "kernels_ucontext": ("kernels", ("-DKILN_EMU_USE_UCONTEXT",))}


class Fail(ctypes.Structure):
    _fields_ = [("line", ctypes.c_int), ("got", ctypes.c_int)]


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stderr[-4000:]}"


def _gxx(src: Path, out: Path, extra=()):
    _run([GXX, "-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", *extra, "-x", "c++",
          "-DKILN_CUDA_EMULATE", "-include", str(HEADER), str(src), "-o", str(out)])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The emulated libraries (built in parallel): name -> .so path."""
    if GXX is None:
        pytest.skip("g++ is not on PATH: cannot build emulated libraries")
    d = tmp_path_factory.mktemp("cuda_emu")
    for name, text in SOURCES.items():
        (d / f"{name}.cu").write_text(text)
    jobs = {name: (d / f"{src}.cu", d / f"{name}.so", extra) for name, (src, extra) in EMULATED.items()}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for f in [pool.submit(_gxx, *job) for job in jobs.values()]:
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


@pytest.fixture(scope="module")
def kern(built):
    return load(built["kernels"])


@pytest.fixture(scope="module")
def api(built):
    return load(built["host_api"])


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


@pytest.fixture
def dev(kern):
    d = Device(kern)
    yield d
    d.free()


def check(fn, *args):
    fail = Fail(0, 0)
    assert fn(ctypes.byref(fail), *args) == 0, f"check failed at .cu line {fail.line}: got CUDA error {fail.got}"


# ------------------------------------------------------------------ kernels


@needs_gxx
@pytest.mark.parametrize("n,blocks,threads", [(1000, 3, 128), (4097, 64, 256), (5, 1, 1)])
def test_grid_stride_elementwise(kern, n, blocks, threads):
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    want = np.float32(1.5) * x + y
    kern.axpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_float, ctypes.c_int, ctypes.c_int]
    assert kern.axpy(ptr(x), ptr(y), n, 1.5, blocks, threads) == SUCCESS
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)  # a compiler may fuse a * x + y


@needs_gxx
def test_3d_launch_coordinates(kern, dev):
    out = dev.empty(12 * 24 * 4)
    assert kern.ids(out) == SUCCESS
    got = dev.get(out, (2, 2, 3, 2, 3, 4), np.int32)  # block z, y, x; thread z, y, x
    bz, by, bx, tz, ty, tx = np.indices(got.shape)
    np.testing.assert_array_equal(got, ((bx * 4 + by) * 4 + bz) * 1000 + (tx * 8 + ty) * 8 + tz)


@needs_gxx
@pytest.mark.parametrize("lib_name", ["kernels", "kernels_ucontext"])
@pytest.mark.parametrize("m,k,n", [(37, 45, 29), (16, 16, 16), (1, 70, 3)])
def test_shared_memory_tiled_matmul(built, lib_name, m, k, n):
    lib = load(built[lib_name])
    dev = Device(lib)
    rng = np.random.default_rng(m * k * n)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    pa, pb, pc = dev.put(a), dev.put(b), dev.empty(m * n * 4)
    assert lib.matmul(pa, pb, pc, m, k, n) == SUCCESS
    np.testing.assert_allclose(dev.get(pc, (m, n), np.float32), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    dev.free()


@needs_gxx
@pytest.mark.parametrize("lib_name", ["kernels", "kernels_ucontext"])
def test_block_reduction_with_shuffles(built, lib_name):
    lib = load(built[lib_name])
    lib.sum.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    dev = Device(lib)
    x = np.random.default_rng(1).standard_normal(100_003)
    px, pout = dev.put(x), dev.empty(8)
    results = []
    for blocks, threads in [(7, 256), (3, 64), (1, 32)]:
        assert lib.sum(px, x.size, pout, blocks, threads) == SUCCESS
        results.append(dev.get(pout, (), np.float64))
        np.testing.assert_allclose(results[-1], x.sum(), rtol=1e-12)
    assert lib.sum(px, x.size, pout, 7, 256) == SUCCESS
    assert dev.get(pout, (), np.float64) == results[0]  # deterministic order: bit-identical
    dev.free()


@needs_gxx
def test_host_threads_take_turns(kern):
    """ctypes releases the GIL: kernels launched from several host threads must not mix."""
    errors = []

    def work(seed):
        dev, rng = Device(kern), np.random.default_rng(seed)
        for _ in range(5):
            m, k, n = (int(v) for v in rng.integers(1, 40, 3))
            a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
            pa, pb, pc = dev.put(a), dev.put(b), dev.empty(m * n * 4)
            assert kern.matmul(pa, pb, pc, m, k, n) == SUCCESS
            if not np.allclose(dev.get(pc, (m, n), np.float32), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4):
                errors.append((seed, m, k, n))
        dev.free()

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _shuffle_reference(mode, width, values, b):
    """CUDA's documented shuffle rules over 64 threads (two warps of 32 lanes)."""
    out = []
    for t in range(64):
        lane, base = t % 32, t - t % 32
        lo = lane - lane % width
        hi = lo + width - 1
        bt = b(t) if callable(b) else b
        if mode == "idx":
            j = lo + bt % width
        elif mode == "up":
            j = lane - bt if lane - bt >= lo else lane
        elif mode == "down":
            j = lane + bt if lane + bt <= hi else lane
        else:
            j = lane ^ bt if (lane ^ bt) <= hi else lane
        out.append(values[base + j])
    return np.array(out)


@needs_gxx
@pytest.mark.parametrize("lib_name", ["kernels", "kernels_ucontext"])
@pytest.mark.parametrize("width", [32, 16, 8, 1])
def test_warp_primitives(built, lib_name, width):
    lib = load(built[lib_name])
    dev = Device(lib)
    out = dev.empty(11 * 64 * 4)
    assert lib.warp_ops(out, width) == SUCCESS
    got = dev.get(out, (11, 64), np.int32)
    v = np.arange(64) * 10 + 1
    np.testing.assert_array_equal(got[0], _shuffle_reference("idx", width, v, lambda t: t * 3 + 1))
    np.testing.assert_array_equal(got[1], _shuffle_reference("up", width, v, 3))
    np.testing.assert_array_equal(got[2], _shuffle_reference("down", width, v, 3))
    np.testing.assert_array_equal(got[3], _shuffle_reference("xor", width, v, 9))
    np.testing.assert_array_equal(got[4], _shuffle_reference("xor", width, v, 1))
    np.testing.assert_array_equal(got[5], _shuffle_reference("down", width, v, 1))
    np.testing.assert_array_equal(got[6], _shuffle_reference("up", width, v, 1))
    t = np.arange(64)
    ballot = [sum(1 << lane for lane in range(32) if (w * 32 + lane) % 3 == 0) for w in (0, 1)]
    np.testing.assert_array_equal(got[7].view(np.uint32), np.repeat(ballot, 32))
    np.testing.assert_array_equal(got[8], np.where(t >= 32, 1, 0))
    np.testing.assert_array_equal(got[9], np.where(t >= 32, 1, 0))
    np.testing.assert_array_equal(got[10], np.repeat([1, 321], 32))
    dev.free()


# (input bits, cvt.rna.tf32.f32 bits): round to nearest on the 13 dropped bits, ties away from zero
TF32_BITS = [
    (0x3F800000, 0x3F800000), (0x3F800FFF, 0x3F800000),  # 1.0; just below half an ulp: down
    (0x3F801000, 0x3F802000), (0xBF801000, 0xBF802000),  # tie, even kept bit: away from zero (RNE: down)
    (0x3F803000, 0x3F804000), (0x3F801001, 0x3F802000),  # tie, odd kept bit; just above half: up
    (0x3FFFF000, 0x40000000), (0x3FFFEFFF, 0x3FFFE000),  # carry into the exponent; below the tie
    (0x7F7FFFFF, 0x7F800000), (0x00001000, 0x00002000),  # the largest float rounds to inf; subnormal tie
    (0x00000FFF, 0x00000000), (0x80000000, 0x80000000),  # tiny subnormal -> 0; -0
    (0x7F800000, 0x7F800000), (0xFF800000, 0xFF800000),  # +-inf
    (0x7FC00000, 0x7FC00000), (0x7FC01234, 0x7FC01234),  # NaN unchanged
]


@needs_gxx
def test_wmma_float_to_tf32_rounding(kern, dev):
    x = np.array([b for b, _ in TF32_BITS], np.uint32).view(np.float32)
    d_x, d_y = dev.put(x), dev.empty(x.nbytes)
    assert kern.to_tf32(d_x, d_y, len(x)) == SUCCESS
    got = dev.get(d_y, x.shape, np.float32).view(np.uint32)
    assert [hex(v) for v in got] == [hex(w) for _, w in TF32_BITS]


@needs_gxx
@pytest.mark.parametrize("lib_name", ["kernels", "kernels_ucontext"])
@pytest.mark.parametrize("layouts", ["row_col", "col_row"])
def test_wmma_tf32_mma_tile(built, lib_name, layouts):
    """One warp's 16x16x8 D = A.B + C: numpy with TF32-rounded A and B summed in float64 agrees
    to float32 rounding; the unrounded product does not."""
    lib = load(built[lib_name])
    dev = Device(lib)
    rng = np.random.default_rng(7)
    a = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((8, 16)).astype(np.float32)
    c = rng.standard_normal((16, 16)).astype(np.float32)
    a[0, :2] = np.array([0x3F801000, 0xBF803000], np.uint32).view(np.float32)  # ties
    a_mem = a if layouts == "row_col" else a.T  # row-major A (ld 8) or col-major (ld 16)
    b_mem = b.T if layouts == "row_col" else b
    d = dev.empty(16 * 16 * 4)
    fn = getattr(lib, f"mma_{layouts}")
    assert fn(dev.put(a_mem), dev.put(b_mem), dev.put(c), d) == SUCCESS
    got = dev.get(d, (16, 16), np.float32).T.astype(np.float64)  # stored col-major

    def rna(x):
        u = x.view(np.uint32)
        return ((u + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)

    want = rna(a) @ rna(b) + c
    scale = np.abs(rna(a)) @ np.abs(rna(b)) + np.abs(c)
    assert np.max(np.abs(got - want) / scale) < 1e-6
    exact = a.astype(np.float64) @ b.astype(np.float64) + c
    assert np.max(np.abs(got - exact) / scale) > 1e-5
    dev.free()


@needs_gxx
def test_atomic_float_histogram(kern, dev):
    rng = np.random.default_rng(7)
    n, nbins = 50_000, 37
    v = rng.random(n).astype(np.float32)
    w = rng.integers(0, 4, n).astype(np.float32)  # integer weights: sums are exact in float32
    pbins = dev.empty(nbins * 4)
    kern.hist.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int]
    assert kern.hist(dev.put(v), dev.put(w), n, pbins, nbins) == SUCCESS
    idx = np.minimum((v * np.float32(nbins)).astype(np.int64), nbins - 1)
    np.testing.assert_array_equal(dev.get(pbins, nbins, np.float32), np.bincount(idx, weights=w, minlength=nbins))


@needs_gxx
def test_atomic_cas_once_flag_and_min_max(kern, dev):
    blocks, threads = 5, 96
    p = dev.empty(5 * 4)
    assert kern.once(p, blocks, threads) == SUCCESS
    flag, winners, maxv, minv, last = dev.get(p, 5, np.int32)
    vals = (np.arange(blocks * threads) * 37) % 101
    assert winners == 1 and 1 <= flag <= blocks * threads
    assert (maxv, minv, last) == (vals.max(), vals.min() - 50, 7)


@needs_gxx
def test_kernel_without_arguments_and_symbols(kern):
    out = ctypes.c_int(0)
    assert kern.bump_twice(ctypes.byref(out)) == SUCCESS
    assert out.value == 42


# ------------------------------------------------------------------ performance


def _best_time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        assert fn() == SUCCESS
        best = min(best, time.perf_counter() - t0)
    return best


@needs_gxx
def test_speed_plain_launch_of_a_million_threads(kern, dev):
    n = 1 << 20
    p = dev.empty(n * 4)
    kern.fill.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
    seconds = _best_time(lambda: kern.fill(p, n))
    np.testing.assert_array_equal(dev.get(p, n, np.int32), np.arange(n))
    print(f"KILN_LAUNCH, 1M threads trivial store: {seconds * 1e3:.1f} ms")
    assert seconds < 0.2


@needs_gxx
def test_speed_and_result_of_barrier_heavy_launch(kern, dev):
    p = dev.empty(64 * 256 * 4)
    seconds = _best_time(lambda: kern.barriers(p))
    print(f"KILN_LAUNCH_SYNC, 64 blocks x 256 threads x 32 barriers: {seconds * 1e3:.1f} ms")
    assert seconds < 1.0
    v = (np.arange(256)[None, :] + np.arange(64)[:, None]).astype(np.float32)
    for _ in range(16):
        v = np.float32(0.5) * (v + np.roll(v, -1, axis=1))
    np.testing.assert_array_equal(dev.get(p, (64, 256), np.float32), v)


# ------------------------------------------------------------------ generator bugs abort


@needs_gxx
@pytest.mark.parametrize("entry,message", [
    ("sync_in_plain", r"__syncthreads\(\) called in kernel 'k_sync_in_plain' .*launched with KILN_LAUNCH.*KILN_LAUNCH_SYNC"),
    ("mixed_barriers", r"barrier mismatch in warp 0: 1 threads wait at a warp barrier .* 31 wait at __syncthreads"),
    ("shuffle_exited", r"__shfl_down_sync in kernel 'k_shuffle_exited'.*lane 8 of warp 0 reads lane 16, which has exited"),
    ("wmma_partial_warp", r"wmma::load_matrix_sync in kernel 'k_wmma_partial_warp'.*lane 16 of warp 0 did not take part"),
    ("wmma_bad_ldm", r"wmma::load_matrix_sync in kernel 'k_wmma_bad_ldm': .*ldm 18 is not a multiple of 4"),
])
def test_generator_bugs_abort_with_a_message(built, entry, message):
    code = (f"import ctypes; lib = ctypes.CDLL({str(built['kernels'])!r}); lib.dev_alloc.restype = ctypes.c_void_p; "
            f"lib.{entry}(ctypes.c_void_p(lib.dev_alloc(4096)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr


# ------------------------------------------------------------------ runtime API


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
                                                    "kiln_emu_last_race"}


# ------------------------------------------------------------------ race checking

LAUNCH_FAILURE = 719


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
    code = (f"import ctypes; lib = ctypes.CDLL({str(built['races'])!r}); lib.dev_alloc.restype = ctypes.c_void_p; "
            f"lib.kiln_emu_set_race_check(1); "
            f"print(lib.race_store(ctypes.c_void_p(lib.dev_alloc(64)), 8, 256))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
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
        seconds[on] = _best_time(lambda: lib.fill_checked(p, n), repeat=2)
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
    from compiler.compile import compile_entries
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


# ------------------------------------------------------------------ the sources are CUDA


@needs_nvcc
def test_sources_compile_with_nvcc(tmp_path):
    def nvcc(name):
        src = tmp_path / f"{name}.cu"
        src.write_text(SOURCES[name])
        _run([NVCC, "-arch=sm_90", "-Xcompiler", "-fPIC", "-shared", str(src), "-o", str(tmp_path / f"{name}.so")])

    with ThreadPoolExecutor(max_workers=len(SOURCES)) as pool:
        for f in [pool.submit(nvcc, name) for name in SOURCES]:
            f.result()

"""The CUDA host emulator running kernels (docs/cuda-emulator.md; helpers in tests/emu_kit.py):
grid-stride and 3-D launches, shared memory with __syncthreads, block reductions with
shuffles, every warp primitive at every width (fibers switched by assembly and by
ucontext), atomics, __device__ symbols, host threads taking turns, the speed of plain and
barrier-heavy launches, generator bugs that abort with a message, and nvcc compiling every
emulator test source.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from tests.emu_kit import (PRELUDE, SUCCESS, UCONTEXT, Device, assert_aborts, best_time, build_libraries, load, needs_gxx,
                           needs_nvcc, nvcc_compile, ptr)

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
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The emulated libraries of this file (built in parallel): name -> .so path."""
    return build_libraries(tmp_path_factory, {"kernels": (KERNELS, ()), "kernels_ucontext": (KERNELS, UCONTEXT)})


@pytest.fixture(scope="module")
def kern(built):
    return load(built["kernels"])


@pytest.fixture
def dev(kern):
    d = Device(kern)
    yield d
    d.free()


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


@needs_gxx
def test_speed_plain_launch_of_a_million_threads(kern, dev):
    n = 1 << 20
    p = dev.empty(n * 4)
    kern.fill.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
    seconds = best_time(lambda: kern.fill(p, n))
    np.testing.assert_array_equal(dev.get(p, n, np.int32), np.arange(n))
    print(f"KILN_LAUNCH, 1M threads trivial store: {seconds * 1e3:.1f} ms")
    assert seconds < 0.2


@needs_gxx
def test_speed_and_result_of_barrier_heavy_launch(kern, dev):
    p = dev.empty(64 * 256 * 4)
    seconds = best_time(lambda: kern.barriers(p))
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
])
def test_generator_bugs_abort_with_a_message(built, entry, message):
    assert_aborts(built["kernels"], entry, message)


# ------------------------------------------------------------------ the sources are CUDA


@needs_nvcc
def test_sources_compile_with_nvcc(tmp_path):
    from tests.test_cuda_emulator_races import RACES
    from tests.test_cuda_emulator_runtime import HOST_API
    from tests.test_cuda_emulator_wmma import WMMA

    nvcc_compile(tmp_path, {"kernels": KERNELS, "wmma": WMMA, "host_api": HOST_API, "races": RACES})

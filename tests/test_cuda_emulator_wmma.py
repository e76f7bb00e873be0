"""The CUDA host emulator's nvcuda::wmma (TF32 m16n16k8, docs/cuda-emulator.md; helpers in
tests/emu_kit.py): __float_to_tf32 rounding bit patterns (ties included), one warp's 16x16x8
mma in both operand layouts against numpy (fibers switched by assembly and by ucontext), and
the misuses that abort (a partial warp, a bad ldm).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.emu_kit import PRELUDE, SUCCESS, UCONTEXT, Device, assert_aborts, build_libraries, load, needs_gxx

WMMA = PRELUDE + r"""
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


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The emulated libraries of this file (built in parallel): name -> .so path."""
    return build_libraries(tmp_path_factory, {"kernels": (WMMA, ()), "kernels_ucontext": (WMMA, UCONTEXT)})


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
def test_wmma_float_to_tf32_rounding(built):
    lib = load(built["kernels"])
    dev = Device(lib)
    x = np.array([b for b, _ in TF32_BITS], np.uint32).view(np.float32)
    d_x, d_y = dev.put(x), dev.empty(x.nbytes)
    assert lib.to_tf32(d_x, d_y, len(x)) == SUCCESS
    got = dev.get(d_y, x.shape, np.float32).view(np.uint32)
    assert [hex(v) for v in got] == [hex(w) for _, w in TF32_BITS]
    dev.free()


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
@pytest.mark.parametrize("entry,message", [
    ("wmma_partial_warp", r"wmma::load_matrix_sync in kernel 'k_wmma_partial_warp'.*lane 16 of warp 0 did not take part"),
    ("wmma_bad_ldm", r"wmma::load_matrix_sync in kernel 'k_wmma_bad_ldm': .*ldm 18 is not a multiple of 4"),
])
def test_generator_bugs_abort_with_a_message(built, entry, message):
    assert_aborts(built["kernels"], entry, message)

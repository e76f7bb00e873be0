// kiln_emu_wmma.h -- <mma.h>'s nvcuda::wmma, as far as Kiln's TF32 GEMMs use it.
// Part of kiln_cuda_emulate.h (docs/cuda-emulator.md, "Warp matrix operations").  Apart
// because it is a library of its own on top of the warp exchange (kiln_emu_warp.h): every
// _sync call is a warp-collective that needs all 32 lanes; the layout and rounding rules
// are described below.
#ifndef KILN_EMU_WMMA_H_
#define KILN_EMU_WMMA_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_wmma.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

// ------------------------------------------------------------------ <mma.h>: nvcuda::wmma (TF32, m16n16k8)
// Warp matrix operations, as far as Kiln's TF32 GEMMs use them (templates/cuda/gemm.cu.j2).
// Real fragments are spread over the 32 lanes in an unspecified layout.  Here every lane
// holds the whole matrix_a (16x8) and matrix_b (8x16) tile, and lane l holds elements
// l, l + 32, ..., l + 224 of the row-major 16x16 accumulator (8 elements, as on sm_80+):
// mma_sync computes and load/store_matrix_sync move only the calling lane's accumulator
// elements, so a warp does the product once and no values cross lanes.  Every _sync call
// waits for the whole warp (CUDA: "waits until all warp lanes have arrived") and aborts
// unless all 32 lanes of the warp make it (so it needs KILN_LAUNCH_SYNC and full warps);
// pointers must be 32-byte aligned and ldm a multiple of 4 floats, as on the hardware.
// mma_sync ignores the low 13 mantissa bits of its inputs (convert them with
// __float_to_tf32 first) and adds the exact products to the accumulator in k order in
// float; tensor cores may round the sum differently in the last bits.
namespace {
namespace kiln_emu {
inline unsigned wmma_lane(const void* p, unsigned ldm, const char* what) {  // a warp-collective call
  uint64_t tag;
  unsigned parity;
  Fiber* f = publish(0, 0xffffffffu, what, &parity, &tag);
  const unsigned base = f->linear & ~31u, lane = f->linear & 31u;
  for (unsigned l = 0; l < 32; ++l)
    if (base + l >= sched.n || sched.slot_tag[parity][base + l] != tag)
      die("%s in kernel '%s' (block %u,%u,%u): lane %u of warp %u did not take part (it does not exist, has "
          "exited or is at another warp call); wmma operations need all 32 lanes of the warp",
          what, cur.kernel, cur.block_idx.x, cur.block_idx.y, cur.block_idx.z, l, f->linear / 32);
  if (p && (((uintptr_t)p & 31u) || (ldm & 3u)))
    die("%s in kernel '%s': pointer %p is not 32-byte aligned or ldm %u is not a multiple of 4 floats", what,
        cur.kernel, p, ldm);
  return lane;
}
inline float tf32_operand(float v) {  // what the tensor core reads: the low 13 bits are ignored
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return v;  // inf, NaN
  u &= 0xffffe000u;
  memcpy(&v, &u, 4);
  return v;
}
}  // namespace kiln_emu
}  // namespace

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

// cvt.rna.tf32.f32: round to 10 explicit mantissa bits, to nearest, ties away from zero
// (the low 13 bits become 0; a finite value may round to infinity); inf and NaN unchanged.
static inline float __float_to_tf32(float in) {
  uint32_t u;
  memcpy(&u, &in, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return in;
  u = (u + 0x1000u) & 0xffffe000u;  // sign-magnitude: adding half an ulp rounds the magnitude
  float out;
  memcpy(&out, &u, 4);
  return out;
}

template <class Use, int M, int N, int K, class T, class Layout = void> class fragment {
  static_assert(M == 16 && N == 16 && K == 8 && sizeof(Use) == 0,
                "kiln cuda emulator: only the TF32 m16n16k8 wmma fragments are emulated");
};
template <class Layout> class fragment<matrix_a, 16, 16, 8, precision::tf32, Layout> {
  static_assert(std::is_same<Layout, row_major>::value || std::is_same<Layout, col_major>::value,
                "matrix_a fragments need row_major or col_major");
 public:
  typedef float element_type;
  typedef float storage_element_type;
  enum { num_elements = 16 * 8 };
  float x[num_elements];  // the whole tile in every lane: A[r][k] = x[r * 8 + k]
};
template <class Layout> class fragment<matrix_b, 16, 16, 8, precision::tf32, Layout> {
  static_assert(std::is_same<Layout, row_major>::value || std::is_same<Layout, col_major>::value,
                "matrix_b fragments need row_major or col_major");
 public:
  typedef float element_type;
  typedef float storage_element_type;
  enum { num_elements = 8 * 16 };
  float x[num_elements];  // the whole tile in every lane: B[k][c] = x[k * 16 + c]
};
template <> class fragment<accumulator, 16, 16, 8, float, void> {
 public:
  typedef float element_type;
  typedef float storage_element_type;
  enum { num_elements = 8 };
  float x[num_elements];  // lane l: C[r][c] with r * 16 + c = l + 32 * i for x[i]
};

template <class Use, int M, int N, int K, class T, class L, class V>
static inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = (typename fragment<Use, M, N, K, T, L>::element_type)v;
}

template <class L> static inline void load_matrix_sync(fragment<matrix_a, 16, 16, 8, precision::tf32, L>& a,
                                                       const float* p, unsigned ldm) {
  kiln_emu::wmma_lane(p, ldm, "wmma::load_matrix_sync");
  const bool row = std::is_same<L, row_major>::value;
  for (unsigned r = 0; r < 16; ++r)
    for (unsigned k = 0; k < 8; ++k) a.x[r * 8 + k] = row ? p[r * ldm + k] : p[k * ldm + r];
}
template <class L> static inline void load_matrix_sync(fragment<matrix_b, 16, 16, 8, precision::tf32, L>& b,
                                                       const float* p, unsigned ldm) {
  kiln_emu::wmma_lane(p, ldm, "wmma::load_matrix_sync");
  const bool row = std::is_same<L, row_major>::value;
  for (unsigned k = 0; k < 8; ++k)
    for (unsigned c = 0; c < 16; ++c) b.x[k * 16 + c] = row ? p[k * ldm + c] : p[c * ldm + k];
}
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 8, float>& c, const float* p, unsigned ldm,
                                    layout_t layout) {
  const unsigned lane = kiln_emu::wmma_lane(p, ldm, "wmma::load_matrix_sync");
  for (unsigned i = 0; i < 8; ++i) {
    const unsigned e = lane + 32 * i, r = e / 16, col = e % 16;
    c.x[i] = layout == mem_row_major ? p[r * ldm + col] : p[col * ldm + r];
  }
}
static inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 8, float>& c, unsigned ldm,
                                     layout_t layout) {
  const unsigned lane = kiln_emu::wmma_lane(p, ldm, "wmma::store_matrix_sync");
  for (unsigned i = 0; i < 8; ++i) {
    const unsigned e = lane + 32 * i, r = e / 16, col = e % 16;
    (layout == mem_row_major ? p[r * ldm + col] : p[col * ldm + r]) = c.x[i];
  }
}
template <class LA, class LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 8, float>& d,
                            const fragment<matrix_a, 16, 16, 8, precision::tf32, LA>& a,
                            const fragment<matrix_b, 16, 16, 8, precision::tf32, LB>& b,
                            const fragment<accumulator, 16, 16, 8, float>& c) {
  const unsigned lane = kiln_emu::wmma_lane(nullptr, 0, "wmma::mma_sync");
  float out[8];
  for (unsigned i = 0; i < 8; ++i) {
    const unsigned e = lane + 32 * i, r = e / 16, col = e % 16;
    float s = c.x[i];
    for (unsigned k = 0; k < 8; ++k)
      s += kiln_emu::tf32_operand(a.x[r * 8 + k]) * kiln_emu::tf32_operand(b.x[k * 16 + col]);  // exact products
    out[i] = s;
  }
  for (unsigned i = 0; i < 8; ++i) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda

#endif  // KILN_EMU_WMMA_H_

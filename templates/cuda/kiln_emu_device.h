// kiln_emu_device.h -- CUDA's device-side vocabulary for the host emulator: qualifiers,
// uint3 / dim3 / warpSize, threadIdx & co., atomics, bit casts, integer and fast-math
// intrinsics.
// Part of kiln_cuda_emulate.h (included from it, inside its hidden-visibility region; see
// docs/cuda-emulator.md).  Kept apart because none of it needs the emulator's state: one
// block runs at a time on one host thread, so qualifiers vanish, __shared__ is static and an
// atomic is a plain read-modify-write.  threadIdx & co. are macros over kiln_emu::cur
// (kiln_emu_state.h), expanded only in kernels; barriers and warp primitives, which switch
// fibers, are in kiln_emu_warp.h.
#ifndef KILN_EMU_DEVICE_H_
#define KILN_EMU_DEVICE_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_device.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

// ------------------------------------------------------------------ CUDA qualifiers
#define __global__
#define __device__
#define __host__
#define __constant__
#define __shared__ static  // one block runs at a time: a function-local static is its shared memory
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// ------------------------------------------------------------------ CUDA types
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
static inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
static constexpr int warpSize = 32;

// ------------------------------------------------------------------ device built-ins
#define threadIdx (static_cast<const uint3&>(::kiln_emu::cur.thread_idx))
#define blockIdx (static_cast<const uint3&>(::kiln_emu::cur.block_idx))
#define blockDim (static_cast<const dim3&>(::kiln_emu::cur.block_dim))
#define gridDim (static_cast<const dim3&>(::kiln_emu::cur.grid_dim))

// Atomics: kernels run on one host thread and switch only at barriers, so a plain
// read-modify-write is atomic.  Integer arithmetic wraps like the hardware.
namespace { namespace kiln_emu {
template <class T, class F> inline T rmw(T* a, F f) { T old = *a; *a = f(old); return old; }
}}
static inline int atomicAdd(int* a, int v) { return kiln_emu::rmw(a, [v](int o) { return (int)((unsigned)o + (unsigned)v); }); }
static inline unsigned atomicAdd(unsigned* a, unsigned v) { return kiln_emu::rmw(a, [v](unsigned o) { return o + v; }); }
static inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return kiln_emu::rmw(a, [v](unsigned long long o) { return o + v; }); }
static inline float atomicAdd(float* a, float v) { return kiln_emu::rmw(a, [v](float o) { return o + v; }); }
static inline double atomicAdd(double* a, double v) { return kiln_emu::rmw(a, [v](double o) { return o + v; }); }
static inline int atomicSub(int* a, int v) { return kiln_emu::rmw(a, [v](int o) { return (int)((unsigned)o - (unsigned)v); }); }
static inline unsigned atomicSub(unsigned* a, unsigned v) { return kiln_emu::rmw(a, [v](unsigned o) { return o - v; }); }
static inline int atomicExch(int* a, int v) { return kiln_emu::rmw(a, [v](int) { return v; }); }
static inline unsigned atomicExch(unsigned* a, unsigned v) { return kiln_emu::rmw(a, [v](unsigned) { return v; }); }
static inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) { return kiln_emu::rmw(a, [v](unsigned long long) { return v; }); }
static inline float atomicExch(float* a, float v) { return kiln_emu::rmw(a, [v](float) { return v; }); }
#define KILN_EMU_MINMAX(T)                                                                          \
  static inline T atomicMin(T* a, T v) { return kiln_emu::rmw(a, [v](T o) { return v < o ? v : o; }); } \
  static inline T atomicMax(T* a, T v) { return kiln_emu::rmw(a, [v](T o) { return v > o ? v : o; }); }
KILN_EMU_MINMAX(int)
KILN_EMU_MINMAX(unsigned)
KILN_EMU_MINMAX(long long)
KILN_EMU_MINMAX(unsigned long long)
#undef KILN_EMU_MINMAX
#define KILN_EMU_BITOPS(T)                                                                    \
  static inline T atomicAnd(T* a, T v) { return kiln_emu::rmw(a, [v](T o) { return o & v; }); } \
  static inline T atomicOr(T* a, T v) { return kiln_emu::rmw(a, [v](T o) { return o | v; }); }  \
  static inline T atomicXor(T* a, T v) { return kiln_emu::rmw(a, [v](T o) { return o ^ v; }); }
KILN_EMU_BITOPS(int)
KILN_EMU_BITOPS(unsigned)
KILN_EMU_BITOPS(unsigned long long)
#undef KILN_EMU_BITOPS
static inline int atomicCAS(int* a, int cmp, int v) { return kiln_emu::rmw(a, [=](int o) { return o == cmp ? v : o; }); }
static inline unsigned atomicCAS(unsigned* a, unsigned cmp, unsigned v) { return kiln_emu::rmw(a, [=](unsigned o) { return o == cmp ? v : o; }); }
static inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long cmp, unsigned long long v) {
  return kiln_emu::rmw(a, [=](unsigned long long o) { return o == cmp ? v : o; });
}
static inline unsigned short atomicCAS(unsigned short* a, unsigned short cmp, unsigned short v) {
  return kiln_emu::rmw(a, [=](unsigned short o) { return o == cmp ? v : o; });
}
static inline unsigned atomicInc(unsigned* a, unsigned v) { return kiln_emu::rmw(a, [v](unsigned o) { return o >= v ? 0u : o + 1; }); }
static inline unsigned atomicDec(unsigned* a, unsigned v) { return kiln_emu::rmw(a, [v](unsigned o) { return (o == 0 || o > v) ? v : o - 1; }); }

// Bit casts, loads, integer intrinsics.
template <class To, class From> static inline To kiln_emu_bits(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit cast between sizes");
  To t;
  memcpy(&t, &v, sizeof t);
  return t;
}
static inline float __int_as_float(int v) { return kiln_emu_bits<float>(v); }
static inline int __float_as_int(float v) { return kiln_emu_bits<int>(v); }
static inline float __uint_as_float(unsigned v) { return kiln_emu_bits<float>(v); }
static inline unsigned __float_as_uint(float v) { return kiln_emu_bits<unsigned>(v); }
static inline double __longlong_as_double(long long v) { return kiln_emu_bits<double>(v); }
static inline long long __double_as_longlong(double v) { return kiln_emu_bits<long long>(v); }
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
static inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
static inline int __clz(int v) { return v ? __builtin_clz((unsigned)v) : 32; }
static inline int __clzll(long long v) { return v ? __builtin_clzll((unsigned long long)v) : 64; }
static inline int __ffs(int v) { return __builtin_ffs(v); }
static inline int __ffsll(long long v) { return __builtin_ffsll(v); }
#define KILN_EMU_MIN_MAX(T)                                 \
  static inline T min(T a, T b) { return a < b ? a : b; } \
  static inline T max(T a, T b) { return a > b ? a : b; }
KILN_EMU_MIN_MAX(int)
KILN_EMU_MIN_MAX(unsigned)
KILN_EMU_MIN_MAX(long long)
KILN_EMU_MIN_MAX(unsigned long long)
#undef KILN_EMU_MIN_MAX
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

// Fast-math intrinsics as their libm functions (glibc declares some of these names, so
// they are defined extern "C" to match).
extern "C" {
inline float __expf(float x) noexcept { return expf(x); }
inline float __exp10f(float x) noexcept { return powf(10.0f, x); }
inline float __logf(float x) noexcept { return logf(x); }
inline float __log2f(float x) noexcept { return log2f(x); }
inline float __log10f(float x) noexcept { return log10f(x); }
inline float __sinf(float x) noexcept { return sinf(x); }
inline float __cosf(float x) noexcept { return cosf(x); }
inline float __tanf(float x) noexcept { return tanf(x); }
inline float __powf(float x, float y) noexcept { return powf(x, y); }
inline float __fdividef(float x, float y) noexcept { return x / y; }
inline float fdividef(float x, float y) noexcept { return x / y; }
inline float __saturatef(float x) noexcept { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float rsqrtf(float x) noexcept { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) noexcept { return 1.0 / sqrt(x); }
inline float __fadd_rn(float a, float b) noexcept { return a + b; }
inline float __fsub_rn(float a, float b) noexcept { return a - b; }
inline float __fmul_rn(float a, float b) noexcept { return a * b; }
inline float __fdiv_rn(float a, float b) noexcept { return a / b; }
inline float __fmaf_rn(float a, float b, float c) noexcept { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) noexcept { return a + b; }
inline double __dmul_rn(double a, double b) noexcept { return a * b; }
inline double __fma_rn(double a, double b, double c) noexcept { return fma(a, b, c); }
}

#endif  // KILN_EMU_DEVICE_H_

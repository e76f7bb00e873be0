// kiln_mlu_emulate_vector.h -- the vector intrinsics beyond add/sub/mul and the async copies
// of Kiln's BANG C, for the MLU emulator (included once from kiln_mlu_emulate.h, before its
// namespace; the helpers it uses from there are declared here; docs/codegen-mlu.md).
//
// What: __bang_* elementwise, scalar-operand, activation, compare, bitwise and transpose
// intrinsics on NRAM, and __memcpy_async + __sync.
// Why: Kiln's vectorized tiles (compiler/codegen/mlu/vector.py) use them; each checks its
// operands like the add/sub/mul ones (NRAM, 64-byte aligned, 128-byte multiple lengths).
// Activations compute with the libm function the scalar path uses (expf, tanhf,
// 1/(1+expf(-x))): on a part __bang_active_* are hardware approximations, so emulated
// results are the scalar reference's, not the part's (see the doc's accuracy note).
// Async copies model the race a missing sync causes: __memcpy_async checks its pointers like
// __memcpy, snapshots the source, fills the destination with 0xCD garbage and marks both
// ranges in flight; __sync() writes the snapshots to their destinations.  Rule
// "async copy not synced" stops the kernel when an intrinsic, __memcpy or a scalar access of
// generated code (KILN_LD / KILN_ST, defined here) touches an in-flight destination (or
// writes an in-flight source), when the destination was written or the source changed while
// in flight by other code (seen at the sync), or when a task ends with copies in flight.
#ifndef KILN_MLU_EMULATE_VECTOR_H_
#define KILN_MLU_EMULATE_VECTOR_H_

namespace kiln_mlu {

[[noreturn]] static void violate(const char* rule, const char* fmt, ...);
static bool in_nram(const void* p, size_t bytes);
static void memcpy_checked(void* dst, const void* src, long long bytes, int dir);
static void check_vector(const char* op, const char* what, const void* p, long long n, size_t size);

struct Pending { char* dst; const char* src; std::vector<char> data; int dir; };

// The running task's copies in flight (its core's State: defined after State in kiln_mlu_emulate.h).
static std::vector<Pending>& pending();

static bool overlaps(const void* a, size_t an, const void* b, size_t bn) {
  const char *x = (const char*)a, *y = (const char*)b;
  return x < y + bn && y < x + an;
}

// An access of [p, p + bytes) by `op` (`write`: it stores there) must not touch a copy in flight.
static void async_check(const char* op, const char* what, const void* p, size_t bytes, bool write) {
  for (const Pending& c : pending()) {
    if (overlaps(p, bytes, c.dst, c.data.size()))
      violate("async copy not synced", "%s: operand %s (%p, %zu bytes) overlaps the destination of a %s "
              "__memcpy_async still in flight (no __sync() since it was issued)", op, what, p, bytes,
              c.dir == GDRAM2NRAM ? "GDRAM2NRAM" : c.dir == NRAM2GDRAM ? "NRAM2GDRAM" : "NRAM2NRAM");
    if (write && overlaps(p, bytes, c.src, c.data.size()))
      violate("async copy not synced", "%s: operand %s (%p) writes the source of a __memcpy_async still in "
              "flight", op, what, p);
  }
}

// __sync(): every copy in flight lands; a destination written or a source changed meanwhile is a race.
static void async_sync() {
  std::vector<Pending> done;
  done.swap(pending());
  for (const Pending& c : done) {
    for (size_t i = 0; i < c.data.size(); ++i)
      if ((unsigned char)c.dst[i] != 0xCD)
        violate("async copy not synced", "the destination %p of a __memcpy_async was written while the copy "
                "was in flight (byte %zu)", (void*)c.dst, i);
    if (memcmp(c.src, c.data.data(), c.data.size()))
      violate("async copy not synced", "the source %p of a __memcpy_async changed while the copy was in flight",
              (const void*)c.src);
    memcpy(c.dst, c.data.data(), c.data.size());
  }
}

// A task's end: no copy may still be in flight (the part would drop or race it).
static void async_task_end() {
  size_t n = pending().size();
  if (n) {
    pending().clear();
    violate("async copy not synced", "a task ended with %zu __memcpy_async copies in flight (no __sync() after "
            "them)", n);
  }
}

}  // namespace kiln_mlu

static inline void __memcpy_async(void* dst, const void* src, long long bytes, mluMemcpyDirection_t dir) {
  std::vector<char> data((const char*)src, (const char*)src + (bytes > 0 ? bytes : 0));
  kiln_mlu::memcpy_checked(dst, src, bytes, dir);  // checks spaces and races like __memcpy, then copies
  memset(dst, 0xCD, (size_t)bytes);                 // ... but the data only lands at the __sync()
  kiln_mlu::pending().push_back({(char*)dst, (const char*)src, std::move(data), (int)dir});
}
namespace kiln_mlu {
// A scalar access p[i] of generated code (KILN_LD / KILN_ST): refused while it touches a copy
// in flight, like an intrinsic operand.
template <typename T>
static inline T& scalar_at(T* p, long long i, bool write) {
  if (!pending().empty()) async_check(write ? "scalar store" : "scalar load", "element", p + i, sizeof(T), write);
  return p[i];
}
}  // namespace kiln_mlu
#define KILN_LD(p, i) (kiln_mlu::scalar_at((p), (long long)(i), false))
#define KILN_ST(p, i, v) (kiln_mlu::scalar_at((p), (long long)(i), true) = (v))

static inline void __sync() { kiln_mlu::async_sync(); }
static inline void __sync_io() { kiln_mlu::async_sync(); }
static inline void __sync_compute() {}

#define KILN_MLU_V(op, what, p, n) kiln_mlu::check_vector(op, what, p, n, sizeof(*(p)))

// dst[i] = f(a[i]) (unary) and dst[i] = f(a[i], s) (scalar operand).
#define KILN_MLU_UNARY(name, expr)                                                   \
  template <typename T>                                                              \
  static inline void name(T* dst, const T* a, int n) {                               \
    KILN_MLU_V(#name, "src", a, n);                                                  \
    KILN_MLU_V(#name, "dst", dst, n);                                                \
    for (int i = 0; i < n; ++i) { T x = a[i]; dst[i] = (expr); }                     \
  }
KILN_MLU_UNARY(__bang_active_abs, (T)fabs(x))
KILN_MLU_UNARY(__bang_active_exp, (T)expf(x))
KILN_MLU_UNARY(__bang_active_tanh, (T)tanhf(x))
KILN_MLU_UNARY(__bang_active_sigmoid, (T)(1.0f / (1.0f + expf(-x))))
KILN_MLU_UNARY(__bang_recip, (T)(1.0f / x))  // correctly rounded here; the part's accuracy is not known
KILN_MLU_UNARY(__bang_sqrt, (T)sqrtf(x))      // likewise
#undef KILN_MLU_UNARY

#define KILN_MLU_SCALAR(name, expr)                                                  \
  template <typename T, typename S>                                                  \
  static inline void name(T* dst, const T* a, S s_, int n) {                         \
    KILN_MLU_V(#name, "src", a, n);                                                  \
    KILN_MLU_V(#name, "dst", dst, n);                                                \
    const T s = (T)s_;                                                               \
    for (int i = 0; i < n; ++i) dst[i] = (expr);                                     \
  }
KILN_MLU_SCALAR(__bang_sub_scalar, a[i] - s)
KILN_MLU_SCALAR(__bang_gt_scalar, (T)(a[i] > s))
KILN_MLU_SCALAR(__bang_ge_scalar, (T)(a[i] >= s))
KILN_MLU_SCALAR(__bang_lt_scalar, (T)(a[i] < s))
KILN_MLU_SCALAR(__bang_le_scalar, (T)(a[i] <= s))
KILN_MLU_SCALAR(__bang_eq_scalar, (T)(a[i] == s))
KILN_MLU_SCALAR(__bang_ne_scalar, (T)(a[i] != s))
#undef KILN_MLU_SCALAR

// dst[i] = a[i] OP b[i]: compares give 1 or 0 in the operands' type; the NaN-propagating
// maximum/minimum (mlu-ops' __bang_nan_maximum/__bang_nan_minimum).
#define KILN_MLU_BINARY2(name, expr)                                                 \
  template <typename T>                                                              \
  static inline void name(T* dst, const T* a, const T* b, int n) {                   \
    KILN_MLU_V(#name, "src0", a, n);                                                 \
    KILN_MLU_V(#name, "src1", b, n);                                                 \
    KILN_MLU_V(#name, "dst", dst, n);                                                \
    for (int i = 0; i < n; ++i) dst[i] = (expr);                                     \
  }
KILN_MLU_BINARY2(__bang_gt, (T)(a[i] > b[i]))
KILN_MLU_BINARY2(__bang_ge, (T)(a[i] >= b[i]))
KILN_MLU_BINARY2(__bang_lt, (T)(a[i] < b[i]))
KILN_MLU_BINARY2(__bang_le, (T)(a[i] <= b[i]))
KILN_MLU_BINARY2(__bang_eq, (T)(a[i] == b[i]))
KILN_MLU_BINARY2(__bang_ne, (T)(a[i] != b[i]))
KILN_MLU_BINARY2(__bang_nan_maximum, (a[i] > b[i] || a[i] != a[i]) ? a[i] : b[i])
KILN_MLU_BINARY2(__bang_nan_minimum, (a[i] < b[i] || a[i] != a[i]) ? a[i] : b[i])
KILN_MLU_BINARY2(__bang_band, (T)(a[i] & b[i]))
KILN_MLU_BINARY2(__bang_bor, (T)(a[i] | b[i]))
#undef KILN_MLU_BINARY2
#undef KILN_MLU_V

// __bang_transpose(dst, src, height, width): src is height x width, dst width x height.  On
// MLU300 parts the dimensions need no alignment (mlu-ops: "Transpose no need to align" under
// __BANG_ARCH__ >= 300); the operands must be NRAM, aligned, and must not overlap.
template <typename T>
static inline void __bang_transpose(T* dst, const T* src, int height, int width) {
  long long n = (long long)height * width;
  if (height <= 0 || width <= 0)
    kiln_mlu::violate("vector length", "__bang_transpose: %d x %d is empty", height, width);
  const void* ops[] = {src, dst};
  const char* names[] = {"src", "dst"};
  for (int k = 0; k < 2; ++k) {
    if (!kiln_mlu::in_nram(ops[k], n * sizeof(T)))
      kiln_mlu::violate("vector operand not in NRAM", "__bang_transpose: operand %s (%p) is not an NRAM buffer",
                        names[k], ops[k]);
    if ((uintptr_t)ops[k] % KILN_MLU_ALIGN)
      kiln_mlu::violate("vector alignment", "__bang_transpose: operand %s is not %d-byte aligned", names[k],
                        KILN_MLU_ALIGN);
    kiln_mlu::async_check("__bang_transpose", names[k], ops[k], n * sizeof(T), k == 1);
  }
  if (kiln_mlu::overlaps(src, n * sizeof(T), dst, n * sizeof(T)))
    kiln_mlu::violate("transpose overlap", "__bang_transpose: dst %p and src %p overlap (%d x %d)", (void*)dst,
                      (const void*)src, height, width);
  for (int r = 0; r < height; ++r)
    for (int c = 0; c < width; ++c) dst[(long long)c * height + r] = src[(long long)r * width + c];
}

#endif  // KILN_MLU_EMULATE_VECTOR_H_

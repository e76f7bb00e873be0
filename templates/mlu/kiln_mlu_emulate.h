// kiln_mlu_emulate.h -- run BANG C (.mlu) kernels and CNRT host calls on the CPU
// (docs/codegen-mlu.md).
//
// What: a host-side stand-in for the subset of BANG C and CNRT that Kiln's MLU code uses,
// so one .mlu text compiles two ways:
//   real:     cncc --bang-mlu-arch=mtp_372 -fPIC -shared x.mlu -o x.so   (not available here)
//   emulated: g++ -std=c++17 -O1 -fPIC -shared -x c++ -DKILN_MLU_EMULATE
//                 -include templates/mlu/kiln_mlu_emulate.h x.mlu -o x.so
// Why: differential tests without an MLU, strict where the part is strict so that code
// passing here would fit one.  Enforced (each violation stops the kernel, records
// "kernel <name>: <rule>: <detail>" for kiln_mlu_last_error() and makes the next CNRT
// call on the queue return cnrtErrorSys):
//   * NRAM capacity: each task's KILN_NRAM buffers together fit MLU370's 768 KiB of NRAM per
//     core less the 128 KiB cncc keeps for the stack (KILN_MLU_NRAM_BYTES);
//   * vector intrinsics (__bang_*): every operand lies in NRAM (no GDRAM arithmetic), is
//     aligned to KILN_MLU_ALIGN (64) bytes, and the element count covers a multiple of
//     KILN_MLU_NFU_ALIGN (128) bytes;
//   * __memcpy: the direction (GDRAM2NRAM, NRAM2GDRAM, ..., SRAM2WRAM) matches the memory
//     spaces of both pointers, and the GDRAM side stays inside one cnrtMalloc block;
//   * WRAM/SRAM capacities, the matrix intrinsic, __sync_cluster: kiln_mlu_emulate_cluster.h;
//   * kernel invocation: a Union1 kernel's task dimension is a multiple of the 4 cores of
//     a cluster; BLOCK kernels take any positive dimension.
//   * __memcpy_async / __sync and the further vector intrinsics: kiln_mlu_emulate_vector.h
//     (rules "async copy not synced", "transpose overlap").
// How: a host thread's kernels use their own emulated core (NRAM, task ids, first violation);
// GDRAM blocks and the schedule are shared by the library's threads.  Tasks run on fibers of
// the calling thread (one after the other unless they meet at __sync_cluster) in a seeded order
// ($KILN_MLU_SCHEDULE = forward | reverse | shuffle:SEED, or kiln_mlu_set_schedule) so no
// kernel may depend on the order of its tasks; each KILN_NRAM tile starts filled with 0xCD
// (reading a tile that was never loaded shows).  GDRAM is plain host memory from
// cnrtMalloc, filled with 0xFF (NaN floats) like the CUDA emulator's cudaMalloc.
#ifndef KILN_MLU_EMULATE_H_
#define KILN_MLU_EMULATE_H_

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#define KILN_MLU_NRAM_BYTES (768 * 1024 - 128 * 1024)
#define KILN_MLU_ALIGN 64
#define KILN_MLU_NFU_ALIGN 128
#define KILN_MLU_CLUSTER_CORES 4

// ---- qualifiers and built-ins ---------------------------------------------------------
#define __mlu_entry__
#define __mlu_global__
#define __mlu_func__ static inline
#define __mlu_device__ static inline

typedef enum { GDRAM2NRAM, NRAM2GDRAM, NRAM2NRAM, GDRAM2GDRAM, GDRAM2SRAM, SRAM2GDRAM, SRAM2NRAM, NRAM2SRAM,
               SRAM2WRAM, NRAM2WRAM, WRAM2NRAM, GDRAM2WRAM, SRAM2SRAM } mluMemcpyDirection_t;
typedef enum { cnrtSuccess = 0, cnrtErrorSys = 632006, cnrtErrorNoMem = 632007, cnrtErrorArgsInvalid = 632008 } cnrtRet_t;
typedef cnrtRet_t cnrtRet;
typedef enum { cnrtMemcpyHostToDev = 1, cnrtMemcpyDevToDev = 2, cnrtMemcpyDevToHost = 3 } cnrtMemTransDir_t;
typedef enum { CNRT_FUNC_TYPE_BLOCK = 1, CNRT_FUNC_TYPE_UNION1 = 4 } cnrtFunctionType_t;
typedef struct { unsigned int x, y, z; } cnrtDim3_t;
typedef struct kiln_mlu_queue_* cnrtQueue_t;

#include "kiln_mlu_emulate_vector.h"  // more __bang_* intrinsics, __memcpy_async/__sync (Kiln's vector tiles)

namespace kiln_mlu {

struct Violation {};  // thrown out of a task: the kernel stops there

struct Block { char* base; size_t bytes; };

// What the library's threads share (under `mu`): GDRAM blocks and the schedule.
struct Shared {
  std::mutex mu;
  std::map<char*, size_t> gdram;            // cnrtMalloc blocks: base -> bytes
  int mode = -1;                            // schedule: 0 forward, 1 reverse, 2 shuffle; -1 unset
  uint64_t seed = 0, launches = 0;
};

// What one host thread's kernels use: the running core's NRAM, task and first violation.
struct State {
  alignas(KILN_MLU_ALIGN) char nram[KILN_MLU_NRAM_BYTES];
  size_t nram_used = 0;
  const char* kernel = "";                 // the running kernel's name
  std::string error;                        // first violation, "" when none
  unsigned task_id = 0, task_dim = 1;
  std::vector<Pending> pending;             // its __memcpy_async copies in flight
};

static Shared& shared() { static Shared* s = new Shared(); return *s; }
// The running task's State (its emulated core's, set by the cluster scheduler) or, on the
// host side of a launch, the thread's own.
static State*& running_state() { static thread_local State* r = nullptr; return r; }
static State& state() {
  static thread_local std::unique_ptr<State> s(new State());
  State* r = running_state();
  return r ? *r : *s;
}
static std::vector<Pending>& pending() { return state().pending; }

// Record the first violation (kernel, rule, detail) and stop the running task.
[[noreturn]] static void violate(const char* rule, const char* fmt, ...) {
  State& s = state();
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  if (s.error.empty()) s.error = std::string("kernel ") + s.kernel + ": " + rule + ": " + detail;
  throw Violation();
}

static bool in_nram(const void* p, size_t bytes) {
  const char* c = (const char*)p;
  State& s = state();
  return c >= s.nram && c + bytes <= s.nram + KILN_MLU_NRAM_BYTES;
}

// The cnrtMalloc block holding [p, p + bytes), or {nullptr, 0}.
static Block gdram_block(const void* p, size_t bytes) {
  Shared& s = shared();
  std::lock_guard<std::mutex> lock(s.mu);
  char* c = (char*)p;
  auto it = s.gdram.upper_bound(c);
  if (it == s.gdram.begin()) return {nullptr, 0};
  --it;
  if (c + bytes <= it->first + it->second) return {it->first, it->second};
  return {nullptr, 0};
}

// Where a new on-chip tile of `bytes` goes in a memory of `capacity` bytes of which `used`
// are taken (the next aligned offset); `used` moves past it.  Past capacity: rule `rule`
// ("NRAM capacity", ...) naming the declaration (`decl` `name`) and the memory (`memory`).
static size_t take_tile(size_t& used, size_t bytes, int capacity, const char* rule, const char* decl,
                        const char* name, const char* memory) {
  size_t at = (used + KILN_MLU_ALIGN - 1) / KILN_MLU_ALIGN * KILN_MLU_ALIGN;
  if (at + bytes > (size_t)capacity)
    violate(rule, "%s %s needs %zu bytes at offset %zu, past the %d bytes of %s", decl, name, bytes, at, capacity,
            memory);
  used = at + bytes;
  return at;
}

// A task's NRAM buffer of `bytes` (rounded up to the alignment), refused past capacity.
static void* nram_alloc(size_t bytes, const char* name) {
  State& s = state();
  size_t at = take_tile(s.nram_used, bytes, KILN_MLU_NRAM_BYTES, "NRAM capacity", "__nram__", name,
                        "NRAM a core has after cncc's stack reserve");
  memset(s.nram + at, 0xCD, bytes);  // a tile never loaded reads as garbage
  return s.nram + at;
}

// An operand of a vector intrinsic: in NRAM, aligned, `n` elements a multiple of 128 bytes.
static void check_vector(const char* op, const char* what, const void* p, long long n, size_t size) {
  if (n <= 0 || (n * size) % KILN_MLU_NFU_ALIGN)
    violate("vector length", "%s: %lld elements of %zu bytes are not a positive multiple of %d bytes",
            op, n, size, KILN_MLU_NFU_ALIGN);
  if (!in_nram(p, n * size))
    violate("vector operand not in NRAM", "%s: operand %s (%p) is not an NRAM buffer (GDRAM data must be "
            "copied to NRAM with __memcpy first)", op, what, p);
  if ((uintptr_t)p % KILN_MLU_ALIGN)
    violate("vector alignment", "%s: operand %s is not %d-byte aligned", op, what, KILN_MLU_ALIGN);
  async_check(op, what, p, n * size, !strcmp(what, "dst"));
}

}  // namespace kiln_mlu
#include "kiln_mlu_emulate_cluster.h"  // WRAM, SRAM, __memcpy's spaces, matmul, cluster fibers
namespace kiln_mlu {

static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static void load_schedule(Shared& s) {
  if (s.mode >= 0) return;
  const char* v = getenv("KILN_MLU_SCHEDULE");
  s.mode = 0;
  if (!v || !*v || !strcmp(v, "forward")) return;
  if (!strcmp(v, "reverse")) { s.mode = 1; return; }
  if (!strncmp(v, "shuffle:", 8)) { s.mode = 2; s.seed = strtoull(v + 8, nullptr, 0); return; }
  fprintf(stderr, "kiln_mlu: $KILN_MLU_SCHEDULE=%s is not forward, reverse or shuffle:SEED; using forward\n", v);
}

// The order tasks run in for this launch (a permutation of 0..dim-1).
static std::vector<unsigned> task_order(unsigned dim) {
  Shared& s = shared();
  std::lock_guard<std::mutex> lock(s.mu);
  load_schedule(s);
  std::vector<unsigned> order(dim);
  for (unsigned i = 0; i < dim; ++i) order[i] = i;
  if (s.mode == 1) std::reverse(order.begin(), order.end());
  if (s.mode == 2) {
    uint64_t key = mix64(s.seed ^ mix64(s.launches));
    for (unsigned i = dim; i > 1; --i) {
      key = mix64(key);
      std::swap(order[i - 1], order[key % i]);
    }
  }
  ++s.launches;
  return order;
}

// Run `body` once per task (taskId 0..dim-1 in the schedule's order).
static cnrtRet_t invoke(const char* name, cnrtDim3_t dim, cnrtFunctionType_t type, const std::function<void()>& body) {
  State& s = state();
  if (!s.error.empty()) return cnrtErrorSys;
  s.kernel = name;
  unsigned total = dim.x * dim.y * dim.z;
  try {
    if (total == 0) violate("task dimension", "task dimension %ux%ux%u is empty", dim.x, dim.y, dim.z);
    if (type == CNRT_FUNC_TYPE_UNION1 && total % KILN_MLU_CLUSTER_CORES)
      violate("task dimension", "a Union1 kernel runs whole clusters: %u tasks is not a multiple of %d cores",
              total, KILN_MLU_CLUSTER_CORES);
    run_tasks(task_order(total), type == CNRT_FUNC_TYPE_UNION1, body);
  } catch (Violation&) {
    fprintf(stderr, "kiln_mlu: %s\n", s.error.c_str());
    return cnrtErrorSys;
  }
  return cnrtSuccess;
}

}  // namespace kiln_mlu

#define taskId ((int)kiln_mlu::state().task_id)
#define taskDim ((int)kiln_mlu::state().task_dim)
#define coreId ((int)(kiln_mlu::state().task_id % KILN_MLU_CLUSTER_CORES))
#define clusterId ((int)(kiln_mlu::state().task_id / KILN_MLU_CLUSTER_CORES))

// An NRAM tile: `__nram__ T name[count];` under cncc, a checked slice of the task's NRAM here.
#define KILN_NRAM(T, name, count) T* name = (T*)kiln_mlu::nram_alloc(sizeof(T) * (size_t)(count), #name)
// `kernel<<<dim, type, queue>>>(args)` under cncc; here every task in the schedule's order.
#define KILN_MLU_INVOKE(kernel, dim, type, queue, ...) \
  kiln_mlu::invoke(#kernel, (dim), (type), [&]() { kernel(__VA_ARGS__); })

static inline void __memcpy(void* dst, const void* src, long long bytes, mluMemcpyDirection_t dir) {
  kiln_mlu::memcpy_checked(dst, src, bytes, dir);
}

// Elementwise vector intrinsics over NRAM: dst[i] = a[i] OP b[i].
#define KILN_MLU_BINARY(name, expr)                                                   \
  template <typename T>                                                               \
  static inline void name(T* dst, const T* a, const T* b, int n) {                    \
    kiln_mlu::check_vector(#name, "dst", dst, n, sizeof(T));                          \
    kiln_mlu::check_vector(#name, "src0", a, n, sizeof(T));                           \
    kiln_mlu::check_vector(#name, "src1", b, n, sizeof(T));                           \
    for (int i = 0; i < n; ++i) dst[i] = (expr);                                      \
  }
KILN_MLU_BINARY(__bang_add, a[i] + b[i])
KILN_MLU_BINARY(__bang_sub, a[i] - b[i])
KILN_MLU_BINARY(__bang_mul, a[i] * b[i])
KILN_MLU_BINARY(__bang_maxequal, a[i] > b[i] ? a[i] : b[i])
KILN_MLU_BINARY(__bang_minequal, a[i] < b[i] ? a[i] : b[i])
#undef KILN_MLU_BINARY

// dst[i] = a[i] OP scalar.
template <typename T>
static inline void __bang_add_scalar(T* dst, const T* a, T s, int n) {
  kiln_mlu::check_vector("__bang_add_scalar", "dst", dst, n, sizeof(T));
  kiln_mlu::check_vector("__bang_add_scalar", "src", a, n, sizeof(T));
  for (int i = 0; i < n; ++i) dst[i] = a[i] + s;
}
template <typename T>
static inline void __bang_mul_scalar(T* dst, const T* a, T s, int n) {
  kiln_mlu::check_vector("__bang_mul_scalar", "dst", dst, n, sizeof(T));
  kiln_mlu::check_vector("__bang_mul_scalar", "src", a, n, sizeof(T));
  for (int i = 0; i < n; ++i) dst[i] = a[i] * s;
}
template <typename T>
static inline void __bang_write_value(T* dst, int n, T v) {
  kiln_mlu::check_vector("__bang_write_value", "dst", dst, n, sizeof(T));
  for (int i = 0; i < n; ++i) dst[i] = v;
}
// __bang_active_relu: dst[i] = max(a[i], 0).
template <typename T>
static inline void __bang_active_relu(T* dst, const T* a, int n) {
  kiln_mlu::check_vector("__bang_active_relu", "dst", dst, n, sizeof(T));
  kiln_mlu::check_vector("__bang_active_relu", "src", a, n, sizeof(T));
  for (int i = 0; i < n; ++i) dst[i] = a[i] > 0 ? a[i] : (T)0;
}

// ---- CNRT host API ----------------------------------------------------------------------
struct kiln_mlu_queue_ { int unused; };

static inline cnrtRet_t cnrtMalloc(void** p, size_t bytes) {
  char* c = (char*)aligned_alloc(KILN_MLU_ALIGN, (bytes + KILN_MLU_ALIGN - 1) / KILN_MLU_ALIGN * KILN_MLU_ALIGN + KILN_MLU_ALIGN);
  if (!c) return cnrtErrorNoMem;
  memset(c, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(kiln_mlu::shared().mu);
  kiln_mlu::shared().gdram[c] = bytes;
  *p = c;
  return cnrtSuccess;
}
static inline cnrtRet_t cnrtFree(void* p) {
  if (!p) return cnrtSuccess;
  {
    std::lock_guard<std::mutex> lock(kiln_mlu::shared().mu);
    if (!kiln_mlu::shared().gdram.erase((char*)p)) return cnrtErrorArgsInvalid;
  }
  free(p);
  return cnrtSuccess;
}
// Host <-> device copies: the device side must lie in one cnrtMalloc block.
static inline cnrtRet_t cnrtMemcpy(void* dst, void* src, size_t bytes, cnrtMemTransDir_t dir) {
  if (!kiln_mlu::state().error.empty()) return cnrtErrorSys;
  bool dst_dev = dir != cnrtMemcpyDevToHost, src_dev = dir != cnrtMemcpyHostToDev;
  if ((dst_dev && !kiln_mlu::gdram_block(dst, bytes).base) || (src_dev && !kiln_mlu::gdram_block(src, bytes).base))
    return cnrtErrorArgsInvalid;
  memmove(dst, src, bytes);
  return cnrtSuccess;
}
static inline cnrtRet_t cnrtQueueCreate(cnrtQueue_t* q) { *q = new kiln_mlu_queue_(); return cnrtSuccess; }
static inline cnrtRet_t cnrtQueueDestroy(cnrtQueue_t q) { delete q; return cnrtSuccess; }
// Work runs when invoked, so a sync only reports a violation of the queue's kernels.
static inline cnrtRet_t cnrtQueueSync(cnrtQueue_t) {
  return kiln_mlu::state().error.empty() ? cnrtSuccess : cnrtErrorSys;
}

// The first violation's message ("" when none), and a reset (tests; a fresh state).
extern "C" __attribute__((visibility("default"))) const char* kiln_mlu_last_error(void) {
  return kiln_mlu::state().error.c_str();
}
extern "C" __attribute__((visibility("default"))) void kiln_mlu_clear_error(void) { kiln_mlu::state().error.clear(); }
// mode 0 forward, 1 reverse, 2 shuffle with `seed`.
extern "C" __attribute__((visibility("default"))) void kiln_mlu_set_schedule(int mode, unsigned long long seed) {
  std::lock_guard<std::mutex> lock(kiln_mlu::shared().mu);
  kiln_mlu::shared().mode = mode;
  kiln_mlu::shared().seed = seed;
  kiln_mlu::shared().launches = 0;
}

#endif  // KILN_MLU_EMULATE_H_

// kiln_cuda_emulate.h -- run Kiln's generated CUDA C on the CPU (docs/cuda-emulator.md).
//
// What: a host-side stand-in for the CUDA runtime API subset and the device built-ins that
// the Kiln CUDA backend emits, so that one generated .cu text compiles two ways:
//   real:     nvcc -arch=sm_90 -Xcompiler -fPIC -shared x.cu -o x.so
//   emulated: g++ -std=c++17 -O1 -fPIC -shared -fvisibility=hidden -x c++ -DKILN_CUDA_EMULATE
//                 -include templates/cuda/kiln_cuda_emulate.h x.cu -o x.so
// Why: differential tests of generated kernels *and* of the host code around them on
// machines without a GPU.  The emulator is strict where CUDA is strict (launch
// configuration, stream-capture rules, pageable copies in graphs) and makes common host
// mistakes visible (cudaMalloc memory is 0xFF bytes, i.e. NaN floats; allocation failures
// and missing devices can be injected with kiln_emu_configure).
// How: all work runs synchronously on the calling host thread, one block at a time.
// KILN_LAUNCH runs every CUDA thread as a plain call; KILN_LAUNCH_SYNC runs the threads
// of a block as fibers that switch only at barriers (__syncthreads, __syncwarp, shuffles,
// votes), in a deterministic order.  All state is internal to the including library.
// Race checking (off by default; $KILN_EMU_RACECHECK=1 or kiln_emu_set_race_check(1)):
// KILN_LD / KILN_ST record which thread wrote and read each element in a launch, and a
// conflict between two threads not ordered by a __syncthreads() barrier fails the launch
// with cudaErrorLaunchFailure and a message (kiln_emu_last_race) -- threads never run
// concurrently here, so a race would otherwise pass silently.
#ifndef KILN_CUDA_EMULATE_H_
#define KILN_CUDA_EMULATE_H_

#ifndef __cplusplus
#error "kiln_cuda_emulate.h is C++: compile the .cu with g++ -x c++"
#endif
#ifdef __CUDACC__
#error "kiln_cuda_emulate.h replaces the CUDA runtime for host compilers; nvcc uses the real one"
#endif

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// Fibers switch with a few lines of x86-64 assembly (no syscalls); elsewhere, or with
// -DKILN_EMU_USE_UCONTEXT, with makecontext/swapcontext (slower: a syscall per switch).
#if defined(KILN_EMU_USE_UCONTEXT) || !defined(__x86_64__)
#define KILN_EMU_UCONTEXT 1
#include <ucontext.h>
#else
#define KILN_EMU_UCONTEXT 0
#endif

#ifndef KILN_EMU_STACK_BYTES  // per fiber (one fiber per thread of a block), plus a guard page
#define KILN_EMU_STACK_BYTES (64 * 1024)
#endif
#ifndef KILN_EMU_MEMORY_BYTES  // emulated device memory: cudaMalloc beyond it fails
#define KILN_EMU_MEMORY_BYTES (16ull << 30)
#endif

// Everything below stays inside the library that includes this header.
#pragma GCC visibility push(hidden)

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

// name, value, description (values as in CUDA 12/13 driver_types.h)
#define KILN_EMU_ERRORS(X)                                                                     \
  X(cudaSuccess, 0, "no error")                                                                \
  X(cudaErrorInvalidValue, 1, "invalid argument")                                              \
  X(cudaErrorMemoryAllocation, 2, "out of memory")                                             \
  X(cudaErrorInitializationError, 3, "initialization error")                                   \
  X(cudaErrorCudartUnloading, 4, "driver shutting down")                                       \
  X(cudaErrorInvalidConfiguration, 9, "invalid configuration argument")                        \
  X(cudaErrorInvalidSymbol, 13, "invalid device symbol")                                       \
  X(cudaErrorInvalidHostPointer, 16, "invalid host pointer")                                   \
  X(cudaErrorInvalidDevicePointer, 17, "invalid device pointer")                               \
  X(cudaErrorInvalidMemcpyDirection, 21, "invalid copy direction for memcpy")                  \
  X(cudaErrorMissingConfiguration, 52, "__global__ function call is not configured")           \
  X(cudaErrorInvalidDeviceFunction, 98, "invalid device function")                             \
  X(cudaErrorNoDevice, 100, "no CUDA-capable device is detected")                              \
  X(cudaErrorInvalidDevice, 101, "invalid device ordinal")                                     \
  X(cudaErrorInvalidResourceHandle, 400, "invalid resource handle")                            \
  X(cudaErrorIllegalState, 401, "the operation cannot be performed in the present state")      \
  X(cudaErrorNotReady, 600, "device not ready")                                                \
  X(cudaErrorIllegalAddress, 700, "an illegal memory access was encountered")                  \
  X(cudaErrorLaunchOutOfResources, 701, "too many resources requested for launch")             \
  X(cudaErrorLaunchFailure, 719, "unspecified launch failure")                                 \
  X(cudaErrorNotPermitted, 800, "operation not permitted")                                     \
  X(cudaErrorNotSupported, 801, "operation not supported")                                     \
  X(cudaErrorStreamCaptureUnsupported, 900, "operation not permitted when stream is capturing") \
  X(cudaErrorStreamCaptureInvalidated, 901, "operation failed due to a previous error during capture") \
  X(cudaErrorStreamCaptureMerge, 902, "operation would result in a merge of separate capture sequences") \
  X(cudaErrorStreamCaptureUnmatched, 903, "capture was not ended in the same stream as it began") \
  X(cudaErrorStreamCaptureUnjoined, 904, "capturing stream has unjoined work")                 \
  X(cudaErrorStreamCaptureIsolation, 905, "dependency created on uncaptured work in another stream") \
  X(cudaErrorStreamCaptureImplicit, 906, "operation would make the legacy stream depend on a capturing blocking stream") \
  X(cudaErrorCapturedEvent, 907, "operation not permitted on an event last recorded in a capturing stream") \
  X(cudaErrorStreamCaptureWrongThread, 908, "attempt to terminate a thread-local capture sequence from another thread") \
  X(cudaErrorUnknown, 999, "unknown error")

#define KILN_EMU_ENUM_ITEM(name, value, text) name = value,
enum cudaError { KILN_EMU_ERRORS(KILN_EMU_ENUM_ITEM) };
#undef KILN_EMU_ENUM_ITEM
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1, cudaStreamCaptureModeRelaxed = 2
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0, cudaStreamCaptureStatusActive = 1, cudaStreamCaptureStatusInvalidated = 2
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1, cudaDevAttrMaxBlockDimX = 2, cudaDevAttrMaxBlockDimY = 3,
  cudaDevAttrMaxBlockDimZ = 4, cudaDevAttrMaxGridDimX = 5, cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxGridDimZ = 7, cudaDevAttrMaxSharedMemoryPerBlock = 8, cudaDevAttrTotalConstantMemory = 9,
  cudaDevAttrWarpSize = 10, cudaDevAttrMaxRegistersPerBlock = 12, cudaDevAttrClockRate = 13,
  cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxThreadsPerMultiProcessor = 39,
  cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};
#define cudaHostAllocDefault 0x00
#define cudaHostAllocPortable 0x01
#define cudaHostAllocMapped 0x02
#define cudaHostAllocWriteCombined 0x04
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01

namespace {  // handle types: internal to the library, like everything else here
struct CUstream_st;
struct CUgraph_st;
struct CUgraphExec_st;
}  // namespace
typedef struct CUstream_st* cudaStream_t;
typedef struct CUgraph_st* cudaGraph_t;
typedef struct CUgraphExec_st* cudaGraphExec_t;
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)

namespace {
namespace kiln_emu {
// A captured operation (a kernel launch, a copy or a memset), replayed by cudaGraphLaunch.
// Hand-rolled instead of std::function so that no std:: template instantiation with
// default visibility (an exported weak symbol) ends up in the library.
class Op {
  struct Base {
    virtual ~Base() {}
    virtual void run() const = 0;
    virtual Base* clone() const = 0;
  };
  template <class F> struct Impl : Base {
    F f;
    explicit Impl(const F& fn) : f(fn) {}
    void run() const override { f(); }
    Base* clone() const override { return new Impl(f); }
  };
  Base* p_;

 public:
  template <class F> explicit Op(const F& f) : p_(new Impl<F>(f)) {}
  Op(const Op& o) : p_(o.p_->clone()) {}
  Op(Op&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Op& operator=(Op o) noexcept { std::swap(p_, o.p_); return *this; }
  ~Op() { delete p_; }
  void operator()() const { p_->run(); }
};
}  // namespace kiln_emu

struct CUgraph_st { std::vector<kiln_emu::Op> ops; };
struct CUgraphExec_st { std::vector<kiln_emu::Op> ops; };
struct CUstream_st {
  unsigned int flags;
  bool capturing, invalidated;  // invalidated: an illegal call happened during the capture
  cudaStreamCaptureMode mode;
  std::thread::id thread;       // the thread that began the capture
  CUgraph_st* graph;            // the graph being captured into
};
}  // namespace

// ------------------------------------------------------------------ emulator internals
namespace {
namespace kiln_emu {

[[noreturn]] __attribute__((format(printf, 1, 2))) inline void die(const char* fmt, ...) {
  fputs("kiln cuda emulator: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  abort();
}

std::mutex mu;  // guards all state below; kernels run with it held
typedef std::lock_guard<std::mutex> Lock;

inline cudaError_t& last_error() { static thread_local cudaError_t e = cudaSuccess; return e; }
inline cudaError_t fail(cudaError_t e) {  // CUDA: every failing call sets the last error
  if (e != cudaSuccess) last_error() = e;
  return e;
}
inline bool& in_kernel() { static thread_local bool b = false; return b; }

// ---- configuration and fault injection (kiln_emu_configure, KILN_EMU_* variables)
struct Config { bool loaded; int devices; long long fail_malloc_at; int device; };
Config config_;

inline long long env_ll(const char* name, long long fallback) {
  const char* v = getenv(name);
  return (v && *v) ? atoll(v) : fallback;
}
inline Config& config() {
  if (!config_.loaded) {
    config_.loaded = true;
    config_.devices = (int)env_ll("KILN_EMU_DEVICES", 1);
    config_.fail_malloc_at = env_ll("KILN_EMU_FAIL_MALLOC_AT", 0);
  }
  return config_;
}
inline cudaError_t device_check() { return config().devices > 0 ? cudaSuccess : cudaErrorNoDevice; }

// ---- memory: device and pinned blocks, for frees, bounds and capture checks
enum MemKind { DEVICE_MEM, PINNED_MEM };
struct Region { size_t size; MemKind kind; };
std::map<uintptr_t, Region> regions;
size_t device_bytes_in_use = 0;

inline const Region* region_of(const void* p) {  // the block holding p, or null
  auto it = regions.upper_bound((uintptr_t)p);
  if (it == regions.begin()) return nullptr;
  --it;
  return (uintptr_t)p < it->first + it->second.size ? &it->second : nullptr;
}
inline bool is_kind(const void* p, MemKind k) { const Region* r = region_of(p); return r && r->kind == k; }

inline cudaError_t allocate(void** out, size_t size, MemKind kind) {
  if (!out) return cudaErrorInvalidValue;
  *out = nullptr;
  if (size == 0) return cudaSuccess;
  if (size > KILN_EMU_MEMORY_BYTES) return cudaErrorMemoryAllocation;  // also keeps the rounding below exact
  if (kind == DEVICE_MEM && size > KILN_EMU_MEMORY_BYTES - device_bytes_in_use) return cudaErrorMemoryAllocation;
  const size_t rounded = (size + 255) & ~(size_t)255;
  void* p = aligned_alloc(256, rounded);
  if (!p) return cudaErrorMemoryAllocation;
  memset(p, 0xFF, rounded);  // never zero: code relying on zeroed memory reads NaNs
  regions.emplace((uintptr_t)p, Region{size, kind});
  if (kind == DEVICE_MEM) device_bytes_in_use += size;
  *out = p;
  return cudaSuccess;
}
inline cudaError_t release(void* p, MemKind kind) {
  if (!p) return cudaSuccess;
  auto it = regions.find((uintptr_t)p);
  if (it == regions.end() || it->second.kind != kind) return cudaErrorInvalidValue;
  if (kind == DEVICE_MEM) device_bytes_in_use -= it->second.size;
  regions.erase(it);
  free(p);
  return cudaSuccess;
}
// A range that starts inside a known block must end inside it (like CUDA's copy checks).
inline cudaError_t check_range(const void* p, size_t n) {
  if (n == 0) return cudaSuccess;
  if (!p) return cudaErrorInvalidValue;
  auto it = regions.upper_bound((uintptr_t)p);
  if (it == regions.begin()) return cudaSuccess;
  --it;
  const uintptr_t a = (uintptr_t)p, end = it->first + it->second.size;
  if (a < end && n > end - a) return cudaErrorInvalidValue;
  return cudaSuccess;
}
inline cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if ((unsigned)kind > (unsigned)cudaMemcpyDefault) return cudaErrorInvalidMemcpyDirection;
  cudaError_t e = check_range(dst, n);
  return e ? e : check_range(src, n);
}
// Real CUDA cannot put a copy from/to pageable host memory into a graph.
inline bool capturable_copy(void* dst, const void* src, cudaMemcpyKind kind) {
  const bool dst_ok = is_kind(dst, PINNED_MEM), src_ok = is_kind(src, PINNED_MEM);
  switch (kind) {
    case cudaMemcpyHostToDevice: return src_ok;
    case cudaMemcpyDeviceToHost: return dst_ok;
    case cudaMemcpyHostToHost: return src_ok && dst_ok;
    case cudaMemcpyDeviceToDevice: return true;
    default: return (dst_ok || is_kind(dst, DEVICE_MEM)) && (src_ok || is_kind(src, DEVICE_MEM));
  }
}

// ---- streams, capture and graphs
std::set<cudaStream_t> streams;
std::set<cudaGraph_t> graphs;
std::set<cudaGraphExec_t> execs;

inline bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy; }
inline void invalidate(cudaStream_t s) {
  s->invalidated = true;
  s->graph->ops.clear();
}
// Work on the legacy default stream waits for every blocking stream: illegal while one captures.
inline cudaError_t legacy_conflict() {
  bool hit = false;
  for (cudaStream_t s : streams)
    if (s->capturing && !(s->flags & cudaStreamNonBlocking)) { invalidate(s); hit = true; }
  return hit ? cudaErrorStreamCaptureImplicit : cudaSuccess;
}
// cudaMalloc, cudaFree, synchronous copies and synchronizations are "potentially unsafe"
// during a capture that is not Relaxed (Global: from any thread; ThreadLocal: its thread).
inline cudaError_t unsafe_call() {
  bool hit = false;
  const std::thread::id me = std::this_thread::get_id();
  for (cudaStream_t s : streams) {
    if (!s->capturing) continue;
    const bool mine = s->thread == me;
    if ((mine && s->mode != cudaStreamCaptureModeRelaxed) || (!mine && s->mode == cudaStreamCaptureModeGlobal)) {
      invalidate(s);
      hit = true;
    }
  }
  return hit ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t sync_legacy_call() {  // cudaMemcpy, cudaMemset, ...: unsafe and on the legacy stream
  cudaError_t e = unsafe_call();
  return e ? e : legacy_conflict();
}
// Where work submitted to stream s goes: run now (*graph = null) or into a capture graph.
inline cudaError_t route(cudaStream_t s, cudaGraph_t* graph) {
  *graph = nullptr;
  if (s == cudaStreamPerThread) return cudaSuccess;
  if (is_legacy(s)) return legacy_conflict();
  if (!streams.count(s)) return cudaErrorInvalidResourceHandle;
  if (!s->capturing) return cudaSuccess;
  if (s->invalidated) return cudaErrorStreamCaptureInvalidated;
  *graph = s->graph;
  return cudaSuccess;
}
inline cudaError_t valid_stream(cudaStream_t s) {
  return (is_legacy(s) || s == cudaStreamPerThread || streams.count(s)) ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

// ---- the current CUDA thread, read by threadIdx & co.
enum Mode { IN_HOST = 0, IN_PLAIN, IN_FIBERS };
enum FiberState { READY, AT_BLOCK, AT_WARP, DONE };

struct Fiber {
  void* sp;  // saved stack pointer (x86-64 switch)
#if KILN_EMU_UCONTEXT
  ucontext_t ctx;
#endif
  uint3 tid;
  unsigned int linear;     // x + y*bx + z*bx*by; lane = linear % 32
  int state;               // FiberState
  unsigned int exchanges;  // warp exchanges made in this block (shuffles, votes)
};

struct Current {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  int mode;  // Mode
  const char* kernel;
  Fiber* fiber;
};
Current cur;

// ---- race checking: KILN_LD / KILN_ST record their accesses (docs/cuda-emulator.md)
// Per launch and per element address: the last writer and a summary of the readers.  Blocks
// run one after another and a block's __syncthreads() barriers advance its epoch, so an
// earlier access conflicts with the current one (block b, thread t, epoch e) unless it was
// made by t itself or by block b at an epoch before e.
struct RaceSlot {
  uintptr_t addr;
  uint64_t w_block;  // the last write
  uint64_t r_block;  // the reads of the latest (block, epoch) that read the element
  uint64_t o_block;  // a read by an earlier block (flag RACE_O)
  uint32_t gen;      // the launch (table generation) the slot belongs to
  uint32_t w_epoch, r_epoch;
  uint16_t w_thread, r_thread, r_thread2, o_thread;  // r_thread2: a second reader of (r_block, r_epoch)
  uint8_t flags;
};
enum { RACE_W = 1, RACE_R = 2, RACE_O = 4 };
static const uint16_t NO_THREAD = 0xFFFF;  // thread ids are < 1024

// Open addressing keyed by address; a new launch empties it in O(1) by bumping `gen`.
struct RaceTable {
  RaceSlot* slots = nullptr;
  size_t cap = 0, used = 0;
  unsigned shift = 64;
  uint32_t gen = 0;
  ~RaceTable() { free(slots); }
  void release() {
    free(slots);
    slots = nullptr;
    cap = used = 0;
    shift = 64;
  }
  void reset() {
    used = 0;
    if (++gen == 0) {  // wrapped: clear for real
      if (slots) memset(slots, 0, cap * sizeof(RaceSlot));
      gen = 1;
    }
  }
  size_t home(uintptr_t a) const { return (size_t)(((uint64_t)a * 0x9E3779B97F4A7C15ull) >> shift); }
  void grow() {
    const size_t old_cap = cap;
    RaceSlot* old = slots;
    cap = cap ? cap * 2 : (size_t)1 << 16;
    shift = 64 - (unsigned)__builtin_ctzll(cap);
    slots = (RaceSlot*)calloc(cap, sizeof(RaceSlot));
    if (!slots) die("race checking: cannot allocate a table of %zu entries", cap);
    for (size_t i = 0; i < old_cap; ++i) {
      if (old[i].gen != gen) continue;
      size_t j = home(old[i].addr);
      while (slots[j].gen == gen) j = (j + 1) & (cap - 1);
      slots[j] = old[i];
    }
    free(old);
  }
  RaceSlot& find(uintptr_t a) {
    if (2 * (used + 1) > cap) grow();
    for (size_t i = home(a);; i = (i + 1) & (cap - 1)) {
      RaceSlot& s = slots[i];
      if (s.gen != gen) {  // empty (or left from an earlier launch): claim it
        memset(&s, 0, sizeof s);
        s.gen = gen;
        s.addr = a;
        ++used;
        return s;
      }
      if (s.addr == a) return s;
    }
  }
};
RaceTable race_table;

struct RaceState {
  bool loaded, enabled;  // the switch: $KILN_EMU_RACECHECK (read on first use) or kiln_emu_set_race_check
  bool active;           // checking the running launch (until its first race)
  uint32_t epoch;        // __syncthreads() barriers the running block has passed
  int fault;             // a race happened: the next sync-like call reports cudaErrorLaunchFailure
  const void* args;      // the running launch's argument tuple, to name the racing pointer
  size_t (*describe_args)(const void* args, const void* p, char* out, size_t n);
  char last[1024];       // the latest race ("" if none): kiln_emu_last_race
};
RaceState race;

inline bool race_enabled() {
  if (!race.loaded) {
    race.loaded = true;
    race.enabled = env_ll("KILN_EMU_RACECHECK", 0) != 0;
  }
  return race.enabled;
}
// Reported (once) by cudaGetLastError, cudaStreamSynchronize/Query, cudaDeviceSynchronize,
// cudaGraphLaunch, like a kernel fault.  Atomic: cudaGetLastError does not take the lock.
inline bool take_fault() {
  return __atomic_load_n(&race.fault, __ATOMIC_ACQUIRE) && __atomic_exchange_n(&race.fault, 0, __ATOMIC_ACQ_REL);
}

// " = argument k [word w]" for every kernel-argument word (up to 3) that holds pointer p.
template <class Tuple, size_t... I>
size_t describe_args_impl(const Tuple& t, const void* p, char* out, size_t n, std::index_sequence<I...>) {
  size_t len = 0;
  int found = 0;
  auto scan = [&](size_t arg, const void* obj, size_t size) {
    for (size_t off = 0; off + sizeof(void*) <= size && found < 3; off += sizeof(void*)) {
      const void* w;
      memcpy(&w, (const char*)obj + off, sizeof w);
      if (w != p || len >= n) continue;
      if (size == sizeof(void*))
        len += (size_t)snprintf(out + len, n - len, "%s argument %zu", found ? "," : " =", arg);
      else
        len += (size_t)snprintf(out + len, n - len, "%s argument %zu word %zu", found ? "," : " =", arg, off / sizeof(void*));
      ++found;
    }
  };
  (void)scan;
  (void)t;
  (scan(I, (const void*)&std::get<I>(t), sizeof(std::get<I>(t))), ...);
  return len < n ? len : n;
}
template <class Tuple>
size_t describe_args(const void* args, const void* p, char* out, size_t n) {
  if (n) out[0] = 0;
  return describe_args_impl(*(const Tuple*)args, p, out, n, std::make_index_sequence<std::tuple_size<Tuple>::value>());
}

template <class T> constexpr const char* type_name() {
  typedef typename std::remove_cv<T>::type U;
  return std::is_same<U, float>::value ? "float"
       : std::is_same<U, double>::value ? "double"
       : std::is_same<U, int>::value ? "int"
       : std::is_same<U, unsigned int>::value ? "unsigned int"
       : std::is_same<U, long long>::value ? "long long"
       : std::is_same<U, unsigned long long>::value ? "unsigned long long"
       : std::is_same<U, long>::value ? "long"
       : std::is_same<U, unsigned long>::value ? "unsigned long"
       : std::is_same<U, short>::value ? "short"
       : std::is_same<U, unsigned short>::value ? "unsigned short"
       : std::is_same<U, char>::value ? "char"
       : std::is_same<U, signed char>::value ? "signed char"
       : std::is_same<U, unsigned char>::value ? "unsigned char"
       : std::is_same<U, bool>::value ? "bool"
       : nullptr;
}

__attribute__((noinline, cold)) inline void race_found(const void* a, const char* type, unsigned size, const void* base,
                                                long long index, uint64_t w_block, unsigned w_thread,
                                                bool read, uint64_t o_block, unsigned o_thread) {
  race.active = false;  // the first race of a launch is enough
  char tname[32], where[256], args[160] = "";
  if (!type) { snprintf(tname, sizeof tname, "%u-byte element", size); type = tname; }
  if (race.describe_args) race.describe_args(race.args, base, args, sizeof args);
  auto it = regions.upper_bound((uintptr_t)a);
  if (it != regions.begin() && (--it, (uintptr_t)a < it->first + it->second.size))
    snprintf(where, sizeof where, "allocation %p + %llu bytes", (void*)it->first,
             (unsigned long long)((uintptr_t)a - it->first));
  else
    snprintf(where, sizeof where, "not in an emulator allocation");
  snprintf(race.last, sizeof race.last,
           "race in %s: element %p (%s, index %lld of %p%s; %s) written by block %llu thread %u and %s block %llu thread %u",
           cur.kernel, a, type, index, base, args, where, (unsigned long long)w_block, w_thread,
           read ? "read by" : "by", (unsigned long long)o_block, o_thread);
  fprintf(stderr, "kiln cuda emulator: %s\n", race.last);
  fflush(stderr);
  __atomic_store_n(&race.fault, 1, __ATOMIC_RELEASE);
}

// One access of the running thread to the element at a (index `index` from `base`).
__attribute__((noinline)) inline void race_access(const void* a, const char* type, unsigned size, const void* base,
                                           long long index, bool write) {
  const dim3 g = cur.grid_dim, bd = cur.block_dim;
  const uint64_t blk = ((uint64_t)cur.block_idx.z * g.y + cur.block_idx.y) * g.x + cur.block_idx.x;
  const unsigned thr = (cur.thread_idx.z * bd.y + cur.thread_idx.y) * bd.x + cur.thread_idx.x;
  const uint32_t ep = race.epoch;
  RaceSlot& s = race_table.find((uintptr_t)a);
  if ((s.flags & RACE_W) && (s.w_block != blk || (s.w_epoch == ep && s.w_thread != thr)))
    return race_found(a, type, size, base, index, s.w_block, s.w_thread, !write, blk, thr);
  if (write) {
    uint64_t rb = 0;
    unsigned rt = NO_THREAD;
    if (s.flags & RACE_O) {  // read by an earlier block
      rb = s.o_block, rt = s.o_thread;
    } else if (s.flags & RACE_R) {
      if (s.r_block != blk) rb = s.r_block, rt = s.r_thread;
      else if (s.r_epoch == ep) rb = blk, rt = s.r_thread != thr ? s.r_thread : s.r_thread2;
    }
    if (rt != NO_THREAD) return race_found(a, type, size, base, index, blk, thr, true, rb, rt);
    s.flags |= RACE_W;
    s.w_block = blk, s.w_thread = (uint16_t)thr, s.w_epoch = ep;
    return;
  }
  if (!(s.flags & RACE_R)) {
    s.flags |= RACE_R;
  } else if (s.r_block != blk) {  // the first read of a new block: keep one reader of the old ones
    if (!(s.flags & RACE_O)) s.flags |= RACE_O, s.o_block = s.r_block, s.o_thread = s.r_thread;
  } else if (s.r_epoch == ep) {
    if (s.r_thread != thr && s.r_thread2 == NO_THREAD) s.r_thread2 = (uint16_t)thr;
    return;
  }
  s.r_block = blk, s.r_epoch = ep, s.r_thread = (uint16_t)thr, s.r_thread2 = NO_THREAD;
}

// The block being run as fibers.  Warp exchanges go through double-buffered slots tagged
// with (block serial, exchange number), so a lane that exited is detected.
struct Sched {
  std::vector<Fiber> fibers;
  unsigned int n;
  void (*body)(void*);
  void* ctx;
  void* sched_sp;
#if KILN_EMU_UCONTEXT
  ucontext_t sched_ctx;
#endif
  uint64_t block_serial;
  uint64_t slot_value[2][1024];
  uint64_t slot_tag[2][1024];
};
Sched sched;

// Fiber stacks, reused across blocks and launches; a PROT_NONE guard page below each.
struct StackPool {
  char* base = nullptr;
  size_t count = 0, slot = 0, page = 0;
  ~StackPool() { if (base) munmap(base, count * slot); }
  size_t usable() const { return slot - page; }
  char* low(unsigned i) const { return base + i * slot + page; }
  void reserve(unsigned n) {
    if (n <= count) return;
    if (base) munmap(base, count * slot);
    page = (size_t)sysconf(_SC_PAGESIZE);
    slot = ((KILN_EMU_STACK_BYTES + page - 1) / page) * page + page;
    void* p = mmap(nullptr, n * slot, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("cannot map %u fiber stacks", n);
    base = (char*)p;
    count = n;
    for (unsigned i = 0; i < n; ++i) mprotect(base + i * slot, page, PROT_NONE);
  }
};
StackPool stacks;

#if KILN_EMU_UCONTEXT
inline void switch_to(ucontext_t* save, ucontext_t* load) { swapcontext(save, load); }
#else
// Saves the callee-saved registers on the current stack, stores the stack pointer in
// *save_sp, loads load_sp and pops the registers saved there (System V x86-64 ABI).
#if defined(__clang__)
__attribute__((naked, noinline))
#else
__attribute__((naked, noinline, noipa))
#endif
void switch_stack(void** /*save_sp: rdi*/, void* /*load_sp: rsi*/) {
  __asm__ volatile(
      "pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}
#endif

inline void enter(Fiber& f) {  // scheduler -> fiber
  cur.fiber = &f;
  cur.thread_idx = f.tid;
  __asm__ __volatile__("" ::: "memory");
#if KILN_EMU_UCONTEXT
  switch_to(&sched.sched_ctx, &f.ctx);
#else
  switch_stack(&sched.sched_sp, f.sp);
#endif
  __asm__ __volatile__("" ::: "memory");
}
inline void leave(Fiber* f) {  // fiber -> scheduler
  __asm__ __volatile__("" ::: "memory");
#if KILN_EMU_UCONTEXT
  switch_to(&f->ctx, &sched.sched_ctx);
#else
  switch_stack(&f->sp, sched.sched_sp);
#endif
  __asm__ __volatile__("" ::: "memory");
}

[[noreturn]] void fiber_main() {
  sched.body(sched.ctx);
  Fiber* f = cur.fiber;
  f->state = DONE;
  leave(f);
  die("internal error: a finished fiber was resumed");
}

inline void prepare(Fiber& f, char* low, size_t size) {
#if KILN_EMU_UCONTEXT
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = low;
  f.ctx.uc_stack.ss_size = size;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, (void (*)())fiber_main, 0);
#else
  // The first switch pops six zero registers and "returns" into fiber_main, with the
  // stack aligned as after a call.
  void** sp = (void**)(((uintptr_t)(low + size)) & ~(uintptr_t)15);
  *--sp = nullptr;               // fiber_main's return address: it never returns
  *--sp = (void*)&fiber_main;
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  f.sp = sp;
#endif
}

[[noreturn]] inline void misuse(const char* what) {
  if (cur.mode == IN_PLAIN)
    die("%s called in kernel '%s' (block %u,%u,%u thread %u,%u,%u), which was launched with KILN_LAUNCH: "
        "kernels that use __syncthreads, __syncwarp, warp shuffles or votes must be launched with "
        "KILN_LAUNCH_SYNC (a Kiln code generator bug)",
        what, cur.kernel, cur.block_idx.x, cur.block_idx.y, cur.block_idx.z, cur.thread_idx.x,
        cur.thread_idx.y, cur.thread_idx.z);
  die("%s called outside a kernel", what);
}

inline void wait_at(int state, const char* what) {  // a barrier: yield to the scheduler
  if (cur.mode != IN_FIBERS) misuse(what);
  Fiber* f = cur.fiber;
  f->state = state;
  leave(f);
}

[[noreturn]] inline void deadlock(unsigned warp, unsigned at_warp, unsigned at_block) {
  die("kernel '%s' block %u,%u,%u: barrier mismatch in warp %u: %u threads wait at a warp barrier "
      "(__syncwarp, __shfl_*_sync, vote) while %u wait at __syncthreads(); every live thread of a warp "
      "must reach the same kind of barrier",
      cur.kernel, cur.block_idx.x, cur.block_idx.y, cur.block_idx.z, warp, at_warp, at_block);
}

// After a round (every ready fiber ran to a barrier or returned): release the warps whose
// live threads all wait at a warp barrier, and the block when all live threads wait at
// __syncthreads.  Threads that returned count as arrived.  False when all returned.
inline bool release_barriers() {
  Fiber* fs = sched.fibers.data();
  const unsigned n = sched.n;
  unsigned live = 0, at_block = 0, stuck_warp = 0, stuck_at_warp = 0, stuck_at_block = 0;
  bool released = false;
  for (unsigned w = 0; w < n; w += 32) {
    const unsigned end = w + 32 < n ? w + 32 : n;
    unsigned in_warp_barrier = 0, in_block_barrier = 0;
    for (unsigned i = w; i < end; ++i) {
      if (fs[i].state == AT_WARP) ++in_warp_barrier;
      if (fs[i].state == AT_BLOCK) ++in_block_barrier;
    }
    live += in_warp_barrier + in_block_barrier;
    at_block += in_block_barrier;
    if (in_warp_barrier && !in_block_barrier) {
      for (unsigned i = w; i < end; ++i)
        if (fs[i].state == AT_WARP) fs[i].state = READY;
      released = true;
    } else if (in_warp_barrier) {
      stuck_warp = w / 32, stuck_at_warp = in_warp_barrier, stuck_at_block = in_block_barrier;
    }
  }
  if (live == 0) return false;
  if (!released && at_block == live) {
    for (unsigned i = 0; i < n; ++i)
      if (fs[i].state == AT_BLOCK) fs[i].state = READY;
    released = true;
    ++race.epoch;  // accesses before the barrier are ordered before those after it
  }
  if (!released) deadlock(stuck_warp, stuck_at_warp, stuck_at_block);
  return true;
}

inline void run_block_fibers() {
  const unsigned n = sched.n, bx = cur.block_dim.x, by = cur.block_dim.y;
  ++sched.block_serial;
  race.epoch = 0;
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = sched.fibers[i];
    f.linear = i;
    f.tid = uint3{i % bx, (i / bx) % by, i / (bx * by)};
    f.state = READY;
    f.exchanges = 0;
    prepare(f, stacks.low(i), stacks.usable());
  }
  do {
    for (unsigned i = 0; i < n; ++i)
      if (sched.fibers[i].state == READY) enter(sched.fibers[i]);
  } while (release_barriers());
}

// Warp exchange: publish v, wait for the warp, return the slot of lane src (or v).
enum { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_BFLY };

// PTX shfl.sync source-lane rule (segments of `width` lanes; out of range -> own lane).
inline unsigned source_lane(int mode, unsigned lane, unsigned b, int width) {
  const unsigned seg = (32u - (unsigned)width) & 31u, lo = lane & seg, hi = lo | (31u & ~seg);
  const unsigned bv = b & 31u;
  switch (mode) {
    case SHFL_IDX: return lo | (bv & ~seg & 31u);
    case SHFL_UP: return (int)lane - (int)bv >= (int)lo ? lane - bv : lane;
    case SHFL_DOWN: return lane + bv <= hi ? lane + bv : lane;
    default: return (lane ^ bv) <= hi ? (lane ^ bv) : lane;
  }
}

inline Fiber* publish(uint64_t raw, unsigned mask, const char* what, unsigned* parity, uint64_t* tag) {
  if (cur.mode != IN_FIBERS) misuse(what);
  Fiber* f = cur.fiber;
  if (!((mask >> (f->linear & 31)) & 1u))
    die("%s in kernel '%s': the calling lane %u is not in mask 0x%08x", what, cur.kernel, f->linear & 31, mask);
  *tag = (sched.block_serial << 32) | ++f->exchanges;
  *parity = f->exchanges & 1u;
  sched.slot_value[*parity][f->linear] = raw;
  sched.slot_tag[*parity][f->linear] = *tag;
  wait_at(AT_WARP, what);
  return f;
}

template <class T>
inline T shuffle(unsigned mask, T v, int mode, unsigned b, int width, const char* what) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
  if (width < 1 || width > 32 || (width & (width - 1)))
    die("%s in kernel '%s': width %d is not a power of two in 1..32", what, cur.kernel, width);
  uint64_t raw = 0, tag;
  unsigned parity;
  memcpy(&raw, &v, sizeof v);
  Fiber* f = publish(raw, mask, what, &parity, &tag);
  const unsigned lane = f->linear & 31u, j = source_lane(mode, lane, b, width);
  if (j == lane) return v;
  const unsigned src = f->linear - lane + j;
  if (src >= sched.n || sched.slot_tag[parity][src] != tag)
    die("%s in kernel '%s' (block %u,%u,%u): lane %u of warp %u reads lane %u, which has exited, does not "
        "exist or did not make the same number of warp exchanges",
        what, cur.kernel, cur.block_idx.x, cur.block_idx.y, cur.block_idx.z, lane, f->linear / 32, j);
  T out;
  memcpy(&out, &sched.slot_value[parity][src], sizeof out);
  return out;
}

// Ballot over the warp; *took_part gets the lanes that made this exchange.
inline unsigned ballot(unsigned mask, int pred, const char* what, unsigned* took_part) {
  uint64_t tag;
  unsigned parity, bits = 0, part = 0;
  Fiber* f = publish(pred != 0, mask, what, &parity, &tag);
  const unsigned base = f->linear & ~31u;
  for (unsigned l = 0; l < 32 && base + l < sched.n; ++l) {
    if (sched.slot_tag[parity][base + l] != tag) continue;
    part |= 1u << l;
    if (sched.slot_value[parity][base + l]) bits |= 1u << l;
  }
  *took_part = part & mask;
  return bits & mask;
}

// ---- launching
inline cudaError_t check_launch_config(dim3 g, dim3 b) {
  const unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64) return cudaErrorInvalidConfiguration;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    return cudaErrorInvalidConfiguration;
  return cudaSuccess;
}

template <class F>
void run_plain(F& thread) {  // KILN_LAUNCH: every thread is one call, in order
  const dim3 g = cur.grid_dim, b = cur.block_dim;
  for (unsigned bz = 0; bz < g.z; ++bz)
    for (unsigned by = 0; by < g.y; ++by)
      for (unsigned bx = 0; bx < g.x; ++bx) {
        cur.block_idx = uint3{bx, by, bz};
        for (unsigned tz = 0; tz < b.z; ++tz)
          for (unsigned ty = 0; ty < b.y; ++ty)
            for (unsigned tx = 0; tx < b.x; ++tx) {
              cur.thread_idx = uint3{tx, ty, tz};
              thread();
            }
      }
}

template <class F>
void call_thread(void* f) { (*static_cast<F*>(f))(); }

template <class F>
void run_fibers(F& thread) {  // KILN_LAUNCH_SYNC: each block's threads as fibers
  const dim3 g = cur.grid_dim, b = cur.block_dim;
  sched.n = b.x * b.y * b.z;
  stacks.reserve(sched.n);
  if (sched.fibers.size() < sched.n) sched.fibers.resize(sched.n);
  sched.body = &call_thread<F>;
  sched.ctx = &thread;
  for (unsigned bz = 0; bz < g.z; ++bz)
    for (unsigned by = 0; by < g.y; ++by)
      for (unsigned bx = 0; bx < g.x; ++bx) {
        cur.block_idx = uint3{bx, by, bz};
        run_block_fibers();
      }
}

template <class F>
void execute(const char* name, dim3 g, dim3 b, bool coop, F& thread, const void* args,
             size_t (*describe)(const void*, const void*, char*, size_t)) {
  cur.kernel = name;
  cur.grid_dim = g;
  cur.block_dim = b;
  cur.mode = coop ? IN_FIBERS : IN_PLAIN;
  if (race_enabled()) {  // a new launch: forget the accesses of the previous one
    race_table.reset();
    race.epoch = 0;
    race.args = args;
    race.describe_args = describe;
    race.active = true;
  }
  in_kernel() = true;
  if (coop) run_fibers(thread); else run_plain(thread);
  in_kernel() = false;
  race.active = false;
  cur.mode = IN_HOST;
  cur.fiber = nullptr;
}

// Checks the launch, then runs it now or records it into the capture graph.
template <class Run>
void submit_kernel(const char* name, dim3 g, dim3 b, cudaStream_t s, const Run& run) {
  if (in_kernel()) die("kernel '%s' launched from inside a kernel: dynamic parallelism is not emulated", name);
  Lock lock(mu);
  cudaGraph_t graph = nullptr;
  cudaError_t e = device_check();
  if (!e) e = check_launch_config(g, b);
  if (!e) e = route(s, &graph);
  if (e) { last_error() = e; return; }
  if (graph) graph->ops.push_back(Op(run)); else run();
}

template <class... P>
struct Launcher {
  const char* name;
  void (*fn)(P...);
  dim3 grid, block;
  cudaStream_t stream;
  bool coop;
  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "KILN_LAUNCH: wrong number of kernel arguments");
    const std::tuple<P...> args(std::forward<A>(a)...);  // by value, converted, at launch time
    void (*f)(P...) = fn;
    const char* nm = name;
    const dim3 g = grid, b = block;
    const bool c = coop;
    submit_kernel(name, grid, block, stream, [f, args, nm, g, b, c]() {
      auto thread = [&]() { std::apply(f, args); };  // each thread gets its own copy
      execute(nm, g, b, c, thread, &args, &describe_args<std::tuple<P...>>);
    });
  }
};
template <class... P>
Launcher<P...> launcher(const char* name, void (*fn)(P...), dim3 grid, dim3 block, cudaStream_t stream, bool coop) {
  return Launcher<P...>{name, fn, grid, block, stream, coop};
}

// ---- copies and sets behind the runtime API
inline cudaError_t copy_sync(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  Lock lock(mu);
  cudaError_t e = device_check();
  if (!e) e = check_copy(dst, src, n, kind);
  if (!e) e = sync_legacy_call();
  if (e) return fail(e);
  if (n) memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t copy_async(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  Lock lock(mu);
  cudaGraph_t graph = nullptr;
  cudaError_t e = device_check();
  if (!e) e = check_copy(dst, src, n, kind);
  if (!e) e = route(s, &graph);
  if (!e && graph && !capturable_copy(dst, src, kind)) {  // pageable memory in a graph
    invalidate(s);
    e = cudaErrorStreamCaptureUnsupported;
  }
  if (e) return fail(e);
  if (graph) graph->ops.push_back(Op([dst, src, n]() { if (n) memmove(dst, src, n); }));
  else if (n) memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t set_memory(void* p, int value, size_t n, bool async, cudaStream_t s) {
  Lock lock(mu);
  cudaGraph_t graph = nullptr;
  cudaError_t e = device_check();
  if (!e) e = check_range(p, n);
  if (!e) e = async ? route(s, &graph) : sync_legacy_call();
  if (e) return fail(e);
  if (graph) graph->ops.push_back(Op([p, value, n]() { memset(p, value, n); }));
  else memset(p, value, n);
  return cudaSuccess;
}
inline cudaError_t symbol_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, bool fits,
                               bool to_symbol, bool async, cudaStream_t s) {
  if (!fits) return fail(cudaErrorInvalidValue);
  const bool ok_kind = kind == cudaMemcpyDeviceToDevice || kind == cudaMemcpyDefault ||
                       kind == (to_symbol ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
  if (!ok_kind) return fail(cudaErrorInvalidMemcpyDirection);
  return async ? copy_async(dst, src, n, kind, s) : copy_sync(dst, src, n, kind);
}
inline bool symbol_fits(size_t symbol_size, size_t offset, size_t count) {
  return offset <= symbol_size && count <= symbol_size - offset;
}

}  // namespace kiln_emu
}  // namespace

// ------------------------------------------------------------------ device built-ins
#define threadIdx (static_cast<const uint3&>(::kiln_emu::cur.thread_idx))
#define blockIdx (static_cast<const uint3&>(::kiln_emu::cur.block_idx))
#define blockDim (static_cast<const dim3&>(::kiln_emu::cur.block_dim))
#define gridDim (static_cast<const dim3&>(::kiln_emu::cur.grid_dim))

static inline void __syncthreads() { kiln_emu::wait_at(kiln_emu::AT_BLOCK, "__syncthreads()"); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)mask; kiln_emu::wait_at(kiln_emu::AT_WARP, "__syncwarp()"); }
static inline void __threadfence() {}
static inline void __threadfence_block() {}
static inline void __threadfence_system() {}

template <class T> static inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize) {
  return kiln_emu::shuffle(mask, var, kiln_emu::SHFL_IDX, (unsigned)srcLane, width, "__shfl_sync");
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return kiln_emu::shuffle(mask, var, kiln_emu::SHFL_UP, delta, width, "__shfl_up_sync");
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return kiln_emu::shuffle(mask, var, kiln_emu::SHFL_DOWN, delta, width, "__shfl_down_sync");
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize) {
  return kiln_emu::shuffle(mask, var, kiln_emu::SHFL_BFLY, (unsigned)laneMask, width, "__shfl_xor_sync");
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
  unsigned part;
  return kiln_emu::ballot(mask, pred, "__ballot_sync", &part);
}
static inline int __any_sync(unsigned mask, int pred) {
  unsigned part;
  return kiln_emu::ballot(mask, pred, "__any_sync", &part) != 0;
}
static inline int __all_sync(unsigned mask, int pred) {
  unsigned part;
  return kiln_emu::ballot(mask, pred, "__all_sync", &part) == part;
}

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

// ------------------------------------------------------------------ runtime API
static inline const char* cudaGetErrorName(cudaError_t e) {
#define KILN_EMU_NAME_CASE(name, value, text) case name: return #name;
  switch (e) { KILN_EMU_ERRORS(KILN_EMU_NAME_CASE) }
#undef KILN_EMU_NAME_CASE
  return "cudaErrorUnknown";
}
static inline const char* cudaGetErrorString(cudaError_t e) {
#define KILN_EMU_TEXT_CASE(name, value, text) case name: return text;
  switch (e) { KILN_EMU_ERRORS(KILN_EMU_TEXT_CASE) }
#undef KILN_EMU_TEXT_CASE
  return "unrecognized error code";
}
static inline cudaError_t cudaGetLastError() {
  const cudaError_t e = kiln_emu::take_fault() ? cudaErrorLaunchFailure : kiln_emu::last_error();
  kiln_emu::last_error() = cudaSuccess;
  return e;
}
static inline cudaError_t cudaPeekAtLastError() {
  return __atomic_load_n(&kiln_emu::race.fault, __ATOMIC_ACQUIRE) ? cudaErrorLaunchFailure : kiln_emu::last_error();
}

static inline cudaError_t cudaGetDeviceCount(int* count) {
  kiln_emu::Lock lock(kiln_emu::mu);
  if (!count) return kiln_emu::fail(cudaErrorInvalidValue);
  *count = kiln_emu::config().devices;
  return kiln_emu::fail(kiln_emu::device_check());
}
static inline cudaError_t cudaSetDevice(int device) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && (device < 0 || device >= kiln_emu::config().devices)) e = cudaErrorInvalidDevice;
  if (!e) kiln_emu::config().device = device;
  return kiln_emu::fail(e);
}
static inline cudaError_t cudaGetDevice(int* device) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = device ? kiln_emu::device_check() : cudaErrorInvalidValue;
  if (!e) *device = kiln_emu::config().device;
  return kiln_emu::fail(e);
}
static inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && (device < 0 || device >= kiln_emu::config().devices)) e = cudaErrorInvalidDevice;
  if (!e && !value) e = cudaErrorInvalidValue;
  if (e) return kiln_emu::fail(e);
  switch (attr) {  // an H100/H200-like sm_90 part
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 2147483647; break;
    case cudaDevAttrMaxGridDimY: case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; break;
    case cudaDevAttrTotalConstantMemory: *value = 64 * 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = 64 * 1024; break;
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    default: return kiln_emu::fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
static inline cudaError_t cudaDeviceSynchronize() {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e) e = kiln_emu::unsafe_call();
  if (!e)
    for (cudaStream_t s : kiln_emu::streams)
      if (s->capturing) { kiln_emu::invalidate(s); e = cudaErrorStreamCaptureUnsupported; }
  if (!e && kiln_emu::take_fault()) e = cudaErrorLaunchFailure;  // a race (kernel fault)
  return kiln_emu::fail(e);
}
static inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = (free_bytes && total_bytes) ? kiln_emu::device_check() : cudaErrorInvalidValue;
  if (e) return kiln_emu::fail(e);
  *total_bytes = KILN_EMU_MEMORY_BYTES;
  *free_bytes = KILN_EMU_MEMORY_BYTES - kiln_emu::device_bytes_in_use;
  return cudaSuccess;
}

// ---- memory
static inline cudaError_t cudaMalloc(void** p, size_t size) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e) e = kiln_emu::unsafe_call();
  if (e) return kiln_emu::fail(e);
  kiln_emu::Config& c = kiln_emu::config();
  if (c.fail_malloc_at > 0 && --c.fail_malloc_at == 0) {  // injected failure
    if (p) *p = nullptr;
    return kiln_emu::fail(cudaErrorMemoryAllocation);
  }
  return kiln_emu::fail(kiln_emu::allocate(p, size, kiln_emu::DEVICE_MEM));
}
template <class T> static inline cudaError_t cudaMalloc(T** p, size_t size) { return cudaMalloc((void**)p, size); }
static inline cudaError_t cudaFree(void* p) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e) e = kiln_emu::unsafe_call();
  if (!e) e = kiln_emu::release(p, kiln_emu::DEVICE_MEM);
  return kiln_emu::fail(e);
}
static inline cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int flags) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && (flags & ~0xFu)) e = cudaErrorInvalidValue;
  if (!e) e = kiln_emu::unsafe_call();
  if (!e) e = kiln_emu::allocate(p, size, kiln_emu::PINNED_MEM);
  return kiln_emu::fail(e);
}
template <class T> static inline cudaError_t cudaHostAlloc(T** p, size_t size, unsigned int flags) {
  return cudaHostAlloc((void**)p, size, flags);
}
static inline cudaError_t cudaMallocHost(void** p, size_t size) { return cudaHostAlloc(p, size, cudaHostAllocDefault); }
template <class T> static inline cudaError_t cudaMallocHost(T** p, size_t size, unsigned int flags = 0) {
  return cudaHostAlloc((void**)p, size, flags);
}
static inline cudaError_t cudaFreeHost(void* p) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e) e = kiln_emu::unsafe_call();
  if (!e) e = kiln_emu::release(p, kiln_emu::PINNED_MEM);
  return kiln_emu::fail(e);
}
static inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return kiln_emu::copy_sync(dst, src, count, kind);
}
static inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                                          cudaStream_t stream = 0) {
  return kiln_emu::copy_async(dst, src, count, kind, stream);
}
static inline cudaError_t cudaMemset(void* p, int value, size_t count) {
  return kiln_emu::set_memory(p, value, count, false, nullptr);
}
static inline cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream = 0) {
  return kiln_emu::set_memory(p, value, count, true, stream);
}

// ---- symbols (__device__ / __constant__ variables are ordinary globals here)
template <class T>
static inline cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, size_t count, size_t offset = 0,
                                             cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  return kiln_emu::symbol_copy((char*)&symbol + offset, src, count, kind,
                               kiln_emu::symbol_fits(sizeof(T), offset, count), true, false, nullptr);
}
static inline cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset = 0,
                                             cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  return kiln_emu::symbol_copy((char*)symbol + offset, src, count, kind, true, true, false, nullptr);
}
template <class T>
static inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t count, size_t offset = 0,
                                               cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  return kiln_emu::symbol_copy(dst, (const char*)&symbol + offset, count, kind,
                               kiln_emu::symbol_fits(sizeof(T), offset, count), false, false, nullptr);
}
static inline cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset = 0,
                                               cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  return kiln_emu::symbol_copy(dst, (const char*)symbol + offset, count, kind, true, false, false, nullptr);
}
template <class T>
static inline cudaError_t cudaMemcpyToSymbolAsync(const T& symbol, const void* src, size_t count, size_t offset = 0,
                                                  cudaMemcpyKind kind = cudaMemcpyHostToDevice, cudaStream_t stream = 0) {
  return kiln_emu::symbol_copy((char*)&symbol + offset, src, count, kind,
                               kiln_emu::symbol_fits(sizeof(T), offset, count), true, true, stream);
}
template <class T>
static inline cudaError_t cudaMemcpyFromSymbolAsync(void* dst, const T& symbol, size_t count, size_t offset = 0,
                                                    cudaMemcpyKind kind = cudaMemcpyDeviceToHost, cudaStream_t stream = 0) {
  return kiln_emu::symbol_copy(dst, (const char*)&symbol + offset, count, kind,
                               kiln_emu::symbol_fits(sizeof(T), offset, count), false, true, stream);
}
template <class T> static inline cudaError_t cudaGetSymbolAddress(void** p, const T& symbol) {
  if (!p) return kiln_emu::fail(cudaErrorInvalidValue);
  *p = (void*)&symbol;
  return cudaSuccess;
}
template <class T> static inline cudaError_t cudaGetSymbolSize(size_t* size, const T& symbol) {
  (void)symbol;
  if (!size) return kiln_emu::fail(cudaErrorInvalidValue);
  *size = sizeof(T);
  return cudaSuccess;
}

// ---- streams
static inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && (!s || (flags & ~1u))) e = cudaErrorInvalidValue;
  if (e) return kiln_emu::fail(e);
  *s = new CUstream_st{flags, false, false, cudaStreamCaptureModeGlobal, std::thread::id(), nullptr};
  kiln_emu::streams.insert(*s);
  return cudaSuccess;
}
static inline cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
static inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && !kiln_emu::streams.count(s)) e = cudaErrorInvalidResourceHandle;
  if (e) return kiln_emu::fail(e);
  kiln_emu::streams.erase(s);
  delete s->graph;
  delete s;
  return cudaSuccess;
}
static inline cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e) e = kiln_emu::valid_stream(s);
  if (!e && kiln_emu::streams.count(s) && s->capturing) {  // waiting on a capture is illegal
    kiln_emu::invalidate(s);
    e = cudaErrorStreamCaptureUnsupported;
  }
  if (!e) e = kiln_emu::unsafe_call();
  if (!e && kiln_emu::is_legacy(s)) e = kiln_emu::legacy_conflict();
  if (!e && kiln_emu::take_fault()) e = cudaErrorLaunchFailure;  // a race (kernel fault)
  return kiln_emu::fail(e);
}
static inline cudaError_t cudaStreamQuery(cudaStream_t s) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e) e = kiln_emu::valid_stream(s);
  if (!e && kiln_emu::streams.count(s) && s->capturing) {
    kiln_emu::invalidate(s);
    e = cudaErrorStreamCaptureUnsupported;
  }
  if (!e && kiln_emu::take_fault()) e = cudaErrorLaunchFailure;  // a race (kernel fault)
  return kiln_emu::fail(e);
}
static inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && (kiln_emu::is_legacy(s) || s == cudaStreamPerThread)) e = cudaErrorStreamCaptureUnsupported;
  if (!e && !kiln_emu::streams.count(s)) e = cudaErrorInvalidResourceHandle;
  if (!e && (unsigned)mode > (unsigned)cudaStreamCaptureModeRelaxed) e = cudaErrorInvalidValue;
  if (!e && s->capturing) e = cudaErrorIllegalState;
  if (e) return kiln_emu::fail(e);
  s->capturing = true;
  s->invalidated = false;
  s->mode = mode;
  s->thread = std::this_thread::get_id();
  s->graph = new CUgraph_st();
  return cudaSuccess;
}
static inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && !graph) e = cudaErrorInvalidValue;
  if (!e && (kiln_emu::is_legacy(s) || !kiln_emu::streams.count(s))) e = cudaErrorInvalidResourceHandle;
  if (!e && !s->capturing) e = cudaErrorIllegalState;
  if (!e && s->mode != cudaStreamCaptureModeRelaxed && s->thread != std::this_thread::get_id())
    e = cudaErrorStreamCaptureWrongThread;
  if (e) return kiln_emu::fail(e);
  s->capturing = false;
  if (s->invalidated) {
    delete s->graph;
    s->graph = nullptr;
    s->invalidated = false;
    *graph = nullptr;
    return kiln_emu::fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = s->graph;
  s->graph = nullptr;
  kiln_emu::graphs.insert(*graph);
  return cudaSuccess;
}
static inline cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && !status) e = cudaErrorInvalidValue;
  if (!e) e = kiln_emu::valid_stream(s);
  if (e) return kiln_emu::fail(e);
  *status = cudaStreamCaptureStatusNone;
  if (kiln_emu::is_legacy(s)) {  // asking the legacy stream during a blocking capture is illegal
    for (cudaStream_t t : kiln_emu::streams)
      if (t->capturing && !(t->flags & cudaStreamNonBlocking)) return kiln_emu::fail(cudaErrorStreamCaptureImplicit);
  } else if (s != cudaStreamPerThread && s->capturing) {
    *status = s->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  }
  return cudaSuccess;
}

// ---- graphs
static inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaError_t e = kiln_emu::device_check();
  if (!e && !exec) e = cudaErrorInvalidValue;
  if (!e && !kiln_emu::graphs.count(graph)) e = cudaErrorInvalidResourceHandle;
  if (!e && flags > 0xF) e = cudaErrorInvalidValue;
  if (e) return kiln_emu::fail(e);
  *exec = new CUgraphExec_st{graph->ops};
  kiln_emu::execs.insert(*exec);
  return cudaSuccess;
}
static inline cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  kiln_emu::Lock lock(kiln_emu::mu);
  cudaGraph_t into = nullptr;
  cudaError_t e = kiln_emu::device_check();
  if (!e && !kiln_emu::execs.count(exec)) e = cudaErrorInvalidResourceHandle;
  if (!e) e = kiln_emu::route(stream, &into);
  if (e) return kiln_emu::fail(e);
  if (into) {
    into->ops.push_back(kiln_emu::Op([ops = exec->ops]() { for (const auto& op : ops) op(); }));
  } else {
    if (kiln_emu::take_fault()) return kiln_emu::fail(cudaErrorLaunchFailure);  // an earlier race
    for (const auto& op : exec->ops) op();
    if (kiln_emu::take_fault()) return kiln_emu::fail(cudaErrorLaunchFailure);  // a race in the graph
  }
  return cudaSuccess;
}
static inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  kiln_emu::Lock lock(kiln_emu::mu);
  if (!kiln_emu::execs.erase(exec)) return kiln_emu::fail(cudaErrorInvalidResourceHandle);
  delete exec;
  return cudaSuccess;
}
static inline cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  kiln_emu::Lock lock(kiln_emu::mu);
  if (!kiln_emu::graphs.erase(graph)) return kiln_emu::fail(cudaErrorInvalidResourceHandle);
  delete graph;
  return cudaSuccess;
}

// ------------------------------------------------------------------ kernel launches
// KILN_LAUNCH: no block-level cooperation (threads run as plain calls; __syncthreads aborts).
// KILN_LAUNCH_SYNC: may use __syncthreads, __syncwarp, shuffles, votes, __shared__ memory.
// Errors (configuration, no device, capture) are reported through cudaGetLastError().
#define KILN_LAUNCH(fn, grid, block, stream, ...) \
  ::kiln_emu::launcher(#fn, fn, grid, block, stream, false)(__VA_ARGS__)
#define KILN_LAUNCH_SYNC(fn, grid, block, stream, ...) \
  ::kiln_emu::launcher(#fn, fn, grid, block, stream, true)(__VA_ARGS__)

// ------------------------------------------------------------------ checked global memory accesses
// Generated code reads p[i] with KILN_LD(p, i) and stores with KILN_ST(p, i, v) (the nvcc
// prelude defines them as plain indexing).  With race checking on, each access is recorded
// (see race_access); off, the cost is one well-predicted branch.
namespace {
namespace kiln_emu {
template <class T> inline typename std::remove_cv<T>::type race_ld(T* p, long long i) {
  if (__builtin_expect(race.active, 0)) race_access(p + i, type_name<T>(), (unsigned)sizeof(T), p, i, false);
  return p[i];
}
template <class T, class V> inline T& race_st(T* p, long long i, V&& v) {
  if (__builtin_expect(race.active, 0)) race_access(p + i, type_name<T>(), (unsigned)sizeof(T), p, i, true);
  return p[i] = std::forward<V>(v);
}
}  // namespace kiln_emu
}  // namespace
#define KILN_LD(p, i) (::kiln_emu::race_ld((p), (long long)(i)))
#define KILN_ST(p, i, v) (::kiln_emu::race_st((p), (long long)(i), (v)))

// ------------------------------------------------------------------ fault injection
// device_count: what cudaGetDeviceCount reports (0: every device call fails with
// cudaErrorNoDevice).  fail_malloc_at: 0 = never, n = the n-th cudaMalloc call from now
// fails with cudaErrorMemoryAllocation.  Defaults: $KILN_EMU_DEVICES (1) and
// $KILN_EMU_FAIL_MALLOC_AT (0), read on first use.  Exported, like the two race-checking
// functions below (and nothing else of the emulator).
extern "C" __attribute__((visibility("default"))) void kiln_emu_configure(int device_count, long long fail_malloc_at) {
  kiln_emu::Lock lock(kiln_emu::mu);
  kiln_emu::Config& c = kiln_emu::config();
  c.devices = device_count < 0 ? 0 : device_count;
  c.fail_malloc_at = fail_malloc_at < 0 ? 0 : fail_malloc_at;
  if (c.device >= c.devices) c.device = 0;
}

// ------------------------------------------------------------------ race checking
// on != 0: record the KILN_LD / KILN_ST accesses of every launch and fail a launch in which
// two threads write one element, or one writes what another reads, without a __syncthreads()
// between them in one block (docs/cuda-emulator.md).  Default: $KILN_EMU_RACECHECK (off),
// read on first use.  Also forgets the last race.
extern "C" __attribute__((visibility("default"))) void kiln_emu_set_race_check(int on) {
  kiln_emu::Lock lock(kiln_emu::mu);
  kiln_emu::race.loaded = true;
  kiln_emu::race.enabled = on != 0;
  kiln_emu::race.last[0] = 0;
  if (!on) kiln_emu::race_table.release();  // give the memory back
}
// The description of the latest race found ("" if none since the library was loaded or
// kiln_emu_set_race_check was called).
extern "C" __attribute__((visibility("default"))) const char* kiln_emu_last_race(void) {
  kiln_emu::Lock lock(kiln_emu::mu);
  return kiln_emu::race.last;
}

#pragma GCC visibility pop
#endif  // KILN_CUDA_EMULATE_H_

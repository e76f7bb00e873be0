// kiln_emu_state.h -- the runtime's types and the state every other part shares.
// Part of kiln_cuda_emulate.h (docs/cuda-emulator.md).  Holds cudaError_t (names, values and
// texts as in CUDA 12/13), the API enums and handle types, a captured operation (Op), and in
// namespace kiln_emu: die(), the library mutex, the per-thread last error, configuration and
// fault-injection settings, the device / pinned memory blocks, the stream-capture rules
// (which call goes into a graph, which invalidates a capture) and the CUDA thread that is
// running (what threadIdx & co. read).  It precedes the race checker, the scheduler and the
// runtime API, which all read and update this state; everything here is internal to the
// library (anonymous namespace, hidden visibility).
#ifndef KILN_EMU_STATE_H_
#define KILN_EMU_STATE_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_state.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

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
struct Fiber;  // a CUDA thread run as a fiber: kiln_emu_fibers.h

struct Current {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  int mode;  // Mode
  const char* kernel;
  Fiber* fiber;
};
Current cur;

}  // namespace kiln_emu
}  // namespace

#endif  // KILN_EMU_STATE_H_

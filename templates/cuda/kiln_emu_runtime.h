// kiln_emu_runtime.h -- the CUDA runtime API, part 1: errors, devices, memory, copies,
// memsets, symbols and fault injection (kiln_emu_configure, exported).
// Part of kiln_cuda_emulate.h (docs/cuda-emulator.md, "Runtime API" and "Fault injection").
// Every call takes the library mutex, checks its arguments like CUDA and sets the last error
// when it fails; synchronous calls and allocations follow the capture rules of
// kiln_emu_state.h, asynchronous copies and memsets run now or go into the capture graph.
// Streams, capture and graphs are in kiln_emu_streams.h.
#ifndef KILN_EMU_RUNTIME_H_
#define KILN_EMU_RUNTIME_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_runtime.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

namespace {
namespace kiln_emu {

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

// ------------------------------------------------------------------ fault injection
// device_count: what cudaGetDeviceCount reports (0: every device call fails with
// cudaErrorNoDevice).  fail_malloc_at: 0 = never, n = the n-th cudaMalloc call from now
// fails with cudaErrorMemoryAllocation.  Defaults: $KILN_EMU_DEVICES (1) and
// $KILN_EMU_FAIL_MALLOC_AT (0), read on first use.  Exported, like the two race-checking
// functions (kiln_emu_race.h), and nothing else of the emulator.
extern "C" __attribute__((visibility("default"))) void kiln_emu_configure(int device_count, long long fail_malloc_at) {
  kiln_emu::Lock lock(kiln_emu::mu);
  kiln_emu::Config& c = kiln_emu::config();
  c.devices = device_count < 0 ? 0 : device_count;
  c.fail_malloc_at = fail_malloc_at < 0 ? 0 : fail_malloc_at;
  if (c.device >= c.devices) c.device = 0;
}

#endif  // KILN_EMU_RUNTIME_H_

// kiln_emu_streams.h -- the CUDA runtime API, part 2: streams, stream capture and graphs.
// Part of kiln_cuda_emulate.h (docs/cuda-emulator.md, "Checked like CUDA").  Streams are
// immediate (everything runs on the calling host thread); a capturing stream records
// launches, copies and memsets into a graph that cudaGraphLaunch replays in order, and the
// calls CUDA forbids during a capture invalidate it (rules in kiln_emu_state.h).
#ifndef KILN_EMU_STREAMS_H_
#define KILN_EMU_STREAMS_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_streams.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

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

#endif  // KILN_EMU_STREAMS_H_

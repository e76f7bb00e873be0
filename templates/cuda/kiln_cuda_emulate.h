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
// Schedules ($KILN_EMU_SCHEDULE=forward|reverse|shuffle[:SEED] or kiln_emu_set_schedule):
// blocks, and a block's threads between barriers, run in linear order (the default), in
// reverse or in a seeded pseudo-random order -- results that change with the schedule come
// from code correct only for one order (a missing __syncthreads, blocks depending on each other).
// Race checking (off by default; $KILN_EMU_RACECHECK=1 or kiln_emu_set_race_check(1)):
// KILN_LD / KILN_ST record which thread wrote and read each element in a launch, and a
// conflict between two threads not ordered by a __syncthreads() barrier fails the launch
// with cudaErrorLaunchFailure and a message (kiln_emu_last_race) -- threads never run
// concurrently here, so a race would otherwise pass silently.
//
// The header is this file and its parts, next to it (each says what it holds and why):
//   kiln_emu_device.h   qualifiers, dim3, threadIdx & co., atomics, bit casts, intrinsics
//   kiln_emu_state.h    runtime types, memory blocks, capture rules, the running thread
//   kiln_emu_race.h     race checking: KILN_LD / KILN_ST
//   kiln_emu_fibers.h   fibers, the block scheduler and schedules, KILN_LAUNCH / KILN_LAUNCH_SYNC
//   kiln_emu_warp.h     __syncthreads, __syncwarp, shuffles, votes
//   kiln_emu_wmma.h     nvcuda::wmma (TF32 m16n16k8)
//   kiln_emu_runtime.h  runtime API: errors, devices, memory, symbols, fault injection
//   kiln_emu_streams.h  runtime API: streams, capture, graphs
// Compile with this file only; it includes the system headers, then the parts in this order
// (each uses only the ones before it) inside one hidden-visibility region.
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

#include "kiln_emu_device.h"
#include "kiln_emu_state.h"
#include "kiln_emu_race.h"
#include "kiln_emu_fibers.h"
#include "kiln_emu_warp.h"
#include "kiln_emu_wmma.h"
#include "kiln_emu_runtime.h"
#include "kiln_emu_streams.h"

#pragma GCC visibility pop
#endif  // KILN_CUDA_EMULATE_H_

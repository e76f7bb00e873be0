// kiln_emu_fibers.h -- fibers, the block scheduler and kernel launches.
// Part of kiln_cuda_emulate.h (docs/cuda-emulator.md, "Execution model").  KILN_LAUNCH runs
// each CUDA thread as a plain call; KILN_LAUNCH_SYNC runs a block's threads as fibers (stacks
// with guard pages, reused) that switch only at barriers, round by round in a deterministic
// order, releasing a warp or the block when all its live threads arrived.  Fibers switch with
// a few lines of x86-64 assembly, or with makecontext/swapcontext elsewhere or under
// -DKILN_EMU_USE_UCONTEXT.  A launch checks its configuration and runs now or goes into the
// stream's capture graph (kiln_emu_state.h); arguments are captured by value at launch time.
// The schedule ($KILN_EMU_SCHEDULE, kiln_emu_set_schedule, exported) picks the order of the
// blocks and, in each phase between barriers, of a block's threads: forward (linear order, the
// default and the fast path), reverse, or a seeded pseudo-random permutation -- so that code
// correct only for one order (a missing barrier, blocks that depend on each other) shows it.
#ifndef KILN_EMU_FIBERS_H_
#define KILN_EMU_FIBERS_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_fibers.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

namespace {
namespace kiln_emu {

// ---- a CUDA thread of a KILN_LAUNCH_SYNC block (kiln_emu::cur.fiber while it runs)
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

// ---- the schedule: in which order blocks run, and a block's threads in each phase
// forward: linear order (x fastest); reverse: the opposite; shuffle: a pseudo-random
// permutation of the blocks (per launch) and of a block's threads (per block and phase), from
// the seed, the launch's number since the schedule was set and the block / phase numbers, so
// that a run is reproducible.  Warp exchanges and barriers do not depend on the order (a warp
// or block is released only after a whole round).
enum ScheduleMode { SCHED_FORWARD = 0, SCHED_REVERSE = 1, SCHED_SHUFFLE = 2 };
struct Schedule {
  bool loaded;          // $KILN_EMU_SCHEDULE read (at the first launch) or kiln_emu_set_schedule called
  int mode;             // ScheduleMode
  uint64_t seed;        // shuffle
  uint64_t launches;    // launches run since the schedule was set
  uint64_t key;         // the running launch's permutation key (shuffle)
  unsigned order[1024]; // the running phase's thread order (shuffle)
};
Schedule schedule_;

inline uint64_t mix64(uint64_t x) {  // splitmix64's finalizer
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline Schedule& schedule() {
  if (!schedule_.loaded) {
    schedule_.loaded = true;
    const char* v = getenv("KILN_EMU_SCHEDULE");
    if (!v || !*v || !strcmp(v, "forward")) {
      schedule_.mode = SCHED_FORWARD;
    } else if (!strcmp(v, "reverse")) {
      schedule_.mode = SCHED_REVERSE;
    } else if (!strcmp(v, "shuffle")) {
      schedule_.mode = SCHED_SHUFFLE;  // seed 0
    } else {
      char* end = nullptr;
      if (strncmp(v, "shuffle:", 8) || v[8] < '0' || v[8] > '9' || (schedule_.seed = strtoull(v + 8, &end, 0), *end))
        die("KILN_EMU_SCHEDULE=%s: expected forward, reverse, shuffle or shuffle:SEED (SEED an unsigned integer)", v);
      schedule_.mode = SCHED_SHUFFLE;
    }
  }
  return schedule_;
}

// The k-th block (linear id) of a launch of n blocks under a reverse or shuffle schedule.
// Shuffle: a 4-round Feistel permutation of [0, 2^2h) >= n, keyed by the launch, walked
// until it lands in [0, n) -- a permutation of [0, n) without a table (grids may be huge).
struct BlockOrder {
  uint64_t n, key, mask;
  unsigned half;
  bool reverse;
  BlockOrder(uint64_t count, const Schedule& s) : n(count), key(s.key), mask(0), half(1), reverse(s.mode == SCHED_REVERSE) {
    while (half < 32 && (n - 1) >> (2 * half)) ++half;
    mask = ((uint64_t)1 << half) - 1;
  }
  uint64_t feistel(uint64_t x) const {
    uint64_t l = x >> half, r = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t f = mix64(key ^ (round << 56) ^ r) & mask;
      const uint64_t t = r;
      r = l ^ f;
      l = t;
    }
    return (l << half) | r;
  }
  uint64_t at(uint64_t k) const {
    if (reverse) return n - 1 - k;
    uint64_t x = k;
    do x = feistel(x); while (x >= n);
    return x;
  }
};
inline uint3 unlinear(uint64_t i, dim3 d) {
  return uint3{(unsigned)(i % d.x), (unsigned)((i / d.x) % d.y), (unsigned)(i / ((uint64_t)d.x * d.y))};
}
// The order of a block's n threads in one phase: null for reverse (n-1 down to 0), else a
// Fisher-Yates shuffle keyed by the launch, the block and the phase.
inline const unsigned* thread_order(unsigned n, uint64_t block, uint64_t phase) {
  Schedule& s = schedule_;
  if (s.mode == SCHED_REVERSE) return nullptr;
  unsigned* o = s.order;
  for (unsigned i = 0; i < n; ++i) o[i] = i;
  uint64_t r = mix64(s.key ^ mix64(block) ^ (phase * 0xD6E8FEB86659FD93ull));
  for (unsigned i = n - 1; i > 0; --i) {
    r = mix64(r);
    const unsigned j = (unsigned)((r >> 32) * (i + 1) >> 32);  // uniform enough in 0..i
    const unsigned t = o[i];
    o[i] = o[j];
    o[j] = t;
  }
  return o;
}
inline uint64_t block_linear() {
  const dim3 g = cur.grid_dim;
  return ((uint64_t)cur.block_idx.z * g.y + cur.block_idx.y) * g.x + cur.block_idx.x;
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
  if (schedule_.mode == SCHED_FORWARD) {
    do {
      for (unsigned i = 0; i < n; ++i)
        if (sched.fibers[i].state == READY) enter(sched.fibers[i]);
    } while (release_barriers());
    return;
  }
  const uint64_t block = block_linear();
  uint64_t phase = 0;
  do {  // reverse or shuffle: each phase (round) in its own order
    const unsigned* order = thread_order(n, block, phase++);
    for (unsigned k = 0; k < n; ++k) {
      Fiber& f = sched.fibers[order ? order[k] : n - 1 - k];
      if (f.state == READY) enter(f);
    }
  } while (release_barriers());
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
void run_plain_ordered(F& thread) {  // KILN_LAUNCH under a reverse or shuffle schedule
  const dim3 g = cur.grid_dim, b = cur.block_dim;
  const unsigned n = b.x * b.y * b.z;
  const BlockOrder blocks((uint64_t)g.x * g.y * g.z, schedule_);
  for (uint64_t k = 0; k < blocks.n; ++k) {
    const uint64_t block = blocks.at(k);
    cur.block_idx = unlinear(block, g);
    const unsigned* order = thread_order(n, block, 0);
    for (unsigned j = 0; j < n; ++j) {
      cur.thread_idx = unlinear(order ? order[j] : n - 1 - j, b);
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
  if (schedule_.mode != SCHED_FORWARD) {
    const BlockOrder blocks((uint64_t)g.x * g.y * g.z, schedule_);
    for (uint64_t k = 0; k < blocks.n; ++k) {
      cur.block_idx = unlinear(blocks.at(k), g);
      run_block_fibers();
    }
    return;
  }
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
  Schedule& sch = schedule();
  if (sch.mode == SCHED_SHUFFLE) sch.key = mix64(sch.seed ^ mix64(sch.launches));
  ++sch.launches;
  in_kernel() = true;
  if (coop) run_fibers(thread);
  else if (sch.mode == SCHED_FORWARD) run_plain(thread);
  else run_plain_ordered(thread);
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
}  // namespace kiln_emu
}  // namespace

// ------------------------------------------------------------------ the exported switch
// The order in which launches run blocks and, between barriers, a block's threads: mode 0
// forward (linear order, the default), 1 reverse, 2 shuffle (a pseudo-random permutation from
// `seed`; the same seed and launches give the same orders).  Default: $KILN_EMU_SCHEDULE
// (forward | reverse | shuffle | shuffle:SEED), read at the first launch.  Results that
// change with the schedule come from code that is correct only in one order (docs/cuda-emulator.md).
extern "C" __attribute__((visibility("default"))) void kiln_emu_set_schedule(int mode, unsigned long long seed) {
  kiln_emu::Lock lock(kiln_emu::mu);
  if (mode < kiln_emu::SCHED_FORWARD || mode > kiln_emu::SCHED_SHUFFLE)
    kiln_emu::die("kiln_emu_set_schedule: mode %d is not 0 (forward), 1 (reverse) or 2 (shuffle)", mode);
  kiln_emu::schedule_.loaded = true;
  kiln_emu::schedule_.mode = mode;
  kiln_emu::schedule_.seed = seed;
  kiln_emu::schedule_.launches = 0;
}

// ------------------------------------------------------------------ kernel launches
// KILN_LAUNCH: no block-level cooperation (threads run as plain calls; __syncthreads aborts).
// KILN_LAUNCH_SYNC: may use __syncthreads, __syncwarp, shuffles, votes, __shared__ memory.
// Errors (configuration, no device, capture) are reported through cudaGetLastError().
#define KILN_LAUNCH(fn, grid, block, stream, ...) \
  ::kiln_emu::launcher(#fn, fn, grid, block, stream, false)(__VA_ARGS__)
#define KILN_LAUNCH_SYNC(fn, grid, block, stream, ...) \
  ::kiln_emu::launcher(#fn, fn, grid, block, stream, true)(__VA_ARGS__)

#endif  // KILN_EMU_FIBERS_H_

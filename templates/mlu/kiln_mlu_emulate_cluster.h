// kiln_mlu_emulate_cluster.h -- the cluster half of the MLU emulator: WRAM, cluster SRAM,
// the matrix intrinsic and __sync_cluster (docs/codegen-mlu.md).  Included once from
// kiln_mlu_emulate.h (after its State, violate(), in_nram() and gdram_block()), never alone.
//
// What it enforces (each violation stops the kernel like the main header's rules):
//   * WRAM capacity: a task's KILN_WRAM tiles fit MLU370's 1024 KiB of WRAM per core;
//   * SRAM capacity: a cluster's KILN_SRAM tiles fit 4096 KiB less cncc's 128 KiB reserve;
//   * __memcpy direction: every direction (GDRAM2SRAM, SRAM2WRAM, NRAM2WRAM, ...) names the
//     spaces of both pointers (the main header's __memcpy asks space_ok());
//   * matmul operand space / alignment / size: __bang_matmul(dst, src, filter, M, K, N) takes
//     dst and src in NRAM and the filter in WRAM, each 64-byte aligned, K a multiple of
//     64 bytes of elements and N a multiple of 64 (mlu-ops pads to exactly these);
//   * cluster barrier: every task of a cluster reaches each __sync_cluster(); a task that ends
//     while cluster peers wait at one (or a barrier after a peer ended) is refused, and so is
//     a barrier in a BLOCK kernel;
//   * SRAM race: two tasks of a cluster touching the same SRAM bytes through __memcpy in one
//     barrier phase, at least one of them writing.
// How: every task runs as a ucontext fiber with its own core (NRAM, WRAM, task id): tasks
// start in the schedule's order and each runs until it ends or reaches __sync_cluster; when
// the last task of a cluster arrives, the cluster's tasks resume (before any other task) in
// the schedule's order.  A kernel without barriers thus runs its tasks one after the other in
// the schedule's order, as before.  The filter layout __bang_reshape_filter writes is the
// emulator's own stand-in ([K / (64 / sizeof T)][N][64 / sizeof T]), so a filter copied to
// WRAM without the reshape gives wrong numbers here as it would on a part.
#ifndef KILN_MLU_EMULATE_CLUSTER_H_
#define KILN_MLU_EMULATE_CLUSTER_H_

#include <deque>
#include <ucontext.h>

#define KILN_MLU_WRAM_BYTES (1024 * 1024)
#define KILN_MLU_SRAM_BYTES (4096 * 1024 - 128 * 1024)
#define KILN_MLU_MATMUL_K_ALIGN 64  // bytes of K per filter group
#define KILN_MLU_MATMUL_N_ALIGN 64  // output channels per filter block
#define KILN_MLU_FIBER_STACK (256 * 1024)

namespace kiln_mlu {

enum Space { GDRAM_SPACE, NRAM_SPACE, WRAM_SPACE, SRAM_SPACE };

// One emulated core running one task: its State (NRAM, task id, first violation), WRAM, the
// task's SRAM cursor, and the fiber running it.
struct Core {
  State st;
  alignas(KILN_MLU_ALIGN) char wram[KILN_MLU_WRAM_BYTES];
  size_t wram_used = 0, sram_used = 0;
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  const std::function<void()>* body = nullptr;
  int status = 0;  // 0 runnable, 1 waiting at __sync_cluster, 2 ended, 3 stopped by a violation
  bool abort = false, barrier_ok = true;
  unsigned cluster = 0;
};

struct Access { size_t lo, hi; unsigned task; bool write; };

// One cluster's SRAM and the __memcpy accesses of its current barrier phase.
struct Sram {
  alignas(KILN_MLU_ALIGN) char bytes[KILN_MLU_SRAM_BYTES];
  uint64_t launch = ~0ULL;  // the launch whose tiles are filled
  size_t filled = 0;
  std::vector<Access> phase;
};

// What one host thread's launches use: a pool of cores, the clusters' SRAM, the running core.
struct Cluster {
  std::vector<std::unique_ptr<Core>> free;
  std::vector<std::unique_ptr<Sram>> sram;
  Core* running = nullptr;
  ucontext_t scheduler;
  uint64_t launch = 0;
};

static Cluster& cluster() { static thread_local std::unique_ptr<Cluster> c(new Cluster()); return *c; }

static Core& core() {
  Core* c = cluster().running;
  if (!c) violate("cluster barrier", "an on-chip operation outside a task");
  return *c;
}

// The running task's cluster SRAM (allocated on first use by the thread).
static Sram& sram() {
  Cluster& cl = cluster();
  unsigned id = core().cluster;
  if (cl.sram.size() <= id) cl.sram.resize(id + 1);
  if (!cl.sram[id]) cl.sram[id].reset(new Sram());
  return *cl.sram[id];
}

static bool in_block(const void* p, size_t bytes, const char* base, size_t size) {
  const char* c = (const char*)p;
  return c >= base && c + bytes <= base + size;
}

static const char* space_name(Space s) {
  static const char* names[] = {"a GDRAM block from cnrtMalloc", "NRAM", "WRAM", "the cluster's SRAM"};
  return names[s];
}

// Is [p, p + bytes) inside memory space `s` of the running task?
static bool space_ok(const void* p, size_t bytes, Space s) {
  switch (s) {
    case NRAM_SPACE: return in_nram(p, bytes);
    case WRAM_SPACE: return in_block(p, bytes, core().wram, KILN_MLU_WRAM_BYTES);
    case SRAM_SPACE: return in_block(p, bytes, sram().bytes, KILN_MLU_SRAM_BYTES);
    default: return gdram_block(p, bytes).base != nullptr;
  }
}

// The spaces a __memcpy direction names: {destination, source}, and its name.
struct Direction { const char* name; Space dst, src; };
static Direction direction(int dir) {
  static const Direction table[] = {
      {"GDRAM2NRAM", NRAM_SPACE, GDRAM_SPACE}, {"NRAM2GDRAM", GDRAM_SPACE, NRAM_SPACE},
      {"NRAM2NRAM", NRAM_SPACE, NRAM_SPACE},   {"GDRAM2GDRAM", GDRAM_SPACE, GDRAM_SPACE},
      {"GDRAM2SRAM", SRAM_SPACE, GDRAM_SPACE}, {"SRAM2GDRAM", GDRAM_SPACE, SRAM_SPACE},
      {"SRAM2NRAM", NRAM_SPACE, SRAM_SPACE},   {"NRAM2SRAM", SRAM_SPACE, NRAM_SPACE},
      {"SRAM2WRAM", WRAM_SPACE, SRAM_SPACE},   {"NRAM2WRAM", WRAM_SPACE, NRAM_SPACE},
      {"WRAM2NRAM", NRAM_SPACE, WRAM_SPACE},   {"GDRAM2WRAM", WRAM_SPACE, GDRAM_SPACE},
      {"SRAM2SRAM", SRAM_SPACE, SRAM_SPACE}};
  if (dir < 0 || dir >= (int)(sizeof table / sizeof table[0])) violate("__memcpy direction", "unknown direction %d", dir);
  return table[dir];
}

// Log a __memcpy access of SRAM; refuse it when another task of the cluster touched the
// same bytes in this barrier phase and one of the two writes.
static void note_sram(const void* p, size_t bytes, Space s, bool write) {
  if (s != SRAM_SPACE || !bytes) return;
  Sram& m = sram();
  size_t lo = (size_t)((const char*)p - m.bytes), hi = lo + bytes;
  unsigned me = state().task_id;
  for (const Access& a : m.phase)
    if (a.task != me && (a.write || write) && a.lo < hi && lo < a.hi)
      violate("SRAM race", "task %u %s SRAM bytes [%zu, %zu) that task %u %s in the same barrier phase (no "
              "__sync_cluster() between them)", me, write ? "writes" : "reads", std::max(lo, a.lo),
              std::min(hi, a.hi), a.task, a.write ? "wrote" : "read");
  m.phase.push_back({lo, hi, me, write});
}

// __memcpy of `bytes` from src to dst: both pointers must lie in the spaces the direction
// names (GDRAM: inside one cnrtMalloc block); SRAM accesses are logged for the race rule.
static void memcpy_checked(void* dst, const void* src, long long bytes, int dir) {
  if (bytes < 0) violate("__memcpy", "negative size %lld", bytes);
  Direction d = direction(dir);
  const char* side[] = {"destination", "source"};
  const void* ptr[] = {dst, src};
  Space spaces[] = {d.dst, d.src};
  for (int i = 0; i < 2; ++i)
    if (!space_ok(ptr[i], (size_t)bytes, spaces[i]))
      violate("__memcpy direction", "%s %s %p (%lld bytes) is not in %s", d.name, side[i], ptr[i], bytes,
              space_name(spaces[i]));
  note_sram(src, (size_t)bytes, d.src, false);
  note_sram(dst, (size_t)bytes, d.dst, true);
  async_check("__memcpy", "source", src, (size_t)bytes, false);
  async_check("__memcpy", "destination", dst, (size_t)bytes, true);
  memmove(dst, src, (size_t)bytes);
}

static void* wram_alloc(size_t bytes, const char* name) {
  Core& c = core();
  size_t at = take_tile(c.wram_used, bytes, KILN_MLU_WRAM_BYTES, "WRAM capacity", "__wram__", name,
                        "WRAM a core has");
  memset(c.wram + at, 0xCD, bytes);
  return c.wram + at;
}

// Every task of a cluster declares the same __mlu_shared__ tiles in the same order, so each
// gets the same offsets; a launch's first declaration of a range fills it with 0xCD.
static void* sram_alloc(size_t bytes, const char* name) {
  Core& c = core();
  Sram& m = sram();
  size_t at = take_tile(c.sram_used, bytes, KILN_MLU_SRAM_BYTES, "SRAM capacity", "__mlu_shared__", name,
                        "SRAM a cluster has after cncc's reserve");
  if (m.launch != cluster().launch) { m.launch = cluster().launch; m.filled = 0; m.phase.clear(); }
  if (at + bytes > m.filled) { memset(m.bytes + m.filled, 0xCD, at + bytes - m.filled); m.filled = at + bytes; }
  return m.bytes + at;
}

// ---- fibers ------------------------------------------------------------------------------
static void fiber_main() {
  Core* c = cluster().running;
  try {
    (*c->body)();
    async_task_end();
    c->status = 2;
  } catch (Violation&) {
    c->status = 3;
  } catch (...) {
    c->st.error = std::string("kernel ") + c->st.kernel + ": emulator: a C++ exception left the task";
    c->status = 3;
  }
}  // returns to uc_link: the scheduler

static Core* start_core(unsigned task, unsigned dim, bool union1, const std::function<void()>& body) {
  Cluster& cl = cluster();
  std::unique_ptr<Core> c;
  if (cl.free.empty()) {
    c.reset(new Core());
    c->stack.reset(new char[KILN_MLU_FIBER_STACK]);
  } else {
    c = std::move(cl.free.back());
    cl.free.pop_back();
  }
  c->st.kernel = state().kernel;
  c->st.error.clear();
  c->st.task_id = task;
  c->st.task_dim = dim;
  c->st.nram_used = 0;
  c->st.pending.clear();
  c->wram_used = c->sram_used = 0;
  c->body = &body;
  c->status = 0;
  c->abort = false;
  c->barrier_ok = union1;
  c->cluster = task / KILN_MLU_CLUSTER_CORES;
  getcontext(&c->ctx);
  c->ctx.uc_stack.ss_sp = c->stack.get();
  c->ctx.uc_stack.ss_size = KILN_MLU_FIBER_STACK;
  c->ctx.uc_link = &cl.scheduler;
  makecontext(&c->ctx, fiber_main, 0);
  return c.release();
}

// Run `c` until it ends or waits at a barrier.
static void resume(Core* c) {
  Cluster& cl = cluster();
  cl.running = c;
  running_state() = &c->st;
  swapcontext(&cl.scheduler, &c->ctx);
  running_state() = nullptr;
  cl.running = nullptr;
}

// Called by a task at __sync_cluster(): park until the cluster's other tasks arrive.
static void barrier() {
  Core& c = core();
  if (!c.barrier_ok)
    violate("cluster barrier", "__sync_cluster() in a BLOCK task: only Union kernels run whole clusters");
  c.status = 1;
  swapcontext(&c.ctx, &cluster().scheduler);
  if (c.abort) throw Violation();
}

// The tasks of one launch, each on a fiber (see the header comment for the order).
struct Launch {
  std::vector<Core*> cores;              // by task id; null before it starts and once it ended
  std::vector<unsigned> rank;            // position of each task in the schedule
  std::vector<unsigned> arrived, ended;  // per cluster
  unsigned dim = 0;

  ~Launch() {
    for (Core*& c : cores)
      if (c) { cluster().free.emplace_back(c); c = nullptr; }
  }
  unsigned members(unsigned cl) const {
    return std::min<unsigned>(KILN_MLU_CLUSTER_CORES, dim - cl * KILN_MLU_CLUSTER_CORES);
  }
  unsigned first(unsigned cl) const { return cl * KILN_MLU_CLUSTER_CORES; }
  // A task of t's cluster other than t waiting at a barrier, or ~0u.
  unsigned waiting_peer(unsigned t) const {
    unsigned cl = t / KILN_MLU_CLUSTER_CORES;
    for (unsigned p = first(cl); p < first(cl) + members(cl); ++p)
      if (p != t && cores[p] && cores[p]->status == 1) return p;
    return ~0u;
  }
  // Task t stopped (ended, failed or waits at a barrier): apply the barrier rules; when the
  // last task of its cluster arrives, start a new phase and put the cluster first in `ready`.
  void settle(unsigned t, std::deque<unsigned>& ready) {
    Core* core = cores[t];
    unsigned c = t / KILN_MLU_CLUSTER_CORES;
    if (core->status == 3) {
      if (state().error.empty()) state().error = core->st.error;
      throw Violation();
    }
    if (core->status == 2) {
      unsigned peer = waiting_peer(t);
      cluster().free.emplace_back(core);
      cores[t] = nullptr;
      ++ended[c];
      if (peer != ~0u)
        violate("cluster barrier", "task %u ended while task %u of its cluster waits at __sync_cluster()", t, peer);
      return;
    }
    if (ended[c])
      violate("cluster barrier", "task %u waits at __sync_cluster() but a task of its cluster already ended", t);
    if (++arrived[c] < members(c)) return;
    arrived[c] = 0;
    Cluster& cl = cluster();
    if (c < cl.sram.size() && cl.sram[c]) cl.sram[c]->phase.clear();
    std::vector<unsigned> peers;
    for (unsigned p = first(c); p < first(c) + members(c); ++p) {
      cores[p]->status = 0;
      peers.push_back(p);
    }
    std::sort(peers.begin(), peers.end(), [&](unsigned a, unsigned b) { return rank[a] < rank[b]; });
    ready.insert(ready.begin(), peers.begin(), peers.end());
  }
  // After a violation: unwind the tasks parked at a barrier (they throw inside their fiber).
  void abort_waiting() {
    for (Core* c : cores)
      if (c && c->status == 1) { c->abort = true; resume(c); }
  }
};

// Run `body` once per task, tasks in `order`; a violation in a task, or of the barrier
// rules, records the first violation on the calling thread and throws Violation.
static void run_tasks(const std::vector<unsigned>& order, bool union1, const std::function<void()>& body) {
  Cluster& cl = cluster();
  ++cl.launch;
  Launch l;
  l.dim = (unsigned)order.size();
  l.cores.assign(l.dim, nullptr);
  l.rank.assign(l.dim, 0);
  unsigned clusters = (l.dim + KILN_MLU_CLUSTER_CORES - 1) / KILN_MLU_CLUSTER_CORES;
  l.arrived.assign(clusters, 0);
  l.ended.assign(clusters, 0);
  for (unsigned i = 0; i < l.dim; ++i) l.rank[order[i]] = i;
  std::deque<unsigned> ready(order.begin(), order.end());
  try {
    while (!ready.empty()) {
      unsigned t = ready.front();
      ready.pop_front();
      if (!l.cores[t]) l.cores[t] = start_core(t, l.dim, union1, body);
      resume(l.cores[t]);
      l.settle(t, ready);
    }
  } catch (Violation&) {
    l.abort_waiting();
    throw;
  }
}

// ---- the matrix intrinsic ----------------------------------------------------------------
static void check_matmul_operand(const char* what, const void* p, size_t bytes, Space s) {
  if (!space_ok(p, bytes, s))
    violate("matmul operand space", "__bang_matmul: %s (%p, %zu bytes) is not in %s", what, p, bytes,
            s == WRAM_SPACE ? "WRAM (the filter operand lives in WRAM)" : "NRAM");
  if ((uintptr_t)p % KILN_MLU_ALIGN)
    violate("matmul alignment", "__bang_matmul: %s is not %d-byte aligned", what, KILN_MLU_ALIGN);
}

// The element (n, k) of a filter of `n_total` rows written by __bang_reshape_filter.
template <typename T>
static inline size_t filter_at(long long n, long long k, long long n_total) {
  const long long g = KILN_MLU_MATMUL_K_ALIGN / sizeof(T);
  return (size_t)(((k / g) * n_total + n) * g + k % g);
}

static void check_filter_shape(const char* op, long long k, long long n, size_t size) {
  if (n <= 0 || n % KILN_MLU_MATMUL_N_ALIGN)
    violate("matmul size", "%s: N = %lld is not a positive multiple of %d", op, n, KILN_MLU_MATMUL_N_ALIGN);
  if (k <= 0 || (k * (long long)size) % KILN_MLU_MATMUL_K_ALIGN)
    violate("matmul size", "%s: K = %lld elements of %zu bytes is not a positive multiple of %d bytes", op, k,
            size, KILN_MLU_MATMUL_K_ALIGN);
}

}  // namespace kiln_mlu

// `__wram__ T name[count];` / `__mlu_shared__ T name[count];` under cncc; checked slices here.
#define KILN_WRAM(T, name, count) T* name = (T*)kiln_mlu::wram_alloc(sizeof(T) * (size_t)(count), #name)
#define KILN_SRAM(T, name, count) T* name = (T*)kiln_mlu::sram_alloc(sizeof(T) * (size_t)(count), #name)

static inline void __sync_cluster() { kiln_mlu::barrier(); }

// dst[m, n] = sum_k src[m, k] * filter(n, k): dst M x N and src M x K row-major in NRAM, the
// filter N x K in WRAM in __bang_reshape_filter's layout.
template <typename T>
static inline void __bang_matmul(T* dst, const T* src, const T* filter, int m, int k, int n) {
  kiln_mlu::check_filter_shape("__bang_matmul", k, n, sizeof(T));
  if (m <= 0) kiln_mlu::violate("matmul size", "__bang_matmul: M = %d is not positive", m);
  kiln_mlu::check_matmul_operand("dst", dst, (size_t)m * n * sizeof(T), kiln_mlu::NRAM_SPACE);
  kiln_mlu::check_matmul_operand("src", src, (size_t)m * k * sizeof(T), kiln_mlu::NRAM_SPACE);
  kiln_mlu::check_matmul_operand("filter", filter, (size_t)n * k * sizeof(T), kiln_mlu::WRAM_SPACE);
  std::vector<T> f((size_t)n * k), out((size_t)m * n);  // the filter back to N x K rows
  for (int j = 0; j < n; ++j)
    for (int p = 0; p < k; ++p) f[(size_t)j * k + p] = filter[kiln_mlu::filter_at<T>(j, p, n)];
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      T acc = (T)0;
      const T *a = src + (size_t)i * k, *b = f.data() + (size_t)j * k;
      for (int p = 0; p < k; ++p) acc += a[p] * b[p];
      out[(size_t)i * n + j] = acc;
    }
  memcpy(dst, out.data(), out.size() * sizeof(T));
}

// A filter of n x h x w x c (NHWC) in NRAM into the layout __bang_matmul reads from WRAM.
template <typename T>
static inline void __bang_reshape_filter(T* dst, const T* src, int n, int h, int w, int c) {
  kiln_mlu::check_filter_shape("__bang_reshape_filter", c, n, sizeof(T));
  size_t bytes = (size_t)n * h * w * c * sizeof(T);
  if (!kiln_mlu::in_nram(dst, bytes) || !kiln_mlu::in_nram(src, bytes))
    kiln_mlu::violate("matmul operand space", "__bang_reshape_filter: operands must be NRAM buffers");
  std::vector<T> out(bytes / sizeof(T));
  long long rows = (long long)n * h * w;
  for (long long r = 0; r < rows; ++r)
    for (long long p = 0; p < c; ++p) out[kiln_mlu::filter_at<T>(r, p, rows)] = src[r * c + p];
  memcpy(dst, out.data(), bytes);
}

// Strided __memcpy: segnum + 1 segments of `bytes`, dst and src advancing by their strides.
static inline void __memcpy(void* dst, const void* src, int bytes, mluMemcpyDirection_t dir, int dst_stride,
                            int src_stride, int segnum) {
  if (segnum < 0) kiln_mlu::violate("__memcpy", "negative segment count %d", segnum);
  for (int i = 0; i <= segnum; ++i)
    kiln_mlu::memcpy_checked((char*)dst + (long long)i * dst_stride, (const char*)src + (long long)i * src_stride,
                             bytes, dir);
}

#endif  // KILN_MLU_EMULATE_CLUSTER_H_

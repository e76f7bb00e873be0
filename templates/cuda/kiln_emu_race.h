// kiln_emu_race.h -- race checking: KILN_LD / KILN_ST and what they record.
// Part of kiln_cuda_emulate.h (docs/cuda-emulator.md, "Race checking").  Threads never run
// concurrently in the emulator, so a data race would pass silently; with checking on, every
// checked load and store of a launch is recorded per element address (an open-addressing
// table emptied per launch), and two threads touching one element without a __syncthreads()
// between them (in one block) fail the launch like a kernel fault.  Also the two exported
// switches, kiln_emu_set_race_check and kiln_emu_last_race.  The scheduler
// (kiln_emu_fibers.h) starts a launch's record and advances the barrier epoch.
#ifndef KILN_EMU_RACE_H_
#define KILN_EMU_RACE_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_race.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

namespace {
namespace kiln_emu {

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

// ------------------------------------------------------------------ checked global memory accesses
// Generated code reads p[i] with KILN_LD(p, i) and stores with KILN_ST(p, i, v) (the nvcc
// prelude defines them as plain indexing).  With race checking on, each access is recorded
// (see race_access); off, the cost is one well-predicted branch.
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

// ------------------------------------------------------------------ the exported switches
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

#endif  // KILN_EMU_RACE_H_

// kiln_emu_warp.h -- barriers and warp primitives: __syncthreads, __syncwarp, fences,
// __shfl_*_sync and the votes (__ballot_sync, __any_sync, __all_sync).
// Part of kiln_cuda_emulate.h (docs/cuda-emulator.md).  These are the calls that make a
// fiber wait for its warp or block (kiln_emu_fibers.h); they abort with a message in a
// kernel launched with KILN_LAUNCH.  A warp exchange publishes each lane's value in a
// double-buffered slot tagged with (block, exchange number), waits for the warp, and reads
// the source lane's slot by PTX's shfl.sync rules, so a lane that exited is detected.
#ifndef KILN_EMU_WARP_H_
#define KILN_EMU_WARP_H_
#ifndef KILN_CUDA_EMULATE_H_
#error "kiln_emu_warp.h is a part of kiln_cuda_emulate.h: include (or -include) that header instead"
#endif

namespace {
namespace kiln_emu {

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
}  // namespace kiln_emu
}  // namespace

// ------------------------------------------------------------------ barriers, fences, shuffles, votes
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

#endif  // KILN_EMU_WARP_H_

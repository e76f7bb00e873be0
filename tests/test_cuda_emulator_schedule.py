"""The CUDA host emulator's schedules (docs/cuda-emulator.md, "Schedules"; helpers in
tests/emu_kit.py): ``KILN_EMU_SCHEDULE=forward|reverse|shuffle[:SEED]`` or
``kiln_emu_set_schedule(mode, seed)`` picks the order of the blocks and, between barriers, of
a block's threads.  Handwritten kernels show the orders (plain and fiber launches), that a
missing ``__syncthreads()`` changes results with the order while the barrier makes them
identical, and that warp collectives stay right in any order; then Kiln's generated code is
shown to be schedule-independent, bit for bit: the MLP and CNN training steps, the op table
and the TF32 wmma GEMMs under forward, reverse and shuffled schedules.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.codegen.cuda.build import compile_cuda
from compiler.frontend.compile_graph import compile_entries
from runtime import KilnRuntimeError
from runtime.abi import KILN_ECHECK
from tests import models
from tests.cuda_kit import RawAbiLib, needs_emulator
from tests.emu_kit import (PRELUDE, SUCCESS, Device, build_libraries, load, needs_gxx, needs_nvcc, nvcc_compile,
                           run_isolated)
from tests.op_table import op_names, op_results

FORWARD, REVERSE, SHUFFLE = 0, 1, 2
SCHEDULES = [(FORWARD, 0), (REVERSE, 0), (SHUFFLE, 1)]  # (mode, seed) for kiln_emu_set_schedule

SCHED = PRELUDE + r"""
// ---- the order the threads run in: each thread takes the next ticket and writes its global
// linear id (block-major) there; `phases` tickets per thread, a __syncthreads() between phases
__global__ void k_order_plain(int* order, int* ticket) {
  const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  order[atomicAdd(ticket, 1)] = block * threads + thread;
}
__global__ void k_order_phases(int* order, int* ticket, int phases) {
  const int threads = blockDim.x * blockDim.y;
  const int id = (blockIdx.y * gridDim.x + blockIdx.x) * threads + threadIdx.y * blockDim.x + threadIdx.x;
  for (int p = 0; p < phases; ++p) {
    order[atomicAdd(ticket, 1)] = id;
    __syncthreads();
  }
}
EXPORT int order_plain(int* d_order, int* d_ticket) {
  TRY(cudaMemset(d_ticket, 0, sizeof(int)));
  KILN_LAUNCH(k_order_plain, dim3(3, 2, 1), dim3(4, 2, 1), 0, d_order, d_ticket);  // 6 blocks of 8
  return (int)cudaGetLastError();
}
EXPORT int order_phases(int* d_order, int* d_ticket, int phases) {
  TRY(cudaMemset(d_ticket, 0, sizeof(int)));
  KILN_LAUNCH_SYNC(k_order_phases, dim3(2, 2), dim3(16, 4), 0, d_order, d_ticket, phases);  // 4 blocks of 64
  return (int)cudaGetLastError();
}
EXPORT int launch_one() {  // a launch, to make the library read its environment
  int* t;
  TRY(cudaMalloc(&t, sizeof(int)));
  TRY(cudaMemset(t, 0, sizeof(int)));
  KILN_LAUNCH(k_order_plain, 1, 1, 0, t, t);
  TRY(cudaGetLastError());
  return (int)cudaFree(t);
}

// ---- each thread reads its right neighbour's __shared__ element: correct only with the barrier
#define NB 64
__global__ void k_neighbour(float* out, int sync, int launch) {
  __shared__ float s[NB];
  const int t = threadIdx.x;
  s[t] = launch * 100000.0f + blockIdx.x * 1000.0f + t;
  if (sync) __syncthreads();
  out[blockIdx.x * NB + t] = s[(t + 1) % NB];
}
EXPORT int neighbour(float* d_out, int blocks, int sync, int launch) {
  KILN_LAUNCH_SYNC(k_neighbour, blocks, NB, 0, d_out, sync, launch);
  return (int)cudaGetLastError();
}

// ---- warp collectives and a block reduction: per block, the sum of x (butterfly shuffles,
// then one value per warp through __shared__), the ballot of x > 0 per warp, and __all_sync
__global__ void k_collectives(const float* x, float* sums, unsigned* ballots, int* alls) {
  __shared__ float partial[32];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32, i = blockIdx.x * blockDim.x + t;
  float v = x[i];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const unsigned b = __ballot_sync(0xffffffffu, x[i] > 0.0f);
  const int all = __all_sync(0xffffffffu, x[i] > -3.0f);
  const float first = __shfl_sync(0xffffffffu, x[i], 0);
  v += 0.0f * __shfl_down_sync(0xffffffffu, first, 1) + 0.0f * __shfl_up_sync(0xffffffffu, first, 1);
  if (lane == 0) {
    partial[warp] = v;
    ballots[blockIdx.x * (blockDim.x / 32) + warp] = b;
    alls[blockIdx.x * (blockDim.x / 32) + warp] = all;
  }
  __syncthreads();
  if (warp == 0) {
    float s = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.0f;
    for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);
    if (lane == 0) sums[blockIdx.x] = s;
  }
}
EXPORT int collectives(const float* d_x, float* d_sums, unsigned* d_ballots, int* d_alls, int blocks, int threads) {
  KILN_LAUNCH_SYNC(k_collectives, blocks, threads, 0, d_x, d_sums, d_ballots, d_alls);
  return (int)cudaGetLastError();
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_libraries(tmp_path_factory, {"sched": (SCHED, ())})["sched"]


def sched_lib(path, copy_to=None):
    """The SCHED library (a fresh copy with its own emulator state when ``copy_to``)."""
    lib = load(path, copy_to)
    lib.kiln_emu_set_schedule.argtypes, lib.kiln_emu_set_schedule.restype = [ctypes.c_int, ctypes.c_ulonglong], None
    lib.order_phases.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.neighbour.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.collectives.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_int]
    return lib


@pytest.fixture(scope="module")
def lib(built):
    lib = sched_lib(built)
    yield lib
    lib.kiln_emu_set_schedule(FORWARD, 0)


def _plain_order(lib, dev):
    order, ticket = dev.empty(48 * 4), dev.empty(4)
    assert lib.order_plain(order, ticket) == SUCCESS
    return dev.get(order, 48, np.int32)


def _phase_order(lib, dev, phases=3):
    order, ticket = dev.empty(phases * 256 * 4), dev.empty(4)
    assert lib.order_phases(order, ticket, phases) == SUCCESS
    return dev.get(order, (4, phases, 64), np.int32)  # block-major: each block runs all its phases


# ------------------------------------------------------------------ the orders
@needs_gxx
def test_orders_of_plain_launches(lib):
    """KILN_LAUNCH (2-D grid and block): forward runs blocks and threads in linear order,
    reverse backwards; shuffle runs each block whole, in a permuted order of blocks and of
    threads, the same for the same seed and launches and different for another seed."""
    dev = Device(lib)
    got = {}
    for mode, seed in [(FORWARD, 0), (REVERSE, 0), (SHUFFLE, 1), (SHUFFLE, 1), (SHUFFLE, 2)]:
        lib.kiln_emu_set_schedule(mode, seed)  # also restarts the launch count
        got.setdefault((mode, seed), []).append(_plain_order(lib, dev))
    dev.free()
    ids = np.arange(48)
    np.testing.assert_array_equal(got[FORWARD, 0][0], ids)
    np.testing.assert_array_equal(got[REVERSE, 0][0], ids[::-1])
    a, again = got[SHUFFLE, 1]
    b = got[SHUFFLE, 2][0]
    np.testing.assert_array_equal(a, again)  # reproducible
    assert not np.array_equal(a, b)
    for order in (a, b):
        assert sorted(order) == list(ids)
        blocks = order.reshape(6, 8) // 8
        assert (blocks == blocks[:, :1]).all()  # a block runs whole
        assert sorted(blocks[:, 0]) == list(range(6)) and list(blocks[:, 0]) != list(range(6))
        assert sum(list(row % 8) != list(range(8)) for row in order.reshape(6, 8)) >= 4


@needs_gxx
def test_orders_of_phases_between_barriers(lib):
    """KILN_LAUNCH_SYNC: in every phase between __syncthreads() the block's threads run in
    linear order (forward), backwards (reverse) or in a permutation of their own (shuffle)."""
    dev = Device(lib)
    got = {}
    for mode, seed in SCHEDULES:
        lib.kiln_emu_set_schedule(mode, seed)
        got[mode] = _phase_order(lib, dev)
    dev.free()
    ids = np.arange(256).reshape(4, 1, 64)
    np.testing.assert_array_equal(got[FORWARD], np.broadcast_to(ids, (4, 3, 64)))
    np.testing.assert_array_equal(got[REVERSE], np.broadcast_to(ids[::-1, :, ::-1], (4, 3, 64)))
    shuffled = got[SHUFFLE]
    blocks = shuffled // 64
    assert (blocks == blocks[:, :1, :1]).all() and sorted(blocks[:, 0, 0]) == [0, 1, 2, 3]
    for block in shuffled:
        phases = [list(p) for p in block]
        assert all(sorted(p) == sorted(phases[0]) for p in phases)
        assert phases[0] != sorted(phases[0]) and phases[0] != phases[1] != phases[2]


@needs_gxx
def test_environment_selects_the_schedule(built, tmp_path, monkeypatch):
    """$KILN_EMU_SCHEDULE is read at a library's first launch; a bad value aborts with a
    message, and so does a bad mode for kiln_emu_set_schedule."""
    for i, (value, want) in enumerate([("reverse", "reverse"), ("shuffle:7", "shuffle"), ("forward", "forward")]):
        monkeypatch.setenv("KILN_EMU_SCHEDULE", value)
        fresh = sched_lib(built, tmp_path / f"env{i}.so")
        dev = Device(fresh)
        got = _plain_order(fresh, dev)
        dev.free()
        ids = np.arange(48)
        if want == "forward":
            np.testing.assert_array_equal(got, ids)
        elif want == "reverse":
            np.testing.assert_array_equal(got, ids[::-1])
        else:
            fresh.kiln_emu_set_schedule(SHUFFLE, 7)  # the setter and the variable agree
            dev = Device(fresh)
            np.testing.assert_array_equal(_plain_order(fresh, dev), got)
            dev.free()
            assert sorted(got) == list(ids) and list(got) != list(ids)
    for value in ("backwards", "shuffle:", "shuffle:x1"):
        monkeypatch.setenv("KILN_EMU_SCHEDULE", value)
        proc = run_isolated(built, "lib.launch_one()")
        assert proc.returncode != 0 and f"KILN_EMU_SCHEDULE={value}: expected forward, reverse, shuffle" in proc.stderr
    monkeypatch.delenv("KILN_EMU_SCHEDULE")
    proc = run_isolated(built, "lib.kiln_emu_set_schedule(3, 0)")
    assert proc.returncode != 0 and "kiln_emu_set_schedule: mode 3 is not" in proc.stderr


# ------------------------------------------------------------------ what the schedule finds
@needs_gxx
def test_missing_barrier_shows_and_the_barrier_fixes_it(lib):
    """Reading a neighbour's __shared__ element without __syncthreads(): forward order reads
    a stale value (of the block or launch before) for all but the last thread, reverse for the
    last one only -- different results.  With the barrier every schedule is right."""
    blocks = 3
    dev = Device(lib)
    out = dev.empty(blocks * 64 * 4)
    t = np.arange(64)
    got, want = {}, {}
    for sync in (0, 1):
        for mode, seed in SCHEDULES:
            launch = len(got) + 1  # in every value written, so that a stale value is never right
            lib.kiln_emu_set_schedule(mode, seed)
            assert lib.neighbour(out, blocks, sync, launch) == SUCCESS
            got[sync, mode] = dev.get(out, (blocks, 64), np.float32)
            want[sync, mode] = launch * 100000.0 + np.arange(blocks)[:, None] * 1000.0 + (t + 1) % 64
    dev.free()
    fwd, rev = got[0, FORWARD] - want[0, FORWARD], got[0, REVERSE] - want[0, REVERSE]
    assert (fwd[:, 63] == 0).all() and (fwd[:, :63] != 0).all()
    assert (rev[:, :63] == 0).all() and (rev[:, 63] != 0).all()
    assert (got[0, SHUFFLE] != want[0, SHUFFLE]).any()
    for mode, _ in SCHEDULES:
        np.testing.assert_array_equal(got[1, mode], want[1, mode])


@needs_gxx
def test_warp_collectives_in_any_order(lib):
    """Shuffles, votes and a block reduction give the same bits under every schedule (each
    warp exchange waits for the whole warp), and the right values."""
    blocks, threads = 5, 256
    x = np.random.default_rng(3).standard_normal(blocks * threads).astype(np.float32)
    dev = Device(lib)
    px, sums, ballots, alls = dev.put(x), dev.empty(blocks * 4), dev.empty(blocks * 8 * 4), dev.empty(blocks * 8 * 4)
    results = []
    for mode, seed in SCHEDULES + [(SHUFFLE, 99)]:
        lib.kiln_emu_set_schedule(mode, seed)
        assert lib.collectives(px, sums, ballots, alls, blocks, threads) == SUCCESS
        results.append([dev.get(sums, blocks, np.float32), dev.get(ballots, (blocks, 8), np.uint32),
                        dev.get(alls, (blocks, 8), np.int32)])
    dev.free()
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert a.tobytes() == b.tobytes()
    s, b, a = results[0]
    np.testing.assert_allclose(s, x.reshape(blocks, threads).sum(1), rtol=1e-5, atol=1e-5)
    bits = (x.reshape(blocks, 8, 32) > 0) * (1 << np.arange(32, dtype=np.uint64))
    np.testing.assert_array_equal(b, bits.sum(-1).astype(np.uint32))
    np.testing.assert_array_equal(a, (x.reshape(blocks, 8, 32) > -3).all(-1).astype(np.int32))


@needs_nvcc
def test_source_compiles_with_nvcc(tmp_path):
    nvcc_compile(tmp_path, {"sched": SCHED})


# ------------------------------------------------------------------ generated code: schedule-independent
def _bits(a):
    a = np.asarray(a)
    return a.dtype.str, a.shape, a.tobytes()


def _set_schedule(lib, mode, seed):
    lib.kiln_emu_set_schedule.argtypes, lib.kiln_emu_set_schedule.restype = [ctypes.c_int, ctypes.c_ulonglong], None
    lib.kiln_emu_set_schedule(mode, seed)


def _model_feeds(model, batch, step):
    return models.train_feeds(model, batch, 10 + step)


@needs_emulator
@pytest.mark.parametrize("model,batch", [("mlp", 8), ("cnn", 2)])
def test_training_steps_are_schedule_independent(tmp_path, model, batch):
    """Two training steps (a fresh state per schedule): the losses and every variable are the
    same bits under forward, reverse and shuffled schedules -- Kiln's kernels (block
    reductions, GEMM tiles, Adam updates, dropout) do not depend on the order of blocks or of
    threads between barriers.  MLP: a step with three bad labels reports the first one (an
    ordered check loop) in every order."""
    graph = tf.Graph()
    with graph.as_default():
        t = getattr(models, f"{model}_tensors")(seed=0)
        inputs = [t["x"], t["labels"]] if model == "mlp" else [t["x"], t["y"], t["keep_prob"]]
        entries = {"train": ([t["loss"]], [t["train"]], inputs)}
    artifact = runtime.load_artifact(compile_entries(graph, entries, tmp_path, target="cuda", emulate=True,
                                                     dump_ir=False))
    lib = artifact.library.lib
    runs = {}
    try:
        for mode, seed in SCHEDULES:
            _set_schedule(lib, mode, seed)
            with artifact.new_state() as state:
                losses = [_bits(state.run("train", _model_feeds(model, batch, step))["loss:0"]) for step in range(2)]
                runs[mode] = losses, {name: _bits(state.read_variable(name)) for name in state.variable_names()}
                if model == "mlp":
                    feeds = _model_feeds(model, 300, 5)
                    feeds["labels:0"][[3, 5, 200]] = [12, -4, 15]
                    with pytest.raises(KilnRuntimeError, match="received a value of 12 which") as info:
                        state.run("train", feeds)
                    assert info.value.code == KILN_ECHECK
    finally:
        _set_schedule(lib, FORWARD, 0)
    losses, variables = runs[FORWARD]
    assert all(np.isfinite(np.frombuffer(b, np.float32)).all() for _, _, b in losses)
    for mode in (REVERSE, SHUFFLE):
        assert runs[mode][0] == losses, f"{model}: losses differ under schedule {mode}"
        differ = [name for name in variables if runs[mode][1][name] != variables[name]]
        assert not differ, f"{model}: variables differ under schedule {mode}: {differ}"


@needs_emulator
def test_op_table_is_schedule_independent(monkeypatch):
    """Every op of tests/op_table.py and its gradients at batch 7: the same bits with
    $KILN_EMU_SCHEDULE=reverse as forward (each session builds its own library, which reads
    the variable at its first launch)."""
    monkeypatch.setenv("KILN_CACHE", "0")  # a shared cache would reuse the loaded library
    config = {"backend": "cuda", "cuda_emulate": True}
    monkeypatch.setenv("KILN_EMU_SCHEDULE", "forward")
    forward = op_results(config, (7,))[7]
    monkeypatch.setenv("KILN_EMU_SCHEDULE", "reverse")
    reverse = op_results(config, (7,))[7]
    differ = []
    for op in op_names():
        (y_f, grads_f), _ = forward[op]
        (y_r, grads_r), _ = reverse[op]
        if _bits(y_f) != _bits(y_r):
            differ.append(f"{op} output")
        differ += [f"{op} gradient wrt {w}" for w, gf, gr in zip(("x", "img", "m"), grads_f, grads_r)
                   if _bits(gf) != _bits(gr)]
    assert not differ, differ


@needs_emulator
def test_tf32_wmma_gemms_are_schedule_independent(tmp_path):
    """The TF32 GEMM cases of tests/test_cuda_tf32.py (64x64 and 32x32 wmma tiles, every
    transpose, batched, epilogue, accumulate) at N = 1000 and 5: the same bits in any order."""
    from tests.test_cuda_tf32 import _gemm_inputs, _gemm_program, _render, _run_gemms

    program = _gemm_program()
    path = tmp_path / "gemms.so"
    compile_cuda(_render(program, True), path, emulate=True)
    lib = RawAbiLib(path)
    try:
        for batch_n in (1000, 5):
            feeds = _gemm_inputs(batch_n, seed=batch_n)
            runs = {}
            for mode, seed in SCHEDULES:
                _set_schedule(lib.lib, mode, seed)
                runs[mode] = {k: _bits(v) for k, v in _run_gemms(lib, program, feeds, batch_n).items()}
            for mode in (REVERSE, SHUFFLE):
                differ = [k for k in runs[FORWARD] if runs[mode][k] != runs[FORWARD][k]]
                assert not differ, f"N={batch_n}, schedule {mode}: {differ}"
    finally:
        _set_schedule(lib.lib, FORWARD, 0)
        lib.close()

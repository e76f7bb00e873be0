"""Launch geometry of the CUDA backend (compiler/codegen/cuda/loops.py, kernels.py) and
differential checks of the parallel kernels on the host emulator.

* geometry: the CNN's im2col / col2im / max-pool / max-pool-gradient launches spread the
  whole image (trip counts grow with N*H*W, not N), bias gradients and full reductions are
  block reductions, only scalar kernels run on one thread, and the GEMM tile choice;
* the analysis on small hand-made nests: overlapping scatters stay sequential, checks and
  aliased buffers block inference, flagged loops are split per inner loop;
* loops holding checks (label ranges, gather indices) are ordered block loops, not one
  thread; a check inside a loop whose iterations depend on each other stays serial;
* on the emulator (race checking on, so two threads touching one element fail the launch):
  every op and gradient of tests/op_table.py at batch sizes below and above a reduction
  block, integer / bool reductions, a reduction whose tail fails a check, failing checks of
  ordered loops (first failure in loop order, within and across chunks: the CPU backend's
  message), the three GEMM variants with every transpose combination, and one training
  step of the MLP and the CNN against the IR interpreter;
* nvcc compiles the models' modules (skipped without nvcc).
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.codegen.cuda import program_variables, render_module
from compiler.codegen.cuda.kernels import KernelRenderer
from compiler.codegen.cuda.loops import Grid, Ordered, Reduce, Serial, launch_groups
from compiler.compile import compile_entries
from compiler.ir.from_graph import lower_graph
from compiler.ir.interpreter import run_function
from compiler.ir.types import N, as_dtype
from compiler.lower import kernel_ir as K
from compiler.lower.program import lower_function
from compiler.passes.manager import run_pipeline
from tests import models
from tests.cuda_kit import needs_emulator
from tests.op_table import assert_op_matches, op_names, op_results

NVCC = shutil.which("nvcc")
I64, F32 = as_dtype("int64"), as_dtype("float32")


# ----------------------------------------------------------------------------- helpers
def _render(program):
    """(launch lines, {kernel name: [function names]}) of a program."""
    r = KernelRenderer(program, "train", lambda *a: 0)
    functions = {k.name: [f.name for f in r.kernel(k).functions] for k in program.kernels}
    return r.launches, functions


def _c_value(expr: str, n: int) -> int:
    return eval(re.sub(r"(\d+)LL", r"\1", expr), {"N": n})  # trip expressions: + - * over N


def _launches_of(launches, functions, kernel):
    names = functions[kernel]
    return [line for line in launches if any(f"({name}," in line for name in names)]


def _trip(line, n):
    """Threads (grid loops) or blocks (reductions) a launch line asks for at batch ``n``."""
    m = re.search(r"const long long (?:trip|outs) = (.*?)(?:, trip = .*?)?; if", line)
    return _c_value(m.group(1), n)


def _program(builder):
    fn, _state, _feeds = builder()
    return lower_function(run_pipeline(fn).fn)


@pytest.fixture(scope="module")
def cnn():
    program = _program(models.cnn_train_step)
    launches, functions = _render(program)
    return program, launches, functions


# ----------------------------------------------------------------------------- geometry
def test_cnn_image_loops_spread_over_the_image(cnn):
    program, launches, functions = cnn
    expected = {  # kernel name prefix -> per-image trip counts of its launches
        "im2col_conv2d_Conv2D_1": [14 * 14 * 25 * 32], "im2col_conv2d_Conv2D": [28 * 28 * 25],
        "max_pool_MaxPool_1": [7 * 7 * 64], "max_pool_MaxPool": [14 * 14 * 32],
        "col2im_conv2d_backprop_input_gradients_Conv2D_1": [14 * 14 * 32],
        # zero the input gradient, then each pooled element adds into its window's maximum:
        # the windows do not overlap, so that scatter is parallel too (footprint.py)
        "max_pool_grad_gradients_MaxPool_1_grad": [14 * 14 * 64, 7 * 7 * 64],
        "max_pool_grad_gradients_MaxPool_grad": [28 * 28 * 32, 14 * 14 * 32],
    }
    seen = set()
    for kernel in functions:
        prefix = next((p for p in expected if kernel.startswith(p)), None)
        if prefix is None or kernel in seen:
            continue
        seen.add(prefix)
        lines = _launches_of(launches, functions, kernel)
        assert all("kiln_blocks(trip), KILN_BLOCK" in line for line in lines), lines
        assert [_trip(line, 1) for line in lines] == expected[prefix], kernel
        assert [_trip(line, 3) for line in lines] == [3 * t for t in expected[prefix]], kernel
    assert seen == set(expected)


def test_cnn_reductions_are_block_reductions(cnn):
    program, launches, functions = cnn
    src = render_module({"train": program}, program_variables([program]))
    channels = {"reduce_gradients_Add_grad_Sum": 32, "reduce_gradients_Add_1_grad_Sum": 64,
                "reduce_gradients_Add_2_grad_Sum": 1024, "reduce_gradients_Add_3_grad_Sum": 10, "reduce_loss": 1}
    for kernel, outs in channels.items():
        lines = [line for line in _launches_of(launches, functions, kernel) if "kiln_red_blocks(outs)" in line]
        assert len(lines) == 1, (kernel, _launches_of(launches, functions, kernel))
        assert "KILN_LAUNCH_SYNC(" in lines[0] and "kiln_red_threads(outs, trip)" in lines[0]
        assert _trip(lines[0], 5) == outs
        fn = re.search(r"KILN_LAUNCH_SYNC\((\w+),", lines[0]).group(1)
        body = src.split(f"{fn}(KilnBufs bufs, long long N) {{")[1].split("\n}\n")[0]
        assert "kiln_block_reduce(" in body and "kiln_f += blockDim.x" in body
    assert "__shfl_down_sync(0xffffffffu" in src


def test_cnn_serial_and_batch_only_launches(cnn):
    """One-thread launches only for scalar kernels; launches over N alone only where the
    iteration space is N (rows of 10 classes)."""
    program, launches, functions = cnn
    serial = {k for k in functions if any(", 1, 1, stream" in line for line in _launches_of(launches, functions, k))}
    assert serial == {"shape_gradients_loss_grad_Shape", "loop_gradients_loss_grad_Cast",
                      "loop_gradients_loss_grad_truediv", "loop_train_update_Variable_Sub", "loop_x"}
    batch_only = {k for k in functions for line in _launches_of(launches, functions, k)
                  if "kiln_blocks(trip)" in line and _trip(line, 1) == 1 and _trip(line, 2) == 2}
    assert batch_only <= {"reduce_softmax_cross_entropy_with_logits_Max", "reduce_softmax_cross_entropy_with_logits_Sum",
                          "reduce_softmax_cross_entropy_with_logits_Sum_1", "loop_gradients_loss_grad_BroadcastTo",
                          "reduce_gradients_softmax_cross_entropy_with_logi"}


def test_cnn_gemm_tiles(cnn):
    program, launches, functions = cnn
    # static and large: only the register-blocked 64x64 kernel (k = N: never split, too many tiles)
    assert functions["gemm_matmul_gradients_MatMul_grad_MatMul_1"] == ["k_train__gemm_matmul_gradients_MatMul_grad_MatMul_1_g0b"]
    # a 25x32 filter gradient over k = N*784: split k when it is long, else the 16x16 tile
    line = _launches_of(launches, functions, "gemm_conv2d_backprop_filter_gradients_Conv2D_gra")[0]
    assert "if (kiln_gemm_ksplit(m, n, nb, kk)) KILN_LAUNCH_SYNC(k_train__gemm_conv2d_backprop_filter_gradients_Conv2D_gra_g0k, " \
           "dim3(kiln_ks_tiles(m), kiln_ks_tiles(n), (unsigned int)nb), dim3(KILN_KS_TILE, KILN_KS_TILE, KILN_KS_SLICES)" in line
    assert "else KILN_LAUNCH_SYNC(k_train__gemm_conv2d_backprop_filter_gradients_Conv2D_gra_g0, dim3(kiln_tiles(m)" in line
    # m grows with N (k = 800 is short): 64x64 or 16x16, chosen at run time
    line = _launches_of(launches, functions, "gemm_conv2d_Conv2D_1")[0]
    assert "{ if (kiln_gemm_big(m, n, nb)) KILN_LAUNCH_SYNC(k_train__gemm_conv2d_Conv2D_1_g0b, dim3(kiln_big_tiles(m)" in line
    assert "else KILN_LAUNCH_SYNC(k_train__gemm_conv2d_Conv2D_1_g0, dim3(kiln_tiles(m)" in line


@pytest.mark.parametrize("model", ["mlp_train_step", "lenet_train_step"])
def test_label_checks_are_ordered_block_loops(model):
    """The sparse-softmax label range check: one block striding over N in loop order
    (KILN_LAUNCH_SYNC, kiln_ord_threads), no longer a one-thread launch."""
    program = _program(getattr(models, model))
    launches, functions = _render(program)
    (kernel,) = [k for k in functions if k.startswith("check_range")]
    check, copy = _launches_of(launches, functions, kernel)
    assert re.search(r"KILN_LAUNCH_SYNC\(k_train__check_range_\w+_c0, 1, kiln_ord_threads\(trip\), stream", check)
    assert _trip(check, 7) == 7 and "kiln_blocks(trip), KILN_BLOCK" in copy
    assert not any(", 1, 1, stream" in line for line in _launches_of(launches, functions, kernel))


# ----------------------------------------------------------------------------- the analysis
def _v(name):
    return K.Var(name, I64)


def _c(v):
    return K.Const(v, I64)


def _op(kind, *args):
    return K.Op(kind, args, I64)


def _bufs(**shapes):
    """f32 arena buffers, each in its own memory (batch space, bytes per N)."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        out[name] = K.BufferDecl(name, F32, shape, "arena", space="batch", offset=offset)
        offset += 4 * int(np.prod([getattr(d, "coef", d) for d in shape]))
    return out


def _add_into(buf, index, value):
    return K.Store(buf, index, K.Op("add", (K.Load(buf, index, F32), value), F32))


def _plans(body, buffers):
    return launch_groups("t", body, buffers)


def test_overlapping_scatter_stays_sequential():
    """out[i, (j+1)//2] += x[i, j]: neighbouring j hit one element: j stays in the thread."""
    i, j = _v("i"), _v("j")
    idx = _op("add", _op("mul", i, _c(5)), _op("idiv", _op("add", j, _c(1)), _c(2)))
    loop = K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(8), _add_into(
        "out", idx, K.Load("x", _op("add", _op("mul", i, _c(8)), j), F32))), parallel=True)
    (plan,) = _plans([loop], _bufs(out=(N, 5), x=(N, 8)))
    assert isinstance(plan, Grid) and [f.var.name for f in plan.par] == ["i"]


def test_disjoint_clamped_scatter_is_parallel():
    """out[i, clamp(2j + p, 0, 7)] += 1 with p in [0, 1] (a 2x1 pooling window's argmax)."""
    i, j, p = _v("i"), _v("j"), _v("p")
    inner = _op("imin", _op("imax", _op("add", _op("mul", j, _c(2)), p), _c(0)), _c(7))
    idx = _op("add", _op("mul", i, _c(8)), inner)
    body = K.Block([K.DeclareAcc(p, _c(2)), K.For(_v("k"), _c(0), _c(2), K.Accumulate(p, "min", _v("k"))),
                    K.If(K.Op("less", (p, _c(2)), as_dtype("bool")), _add_into("out", idx, K.Const(1.0, F32)))])
    loop = K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(4), body), parallel=True)
    (plan,) = _plans([loop], _bufs(out=(N, 8)))
    assert isinstance(plan, Grid) and [f.var.name for f in plan.par] == ["i", "j"]


def test_condition_does_not_narrow_a_changing_accumulator():
    """As above, but p may change after the If tested it: the windows may overlap."""
    i, j, p = _v("i"), _v("j"), _v("p")
    inner = _op("imin", _op("imax", _op("add", _op("mul", j, _c(2)), p), _c(0)), _c(7))
    idx = _op("add", _op("mul", i, _c(8)), inner)
    body = K.Block([K.DeclareAcc(p, _c(2)), K.For(_v("k"), _c(0), _c(2), K.Accumulate(p, "min", _v("k"))),
                    K.If(K.Op("less", (p, _c(2)), as_dtype("bool")), K.Block([
                        K.Accumulate(p, "min", _c(3)), _add_into("out", idx, K.Const(1.0, F32))]))])
    loop = K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(4), body), parallel=True)
    (plan,) = _plans([loop], _bufs(out=(N, 8)))
    assert isinstance(plan, Grid) and [f.var.name for f in plan.par] == ["i"]


def test_checks_and_aliases_block_inference():
    i = _v("i")
    store = K.Store("out", i, K.Load("x", i, F32))
    check = K.Check(K.Op("less", (K.Load("x", i, F32), K.Const(0.0, F32)), as_dtype("bool")), "neg {value}",
                    K.Load("x", i, F32))
    # a check keeps the loop order of failures: not a grid, but an ordered block loop
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), K.Block([check, store]))], _bufs(out=(N,), x=(N,)))[0], Ordered)
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), store)], _bufs(out=(N,), x=(N,)))[0], Grid)
    aliased = _bufs(out=(N,), x=(N,))
    aliased["x"] = K.BufferDecl("x", F32, (N,), "arena", space="batch", offset=0)  # same memory as out
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), store)], aliased)[0], Serial)
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), K.Block([check, store]))], aliased)[0], Serial)


def _check_negative(value, i):
    return K.Check(K.Op("less", (value, K.Const(0.0, F32)), as_dtype("bool")), "neg {value}", i)


def test_ordered_loop_shapes():
    """Checks in a nest flatten its rectangular loops (row-major = loop order); a loop whose
    iterations overlap (out[i//2] written by two i), a check under a non-rectangular loop
    or state carried across iterations stay serial; a check inside an inner loop is fine
    (its thread runs the inner loop in order)."""
    i, j = _v("i"), _v("j")
    at = _op("add", _op("mul", i, _c(3)), j)
    x = K.Load("x", at, F32)
    nested = K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(3), K.Block([_check_negative(x, at), K.Store("out", at, x)])))
    (plan,) = _plans([nested], _bufs(out=(N, 3), x=(N, 3)))
    assert isinstance(plan, Ordered) and [f.var.name for f in plan.loops] == ["i", "j"]
    (plan,) = _plans([K.For(i, _c(0), K.Batch(I64), K.Block([K.For(j, _c(0), _c(3), _check_negative(x, at)),
                                                             K.Store("y", i, K.Load("x", i, F32))]))],
                     _bufs(y=(N,), x=(N, 3)))
    assert isinstance(plan, Ordered) and [f.var.name for f in plan.loops] == ["i"]
    half = _op("idiv", i, _c(2))
    overlap = K.For(i, _c(0), K.Batch(I64), K.Block([_check_negative(K.Load("x", i, F32), i),
                                                     _add_into("out", half, K.Load("x", i, F32))]))
    assert isinstance(_plans([overlap], _bufs(out=(N,), x=(N,)))[0], Serial)
    triangle = K.For(i, _c(0), _c(8), K.For(j, _c(0), i, _check_negative(K.Load("x", j, F32), j)))
    (plan,) = _plans([triangle], _bufs(x=(8,)))
    assert isinstance(plan, Ordered) and [f.var.name for f in plan.loops] == ["i"]  # j stays in the thread
    dependent = K.For(i, _c(0), K.Batch(I64), K.Block([_check_negative(K.Load("x", i, F32), i),
                                                       K.Store("out", _c(0), K.Load("x", i, F32))]))
    assert isinstance(_plans([dependent], _bufs(out=(1,), x=(N,)))[0], Serial)  # every i writes out[0]
    acc = K.Var("acc", F32)
    carried = K.For(i, _c(0), K.Batch(I64), K.Block([K.DeclareAcc(acc, K.Const(0.0, F32)), K.For(
        j, _c(0), _c(3), K.Block([K.Accumulate(acc, "add", x), _check_negative(acc, j)])), K.Store("y", i, acc)]))
    (plan,) = _plans([carried], _bufs(y=(N,), x=(N, 3)))  # an accumulator of the iteration itself: fine
    assert isinstance(plan, Ordered) and [f.var.name for f in plan.loops] == ["i"]


def test_flagged_loop_split_per_inner_loop():
    i, j, k = _v("i"), _v("j"), _v("k")
    zero = K.For(j, _c(0), _c(4), K.Store("out", _op("add", _op("mul", i, _c(4)), j), K.Const(0.0, F32)))
    copy = K.For(k, _c(0), _c(2), K.Store("y", _op("add", _op("mul", i, _c(2)), k), K.Load("x", i, F32)))
    plans = _plans([K.For(i, _c(0), K.Batch(I64), K.Block([zero, copy]), parallel=True)],
                   _bufs(out=(N, 4), y=(N, 2), x=(N,)))
    assert [[f.var.name for f in p.par] for p in plans] == [["i", "j"], ["i", "k"]]


def test_column_sum_is_a_block_reduction():
    r, c = _v("r"), _v("c")
    loop = K.For(r, _c(0), K.Batch(I64), K.For(c, _c(0), _c(3), _add_into(
        "acc", c, K.Load("x", _op("add", _op("mul", r, _c(3)), c), F32)), vectorize=True))
    (plan,) = _plans([loop], _bufs(acc=(3,), x=(N, 3)))
    assert isinstance(plan, Reduce)
    assert [f.var.name for f in plan.par] == ["c"] and [f.var.name for f in plan.red] == ["r"]
    wide = K.For(r, _c(0), K.Batch(I64), K.For(c, _c(0), _c(50000), _add_into(
        "acc", c, K.Load("x", _op("add", _op("mul", r, _c(50000)), c), F32)), vectorize=True))
    (plan,) = _plans([wide], _bufs(acc=(50000,), x=(N, 50000)))  # enough columns: a thread each
    assert isinstance(plan, Grid) and [f.var.name for f in plan.par] == ["c"]


# ----------------------------------------------------------------------------- on the emulator
@pytest.fixture
def race_check(monkeypatch):
    """Libraries loaded in the test check every launch for races (kiln_cuda_emulate.h)."""
    monkeypatch.setenv("KILN_EMU_RACECHECK", "1")


@needs_emulator
def test_op_table_matches_interpreter(race_check):
    """Batch 3 (blocks mostly idle) and 300 (reductions over N wrap around the block)."""
    results = op_results({"backend": "cuda", "cuda_emulate": True}, (3, 300))
    for batch in (3, 300):
        for op in op_names():
            assert_op_matches(results, op, batch, rtol=3e-5)


@needs_emulator
def test_integer_and_bool_reductions(race_check):
    rng = np.random.default_rng(1)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.int32, [None, 5], name="x")
        big = tf.cast(x, tf.int64) * 3000000000
        pos = x > 2
        outs = {"max0": tf.reduce_max(x, 0), "min0": tf.reduce_min(big, 0), "sum_all": tf.reduce_sum(big),
                "any0": tf.reduce_any(pos, 0), "all0": tf.reduce_all(pos, 0), "any_all": tf.reduce_any(pos),
                "prod0": tf.reduce_prod(tf.cast(x, tf.float32) * 0.01 + 1.0, 0), "max_all": tf.reduce_max(x)}
        feed = {x: rng.integers(-50, 50, (300, 5)).astype(np.int32)}
        with tf.Session(config={"backend": "cuda", "cuda_emulate": True}) as sess:
            got = sess.run(outs, feed)
        with tf.Session(config={"backend": "interpreter"}) as sess:
            want = sess.run(outs, feed)
    for name in outs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
        assert got[name].dtype == want[name].dtype, name


def _sum_with_check_program() -> K.Program:
    """out = sum(x) over N, failing when the sum is negative: a full reduction whose tail
    (thread 0) holds a check."""
    bufs = {"x": K.BufferDecl("x", F32, (N,), "feed", index=0, key="x:0"),
            "out": K.BufferDecl("out", F32, (), "fetch", index=0, key="out:0")}
    acc, i = K.Var("acc", F32), K.Var("i", I64)
    body = K.Block([K.DeclareAcc(acc, K.Const(0.0, F32)),
                    K.For(i, _c(0), K.Batch(I64), K.Accumulate(acc, "add", K.Load("x", i, F32)), vectorize=True),
                    K.Check(K.Op("less", (acc, K.Const(0.0, F32)), as_dtype("bool")), "negative sum {value}", acc),
                    K.Store("out", _c(0), acc)])
    return K.Program("p", bufs, [K.Kernel("sum", ["x"], ["out"], body)], feeds=["x:0"], fetches=["out:0"])


@needs_emulator
def test_reduction_tail_check_on_emulator(tmp_path):
    from compiler.codegen.cuda.build import compile_cuda

    program = _sum_with_check_program()
    (plan,) = launch_groups("sum", program.kernels[0].body.body, program.buffers)
    assert isinstance(plan, Reduce) and not plan.par
    compile_cuda(render_module({"p": program}, program_variables([program])), tmp_path / "p.so", emulate=True)
    lib = ctypes.CDLL(str(tmp_path / "p.so"))
    vp = ctypes.c_void_p
    lib.kiln_create.restype, lib.kiln_destroy.argtypes = vp, [vp]
    lib.kiln_last_error.restype, lib.kiln_last_error.argtypes = ctypes.c_char_p, [vp]
    lib.kiln_entry_p.restype = ctypes.c_int32
    lib.kiln_entry_p.argtypes = [vp, ctypes.c_int64, ctypes.POINTER(vp), ctypes.POINTER(vp)]
    state = lib.kiln_create()
    try:
        for x in (np.linspace(-1, 2, 600, dtype=np.float32), np.linspace(-2, 1, 600, dtype=np.float32)):
            out = np.zeros((), np.float32)
            rc = lib.kiln_entry_p(state, len(x), (vp * 1)(x.ctypes.data), (vp * 1)(out.ctypes.data))
            if x.sum() >= 0:
                assert rc == 0 and out == pytest.approx(float(x.astype(np.float64).sum()), rel=1e-5)
            else:
                assert rc == 3 and b"negative sum -300" in lib.kiln_last_error(state)
    finally:
        lib.kiln_destroy(state)


def _model_step(tmp_path, model, batch, race):
    graph = tf.Graph()
    with graph.as_default():
        t = getattr(models, f"{model}_tensors")(seed=0)
        inputs = [t["x"], t["labels"]] if model == "mlp" else [t["x"], t["y"], t["keep_prob"]]
        fn = lower_graph([t["loss"]], [t["train"]], inputs, name="train")
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, batch)
    feeds = {"x:0": rng.random((batch, 784), dtype=np.float32)}
    if model == "mlp":
        feeds["labels:0"] = labels.astype(np.int64)
    else:
        feeds.update({"y_actual:0": np.eye(10, dtype=np.float32)[labels], "keep_prob:0": np.float32(0.5)})
    path = compile_entries(graph, {"train": ([t["loss"]], [t["train"]], inputs)}, tmp_path, target="cuda",
                           emulate=True, dump_ir=False)
    artifact = runtime.load_artifact(path)
    artifact.library.lib.kiln_emu_set_race_check.argtypes = [ctypes.c_int]
    artifact.library.lib.kiln_emu_set_race_check(1 if race else 0)
    with artifact.new_state() as state:
        start = state.variables()
        loss = state.run("train", feeds)["loss:0"]
        after = state.variables()
    ref_state, ref_fetches = run_function(fn, start, feeds)
    np.testing.assert_allclose(loss, ref_fetches["loss:0"], rtol=1e-4)
    for name, value in ref_state.items():
        _assert_state_close(name, after[name], value)


def _assert_state_close(name, got, want, rtol=1e-4, atol=1e-5):
    """Adam moves a weight by about its learning rate whatever its gradient's size, in the
    gradient's direction: where a gradient is ~0 (a GEMM over N rows cancelling) float
    rounding can flip that step.  A handful of weights (1e-5 of them) may differ by up to
    two steps (2e-3); everything else, moments included, agrees to ``rtol``/``atol``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bad = np.abs(got - want) > atol + rtol * np.abs(want)
    if "Adam" in name or bad.sum() > max(1, 1e-5 * want.size):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_allclose(got, want, atol=2e-3, err_msg=name)


@needs_emulator
def test_mlp_step_matches_interpreter(tmp_path):
    _model_step(tmp_path, "mlp", 300, race=True)


@needs_emulator
def test_cnn_step_matches_interpreter(tmp_path):
    # race checking the CNN's 3.2M-element Adam updates would take ~10 s: the op table covers
    # the same kernel shapes (conv, pooling and their gradients) with it
    _model_step(tmp_path, "cnn", 3, race=False)


@needs_emulator
def test_gemm_ksplit_matches_interpreter(race_check):
    """pᵀ.q over k = N rows with few outputs: the k-split kernel from N = 2048 on, with an
    epilogue (bias, relu) and with a plain store."""
    rng = np.random.default_rng(4)
    with tf.Graph().as_default():
        p = tf.placeholder(tf.float32, [None, 20], name="p")
        q = tf.placeholder(tf.float32, [None, 30], name="q")
        outs = {"relu": tf.nn.relu(tf.matmul(p, q, transpose_a=True) - 1.0), "plain": tf.matmul(q, p, transpose_a=True)}
        for batch in (3000, 7):
            feed = {p: rng.standard_normal((batch, 20)).astype(np.float32), q: rng.standard_normal((batch, 30)).astype(np.float32)}
            with tf.Session(config={"backend": "cuda", "cuda_emulate": True}) as sess:
                got = sess.run(outs, feed)
            with tf.Session(config={"backend": "interpreter"}) as sess:
                want = sess.run(outs, feed)
            for name in outs:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-3, err_msg=f"{name} at {batch}")


@needs_emulator
def test_gemm_variants_match_interpreter(race_check):
    """Both GEMM tiles, every transpose combination, partial tiles, a batched GEMM and an
    epilogue; batch 400 picks the 64x64 tile for the N-sized GEMMs, batch 5 the 16x16 one."""
    rng = np.random.default_rng(2)
    with tf.Graph().as_default():
        a = tf.placeholder(tf.float32, [None, 97], name="a")
        p = tf.placeholder(tf.float32, [None, 333], name="p")
        b3 = tf.placeholder(tf.float32, [None, 70, 50], name="b3")
        w, v, pp, r, c3 = (tf.Variable(rng.standard_normal(s).astype(np.float32))
                           for s in ((97, 333), (333, 97), (450, 333), (321, 450), (50, 90)))
        outs = {"nn_relu": tf.nn.relu(tf.matmul(a, w) + 0.5), "nt": tf.matmul(a, v, transpose_b=True),
                "tn": tf.matmul(p, p * 0.5, transpose_a=True), "tt": tf.matmul(pp, r, transpose_a=True, transpose_b=True),
                "batched": tf.matmul(b3, tf.matmul(b3, c3), transpose_a=True)}
        init = tf.global_variables_initializer()
        sessions = [tf.Session(config={"backend": "cuda", "cuda_emulate": True}), tf.Session(config={"backend": "interpreter"})]
        for batch in (400, 5):
            feed = {a: rng.standard_normal((batch, 97)).astype(np.float32),
                    p: rng.standard_normal((batch, 333)).astype(np.float32),
                    b3: rng.standard_normal((batch, 70, 50)).astype(np.float32)}
            got, want = [], []
            for sess, out in zip(sessions, (got, want)):
                sess.run(init)
                out.append(sess.run(outs, feed))
            for name in outs:
                np.testing.assert_allclose(got[0][name], want[0][name], rtol=2e-4, atol=2e-4, err_msg=f"{name} at {batch}")


def _ordered_checks_program() -> K.Program:
    """out[i] = 2 x[i] over an unflagged loop with three checks per iteration: x[i] NaN (a
    float value), 2 x[i] > 1000 (float), |x[i]| > 1e6 (the index i: an integer value)."""
    bufs = {"x": K.BufferDecl("x", F32, (N,), "feed", index=0, key="x:0"),
            "out": K.BufferDecl("out", F32, (N,), "fetch", index=0, key="out:0")}
    i, y, b = K.Var("i", I64), K.Var("y", F32), as_dtype("bool")
    x = K.Load("x", i, F32)
    body = K.Block([K.Check(K.Op("is_nan", (x,), b), "x is {value}", x),
                    K.Let(y, K.Op("mul", (x, K.Const(2.0, F32)), F32)),
                    K.Check(K.Op("greater", (y, K.Const(1000.0, F32)), b), "2x = {value} is too big", y),
                    K.Check(K.Op("greater", (K.Op("abs", (x,), F32), K.Const(1e6, F32)), b), "x[{value}] is huge", i),
                    K.Store("out", i, y)])
    kernel = K.Kernel("checks", ["x"], ["out"], K.Block([K.For(i, _c(0), K.Batch(I64), body)]), origin="checks (hand-made)")
    return K.Program("p", bufs, [kernel], feeds=["x:0"], fetches=["out:0"])


class _RawLib:
    """A library built from kernel-IR programs, called through the raw ABI (one feed, one fetch)."""

    def __init__(self, path, race=False):
        vp = ctypes.c_void_p
        self.lib = lib = ctypes.CDLL(str(path))
        lib.kiln_create.restype, lib.kiln_destroy.argtypes = vp, [vp]
        lib.kiln_last_error.restype, lib.kiln_last_error.argtypes = ctypes.c_char_p, [vp]
        lib.kiln_entry_p.restype = ctypes.c_int32
        lib.kiln_entry_p.argtypes = [vp, ctypes.c_int64, ctypes.POINTER(vp), ctypes.POINTER(vp)]
        if race:
            lib.kiln_emu_set_race_check.argtypes = [ctypes.c_int]
            lib.kiln_emu_last_race.restype = ctypes.c_char_p
            lib.kiln_emu_set_race_check(1)
        self.state = lib.kiln_create()

    def run(self, x):
        vp = ctypes.c_void_p
        out = np.zeros_like(x)
        rc = self.lib.kiln_entry_p(self.state, len(x), (vp * 1)(x.ctypes.data), (vp * 1)(out.ctypes.data))
        return rc, (self.lib.kiln_last_error(self.state) or b"").decode() if rc else "", out


@needs_emulator
def test_ordered_checks_report_the_first_failure_like_cpu(tmp_path):
    """Batch 1500: two chunks of 1024 threads.  Failures in the first chunk, in the second
    only, in one iteration (the first failing check of it), float and integer values: the
    CUDA module's message is the CPU backend's, the valid batch gives its results, and the
    race checker sees no race."""
    from compiler.codegen.cuda.build import compile_cuda
    from compiler.codegen.llvm.build import compile_module
    from compiler.codegen.llvm.module import build_module

    program = _ordered_checks_program()
    (plan,) = launch_groups("checks", program.kernels[0].body.body, program.buffers)
    assert isinstance(plan, Ordered)
    compile_cuda(render_module({"p": program}, program_variables([program])), tmp_path / "cuda.so", emulate=True)
    compile_module(build_module({"p": program}, []), str(tmp_path / "cpu.so"))
    cuda, cpu = _RawLib(tmp_path / "cuda.so", race=True), _RawLib(tmp_path / "cpu.so")
    rng = np.random.default_rng(5)
    cases = {"valid": {}, "first chunk": {5: 700.0, 900: np.nan, 1300: -2e6}, "second chunk": {1100: np.nan, 1300: 900.0},
             "at 0": {0: -3e6, 1: np.nan}, "last": {1499: 501.5}, "one iteration": {1200: 2e6, 1400: np.nan},
             "integer value": {1030: -5e6, 1031: 600.0}}
    seen = set()
    for name, bad in cases.items():
        x = rng.uniform(-400, 400, 1500).astype(np.float32)
        for pos, value in bad.items():
            x[pos] = value
        (rc_gpu, msg_gpu, out_gpu), (rc_cpu, msg_cpu, out_cpu) = cuda.run(x), cpu.run(x)
        assert cuda.lib.kiln_emu_last_race() == b"", name
        assert (rc_gpu, msg_gpu) == (rc_cpu, msg_cpu), name
        if bad:
            assert rc_gpu == 3 and msg_gpu.startswith("checks (hand-made): "), (name, msg_gpu)
            seen.add(msg_gpu)
        else:
            assert rc_gpu == 0
            np.testing.assert_array_equal(out_gpu, out_cpu)
    assert seen == {"checks (hand-made): 2x = 1400 is too big", "checks (hand-made): x is nan",
                    "checks (hand-made): x[0] is huge", "checks (hand-made): 2x = 1003 is too big",
                    "checks (hand-made): 2x = 4e+06 is too big", "checks (hand-made): x[1030] is huge"}


def _label_and_gather_entries():
    """A sparse-softmax loss (the label range check over N) and a gather over [N, 3] indices
    (its index check flattens both loops)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 10], name="x")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        idx = tf.placeholder(tf.int32, [None, 3], name="idx")
        table = tf.constant(np.arange(14, dtype=np.float32).reshape(7, 2))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x * 2.0), name="loss")
        picked = tf.identity(tf.gather(table, idx) * 1.5, name="picked")
        entries = {"f": ([loss, picked], [], [x, labels, idx])}
    return graph, entries


@needs_emulator
def test_label_and_index_checks_match_cpu(tmp_path, race_check):
    """Bad labels at 3 and 200 of a batch of 300, at 0, and at 1100 / 1400 of 1500 (the
    second chunk); a bad gather index at [250, 2] before one at [260, 0]: the CPU backend's
    message; valid feeds: its results.  Race checking is on (a race fails the step)."""
    from tests.cuda_kit import load_pair

    graph, entries = _label_and_gather_entries()
    cpu, gpu = load_pair(graph, entries, tmp_path)
    rng = np.random.default_rng(6)

    def feeds(n, bad_labels=(), bad_idx=()):
        f = {"x:0": rng.standard_normal((n, 10)).astype(np.float32), "labels:0": rng.integers(0, 10, n).astype(np.int64),
             "idx:0": rng.integers(0, 7, (n, 3)).astype(np.int32)}
        for pos, value in bad_labels:
            f["labels:0"][pos] = value
        for pos, value in bad_idx:
            f["idx:0"][pos] = value
        return f

    with cpu.new_state() as c, gpu.new_state() as g:
        for n in (300, 1500):
            f = feeds(n)
            want, got = c.run("f", f), g.run("f", f)
            np.testing.assert_allclose(got["loss:0"], want["loss:0"], rtol=1e-5)
            np.testing.assert_array_equal(got["picked:0"], want["picked:0"])
        cases = [(300, [(3, 12), (200, -1)], []), (300, [(0, 10)], []), (1500, [(1100, 11), (1400, -7)], []),
                 (300, [], [((250, 2), 9), ((260, 0), -1)]), (1500, [], [((1499, 1), 7)])]
        for n, bad_labels, bad_idx in cases:
            f = feeds(n, bad_labels, bad_idx)
            messages = []
            for state in (c, g):
                with pytest.raises(runtime.KilnRuntimeError) as info:
                    state.run("f", f)
                assert info.value.code == 3, info.value.message
                messages.append(info.value.message)
            assert messages[1] == messages[0], (n, bad_labels, bad_idx)
            first = (bad_labels or bad_idx)[0][1]
            assert f"value of {first} " in messages[1] or f"index {first} " in messages[1], messages[1]
        assert np.isfinite(g.run("f", feeds(9))["loss:0"])  # the state still works


# ----------------------------------------------------------------------------- nvcc
@pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not on PATH: cannot compile the .cu")
def test_nvcc_compiles_models(tmp_path):
    """The CNN and MLP steps (every launch shape: grids, reductions, the three GEMMs, the
    ordered label check), a reduction whose tail checks and an ordered loop with float and
    integer checks."""
    def build(name):
        hand_made = {"sum_check": _sum_with_check_program, "ordered_checks": _ordered_checks_program}
        program = hand_made[name]() if name in hand_made else _program(getattr(models, name))
        cu = tmp_path / f"{name}.cu"
        cu.write_text(render_module({"train": program}, program_variables([program])))
        return subprocess.run([NVCC, "-arch=sm_90", "-c", str(cu), "-o", str(cu.with_suffix(".o"))],
                              check=False, capture_output=True, text=True, timeout=300)

    names = ("cnn_train_step", "mlp_train_step", "sum_check", "ordered_checks")
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, result in zip(names, pool.map(build, names)):
            assert result.returncode == 0, f"{name}: nvcc failed\n{result.stderr[-4000:]}"

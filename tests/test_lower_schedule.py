"""The scheduling pass (compiler/lower/schedule.py, launches.py, footprint.py) on small
hand-made kernel programs and lowered graphs.

* threads in place (a CPU's capabilities): a loop proven parallel gets ``For.parallel`` (and
  the LLVM backend threads it), a carried dependence, a racy or overlapping scatter, a check
  or a top-level accumulator keep it serial, tiny loops stay serial, lowering's flags stay;
* grid launches (a GPU's capabilities): overlapping scatters stay in the thread, clamped
  disjoint ones are spread, checks and aliased buffers block inference, ordered check loops,
  fission of a flagged loop per inner loop, column sums as block reductions;
* the contract: the input is not changed, ``planned_for``/``plan_summary``, planning twice,
  the dump, and each plan means the program it came from (run by the kernel-IR evaluator).
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from compiler import tf
from compiler.ir.types import N, as_dtype
from compiler.lower import kernel_ir as K
from compiler.lower.capabilities import Capabilities
from compiler.lower.footprint import accesses, walk
from compiler.lower.kernel_printer import print_program
from compiler.lower.schedule import ScheduleError, plan_program, sequential
from tests.kernel_ir_kit import F32, I64
from tests.kernel_ir_kit import const as _c
from tests.test_lower_loops import build, check_against_interpreter

GRID = Capabilities("grid", threads=256, blocks=65535, max_threads_per_block=1024, shared_memory_bytes=48 * 1024)
THREADS = Capabilities("threads", threads=4, vector_width=8, min_parallel_work=32768)
BOOL = as_dtype("bool")


# ----------------------------------------------------------------------------- helpers
def _v(name):
    return K.Var(name, I64)


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


def _program(body, buffers):
    """One kernel running ``body`` (its reads and writes from its accesses)."""
    acc = accesses(list(body))
    writes = sorted({a.buffer for a in acc if a.store})
    reads = sorted({a.buffer for a in acc if not a.store})
    return K.Program("p", buffers, [K.Kernel("k", reads, writes, K.Block(list(body)))])


def _plans(body, buffers):
    """The launches planned for a device with grids of blocks."""
    return plan_program(_program(body, buffers), GRID).kernels[0].launches


def _threaded(body, buffers, caps=THREADS):
    """Names of the loops marked parallel when planned to thread loops in place."""
    kernel = plan_program(_program(body, buffers), caps).kernels[0]
    return {s.var.name for s, _ in walk(kernel.body) if isinstance(s, K.For) and s.parallel}


def _clamped_scatter(flag=False):
    """out[i, clamp(2j + p, 0, 7)] += x[i, j] with p the argmin of a 2-wide window (always
    0 here): the max-pool gradient's shape; the windows do not overlap."""
    i, j, p = _v("i"), _v("j"), _v("p")
    inner = _op("imin", _op("imax", _op("add", _op("mul", j, _c(2)), p), _c(0)), _c(7))
    idx = _op("add", _op("mul", i, _c(8)), inner)
    value = K.Load("x", _op("add", _op("mul", i, _c(4)), j), F32)
    body = K.Block([K.DeclareAcc(p, _c(2)), K.For(_v("k"), _c(0), _c(2), K.Accumulate(p, "min", _v("k"))),
                    K.If(K.Op("less", (p, _c(2)), BOOL), _add_into("out", idx, value))])
    return K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(4), body), parallel=flag)


def _check_negative(value, i):
    return K.Check(K.Op("less", (value, K.Const(0.0, F32)), BOOL), "neg {value}", i)


# ----------------------------------------------------------------------------- threads in place
def test_proven_loop_is_marked_parallel():
    """The clamped scatter, unflagged: its outer loop is marked, with the work of one
    iteration (4 windows of 5 statements) for the renderer's run-time test."""
    program = plan_program(_program([_clamped_scatter()], _bufs(out=(N, 8), x=(N, 4))), THREADS)
    (loop,) = program.kernels[0].body.body
    assert loop.parallel and loop.work == 20 and not loop.body.parallel
    assert program.plan_summary == "threads: 1 parallel loops, 1 of them proven parallel here"


def test_carried_dependences_stay_serial():
    i, j = _v("i"), _v("j")
    x = K.Load("x", i, F32)
    prefix_sum = K.For(i, _c(1), K.Batch(I64), K.Store("out", i, K.Op(
        "add", (K.Load("out", _op("sub", i, _c(1)), F32), x), F32)))
    assert _threaded([prefix_sum], _bufs(out=(N,), x=(N,))) == set()
    racy = K.For(i, _c(0), K.Batch(I64), _add_into("out", _c(0), x))  # every i adds into out[0]
    assert _threaded([racy], _bufs(out=(1,), x=(N,))) == set()
    acc = K.Var("acc", F32)  # a top-level accumulator carries the sum from one i to the next
    total = [K.DeclareAcc(acc, K.Const(0.0, F32)), K.For(i, _c(0), K.Batch(I64), K.Accumulate(acc, "add", x)),
             K.Store("out", _c(0), acc)]
    assert _threaded(total, _bufs(out=(1,), x=(N,))) == set()
    # out[i, (j+1)//2] += x[i, j]: neighbouring j hit one element; the rows are disjoint
    idx = _op("add", _op("mul", i, _c(5)), _op("idiv", _op("add", j, _c(1)), _c(2)))
    overlap = K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(8), _add_into(
        "out", idx, K.Load("x", _op("add", _op("mul", i, _c(8)), j), F32))))
    assert _threaded([overlap], _bufs(out=(N, 5), x=(N, 8))) == {"i"}
    checked = K.For(i, _c(0), K.Batch(I64), K.Block([_check_negative(x, i), K.Store("out", i, x)]))
    assert _threaded([checked], _bufs(out=(N,), x=(N,))) == set()  # the first failure in loop order


def test_small_loops_stay_serial():
    i, r, c = _v("i"), _v("r"), _v("c")
    copy = (lambda n: K.For(i, _c(0), _c(n), K.Store("out", i, K.Load("x", i, F32))))
    assert _threaded([copy(8)], _bufs(out=(8,), x=(8,))) == set()
    assert _threaded([copy(40000)], _bufs(out=(40000,), x=(40000,))) == {"i"}
    assert _threaded([copy(40000)], _bufs(out=(40000,), x=(40000,)), replace(THREADS, threads=1)) == set()

    def column_sum(cols):  # rows stay sequential; the columns of one row are spread when wide
        return K.For(r, _c(0), K.Batch(I64), K.For(c, _c(0), _c(cols), _add_into(
            "acc", c, K.Load("x", _op("add", _op("mul", r, _c(cols)), c), F32)), vectorize=True))
    assert _threaded([column_sum(64)], _bufs(acc=(64,), x=(N, 64))) == set()
    assert _threaded([column_sum(50000)], _bufs(acc=(50000,), x=(N, 50000))) == {"c"}


def test_lowering_flags_are_kept():
    body, bufs = [_clamped_scatter(flag=True)], _bufs(out=(N, 8), x=(N, 4))
    program = _program(body, bufs)
    planned = plan_program(program, THREADS)
    assert planned.kernels[0] is program.kernels[0]


# ----------------------------------------------------------------------------- grid launches
def test_overlapping_scatter_stays_sequential():
    """out[i, (j+1)//2] += x[i, j]: neighbouring j hit one element: j stays in the thread."""
    i, j = _v("i"), _v("j")
    idx = _op("add", _op("mul", i, _c(5)), _op("idiv", _op("add", j, _c(1)), _c(2)))
    loop = K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(8), _add_into(
        "out", idx, K.Load("x", _op("add", _op("mul", i, _c(8)), j), F32))), parallel=True)
    (plan,) = _plans([loop], _bufs(out=(N, 5), x=(N, 8)))
    assert isinstance(plan, K.Grid) and [f.var.name for f in plan.par] == ["i"]


def test_disjoint_clamped_scatter_is_parallel():
    """out[i, clamp(2j + p, 0, 7)] += x[i, j] with p in [0, 1] (a 2x1 pooling window's argmax)."""
    (plan,) = _plans([_clamped_scatter(flag=True)], _bufs(out=(N, 8), x=(N, 4)))
    assert isinstance(plan, K.Grid) and [f.var.name for f in plan.par] == ["i", "j"]


def test_condition_does_not_narrow_a_changing_accumulator():
    """As above, but p may change after the If tested it: the windows may overlap."""
    i, j, p = _v("i"), _v("j"), _v("p")
    inner = _op("imin", _op("imax", _op("add", _op("mul", j, _c(2)), p), _c(0)), _c(7))
    idx = _op("add", _op("mul", i, _c(8)), inner)
    body = K.Block([K.DeclareAcc(p, _c(2)), K.For(_v("k"), _c(0), _c(2), K.Accumulate(p, "min", _v("k"))),
                    K.If(K.Op("less", (p, _c(2)), BOOL), K.Block([
                        K.Accumulate(p, "min", _c(3)), _add_into("out", idx, K.Const(1.0, F32))]))])
    loop = K.For(i, _c(0), K.Batch(I64), K.For(j, _c(0), _c(4), body), parallel=True)
    (plan,) = _plans([loop], _bufs(out=(N, 8)))
    assert isinstance(plan, K.Grid) and [f.var.name for f in plan.par] == ["i"]
    assert _threaded([replace(loop, parallel=False)], _bufs(out=(N, 8))) == {"i"}


def test_checks_and_aliases_block_inference():
    i = _v("i")
    store = K.Store("out", i, K.Load("x", i, F32))
    check = _check_negative(K.Load("x", i, F32), K.Load("x", i, F32))
    # a check keeps the loop order of failures: not a grid, but an ordered block loop
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), K.Block([check, store]))], _bufs(out=(N,), x=(N,)))[0],
                      K.Ordered)
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), store)], _bufs(out=(N,), x=(N,)))[0], K.Grid)
    aliased = _bufs(out=(N,), x=(N,))
    aliased["x"] = K.BufferDecl("x", F32, (N,), "arena", space="batch", offset=0)  # same memory as out
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), store)], aliased)[0], K.Serial)
    assert isinstance(_plans([K.For(i, _c(0), K.Batch(I64), K.Block([check, store]))], aliased)[0], K.Serial)
    assert _threaded([K.For(i, _c(0), K.Batch(I64), store)], aliased) == set()


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
    assert isinstance(plan, K.Ordered) and [f.var.name for f in plan.loops] == ["i", "j"]
    (plan,) = _plans([K.For(i, _c(0), K.Batch(I64), K.Block([K.For(j, _c(0), _c(3), _check_negative(x, at)),
                                                             K.Store("y", i, K.Load("x", i, F32))]))],
                     _bufs(y=(N,), x=(N, 3)))
    assert isinstance(plan, K.Ordered) and [f.var.name for f in plan.loops] == ["i"]
    half = _op("idiv", i, _c(2))
    overlap = K.For(i, _c(0), K.Batch(I64), K.Block([_check_negative(K.Load("x", i, F32), i),
                                                     _add_into("out", half, K.Load("x", i, F32))]))
    assert isinstance(_plans([overlap], _bufs(out=(N,), x=(N,)))[0], K.Serial)
    triangle = K.For(i, _c(0), _c(8), K.For(j, _c(0), i, _check_negative(K.Load("x", j, F32), j)))
    (plan,) = _plans([triangle], _bufs(x=(8,)))
    assert isinstance(plan, K.Ordered) and [f.var.name for f in plan.loops] == ["i"]  # j stays in the thread
    dependent = K.For(i, _c(0), K.Batch(I64), K.Block([_check_negative(K.Load("x", i, F32), i),
                                                       K.Store("out", _c(0), K.Load("x", i, F32))]))
    assert isinstance(_plans([dependent], _bufs(out=(1,), x=(N,)))[0], K.Serial)  # every i writes out[0]
    acc = K.Var("acc", F32)
    carried = K.For(i, _c(0), K.Batch(I64), K.Block([K.DeclareAcc(acc, K.Const(0.0, F32)), K.For(
        j, _c(0), _c(3), K.Block([K.Accumulate(acc, "add", x), _check_negative(acc, j)])), K.Store("y", i, acc)]))
    (plan,) = _plans([carried], _bufs(y=(N,), x=(N, 3)))  # an accumulator of the iteration itself: fine
    assert isinstance(plan, K.Ordered) and [f.var.name for f in plan.loops] == ["i"]


def test_flagged_loop_split_per_inner_loop():
    i, j, k = _v("i"), _v("j"), _v("k")
    zero = K.For(j, _c(0), _c(4), K.Store("out", _op("add", _op("mul", i, _c(4)), j), K.Const(0.0, F32)))
    copy = K.For(k, _c(0), _c(2), K.Store("y", _op("add", _op("mul", i, _c(2)), k), K.Load("x", i, F32)))
    body, bufs = [K.For(i, _c(0), K.Batch(I64), K.Block([zero, copy]), parallel=True)], _bufs(out=(N, 4), y=(N, 2), x=(N,))
    plans = _plans(body, bufs)
    assert [[f.var.name for f in p.par] for p in plans] == [["i", "j"], ["i", "k"]]
    assert plan_program(_program(body, bufs), GRID).plan_summary == \
        "grid: 2 launches (2 grid); 2 loops proven parallel, 1 split off"


def test_column_sum_is_a_block_reduction():
    r, c = _v("r"), _v("c")
    loop = K.For(r, _c(0), K.Batch(I64), K.For(c, _c(0), _c(3), _add_into(
        "acc", c, K.Load("x", _op("add", _op("mul", r, _c(3)), c), F32)), vectorize=True))
    (plan,) = _plans([loop], _bufs(acc=(3,), x=(N, 3)))
    assert isinstance(plan, K.BlockReduce)
    assert [f.var.name for f in plan.par] == ["c"] and [f.var.name for f in plan.red] == ["r"]
    wide = K.For(r, _c(0), K.Batch(I64), K.For(c, _c(0), _c(50000), _add_into(
        "acc", c, K.Load("x", _op("add", _op("mul", r, _c(50000)), c), F32)), vectorize=True))
    (plan,) = _plans([wide], _bufs(acc=(50000,), x=(N, 50000)))  # enough columns: a thread each
    assert isinstance(plan, K.Grid) and [f.var.name for f in plan.par] == ["c"]


# ----------------------------------------------------------------------------- the contract
def test_plan_program_contract():
    body, bufs = [_clamped_scatter()], _bufs(out=(N, 8), x=(N, 4))
    program = _program(body, bufs)
    threaded = plan_program(program, THREADS)
    assert program.planned_for == "" and not body[0].parallel and program.kernels[0].launches is None
    assert threaded.planned_for == "threads" and plan_program(threaded, THREADS) is threaded
    with pytest.raises(ScheduleError, match="planned for 'threads', not 'grid'"):
        plan_program(threaded, GRID)
    with pytest.raises(ScheduleError, match="cooperating threads"):
        plan_program(program, replace(GRID, name="blocks", max_threads_per_block=1))
    assert "plan: threads: 1 parallel loops" in print_program(threaded)
    assert "for i in [0, N) parallel:" in print_program(threaded)
    gridded = plan_program(program, GRID)
    assert gridded.kernels[0].body is program.kernels[0].body
    text = print_program(gridded)
    assert "plan: grid: 1 launches (1 grid); 2 loops proven parallel, 0 split off" in text
    assert "  grid i in [0, N), j in [0, 4):\n    acc p: i64 = 2\n" in text


def _small_cnn(img, labels):
    """conv + bias + relu + 2x2 max-pool + dense + sparse softmax cross-entropy, one SGD step
    (every launch kind: grids, block reductions, an ordered label check, GEMMs)."""
    w = tf.Variable(np.linspace(-0.5, 0.5, 3 * 3 * 2 * 3, dtype=np.float32).reshape(3, 3, 2, 3))
    b = tf.Variable(np.linspace(-0.1, 0.1, 3, dtype=np.float32))
    h = tf.nn.max_pool(tf.nn.relu(tf.nn.conv2d(img, w, [1, 1, 1, 1], "SAME") + b), [1, 2, 2, 1], [1, 2, 2, 1], "VALID")
    d = tf.Variable(np.linspace(-0.3, 0.3, 27 * 4, dtype=np.float32).reshape(27, 4))
    logits = tf.matmul(tf.reshape(h, [-1, 27]), d)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return [loss], [tf.train.GradientDescentOptimizer(0.1).minimize(loss)]


def _as_launched(program):
    """``program`` with each kernel's body replaced by its launches' sequential meaning."""
    kernels = [replace(k, body=K.Block([s for launch in k.launches for s in sequential(launch)]), launches=None)
               for k in program.kernels]
    return replace(program, kernels=kernels)


def test_plans_mean_the_program():
    """The launches planned for a grid device, run one after another by the kernel-IR
    evaluator, and the threaded program give the interpreter's numbers."""
    fn, program, state = build(_small_cnn, [("img", tf.float32, [None, 6, 6, 2]), ("labels", tf.int32, [None])])

    def feeds(batch, rng):
        return {"img:0": rng.standard_normal((batch, 6, 6, 2)).astype(np.float32),
                "labels:0": rng.integers(0, 4, batch).astype(np.int32)}
    gridded = plan_program(program, GRID)
    kinds = {type(launch).__name__ for k in gridded.kernels for launch in k.launches}
    assert kinds == {"Grid", "BlockReduce", "Ordered", "Serial", "Gemm"}
    check_against_interpreter(fn, _as_launched(gridded), state, feeds, rtol=1e-4, atol=1e-5)
    check_against_interpreter(fn, plan_program(program, THREADS), state, feeds, rtol=1e-4, atol=1e-5)


def test_llvm_backend_threads_proven_loops(tmp_path):
    """The CPU backend renders the pass's plan: the proven clamped scatter (an outer loop) and
    the columns of a wide column sum (an inner loop, once per row) run on libgomp's threads
    (GOMP_parallel in the module) with the evaluator's results."""
    from compiler.codegen.llvm.build import compile_module
    from compiler.codegen.llvm.capabilities import host_capabilities
    from compiler.codegen.llvm.module import build_module
    from compiler.lower.kernel_interp import run_program
    from tests.cuda_kit import RawAbiLib

    r, c, cols = _v("r"), _v("c"), 40000
    column_sum = K.For(r, _c(0), K.Batch(I64), K.For(c, _c(0), _c(cols), _add_into(
        "sums", c, K.Load("y", _op("add", _op("mul", r, _c(cols)), c), F32)), vectorize=True))
    bufs = {"x": K.BufferDecl("x", F32, (N, 4), "feed", index=0, key="x:0"),
            "y": K.BufferDecl("y", F32, (N, cols), "feed", index=1, key="y:0"),
            "out": K.BufferDecl("out", F32, (N, 8), "fetch", index=0, key="out:0"),
            "sums": K.BufferDecl("sums", F32, (cols,), "fetch", index=1, key="sums:0")}
    program = _program([_clamped_scatter()], bufs)
    program = replace(program, kernels=program.kernels + _program([column_sum], bufs).kernels,
                      feeds=["x:0", "y:0"], fetches=["out:0", "sums:0"])
    serial = str(build_module({"p": plan_program(program, replace(host_capabilities(), threads=1))}, []))
    planned = plan_program(program, replace(host_capabilities(), threads=2))
    assert [[f.var.name for f, _ in walk(k.body) if isinstance(f, K.For) and f.parallel]
            for k in planned.kernels] == [["i"], ["c"]]
    module = build_module({"p": planned}, [])
    assert len(re.findall(r"call void @\"?GOMP_parallel", str(module))) == 2 and "GOMP_parallel" not in serial
    lib = RawAbiLib(compile_module(module, str(tmp_path / "p.so")).path)
    try:
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((5000, 4)).astype(np.float32), rng.standard_normal((5000, cols)).astype(np.float32)
        out, sums = np.zeros((5000, 8), np.float32), np.zeros(cols, np.float32)
        assert lib.run("p", [x, y], [out, sums], len(x)) == (0, "")
        _, want = run_program(replace(program, kernels=program.kernels[:1]), {}, {"x:0": x, "y:0": y}, len(x))
        np.testing.assert_array_equal(out, want["out:0"])
        np.testing.assert_array_equal(out[:, ::2], x)
        np.testing.assert_allclose(sums, y.sum(0, dtype=np.float64), rtol=1e-4, atol=1e-3)
    finally:
        lib.close()


def test_compile_dumps_the_plan(tmp_path):
    """``kiln compile`` plans each entry for its target before dumping ``kernels.txt``."""
    import json

    from compiler.frontend.compile_graph import compile_entries

    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        y = tf.nn.relu(x * 2.0)
        out = compile_entries(graph, {"run": ([y], [], [x])}, tmp_path / "art")
    assert "\n  plan: cpu: 1 parallel loops, 0 of them proven parallel here\n" in (out / "ir/run/kernels.txt").read_text()
    assert "schedule_s" in json.loads((out / "manifest.json").read_text())["build"]

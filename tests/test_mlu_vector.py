"""Vectorized MLU tiles (compiler/codegen/mlu/vector.py, pipeline.py) and the emulator's
vector/async header (templates/mlu/kiln_mlu_emulate_vector.h):

* generated kernels take the vector path (their .mlu text holds the intrinsics) for
  activations, max/min, compare + select, bias-add broadcasts, row reductions and softmax,
  and give the scalar tile path's values bit for bit and the interpreter's within tolerance,
  over sizes that are not multiples of a tile or of 32 lanes, several tiles per task, under
  the forward / reverse / shuffled task schedules;
* a hand-written double-buffered kernel matches numpy, and each new emulator rule refuses a
  kernel planting its violation (tests/mlu/emulator_vector_rules.mlu)."""
from __future__ import annotations

import ctypes
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.codegen.mlu import kernels
from compiler.frontend.compile_graph import compile_entries
from tests.mlu_kit import emulated_library

SOURCE = Path(__file__).parent / "mlu" / "emulator_vector_rules.mlu"
COLS = 100  # row loops: 64 rows of 100 per tile (vector.ROW_ELEMS), so 5000 rows take 3 tiles per task
# full sums fold lanes then a tree, divisions multiply by a reciprocal: close to the scalar code, not equal
APPROXIMATE = {"mean_all", "l2_loss", "softmax", "tanh_exp"}


def _graph():
    """Row ops over x f32[N, COLS], flat ops over v f32[N, 7], column sums over w f32[N, 64]:
    name -> tensor."""
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, COLS], name="x")
        v = tf.placeholder(tf.float32, [None, 7], name="v")
        w = tf.placeholder(tf.float32, [None, 64], name="w")
        bias = tf.constant(rng.standard_normal(COLS).astype(np.float32))
        outs = {
            "bias_relu": tf.nn.relu(tf.nn.bias_add(x, bias)), "softmax": tf.nn.softmax(x),
            "row_sum": tf.reduce_sum(x * x, 1), "row_max": tf.reduce_max(x, 1),
            "select": tf.where(x > 0.25, x, x * 0.1), "clip": tf.minimum(tf.maximum(x, -0.5), bias),
            "sigmoid": tf.sigmoid(v), "tanh_exp": tf.tanh(v) - tf.exp(v * 0.5) / (v * v + 1.0),
            "neg_abs_sqrt": 1.0 - tf.sqrt(tf.abs(-v)),
            "max_all": tf.reduce_max(x), "mean_all": tf.reduce_mean(x), "l2_loss": tf.nn.l2_loss(v),
            "column_sum": tf.reduce_sum(w * w - 0.5, 0),
        }
    return graph, x, v, w, outs


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The graph compiled for the MLU twice: vector tiles, and scalar tiles only (the vector
    path switched off), plus the generated source of the first."""
    graph, x, v, w, outs = _graph()
    names = sorted(outs)
    entries = {"run": ([outs[n] for n in names], [], [x, v, w])}
    root = tmp_path_factory.mktemp("mluvec")
    vector = compile_entries(graph, entries, root / "vector", target="mlu", dump_ir=False)
    patch = pytest.MonkeyPatch()
    patch.setattr(kernels, "vector_body", lambda *a, **k: None)
    try:
        scalar = compile_entries(graph, entries, root / "scalar", target="mlu", dump_ir=False)
    finally:
        patch.undo()
    interp = {}
    return {"vector": vector, "scalar": scalar, "names": names, "outs": outs, "graph": graph, "x": x, "v": v, "w": w,
            "source": (Path(vector) / "src" / "model.mlu").read_text(), "root": root, "interp": interp}


def _feeds(rows):
    rng = np.random.default_rng(rows)
    return {"x:0": rng.standard_normal((rows, COLS)).astype(np.float32),
            "v:0": rng.standard_normal((rows, 7)).astype(np.float32),
            "w:0": rng.standard_normal((rows, 64)).astype(np.float32)}


def _run(path, feeds, root, schedule, monkeypatch):
    """The artifact's outputs, loaded from a fresh copy (its own emulator state) under ``schedule``."""
    monkeypatch.setenv("KILN_MLU_SCHEDULE", schedule)
    copy = root / f"copy{len(list(root.iterdir()))}"
    shutil.copytree(path, copy)
    with runtime.load_artifact(copy).new_state() as state:
        return list(state.run("run", feeds).values())


@pytest.mark.parametrize("intrinsic", ["__bang_active_relu", "__bang_active_sigmoid", "__bang_active_tanh",
                                       "__bang_active_exp", "__bang_nan_maximum", "__bang_nan_minimum",
                                       "__bang_gt_scalar", "__bang_band", "__bang_bor", "__bang_add_scalar",
                                       "__bang_transpose", "__bang_recip", "__bang_sqrt", "__memcpy_async", "__sync()"])
def test_generated_kernels_use_the_intrinsic(artifacts, intrinsic):
    assert intrinsic in artifacts["source"]


def _kernels(source) -> dict:
    """name -> body text of each generated __mlu_entry__ function."""
    parts = source.split("__mlu_entry__ void ")[1:]
    return {p.split("(", 1)[0]: p.split("\n}\n", 1)[0] for p in parts}


def test_full_reductions_run_on_vector_lanes(artifacts):
    """reduce_max / reduce_mean / l2_loss over a whole tensor: one task folding 1024-lane
    accumulators (a halving tree to 32 lanes, then scalar), not the scalar serial loop."""
    reductions = {name: body for name, body in _kernels(artifacts["source"]).items() if name.endswith("_r")}
    assert len(reductions) >= 2, sorted(_kernels(artifacts["source"]))
    text = "\n".join(reductions.values())
    for needle in ("__bang_nan_maximum(kiln_v", "kiln_h /= 2", "__memcpy_async", "padding lanes: the identity"):
        assert needle in text, needle


def test_column_sums_run_on_vector_lanes(artifacts):
    """reduce_sum over the batch axis (64 columns): one task adding each row's 64 lanes into
    a 64-lane accumulator, rows in order (so equal to the scalar loop bit for bit)."""
    (body,) = [b for name, b in _kernels(artifacts["source"]).items() if re.search(r"_c\d+$", name)]
    assert re.search(r"__bang_add\((kiln_v\d+), \1, kiln_v\d+, 64\);", body) and "__memcpy_async" in body


def test_row_reduction_and_softmax_kernels_are_vectorized(artifacts):
    """The sum/max over each row accumulate column by column into R-lane vectors (the
    scalar loop's order), and no softmax kernel has scalar code left: its division by the
    row sum is one __bang_recip and __bang_mul per column."""
    kernels_ = _kernels(artifacts["source"])
    assert re.search(r"__bang_add\((\w+), \1, kiln_v\d+, 64\);", artifacts["source"])
    assert re.search(r"__bang_nan_maximum\((\w+), \1, t_feed_x_0 \+ v_i\d+ \* 64, 64\);", artifacts["source"])
    softmax = [body for name, body in kernels_.items() if "Softmax" in name]
    assert softmax and all("KILN_LD" not in body and "__bang_recip" in body for body in softmax)
    assert all("KILN_LD(b_" not in body for name, body in kernels_.items() if "reduce" in name)


@pytest.mark.parametrize("schedule", ["forward", "reverse", "shuffle:5"])
@pytest.mark.parametrize("rows", [1, 31, 5000])
def test_vector_tiles_match_scalar_tiles_and_interpreter(artifacts, monkeypatch, schedule, rows):
    """Sizes off every multiple of the tile and of 32 lanes; 5000 rows (3 tiles of 64 rows
    per task) and the 35,000 flat elements of v (2 tiles of 1024 per task) run the
    double-buffered pipeline."""
    feeds = _feeds(rows)
    got = _run(artifacts["vector"], feeds, artifacts["root"], schedule, monkeypatch)
    ref = _run(artifacts["scalar"], feeds, artifacts["root"], "forward", monkeypatch)
    with artifacts["graph"].as_default(), tf.Session(config={"backend": "interpreter"}) as sess:
        want = sess.run([artifacts["outs"][n] for n in artifacts["names"]],
                        {artifacts[k]: feeds[f"{k}:0"] for k in "xvw"})
    for name, g, r, w in zip(artifacts["names"], got, ref, want):
        if name in APPROXIMATE:
            np.testing.assert_allclose(g, r, rtol=2e-6, atol=1e-7, err_msg=f"{name}: vector vs scalar tiles")
        else:
            np.testing.assert_array_equal(g, r, err_msg=f"{name}: vector tiles vs scalar tiles")
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6, err_msg=f"{name}: vs the interpreter")


# ------------------------------------------------------------------ hand-written kernels
@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = emulated_library(SOURCE, tmp_path_factory.mktemp("mluvec_rules"))
    return so


def _ptr(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


@pytest.mark.parametrize("schedule", [(0, 0), (1, 0), (2, 3)])
@pytest.mark.parametrize("n,tasks", [(1, 4), (1000, 4), (5000, 4)])
def test_double_buffered_kernel_matches_numpy(lib, schedule, n, tasks):
    a = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    out = np.zeros(n, np.float32)
    lib.kiln_mlu_set_schedule(*schedule)
    assert lib.run_pipelined_sigmoid(_ptr(a), _ptr(out), n, tasks, 0) == 0, lib.kiln_mlu_last_error()
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-a)), rtol=1e-6)


def _refused(lib, call, kernel, rule, detail):
    lib.kiln_mlu_clear_error()
    try:
        assert call() != 0
        message = lib.kiln_mlu_last_error().decode()
        assert message.startswith(f"kernel {kernel}: {rule}: ") and detail in message, message
    finally:
        lib.kiln_mlu_clear_error()


@pytest.mark.parametrize("which,kernel,rule,detail", [
    (0, "unsynced_at_end", "async copy not synced", "ended with 1 __memcpy_async"),
    (1, "scalar_write_in_flight", "async copy not synced", "was written while the copy was in flight"),
    (2, "source_overwritten", "async copy not synced", "writes the source of a __memcpy_async"),
    (3, "transpose_in_place", "transpose overlap", "overlap (8 x 8)"),
    (4, "scalar_operand_length", "vector length", "__bang_gt_scalar: 40 elements"),
    (5, "scalar_load_in_flight", "async copy not synced", "scalar load: operand element"),
])
def test_planted_vector_violation_is_refused(lib, which, kernel, rule, detail):
    lib.kiln_mlu_set_schedule(0, 0)
    _refused(lib, lambda: lib.run_vector_violation(which), kernel, rule, detail)


def test_compute_before_the_sync_is_a_race(lib):
    """The pipelined kernel with its first __sync() left out: the first tile's sigmoid reads
    an in-flight destination; with it the same kernel runs clean afterwards."""
    a = np.ones(600, np.float32)
    out = np.zeros(600, np.float32)
    _refused(lib, lambda: lib.run_pipelined_sigmoid(_ptr(a), _ptr(out), 600, 4, 1), "pipelined_sigmoid",
             "async copy not synced", "__bang_active_sigmoid: operand src")
    assert lib.run_pipelined_sigmoid(_ptr(a), _ptr(out), 600, 4, 0) == 0
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-a)), rtol=1e-6)


def test_a_generated_pipeline_missing_its_sync_is_refused(tmp_path, monkeypatch):
    """The double-buffered loop without its per-tile __sync(): the next tile's load is still
    in flight when the stores of the tile computed before it are issued, and a task ends with
    copies in flight; the emulator refuses it and the step reports the rule (checked on the
    generated code, not only on hand-written kernels)."""
    from dataclasses import replace

    from runtime.abi import KilnRuntimeError
    from compiler.codegen import registry
    from compiler.codegen.mlu.backend import BACKEND

    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None], name="x")
        y = tf.sigmoid(x * 2.0, name="y")
    feed = {"x:0": np.linspace(-3, 3, 50000, dtype=np.float32)}

    def render(programs, variables, target):
        source = BACKEND.render(programs, variables, target)
        assert "__sync();  // tile k + 1 loaded" in source
        return source.replace("__sync();  // tile k + 1 loaded", "// (sync removed)")

    monkeypatch.setitem(registry._registered, "mlu", replace(BACKEND, render=render))
    art = compile_entries(graph, {"run": ([y], [], [x])}, tmp_path / "nosync", target="mlu", dump_ir=False)
    with runtime.load_artifact(art).new_state() as state:
        with pytest.raises(KilnRuntimeError, match=r"MLU emulator: kernel k_run__\w+: async copy not synced: "):
            state.run("run", feed)


def test_ops_without_an_exact_intrinsic_keep_scalar_tiles(tmp_path):
    """log has no vector form here: its whole loop (the abs and add fused with it included)
    keeps the scalar tile code (libm ``logf`` on NRAM tiles, plain ``__memcpy``s) and still
    matches the interpreter."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 5], name="x")
        y = tf.log(tf.abs(x) + 1.0)
    art = compile_entries(graph, {"run": ([y], [], [x])}, tmp_path / "log", target="mlu", dump_ir=False)
    (body,) = [b for b in _kernels((Path(art) / "src" / "model.mlu").read_text()).values() if "logf" in b]
    assert "__bang_" not in body and "__memcpy_async" not in body and "__memcpy(" in body
    feed = np.random.default_rng(3).standard_normal((300, 5)).astype(np.float32)
    with runtime.load_artifact(art).new_state() as state:
        got = list(state.run("run", {"x:0": feed}).values())[0]
    with graph.as_default(), tf.Session(config={"backend": "interpreter"}) as sess:
        want = sess.run(y, {x: feed})
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)

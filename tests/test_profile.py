"""Profiling builds (docs/performance.md): ``kiln compile --profile``, ``kiln profile``, the
kernel table, the Chrome trace, ``KILN_PROFILE=1`` sessions, and that a plain build carries
no instrumentation.  One small MLP model file is compiled once (LLVM) for the whole module."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from compiler import tf
from compiler.ir.types import N, float32
from compiler.lower import kernel_ir as K
from compiler.lower.cost import kernel_bytes, kernel_flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, BATCH, HIDDEN, FEATURES = 4, 64, 256, 64  # digits: 8x8 = 64 features, 10 classes

MODEL = f'''from compiler import tf


def build():
    x = tf.placeholder(tf.float32, [None, {FEATURES}], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    h = tf.layers.dense(x, {HIDDEN}, activation=tf.nn.relu, name="hidden")  # HIDDEN LINE
    logits = tf.layers.dense(h, 10, name="logits")  # LOGITS LINE
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = tf.reduce_mean(xent, name="loss")
    train = tf.train.AdamOptimizer(1e-3).minimize(loss)
    return {{"train": {{"feeds": [x, labels], "fetches": {{"loss": loss}}, "targets": [train]}},
            "predict": {{"feeds": [x], "fetches": {{"logits": logits}}}}}}
'''


def line_of(marker: str) -> int:
    return next(i for i, text in enumerate(MODEL.splitlines(), 1) if marker in text)


def kiln(*args, env=None):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The model compiled with --profile, then ``kiln profile`` run on it with --trace."""
    d = tmp_path_factory.mktemp("profile")
    (d / "model.py").write_text(MODEL)
    r = kiln("compile", d / "model.py", "-o", d / "art", "--profile", "--no-dump-ir")
    assert r.returncode == 0, r.stderr
    r = kiln("profile", d / "art", "--data", "digits", "--steps", STEPS, "--batch-size", BATCH,
             "--trace", d / "trace.json", "--threads")
    assert r.returncode == 0, r.stderr
    return d, r


@pytest.fixture(scope="module")
def profile(built):
    from compiler.cli_profile import profile_artifact

    d, _ = built
    return profile_artifact(d / "art", "digits", steps=STEPS, warmup=1, batch_size=BATCH)[0]


# ----------------------------------------------------------------------------- table
def test_table_counts_every_kernel_once_per_step(profile):
    from runtime.profiling import summarize

    rows, steps = summarize(profile)
    assert set(steps) == {"train"} and steps["train"][0] == STEPS and steps["train"][2] == {BATCH}
    kernels = [e for e in profile.record["events"] if e["kind"] == "kernel" and e["entry"] == "train"]
    timed = {r.name: r for r in rows if r.name != "(outside kernels)"}
    assert sorted(timed) == sorted(e["name"] for e in kernels)  # the train step has no control flow
    assert all(r.calls == STEPS and r.total_ns >= 0 for r in rows)
    assert sum(r.percent for r in rows) == pytest.approx(100.0, abs=0.01)
    assert [r.total_ns for r in rows] == sorted((r.total_ns for r in rows), reverse=True)


def test_rows_name_op_source_and_count_flops(profile):
    from runtime.profiling import summarize

    rows, _ = summarize(profile)
    forward = next(r for r in rows if r.op.endswith(" hidden/MatMul"))
    assert forward.source.endswith(f"model.py:{line_of('HIDDEN LINE')}")
    gemm = 2 * BATCH * FEATURES * HIDDEN  # per call; the fused bias+relu adds per-output work
    assert gemm * STEPS <= forward.flops <= (gemm + 4 * BATCH * HIDDEN) * STEPS
    assert forward.bytes >= 4 * (BATCH * FEATURES + FEATURES * HIDDEN + BATCH * HIDDEN) * STEPS
    grads = [r for r in rows if "hidden/MatMul_grad" in r.op]
    assert grads and all(r.source.endswith(f"model.py:{line_of('HIDDEN LINE')} (grad)") for r in grads)


def test_cli_prints_the_sorted_table(built, profile):
    _, r = built
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"entry train: {STEPS} step(s), batch {BATCH}")
    header = lines[1].split()
    assert header[:4] == ["kernel", "op", "source", "calls"] and "GFLOP/s" in header
    body = lines[3:lines.index("")]  # the kernel table ends at a blank line; --threads follows
    kernels = [e["name"] for e in profile.record["events"] if e["kind"] == "kernel" and e["entry"] == "train"]
    assert len(body) == len(kernels) + 1  # and the (outside kernels) row
    assert all(line.split()[-6] == str(STEPS) for line in body if not line.startswith("(outside"))
    assert "wrote a trace" in r.stderr
    assert "share of each kernel's time its threads spent" in r.stdout


def test_thread_table_shares_are_fractions_of_the_calls(profile):
    from runtime.profile_report import thread_table

    lines = thread_table(profile).splitlines()
    if lines[0].startswith("no kernel"):  # one core or OMP_NUM_THREADS=1: no team ran
        assert not any(profile.is_chunk(i) for i in profile.events["id"])
        return
    assert lines[0].split()[:3] == ["entry", "kernel", "total"]
    for line in lines[2:]:
        shares = [float(x) for x in line.split()[4:]]
        assert shares and all(0.0 <= x <= 100.0 for x in shares), line


def test_a_full_buffer_drops_events_and_says_so(built):
    import runtime
    from runtime.profile_report import profile_table
    from runtime.profiling import Recorder

    d, _ = built
    art = runtime.load_artifact(d / "art")

    def record(capacity):
        recorder = Recorder(art, capacity=capacity)
        try:
            with art.new_state() as state:
                for _ in range(5):
                    state.run("predict", {"x:0": np.zeros((2, FEATURES), np.float32)})
            return recorder.collect()
        finally:
            recorder.close()
    everything, cut = record(1000), record(10)
    assert everything.dropped == 0 and len(everything.events) > 10
    assert len(cut.events) == 10 and cut.dropped == len(everything.events) - 10
    assert f"warning: {cut.dropped} event(s) did not fit" in profile_table(cut)


# ----------------------------------------------------------------------------- trace
def check_chrome_trace(trace: dict) -> None:
    """The essentials of the Trace Event Format's JSON object form that chrome://tracing and
    Perfetto rely on."""
    assert isinstance(trace, dict) and isinstance(trace["traceEvents"], list)
    last_ts, named = {}, set()
    for ev in trace["traceEvents"]:
        assert isinstance(ev["name"], str) and ev["ph"] in ("X", "M")
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int)
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name") and isinstance(ev["args"]["name"], str)
            if ev["name"] == "thread_name":
                named.add((ev["pid"], ev["tid"]))
            continue
        assert isinstance(ev["cat"], str) and isinstance(ev["args"], dict)
        assert isinstance(ev["ts"], (int, float)) and isinstance(ev["dur"], (int, float))
        assert ev["ts"] >= 0 and ev["dur"] >= 0
        track = (ev["pid"], ev["tid"])
        assert ev["ts"] >= last_ts.get(track, 0.0), "timestamps go back on a track"
        last_ts[track] = ev["ts"]
    assert set(last_ts) <= named, "a track without a thread_name"


def test_trace_file_follows_the_chrome_trace_schema(built, profile):
    d, _ = built
    with open(d / "trace.json") as f:
        trace = json.load(f)
    check_chrome_trace(trace)
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    steps = [e for e in complete if e["cat"] == "step"]
    calls = [e for e in complete if e["cat"] == "kernel"]
    assert len(steps) == STEPS and all(e["args"]["batch"] == BATCH for e in steps)
    kernels = [e for e in profile.record["events"] if e["kind"] == "kernel" and e["entry"] == "train"]
    assert len(calls) == STEPS * len(kernels)
    assert all({"op", "source"} <= set(e["args"]) and e["tid"] == 0 for e in calls)


def test_trace_nests_calls_in_steps_and_chunks_in_calls(profile):
    from runtime.profile_report import chrome_trace

    complete = [e for e in chrome_trace(profile)["traceEvents"] if e["ph"] == "X"]
    eps = 1e-3  # µs: rounding of ns to µs floats

    def inside(ev, outer):
        return outer["ts"] - eps <= ev["ts"] and ev["ts"] + ev["dur"] <= outer["ts"] + outer["dur"] + eps
    steps = [e for e in complete if e["cat"] == "step"]
    calls = [e for e in complete if e["cat"] == "kernel"]
    assert all(any(inside(c, s) for s in steps) for c in calls)
    chunks = [e for e in complete if e["cat"] == "chunk"]  # threads of parallel loops / GEMMs
    for chunk in chunks:
        assert any(c["name"] == chunk["name"] and inside(chunk, c) for c in calls), chunk
    if (os.cpu_count() or 1) > 1 and os.environ.get("OMP_NUM_THREADS", "") != "1":
        # the hidden layer's GEMM (64x64x256) is threaded: a worker track besides the caller's
        assert {e["tid"] for e in chunks} >= {0, 1}


# ----------------------------------------------------------------------------- plain builds
def _programs():
    """The model's kernel programs and variables (no LLVM compile)."""
    from compiler.compile import finish_entry
    from compiler.frontend.compile_graph import variable_infos
    from compiler.ir.from_graph import lower_graph

    scope: dict = {}
    with tf.Graph().as_default() as g:
        exec(compile(MODEL, "model.py", "exec"), scope)
        entry = scope["build"]()["train"]
        fn = lower_graph(list(entry["fetches"].values()), entry["targets"], entry["feeds"], name="train")
        lowered = finish_entry("train", fn)
        variables = [(v.name, v.dtype, v.shape) for v in variable_infos(g, [p.key for p in fn.state_in()])]
    return {"train": lowered.program}, variables


def test_plain_module_has_no_instrumentation():
    from compiler.codegen.llvm.module import build_module

    programs, variables = _programs()
    plain, profiled = (str(build_module(programs, variables, profile=p)) for p in (False, True))
    for symbol in ("kiln_profile_attach", "kiln_profile_count", "kiln.prof.", "clock_gettime"):
        assert symbol not in plain and symbol in profiled
    assert plain == str(build_module(programs, variables))


def test_unprofiled_artifact_is_refused_with_the_way_to_build_one(built, tmp_path):
    import shutil

    import runtime

    d, _ = built
    shutil.copytree(d / "art", tmp_path / "plain")
    m = runtime.read_manifest(tmp_path / "plain")
    del m["profile"]
    runtime.manifest.write_manifest(tmp_path / "plain", m)
    r = kiln("profile", tmp_path / "plain", "--data", "digits")
    assert r.returncode == 2 and "without profiling" in r.stderr and "--profile" in r.stderr


def test_profile_builds_are_cpu_only(tmp_path, capsys):
    from compiler.cli import main

    assert main(["compile", str(tmp_path / "model.py"), "-o", str(tmp_path / "out"), "--target", "cuda",
                 "--profile"]) == 2
    assert "--target cpu only, not cuda" in capsys.readouterr().err


def test_device_artifacts_are_not_profiled():
    from runtime.profiling import NotProfiledError, profile_record

    with pytest.raises(NotProfiledError, match="CPU artifacts only"):
        profile_record({"target": {"kind": "cuda"}})


# ----------------------------------------------------------------------------- KILN_PROFILE
def test_kiln_profile_session_writes_the_table_and_trace(tmp_path, monkeypatch):
    out, trace = tmp_path / "profile.txt", tmp_path / "trace.json"
    monkeypatch.setenv("KILN_PROFILE", "1")
    monkeypatch.setenv("KILN_PROFILE_OUT", str(out))
    monkeypatch.setenv("KILN_PROFILE_TRACE", str(trace))
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 16], name="x")
        w = tf.Variable(np.full((16, 8), 0.5, np.float32))
        total = tf.reduce_sum(tf.nn.relu(tf.matmul(x, w)))
        with tf.Session(config={"backend": "compiled", "cache_dir": str(tmp_path / "cache")}) as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(3):
                value = sess.run(total, {x: np.ones((4, 16), np.float32)})
    assert value == pytest.approx(4 * 8 * 16 * 0.5)
    text = out.read_text()
    assert "entry run: 3 step(s), batch 4" in text and "MatMul" in text
    check_chrome_trace(json.loads(trace.read_text()))


def test_kernels_in_a_while_loop_count_every_iteration(tmp_path, monkeypatch):
    out = tmp_path / "profile.txt"
    monkeypatch.setenv("KILN_PROFILE", "1")
    monkeypatch.setenv("KILN_PROFILE_OUT", str(out))
    iterations, runs = 5, 2
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        _, y = tf.while_loop(lambda i, a: i < iterations, lambda i, a: (i + 1, a * 1.5 + 1.0), [tf.constant(0), x])
        line = sys._getframe().f_lineno - 1
        with tf.Session(config={"backend": "compiled", "cache_dir": str(tmp_path / "cache")}) as sess:
            for _ in range(runs):
                sess.run(y, {x: np.ones((3, 4), np.float32)})
    rows = {line.split()[2]: line.split() for line in out.read_text().splitlines() if " while/" in line}
    assert rows["while/Mul"][-6] == str(runs * iterations)  # the body, once per iteration
    assert rows["while/Less"][-6] == str(runs * (iterations + 1))  # the cond, once more
    assert rows["while/Mul"][3].endswith(f"test_profile.py:{line}")  # ops of a loop body too


def test_interpreter_sessions_ignore_kiln_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_PROFILE", "1")
    monkeypatch.setenv("KILN_PROFILE_OUT", str(tmp_path / "profile.txt"))
    with tf.Graph().as_default():
        with tf.Session(config={"backend": "interpreter"}) as sess:
            assert sess.run(tf.constant(2.0) * 3.0) == 6.0
    assert not (tmp_path / "profile.txt").exists()


# ----------------------------------------------------------------------------- cost
def test_cost_counts_loops_gemms_and_bytes():
    i, j = K.Var("i", None), K.Var("j", None)
    buffers = {name: K.BufferDecl(name, float32, shape, "arena") for name, shape in
               (("a", (N, 4)), ("b", (4, 3)), ("c", (N, 3)))}
    load = lambda buf, idx: K.Load(buf, idx, float32)
    add = K.Op("add", (load("a", i), K.Const(1.0, float32)), float32)
    loop = K.Kernel("ew", ["a"], ["c"], K.For(i, K.Const(0, None), K.Op("mul", (K.Batch(None), K.Const(4, None)), None),
                                              K.Store("c", i, K.Op("exp", (add,), float32))))
    assert kernel_flops(loop) == [0, 8]  # 4N iterations of add + exp
    assert kernel_bytes(loop, buffers) == [0, 16 + 12]
    gemm = K.Gemm(K.Batch(None), K.Const(3, None), K.Const(4, None), K.Operand("a", K.Const(0, None), K.Const(4, None)),
                  K.Operand("b", K.Const(0, None), K.Const(3, None)), K.Operand("c", K.Const(0, None), K.Const(3, None)))
    assert kernel_flops(K.Kernel("mm", ["a", "b"], ["c"], gemm)) == [0, 2 * 3 * 4]
    assert kernel_bytes(K.Kernel("mm", ["a", "b"], ["c"], gemm), buffers) == [48, 16 + 12]
    relu = K.Store("a", K.Var("row", None), K.Op("maximum", (K.Var("acc", float32), K.Const(0.0, float32)), float32))
    fused = K.Gemm(gemm.m, gemm.n, gemm.k, gemm.a, gemm.b, gemm.c, epilogue=relu)  # stores a, not c
    assert kernel_flops(K.Kernel("mm", ["a", "b"], ["c", "a"], fused)) == [0, 2 * 3 * 4 + 3]
    assert kernel_bytes(K.Kernel("mm", ["a", "b"], ["c", "a"], fused), buffers) == [48, 16 + 16]
    triangular = K.For(j, K.Const(0, None), i, K.Store("c", j, add))  # trip count depends on i
    assert kernel_flops(K.Kernel("tri", ["a"], ["c"], K.For(i, K.Const(0, None), K.Const(5, None), triangular))) is None

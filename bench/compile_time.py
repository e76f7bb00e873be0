"""Compile time of an unrolled LSTM train step against its number of steps (issue 12), and
of the seed-002 CNN train step cold and from the compile cache (issue 14).

    python bench/compile_time.py [--steps 8,28,112] [--repeats 3] [--hidden 128] [--batch 128]
    python bench/compile_time.py --model cnn [--repeats 3]

``--model cnn`` (``bench/cnn_model.py``: ``kiln_models.build("cnn")`` with a graph seed)
times four things, each in fresh subprocesses, medians over the repeats: ``kiln compile
bench/cnn_model.py -o DIR`` with an empty compile cache (cold) and again with the cache the
cold run filled (cached), and the first ``sess.run([loss, train])`` of a compiled
``tf.Session`` (after the interpreted initializer run), cold and cached likewise, after
writing Kiln's bytecode as ``pip install`` does (``--no-bytecode``: not).  Columns:
the wall seconds of the whole command (Python start, imports and the model file included)
or of the ``sess.run``; the compile's own seconds (``kiln compile``: the manifest's
``build.cache_s``, for a hit the lookup and copy; ``Session.run``: the first run less the
median of the next three, i.e. without the step itself); CPU seconds; whether the cache
hit; the stages of the build record (for a hit, those of the build it reuses).

The model (``tests/models.lstm_tensors``) is the BasicLSTMCell computation written with plain
TF1 ops over MNIST rows: one shared kernel [28+hidden, 4*hidden] and bias, gates i, j, f, o,
forget bias 1.0, softmax over 10 classes, Adam.  Each (steps, repeat) runs in a fresh
subprocess: it builds the graph, opens ``tf.Session(config={"backend": "compiled",
"cache_dir": <fresh empty folder>})`` (nothing is reused), initializes the variables (that
run is interpreted), then times the first ``sess.run([loss, train], feeds)``: lowering the
graph, the passes, kernel lowering, rendering, LLVM and the link, and one step.

The table shows medians over the repeats: the wall seconds of that first run, the CPU seconds
of the process and its children (the machine may be shared: CPU time is the steadier
number), the split by stage (wall seconds, from the artifact manifest's ``build`` record),
the number of kernels of the step and of distinct kernel functions
(``compiler/lower/dedup.py``), and wall seconds per unrolled step.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STAGES = ["pipeline_s", "lowering_s", "render_s", "llvm_optimize_s", "llvm_codegen_s"]


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the linker)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _kernel_counts(t) -> tuple:
    """(kernels, distinct kernel functions) of the train step, compiled for the CPU."""
    from compiler.codegen.registry import make_target
    from compiler.compile import finish_entry, plan_entry
    from compiler.ir.from_graph import lower_graph

    fn = lower_graph([t["loss"]], [t["train"]], [t["x"], t["labels"]], name="train")
    program = plan_entry(finish_entry("train", fn), make_target("cpu")).program
    try:
        from compiler.lower.dedup import kernel_functions
    except ImportError:  # a Kiln before kernel functions: every kernel is its own
        return len(program.kernels), len(program.kernels)
    return len(program.kernels), len(kernel_functions(program)[0])


def worker(steps: int, hidden: int, batch: int) -> None:
    """One measurement; prints one JSON line."""
    sys.path.insert(0, ROOT)
    from tests.models import lstm_feeds, lstm_tensors

    from compiler import tf

    cache = tempfile.mkdtemp(prefix="kiln-compile-time-")
    atexit.register(shutil.rmtree, cache, True)
    with tf.Graph().as_default():
        t = lstm_tensors(steps, hidden)
        feeds = lstm_feeds(steps, batch)
        with tf.Session(config={"backend": "compiled", "cache_dir": cache}) as sess:
            sess.run(tf.global_variables_initializer())
            cpu0, wall0 = _cpu(), time.perf_counter()
            loss, _ = sess.run([t["loss"], t["train"]], feeds)
            wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        builds = []
        for entry in os.listdir(cache):
            manifest = os.path.join(cache, entry, "manifest.json")
            if os.path.isfile(manifest):
                with open(manifest) as f:
                    builds.append(json.load(f)["build"])
        kernels, distinct = _kernel_counts(t)
    build = max(builds, key=lambda b: b.get("total_s", 0.0) + b.get("pipeline_s", 0.0))
    print(json.dumps({"wall": wall, "cpu": cpu, "loss": float(loss), "kernels": kernels,
                      "distinct": distinct, **{k: build.get(k, 0.0) for k in STAGES}}))


def measure(steps: int, hidden: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(steps), "--hidden", str(hidden), "--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{steps} steps failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def session_worker(model: str) -> None:
    """The first compiled ``sess.run`` of the seed-002 model (cache: ``$KILN_CACHE_DIR``);
    prints one JSON line."""
    sys.path.insert(0, ROOT)
    from bench.kiln_models import build
    from bench.peers import data

    from compiler import cache, tf

    tf.set_random_seed(2)
    feeds, loss, train, extra = build(model)
    x, y = data(50)
    feed = {feeds[0]: x, feeds[1]: y, **extra}
    with tf.Session(config={"backend": "compiled"}) as sess:
        t0 = time.perf_counter()
        sess.run(tf.global_variables_initializer())
        init_s = time.perf_counter() - t0
        cpu0, wall0 = _cpu(), time.perf_counter()
        sess.run([loss, train], feed)
        wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        steps = []
        for _ in range(3):
            t0 = time.perf_counter()
            sess.run([loss, train], feed)
            steps.append(time.perf_counter() - t0)
    print(json.dumps({"wall": wall, "own": wall - statistics.median(steps), "cpu": cpu, "init_s": init_s,
                      "hit": cache.stats["hit"] > 0}))


def _compile_run(cache_dir: str, out: str) -> dict:
    """``kiln compile bench/cnn_model.py -o out`` in a subprocess; its wall/CPU seconds and build record."""
    env = dict(os.environ, KILN_CACHE_DIR=cache_dir, PYTHONPATH=ROOT)
    env.pop("KILN_CACHE", None)
    kids0, wall0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", os.path.join(HERE, "cnn_model.py"),
                           "-o", out], capture_output=True, text=True, cwd=ROOT, env=env)
    wall, kids = time.perf_counter() - wall0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"kiln compile failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "manifest.json")) as f:
        build = json.load(f)["build"]
    cpu = kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime
    return {"wall": wall, "own": build["cache_s"], "cpu": cpu, "hit": build.get("cache") == "hit",
            **{k: build.get(k, 0.0) for k in STAGES}}


def _session_run(cache_dir: str) -> dict:
    env = dict(os.environ, KILN_CACHE_DIR=cache_dir, PYTHONPATH=ROOT)
    env.pop("KILN_CACHE", None)
    proc = subprocess.run([sys.executable, __file__, "--session-worker", "cnn"], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    if proc.returncode:
        raise RuntimeError(f"session worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def byte_compile() -> None:
    """Write the bytecode of Kiln's modules and the bench's (``__pycache__``), as ``pip
    install`` does: the timed processes then import as an installed Kiln would, also where
    ``PYTHONDONTWRITEBYTECODE`` is set (then every start recompiled every module: ~0.2 s)."""
    import compileall

    for folder in ("compiler", "runtime", "bench"):
        compileall.compile_dir(os.path.join(ROOT, folder), quiet=1)


def cnn_table(repeats: int, bytecode: bool = True) -> dict:
    """The four rows of ``--model cnn`` (see the module doc)."""
    if bytecode:
        byte_compile()
    runs = {k: [] for k in ("kiln compile cold", "kiln compile cached", "Session.run cold", "Session.run cached")}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="kiln-compile-time-") as tmp:
            for kind in ("cold", "cached"):
                runs[f"kiln compile {kind}"].append(_compile_run(os.path.join(tmp, "cache"), os.path.join(tmp, f"out-{kind}")))
        with tempfile.TemporaryDirectory(prefix="kiln-compile-time-") as tmp:
            for kind in ("cold", "cached"):
                runs[f"Session.run {kind}"].append(_session_run(os.path.join(tmp, "cache")))
    head = ["what", "wall s", "own s", "cpu s", "hit", *[s[:-2] for s in STAGES]]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    rows = {}
    for name, rs in runs.items():
        med = {k: statistics.median(float(r.get(k, 0.0)) for r in rs) for k in ["wall", "own", "cpu", *STAGES]}
        med["hit"] = all(r["hit"] for r in rs)
        rows[name] = med
        print(" | ".join([name, *(f"{med[k]:.2f}" for k in ("wall", "own", "cpu")), "yes" if med["hit"] else "no",
                          *(f"{med[s]:.2f}" for s in STAGES)]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="8,28,112", help="comma-separated unrolled step counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", help="also write the medians here")
    ap.add_argument("--model", choices=["lstm", "cnn"], default="lstm")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="--model cnn: do not write Kiln's bytecode first (see byte_compile)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--session-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.hidden, args.batch)
        return 0
    if args.session_worker:
        session_worker(args.session_worker)
        return 0
    if args.model == "cnn":
        rows = cnn_table(args.repeats, bytecode=not args.no_bytecode)
        if args.json:
            _write_json(args.json, rows)
        return 0
    head = ["steps", "wall s", "cpu s", *[s[:-2] for s in STAGES], "kernels", "distinct", "wall s/step"]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    rows = {}
    for steps in [int(s) for s in args.steps.split(",")]:
        runs = [measure(steps, args.hidden, args.batch) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "loss"}
        rows[steps] = med
        cells = [str(steps), f"{med['wall']:.2f}", f"{med['cpu']:.2f}", *[f"{med[s]:.2f}" for s in STAGES],
                 str(int(med["kernels"])), str(int(med["distinct"])), f"{med['wall'] / steps:.3f}"]
        print(" | ".join(cells), flush=True)
    if args.json:
        _write_json(args.json, rows)
    return 0


def _write_json(path, rows) -> None:
    sys.path.insert(0, ROOT)
    from runtime.files import atomic_write

    atomic_write(path, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())

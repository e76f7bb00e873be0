"""Compile time of an unrolled LSTM train step against its number of steps (issue 12).

    python bench/compile_time.py [--steps 8,28,112] [--repeats 3] [--hidden 128] [--batch 128]

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
import json
import os
import resource
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="8,28,112", help="comma-separated unrolled step counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", help="also write the medians here")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.hidden, args.batch)
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
        sys.path.insert(0, ROOT)
        from runtime.files import atomic_write

        atomic_write(args.json, json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

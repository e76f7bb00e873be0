"""Where a benchmarked train step's time goes: the kernel table of ``kiln profile`` for a model
of bench/kiln_models.py (the seed-002 CNN at batch 50 by default), and the cost of the
instrumentation (docs/performance.md).

    python bench/profile_step.py [--model cnn] [--batch 50] [--steps 20] [--trace FILE] [--overhead]

The train step is compiled with ``profile=True`` (``kiln compile --profile``), fed the
benchmark's random data (bench/peers.py; dropout's keep_prob 0.5), warmed up, and ``--steps``
steps are recorded.  ``--overhead`` also compiles a plain build and times both (median step
over ``--steps`` steps, in alternating blocks so that a busy machine hurts both alike).
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def compile_step(model: str, batch: int, profile: bool):
    """The model's train step compiled (``profile``: instrumented); returns (state, feed dict)."""
    from bench.kiln_models import build
    from bench.peers import data
    from compiler import tf
    from compiler.frontend.compile_graph import compile_entries
    from runtime import load_artifact

    graph = tf.Graph()
    with graph.as_default():
        feeds, loss, train, extra = build(model)
    out = tempfile.mkdtemp(prefix=f"kiln-profile-{model}-")
    atexit.register(shutil.rmtree, out, True)
    art = load_artifact(compile_entries(graph, {"train": ([loss], [train], list(feeds))}, out, profile=profile))
    x, y = data(batch)
    return art, art.new_state(), {feeds[0].name: x, feeds[1].name: y, **extra}


def step_times(state, feed, steps: int) -> list:
    """Seconds per step of ``steps`` train steps."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state.run("train", feed)
        times.append(time.perf_counter() - t0)
    return times


def overhead(model, batch, steps, profiled_state, feed) -> str:
    """Median step of a plain and of the profiling build: blocks of 5 steps, alternating which
    build goes first."""
    _, plain, _ = compile_step(model, batch, profile=False)
    step_times(plain, feed, 2)
    runs = {"plain": [], "profile": []}
    states = {"plain": plain, "profile": profiled_state}
    for block in range(max(1, steps // 5)):
        for name in sorted(states, reverse=bool(block % 2)):
            runs[name] += step_times(states[name], feed, 5)
    med = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
    return (f"median step over {len(runs['plain'])} steps: plain {med['plain']:.2f} ms, "
            f"profiling build {med['profile']:.2f} ms ({100 * (med['profile'] / med['plain'] - 1):+.1f}%)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=None, help="rows to show (default: all)")
    parser.add_argument("--trace", metavar="FILE", help="also write the Chrome trace here")
    parser.add_argument("--overhead", action="store_true", help="also time a plain build")
    args = parser.parse_args(argv)
    from runtime.profile_report import profile_table, write_trace
    from runtime.profiling import Recorder

    art, state, feed = compile_step(args.model, args.batch, profile=True)
    recorder = Recorder(art)
    step_times(state, feed, args.warmup)
    recorder.reset()
    step_times(state, feed, args.steps)
    profile = recorder.collect()
    print(f"{args.model} train step, batch {args.batch}, {os.cpu_count()} CPU(s), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(all)')}")
    print(profile_table(profile, limit=args.top), end="")
    if args.trace:
        write_trace(profile, args.trace)
        print(f"trace: {args.trace}")
    if args.overhead:
        print(overhead(args.model, args.batch, args.steps, state, feed))
    recorder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What splitting reductions over leading axes into parts (compiler/lower/split_reduce.py)
buys: the train step of a bench/kiln_models.py model built twice in one process, with the
CPU's ``reduction_parts`` (the split) and with 0 (one thread per reduction, as before), then
run in alternating blocks of steps so that a busy machine hurts both builds alike.

    OMP_NUM_THREADS=2 python bench/reduction_parts.py [--model cnn] [--batch 50] [--blocks 10]

Prints, per bias-gradient kernel, the median and the fastest call of each build (from the
profiling build's per-call events) and the median step.  On a shared machine the median
shows contention (a descheduled thread stalls every threaded kernel), the fastest call what
the kernel does with its threads running.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ["KILN_CACHE"] = "0"  # both builds share a cache key: build each afresh


def builds(model: str, batch: int) -> dict:
    """``{name: (state, feed, recorder)}`` of the profiling builds without and with parts."""
    import compiler.codegen.llvm.capabilities as cpu
    from bench.profile_step import compile_step
    from runtime.profiling import Recorder

    parts, out = cpu.REDUCTION_PARTS, {}
    try:
        for name, value in (("one thread", 0), ("in parts", parts)):
            cpu.REDUCTION_PARTS = value
            art, state, feed = compile_step(model, batch, profile=True)
            out[name] = (state, feed, Recorder(art))
    finally:
        cpu.REDUCTION_PARTS = parts
    return out


def record(state, feed, recorder, steps: int, calls: dict) -> list:
    """Run ``steps`` steps (after 2 unrecorded ones); add each bias-gradient call's
    microseconds to ``calls``; returns the step times in ms."""
    from bench.profile_step import step_times

    step_times(state, feed, 2)
    recorder.reset()
    times = step_times(state, feed, steps)
    profile = recorder.collect()
    for ev in profile.events:
        meta = profile.meta(ev["id"])
        if not profile.is_chunk(ev["id"]) and meta["kind"] == "kernel" and "BiasAdd_grad" in meta["name"]:
            calls.setdefault(meta["name"], []).append(int(ev["end"] - ev["start"]) / 1e3)
    return [t * 1e3 for t in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=10, help="blocks of 5 steps per build")
    args = parser.parse_args(argv)
    runs = builds(args.model, args.batch)
    calls = {name: {} for name in runs}
    steps = {name: [] for name in runs}
    for block in range(args.blocks):
        for name in sorted(runs, reverse=bool(block % 2)):
            steps[name] += record(*runs[name], 5, calls[name])
    base, split = runs
    print(f"{args.model} train step, batch {args.batch}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(all)')}")
    for kernel in sorted(calls[base]):
        a, b = calls[base][kernel], calls[split][kernel]
        ma, mb, fa, fb = statistics.median(a), statistics.median(b), min(a), min(b)
        print(f"  {kernel:42s} median {ma:8.1f} -> {mb:8.1f} us ({ma / mb:4.2f}x)   "
              f"fastest {fa:8.1f} -> {fb:8.1f} us ({fa / fb:4.2f}x)")
    print(f"  median step: {base} {statistics.median(steps[base]):.2f} ms, {split} {statistics.median(steps[split]):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Kiln's sgemm on the GEMM shapes of the seed CNN's b50 train step, one thread, CPU time.

    python bench/sgemm_shapes.py [--reps 10] [--against /path/to/other/checkout]

``kiln_sgemm`` is called directly (no epilogue) with ``nthreads = 1`` and timed by the
calling thread's CPU time (``time.thread_time``: on a loaded shared machine the wall clock
mostly measures the load).  ``--against`` also builds the engine of another checkout (say a
``git worktree`` of main) and alternates the two, blocks of 3 calls each, so both see the
same load; every result is checked against numpy.  Prints the median ms per call (best in
brackets) and the change.  Results: docs/train-step-vs-peers.md ("In-place A tiles").
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: (M, N, K, transA, transB, what): conv2 5x5x32->64 on 14x14, conv1 5x5x1->32 on 28x28,
#: fc1 3136->1024, logits 1024->10, batch 50
SHAPES = [(9800, 64, 800, 0, 0, "conv2 forward"),
          (25, 32, 39200, 1, 0, "conv1 filter gradient"),
          (800, 64, 9800, 1, 0, "conv2 filter gradient"),
          (9800, 800, 64, 0, 1, "conv2 input gradient"),
          (50, 1024, 3136, 0, 0, "fc1 forward"),
          (3136, 1024, 50, 1, 0, "fc1 weight gradient"),
          (50, 3136, 1024, 0, 1, "fc1 input gradient"),
          (50, 10, 1024, 0, 0, "logits forward")]

_BUILD = ("import sys; sys.path.insert(0, sys.argv[1]); import llvmlite.ir as ir\n"
          "from compiler.codegen.llvm import build, gemm\n"
          "m = ir.Module(name='sgemm_shapes'); gemm.emit_sgemm(m)\n"
          "print(build.compile_module(m, sys.argv[2]).path)")


def build_in(root: str, path: str) -> str:
    """Compile the ``kiln_sgemm`` of the checkout at ``root`` (its own ``compiler``, in a
    subprocess) into ``path``; return the library's path."""
    out = subprocess.run([sys.executable, "-c", _BUILD, root, path], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def measure(fns: dict, reps: int):
    """Per shape: {name: [ms per call]} over ``reps`` rounds of 3 calls per library."""
    import numpy as np

    from bench.sgemm import time_block
    rng = np.random.default_rng(0)
    for m, n, k, ta, tb, what in SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
        outs = {name: np.empty((m, n), np.float32) for name in fns}
        calls = {name: (lambda f=f, c=outs[name]: f(
            m, n, k, a.ctypes.data, a.shape[1], ta, b.ctypes.data, b.shape[1], tb,
            c.ctypes.data, n, 0.0, 1)) for name, f in fns.items()}
        times = {name: [] for name in fns}
        for rnd in range(reps):
            for name in fns:
                times[name] += time_block(calls[name], 3, warmup=2 if rnd == 0 else 0,
                                          clock=time.thread_time)
        for name, c in outs.items():
            err = float(np.abs(c - want).max() / max(1.0, np.abs(want).max()))
            if err > 1e-4:
                raise SystemExit(f"{what} ({name}): relative error {err:.2e}")
        yield (m, n, k, ta, tb, what), {name: [t * 1e3 for t in ts] for name, ts in times.items()}


def main(argv=None) -> None:
    from compiler.codegen.llvm import gemm
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=10, help="rounds of 3 calls per library")
    p.add_argument("--against", help="another checkout whose engine runs alongside")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kiln_bench_") as tmp:
        roots = {"this": ROOT} | ({"against": os.path.abspath(args.against)} if args.against else {})
        fns = {name: gemm.bind(ctypes.CDLL(build_in(root, os.path.join(tmp, f"{name}.so"))))
               for name, root in roots.items()}
        head = " | ".join(f"{name} ms" for name in fns) + (" | change" if args.against else "")
        print(f"| GEMM | M x N x K, op | {head} |\n|---|---|" + "---|" * (len(fns) + bool(args.against)))
        for (m, n, k, ta, tb, what), ms in measure(fns, args.reps):
            cells = [f"{statistics.median(t):.2f} ({min(t):.2f})" for t in ms.values()]
            if args.against:
                change = statistics.median(ms["this"]) / statistics.median(ms["against"]) - 1
                cells.append(f"{change:+.0%}")
            op = ("Aᵀ" if ta else "A") + ("Bᵀ" if tb else "B")
            print(f"| {what} | {m} x {n} x {k}, {op} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

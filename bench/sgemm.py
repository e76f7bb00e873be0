"""Kiln's generated sgemm against numpy's BLAS (OpenBLAS), GFLOP/s per size and thread count.

    python bench/sgemm.py [--sizes 256,512,1024,1152] [--threads 1,2] [--reps 7] [--trans nn]
                          [--clock wall|cpu] [--config kc=256,prefetch=0]

The library is compiled once; each thread count runs in its own subprocess whose
environment fixes numpy's threads (``OPENBLAS_NUM_THREADS``, set before numpy is
imported) and drops ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``, which may be set here
and would slow OpenBLAS down.  In a worker, blocks of Kiln runs and of numpy runs alternate (two
each, warmup first), so both see the same machine load; the table gives the medians
(and the best run).  ``--clock cpu`` times the 1-thread rows with the calling thread's
CPU time (both libraries then run on that thread), which leaves out the time the OS gave
to other processes: on a busy shared machine the wall-clock 1-thread ratio mostly
measures the load.  Rows with more threads are always timed by the wall clock.
``--config`` overrides fields of the host's ``GemmConfig`` (integers) to measure other
blockings against the default.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_config(spec: str):
    """The host's ``GemmConfig`` with ``spec``'s ``field=int`` overrides (comma-separated)."""
    import dataclasses

    from compiler.codegen.llvm import gemm
    cfg = gemm.config_for()
    if not spec:
        return cfg
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        if key not in fields or not value.lstrip("-").isdigit():
            raise SystemExit(f"--config: expected FIELD=INT with FIELD in {sorted(fields)}, "
                             f"got {item!r}")
        changes[key] = int(value)
    try:
        return dataclasses.replace(cfg, **changes)
    except ValueError as e:  # the blocking's own consistency check
        raise SystemExit(f"--config: {e}") from None


def build_library(out_dir: str, cfg) -> str:
    """Compile ``kiln_sgemm`` with blocking ``cfg``; return the shared library's path."""
    import llvmlite.ir as ir
    from compiler.codegen.llvm import build, gemm
    module = ir.Module(name="bench_sgemm")
    gemm.emit_sgemm(module, cfg=cfg)
    res = build.compile_module(module, os.path.join(out_dir, "sgemm.so"))
    t = res.timings
    print(f"built for {cfg} in "
          + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in t.items()), file=sys.stderr)
    return res.path


def worker_env(threads: int) -> dict:
    """Environment of a worker: numpy's BLAS threads fixed, tuning overrides removed."""
    env = dict(os.environ)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(var, None)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def time_block(call, reps: int, warmup: int = 2, clock=time.perf_counter):
    """Times (s, by ``clock``) of ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(reps):
        t0 = clock()
        call()
        times.append(clock() - t0)
    return times


def time_pair(kiln_call, numpy_call, reps: int, rounds: int = 2, clock=time.perf_counter):
    """Kiln and numpy timed in alternating blocks (``rounds`` each, ``reps`` runs per block).

    Blocks, not single calls, alternate: each library's idle threads spin for a while
    after a parallel region (libgomp, OpenBLAS), and on a machine with few cores that
    spinning would slow the other library's next call.  A pause between blocks lets
    them go to sleep; alternating blocks spreads slow phases of a shared machine evenly.
    """
    tk, tn = [], []
    for _ in range(rounds):
        for call, times in ((kiln_call, tk), (numpy_call, tn)):
            time.sleep(0.3)
            times += time_block(call, reps, clock=clock)
    return tk, tn


def run_worker(lib_path: str, threads: int, sizes, reps: int, trans: str,
               clock_name: str = "wall") -> None:
    """Measure every size at ``threads`` threads; print one JSON line per size."""
    import ctypes

    import numpy as np
    from compiler.codegen.llvm import gemm
    fn = gemm.bind(ctypes.CDLL(lib_path))
    ta, tb = int(trans[0] == "t"), int(trans[1] == "t")
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c, c_np = np.empty((n, n), np.float32), np.empty((n, n), np.float32)
        opa, opb = (a.T if ta else a), (b.T if tb else b)

        def kiln():
            fn(n, n, n, a.ctypes.data, n, ta, b.ctypes.data, n, tb, c.ctypes.data, n, 0.0,
               threads)

        def numpy():
            np.matmul(opa, opb, out=c_np)

        cpu = clock_name == "cpu" and threads == 1
        tk, tn = time_pair(kiln, numpy, reps, clock=time.thread_time if cpu else time.perf_counter)
        err = float(np.abs(c - c_np).max() / max(1.0, np.abs(c_np).max()))
        flop = 2.0 * n ** 3
        print(json.dumps(dict(size=n, threads=threads, kiln=flop / np.median(tk) / 1e9,
                              numpy=flop / np.median(tn) / 1e9, kiln_best=flop / min(tk) / 1e9,
                              numpy_best=flop / min(tn) / 1e9, rel_err=err,
                              clock="cpu" if cpu else "wall")), flush=True)


def print_table(rows, trans: str) -> None:
    """The results as a Markdown table (GFLOP/s)."""
    print(f"\nsgemm {trans.upper()} (C = op(A) op(B)), GFLOP/s, "
          "median of runs (best in brackets)\n")
    print("| size | threads | clock | Kiln | numpy (OpenBLAS) | Kiln / numpy |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}³ | {r['threads']} | {r['clock']} | {r['kiln']:.1f} "
              f"({r['kiln_best']:.1f}) | {r['numpy']:.1f} ({r['numpy_best']:.1f}) | "
              f"{r['kiln'] / r['numpy']:.2f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,512,1024,1152")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--trans", default="nn", choices=["nn", "tn", "nt", "tt"])
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: time 1-thread rows by the thread's CPU time")
    p.add_argument("--config", default="",
                   help="GemmConfig overrides, e.g. kc=256,kc_few=0 (default: the host's)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # library path, in a subprocess
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        run_worker(args.worker, int(args.threads), sizes, args.reps, args.trans, args.clock)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln_bench_") as tmp:
        lib = build_library(tmp, parse_config(args.config))
        for t in (int(x) for x in args.threads.split(",")):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", lib, "--threads",
                   str(t), "--sizes", args.sizes, "--reps", str(args.reps), "--trans", args.trans,
                   "--clock", args.clock]
            out = subprocess.run(cmd, env=worker_env(t), check=True, capture_output=True,
                                 text=True).stdout
            rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows.sort(key=lambda r: (r["size"], r["threads"]))
    print_table(rows, args.trans)


if __name__ == "__main__":
    main()

"""Data-parallel throughput: samples/s of the compiled MLP and CNN train step on 1 and 2
MPI ranks of this machine, and the share of the step spent in the gradient allreduce.

    python bench/distributed.py [--models mlp,cnn] [--ranks 1,2] [--batch 64] [--steps 20] [--threads T]
                                [--fusion-groups 1,2]

Each model (``samples/mnist_mlp.py``, the seed-002 ``samples/mnist_cnn.py``) is compiled
once with ``kiln compile --distributed`` (train step = ``train_grads`` + fused allreduce +
``train_apply``); then for each rank count the script runs itself under ``mpiexec -n R``
(``--worker``): every rank trains on its own synthetic batch of ``--batch`` examples (the
global batch is ``R * batch``), 3 warm-up steps, then ``--steps`` timed ones between
barriers.  ``samples/s`` = global examples per second; ``allreduce %`` = the time rank 0
spent waiting for the allreduce (the slower rank included; with ``--fusion-groups`` > 1 only
the part not overlapped with the backward pass) over the step time;
``allreduce alone`` = the same allreduce timed with every rank ready (its cost without
waiting; 1 rank: nothing to reduce).  The
cores are split between the ranks (``OMP_NUM_THREADS`` = cores / ranks) unless ``--threads``.  Needs mpi4py and
mpiexec (``pip install 'kiln[mpi]'``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

MODELS = {"mlp": "samples/mnist_mlp.py", "cnn": "samples/mnist_cnn.py"}


def compile_model(name, out_root, groups=1):
    """``kiln compile --distributed --fusion-groups GROUPS`` of the model (kept between
    runs); its artifact path."""
    out = os.path.join(out_root, f"{name}-g{groups}")
    if not os.path.isfile(os.path.join(out, "manifest.json")):
        subprocess.run([sys.executable, "-m", "compiler.cli", "compile", os.path.join(ROOT, MODELS[name]),
                        "-o", out, "--distributed", "--fusion-groups", str(groups), "--no-dump-ir"],
                       check=True, cwd=ROOT)
    return out


def worker(artifact, batch, steps):
    """One rank: time ``steps`` distributed steps; rank 0 prints a JSON line."""
    import numpy as np

    from runtime import load_artifact
    from runtime.collective import communicator
    from runtime.distributed import DistributedStep, broadcast_state, distributed_record

    comm = communicator()
    art = load_artifact(artifact)
    state = art.new_state()
    step = DistributedStep(art, distributed_record(art), comm)
    broadcast_state(state, comm)
    rng = np.random.default_rng(comm.rank)
    x = rng.uniform(0, 1, (batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    n_global = batch * comm.size
    for _ in range(3):
        step.run(state, x, y, (784,), n_global)
    comm.barrier()
    step.reduce_s = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        step.run(state, x, y, (784,), n_global)
    comm.barrier()
    elapsed = time.perf_counter() - t0
    bufs = [np.zeros(tuple(spec.shape), spec.dtype) for *_, spec in step.buffers]
    comm.barrier()
    t1 = time.perf_counter()
    for _ in range(steps):  # the allreduce alone, every rank ready: its cost without waiting
        for buf in bufs:
            comm.allreduce(buf, "average")
    alone = (time.perf_counter() - t1) / steps
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "samples_s": n_global * steps / elapsed,
                          "step_ms": 1e3 * elapsed / steps, "allreduce_share": step.reduce_s / elapsed, "alone_ms": 1e3 * alone,
                          "buffer_floats": int(sum(s.shape[0] for *_, s in step.buffers))}))


def launch(artifact, ranks, batch, steps, threads=0):
    """Run the worker on ``ranks`` ranks (``threads`` each; 0: the cores split between
    them); rank 0's JSON record."""
    from compiler.cli_workers import ROOT_ENV, find_mpiexec

    threads = threads or max(1, (os.cpu_count() or 1) // ranks)
    env = {**os.environ, **ROOT_ENV, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", artifact,
           "--batch", str(batch), "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--batch", type=int, default=64, help="examples per rank per step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per rank (default: the cores split between the ranks)")
    parser.add_argument("--fusion-groups", default="1",
                        help="comma-separated fusion group counts to compare (>1: allreduce overlaps backward)")
    parser.add_argument("--out-dir", default=os.path.join("build", "bench_distributed"))
    parser.add_argument("--worker", metavar="ARTIFACT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.batch, args.steps)
    print("| model | groups | ranks | global batch | samples/s | step ms | allreduce % | allreduce alone ms "
          "| fused buffers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for groups in map(int, args.fusion_groups.split(",")):
            artifact = compile_model(name, os.path.abspath(args.out_dir), groups)
            for ranks in map(int, args.ranks.split(",")):
                r = launch(artifact, ranks, args.batch, args.steps, args.threads)
                print(f"| {name} | {groups} | {ranks} | {ranks * args.batch} | {r['samples_s']:.0f} | "
                      f"{r['step_ms']:.2f} | {100 * r['allreduce_share']:.1f} | {r['alone_ms']:.2f} | "
                      f"{r['buffer_floats']} floats |", flush=True)


if __name__ == "__main__":
    main()

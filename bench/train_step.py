"""Train-step time: Kiln's compiled step vs numpy by hand, PyTorch (eager), TensorFlow
(tf.function) and TensorFlow with XLA (tf.function(jit_compile=True)), side by side in one
run, on this machine's cores.

    python bench/train_step.py [--repeats 50] [--threads 2] [--only mlp] [--cases mlp:32,cnn:50]
                               [--tf-python PATH] [--torch-python PATH]

Each (model, batch, peer) runs in its own subprocess (so thread pools and BLAS settings do
not leak between peers; OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are removed for numpy's sake),
warms up, then times ``repeats`` steps; the table shows the median in ms and the ratio of
each peer to Kiln (> 1 means Kiln is faster), then the best step and the median process CPU
time per step (all threads, spinning included): on a shared, loaded machine the medians of
threaded peers mostly measure the scheduler, the best step and CPU time much less so.
The TensorFlow and PyTorch peers run under the interpreter that has the framework: this one
when it imports it, else the first of ``/work/tfenv`` / ``/work/torchenv`` (or
``--tf-python`` / ``--torch-python``) that does.  Missing frameworks show as "-".
Results and how to read them: docs/train-step-vs-peers.md.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CASES = [("mlp", 32), ("mlp", 128), ("cnn", 50), ("cnn", 128)]
PEERS = ["kiln", "numpy", "torch", "tensorflow", "tf-xla"]
#: the framework each peer imports, and where to look for an interpreter that has it
FRAMEWORK = {"torch": "torch", "tensorflow": "tensorflow", "tf-xla": "tensorflow"}
CANDIDATES = {"tensorflow": ["/work/tfenv/bin/python"], "torch": ["/work/torchenv/bin/python", "/work/tfenv/bin/python"]}


def make_kiln(model, batch, threads):
    """Compile the model's training step to an artifact and return a step callable."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from bench.kiln_models import build
    from compiler.frontend.compile_graph import compile_entries
    from runtime import load_artifact

    from compiler import tf

    graph = tf.Graph()
    with graph.as_default():
        feeds, loss, train, extra = build(model)
    out = tempfile.mkdtemp(prefix=f"kiln-bench-{model}-")
    atexit.register(shutil.rmtree, out, True)
    path = compile_entries(graph, {"train": ([loss], [train], list(feeds))}, out)
    with open(os.path.join(path, "manifest.json")) as f:
        build_info = json.load(f)["build"]
    # passes + lowering + LLVM + link; initial values (interpreted) and file writes excluded
    compile_s = build_info["total_s"] - build_info.get("initial_values_s", 0) - build_info.get("write_s", 0)
    state = load_artifact(path).new_state()
    from bench.peers import data

    x, y = data(batch)
    feed = {feeds[0].name: x, feeds[1].name: y, **extra}
    return (lambda: state.run("train", feed)), compile_s


def make_step(peer, model, batch, threads):
    from bench import peers

    if peer == "kiln":
        return make_kiln(model, batch, threads)
    if peer == "numpy":
        if model != "mlp":
            raise ImportError("no hand-written numpy CNN")
        return peers.make_numpy_mlp(batch), None
    if peer == "torch":
        return peers.make_torch(model, batch, threads), None
    return peers.make_tensorflow(model, batch, threads, xla=peer == "tf-xla"), None


def worker(peer, model, batch, threads, repeats):
    """Time one peer; prints one JSON line."""
    try:
        step, compile_s = make_step(peer, model, batch, threads)
    except ImportError as err:
        print(json.dumps({"skip": str(err)}))
        return
    for _ in range(5):
        step()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times),
                      "cpu_ms": statistics.median(cpu), "compile_s": compile_s}))


def find_python(framework, given=None):
    """The interpreter to run ``framework``'s peers: ``given``, else this one when it imports
    the framework, else the first candidate that does (None: the peer is skipped)."""
    if given:
        return given
    for python in [sys.executable] + CANDIDATES[framework]:
        if os.path.exists(python) and subprocess.run([python, "-c", f"import {framework}"],
                                                     capture_output=True).returncode == 0:
            return python
    return None


def run_case(peer, model, batch, threads, repeats, python=None):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.path.dirname(HERE))
    if peer == "kiln":  # Kiln's kernels use no BLAS; an idle OpenBLAS pool in its process only spins
        env["OPENBLAS_NUM_THREADS"] = "1"
    if python is None:
        return {"skip": f"no interpreter imports {FRAMEWORK[peer]}"}
    cmd = [python, os.path.abspath(__file__), "--worker", peer, model, str(batch),
           "--threads", str(threads), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["mlp", "cnn"])
    parser.add_argument("--cases", help="comma-separated model:batch list (default: all)")
    parser.add_argument("--tf-python", help="interpreter for the TensorFlow peers (default: auto)")
    parser.add_argument("--torch-python", help="interpreter for the PyTorch peer (default: auto)")
    parser.add_argument("--worker", nargs=3, metavar=("PEER", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        peer, model, batch = args.worker
        return worker(peer, model, int(batch), args.threads, args.repeats)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"train step, median ms over {args.repeats} steps, {args.threads} threads; ratio = peer / kiln "
          f"(load average {load}; per case also the best step and the median process CPU ms per step)")
    header = f"{'model':<5} {'batch':>5} " + " ".join(f"{p:>12}" for p in PEERS) + "   " + " ".join(f"{p + '/kiln':>16}" for p in PEERS[1:])
    cases = [(m, int(b)) for m, b in (c.split(":") for c in args.cases.split(","))] if args.cases else CASES
    given = {"tensorflow": args.tf_python, "torch": args.torch_python}
    pythons = {fw: find_python(fw, given[fw]) for fw in set(FRAMEWORK.values())}
    python_of = {p: pythons[FRAMEWORK[p]] if p in FRAMEWORK else sys.executable for p in PEERS}
    print(header)
    for model, batch in cases:
        if args.only and model != args.only:
            continue
        res = {p: run_case(p, model, batch, args.threads, args.repeats, python_of[p]) for p in PEERS}
        cells = [f"{res[p]['median_ms']:12.3f}" if "median_ms" in res[p] else f"{'-':>12}" for p in PEERS]
        kiln = res["kiln"].get("median_ms")
        ratios = [f"{res[p]['median_ms'] / kiln:16.2f}" if kiln and "median_ms" in res[p] else f"{'-':>16}" for p in PEERS[1:]]
        print(f"{model:<5} {batch:>5} " + " ".join(cells) + "   " + " ".join(ratios))
        for key, what in (("min_ms", "best step"), ("cpu_ms", "cpu/step")):
            print(f"{what:>11} " + " ".join(f"{res[p][key]:12.3f}" if key in res[p] else f"{'-':>12}" for p in PEERS))
        for p in PEERS:
            if "error" in res[p]:
                print(f"      {p}: error: {res[p]['error']}")
        if res["kiln"].get("compile_s"):
            print(f"      kiln compile (passes + LLVM + link): {res['kiln']['compile_s']:.2f} s")


if __name__ == "__main__":
    main()

"""Train-step time on an NVIDIA GPU: Kiln's CUDA artifact vs PyTorch (eager, CUDA graphs).

Side by side in one run:

    python bench/gpu_train_step.py [--repeats 200] [--only mlp|cnn] [--arch sm_90]
                                   [--cases mlp:32,cnn:50] [--json FILE] [--emulate]

Models and data are the CPU bench's (bench/kiln_models.py, bench/peers.py): the MLP at batch
32/128/1024 and the CNN at batch 50/256, float32, Adam.  Each (model, batch, peer) runs in
its own subprocess, warms up (20 steps), then times ``--repeats`` synchronous steps with
``time.perf_counter()``; the table shows the median and the minimum in microseconds and the
ratios torch/kiln and torch+graphs/kiln (> 1 means Kiln is faster).  Peers:

* ``kiln``: ``state.run("train", feeds)`` on the artifact from ``compile_entries(...,
  target="cuda")``: host numpy batch in (copied through pinned memory), the whole step as
  one CUDA graph, the loss copied back to the host.
* ``torch``: eager model + Adam on the GPU, batch already on the GPU; zero_grad, forward,
  loss, backward, ``optimizer.step``, ``torch.cuda.synchronize()``.
* ``torch+graphs``: that whole step (``Adam(capturable=True)``) captured once in a
  ``torch.cuda.CUDAGraph`` over static input tensors, then replay + synchronize.

PyTorch runs in full fp32 (TF32 off, like Kiln's kernels) with ``cudnn.benchmark`` on.
``--emulate`` builds Kiln for the host emulator and skips the PyTorch peers: a smoke test of
this script on a machine without a GPU (use tiny ``--repeats`` and cases; it is slow).
Without a GPU and without ``--emulate`` the script exits with status 2.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

CASES = [("mlp", 32), ("mlp", 128), ("mlp", 1024), ("cnn", 50), ("cnn", 256)]
PEERS = ["kiln", "torch", "torch+graphs"]
WARMUP = 20
CASE_TIMEOUT_S = 1800


class Skip(Exception):
    """A peer that cannot run here (shown as "-" with the reason)."""


# ----------------------------------------------------------------------------- peers (workers)
def make_kiln(model, batch, arch, emulate):
    """Compile the model's training step for CUDA; returns (step, info with compile times)."""
    from bench.kiln_models import build
    from bench.peers import data
    from compiler import tf
    from compiler.frontend.compile_graph import compile_entries
    from runtime import load_artifact

    graph = tf.Graph()
    with graph.as_default():
        feeds, loss, train, extra = build(model)
    out = tempfile.mkdtemp(prefix=f"kiln-gpu-bench-{model}{batch}-")
    atexit.register(shutil.rmtree, out, True)
    path = compile_entries(graph, {"train": ([loss], [train], list(feeds))}, out,
                           target="cuda", arch=arch, emulate=emulate)
    artifact = load_artifact(path)
    record = artifact.manifest["build"]
    info = {"compile_s": record.get("total_s"),
            "toolchain_s": record.get("emulator_build_s" if emulate else "nvcc_s"),
            "target": artifact.target}
    state = artifact.new_state()
    x, y = data(batch)
    feed = {feeds[0].name: x, feeds[1].name: y, **extra}
    last = {}

    def step():
        last["out"] = state.run("train", feed)

    return step, {**info, "loss": lambda: float(next(iter(last["out"].values())))}


def _torch_cuda():
    """torch with a usable GPU, in strict fp32 (TF32 off) and cudnn autotuning on."""
    try:
        import torch
    except ImportError as err:
        raise Skip(f"torch not installed ({err})") from None
    if not torch.cuda.is_available():
        raise Skip(f"torch {torch.__version__} sees no CUDA GPU (built for CUDA {torch.version.cuda})")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch


def _torch_step(model, batch, capturable):
    """(torch, one step) on the GPU, built by bench/peers.py like the CPU bench's; the step
    returns the loss tensor (left on the GPU) and does not synchronize."""
    _torch_cuda()
    from bench.peers import torch_train_step

    return torch_train_step(model, batch, "cuda", capturable)


def _torch_info(torch):
    return {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}


def make_torch(model, batch):
    """Eager step; the batch stays on the GPU, nothing is copied back."""
    torch, one = _torch_step(model, batch, capturable=False)
    last = {}

    def step():
        last["loss"] = one()
        torch.cuda.synchronize()

    return step, {**_torch_info(torch), "loss": lambda: float(last["loss"])}


def make_torch_graphs(model, batch):
    """The whole step (incl. Adam) captured in one CUDA graph over static x, y; replayed."""
    torch, one = _torch_step(model, batch, capturable=True)
    side = torch.cuda.Stream()  # warm-up on a side stream before capture, as CUDA graphs require
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            one()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # one() sets grads to None first: backward allocates them in the graph's pool
        static_loss = one()

    def step():
        graph.replay()
        torch.cuda.synchronize()

    return step, {**_torch_info(torch), "loss": lambda: float(static_loss)}


def make_step(peer, model, batch, arch, emulate):
    if peer == "kiln":
        return make_kiln(model, batch, arch, emulate)
    if emulate:
        raise Skip("skipped under --emulate")
    return (make_torch if peer == "torch" else make_torch_graphs)(model, batch)


def time_steps(step, warmup, repeats):
    """Microseconds of each of ``repeats`` synchronous steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e6)
    return times


def worker(peer, model, batch, args):
    """Time one peer in this process; prints one JSON line."""
    try:
        step, info = make_step(peer, model, batch, args.arch, args.emulate)
        times = time_steps(step, args.warmup, args.repeats)
    except Skip as why:
        print(json.dumps({"skip": str(why)}))
        return
    except Exception as err:  # reported in the table, in full; the subprocess exits 0
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return
    info["loss"] = info["loss"]()  # the last step's loss, a sanity check that it trains
    print(json.dumps({"median_us": statistics.median(times), "min_us": min(times), **info}))


# ----------------------------------------------------------------------------- driver
def run_case(peer, model, batch, args):
    """Run one (peer, model, batch) in a subprocess; its JSON result."""
    if args.emulate and peer != "kiln":
        return {"skip": "skipped under --emulate"}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", peer, model, str(batch),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--arch", args.arch]
    if args.emulate:
        cmd.append("--emulate")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CASE_TIMEOUT_S} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": f"worker crashed (exit status {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


def count(least):
    """argparse type: an int >= ``least``."""
    def parse(text):
        if not text.isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return int(text)
    return parse


def parse_arch(text):
    if not re.fullmatch(r"sm_\d{2,3}[a-z]?", text):
        raise argparse.ArgumentTypeError(f"bad architecture {text!r}: expected sm_XX, e.g. sm_90")
    return text


def parse_cases(text):
    """``mlp:32,cnn:50`` -> [("mlp", 32), ("cnn", 50)]."""
    cases = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        model, _, batch = item.partition(":")
        if model not in ("mlp", "cnn") or not batch.isdigit() or int(batch) < 1:
            raise argparse.ArgumentTypeError(f"bad case {item!r}: expected mlp:BATCH or cnn:BATCH")
        cases.append((model, int(batch)))
    return cases


def gpu_name():
    """The first visible GPU's name from nvidia-smi ("" when it is not available)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ""
    cmd = [exe, "--query-gpu=name", "--format=csv,noheader"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible:
        cmd += ["-i", visible]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.splitlines()[0].strip() if out else ""


def no_gpu_reason():
    """Why this machine cannot run the GPU bench ("" when it can)."""
    from runtime import cuda

    return "" if cuda.device_count() > 0 else cuda.why_no_device()


def _us(value, width):
    return f"{value:{width}.1f}" if value is not None else f"{'-':>{width}}"


def print_header(args, gpu):
    where = "host emulator (--emulate: Kiln only, a smoke test, not a measurement)" if args.emulate else gpu
    print(f"GPU train step on {where}; Kiln target {args.arch}")
    print(f"median and min in us over {args.repeats} steps after {args.warmup} warm-up; "
          "ratio = peer / kiln (> 1: Kiln faster)")
    print("Kiln's time includes the host->device copy of the batch and the loss copy back; PyTorch's does not")
    print("(batch already on the GPU, loss left there).  PyTorch: fp32, TF32 off, cudnn.benchmark on.")
    cols = " ".join(f"{p + ' med':>17} {'min':>10}" for p in PEERS)
    print(f"{'model':<5} {'batch':>5} {cols}   {'torch/kiln':>10} {'graphs/kiln':>11}")


def print_row(model, batch, res):
    cells = " ".join(f"{_us(res[p].get('median_us'), 17)} {_us(res[p].get('min_us'), 10)}" for p in PEERS)
    kiln = res["kiln"].get("median_us")
    ratios = [f"{res[p]['median_us'] / kiln:{w}.2f}" if kiln and "median_us" in res[p] else f"{'-':>{w}}"
              for p, w in (("torch", 10), ("torch+graphs", 11))]
    print(f"{model:<5} {batch:>5} {cells}   {' '.join(ratios)}")
    for p in PEERS:
        r = res[p]
        if "skip" in r:
            print(f"      {p}: - ({r['skip']})")
        elif "error" in r:
            lines = r["error"].splitlines()
            print(f"      {p}: error: {lines[0]}")
            for line in lines[1:][-20:]:
                print(f"        {line}")
    k = res["kiln"]
    if k.get("compile_s") is not None:
        tool = "g++ (emulator)" if k.get("target", {}).get("emulated") else "nvcc"
        tool_s = f"{k['toolchain_s']:.2f} s" if k.get("toolchain_s") is not None else "-"
        loss = k.get("loss", float("nan"))
        print(f"      kiln compile: {k['compile_s']:.2f} s total, {tool} {tool_s}; last loss {loss:.4f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=count(1), default=200, help="timed steps per case (default 200)")
    parser.add_argument("--warmup", type=count(0), help=f"untimed steps first (default {WARMUP}, 1 with --emulate)")
    parser.add_argument("--only", choices=["mlp", "cnn"], help="one model only")
    parser.add_argument("--arch", type=parse_arch, default="sm_90",
                        help="Kiln's CUDA architecture (default sm_90: H100/H200)")
    parser.add_argument("--cases", type=parse_cases, help="model:batch list, e.g. mlp:32,cnn:50")
    parser.add_argument("--emulate", action="store_true", help="Kiln on the host emulator only (smoke test, no GPU)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--worker", nargs=3, metavar=("PEER", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 1 if args.emulate else WARMUP
    if args.worker:
        peer, model, batch = args.worker
        return worker(peer, model, int(batch), args)
    if not args.emulate:
        why = no_gpu_reason()
        if why:
            print(f"gpu_train_step: no CUDA GPU on this machine: {why}; run it on an H100/H200 "
                  "(or pass --emulate for a Kiln-only smoke test on the host)", file=sys.stderr)
            return 2
    gpu = "host emulator" if args.emulate else gpu_name()
    cases = [c for c in (args.cases or CASES) if not args.only or c[0] == args.only]
    results = []
    print_header(args, gpu or "an NVIDIA GPU (name unknown: no nvidia-smi)")
    for model, batch in cases:
        res = {p: run_case(p, model, batch, args) for p in PEERS}
        print_row(model, batch, res)
        sys.stdout.flush()
        gpu = gpu or next((r["gpu"] for r in res.values() if "gpu" in r), "")
        results.append({"model": model, "batch": batch, **res})
    if args.json:
        from runtime.files import atomic_write

        atomic_write(args.json, json.dumps({"gpu": gpu, "arch": args.arch, "emulate": args.emulate,
                                            "repeats": args.repeats, "warmup": args.warmup, "units": "us",
                                            "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

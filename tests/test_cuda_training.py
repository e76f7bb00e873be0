"""Training on the CUDA backend gives the CPU backend's losses: the MLP and the seed-002
CNN for 20 steps (fewer, smaller steps on the slow host emulator), and, on a GPU, the
digits sample trained by `kiln train` to the CPU's accuracy."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.frontend.compile_graph import compile_entries
from tests import models
from tests.cuda_kit import MODES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# mode -> (batch, steps): the emulator runs every CUDA thread on the CPU
SIZES = {"mlp": {"emulated": (8, 20), "device": (128, 20)}, "cnn": {"emulated": (2, 3), "device": (50, 20)}}


def _graph(model):
    graph = tf.Graph()
    with graph.as_default():
        if model == "mlp":
            t = models.mlp_tensors(seed=0)
            return graph, {"train": ([t["loss"]], [t["train"]], [t["x"], t["labels"]])}
        t = models.cnn_tensors(seed=0)
        return graph, {"train": ([t["loss"]], [t["train"]], [t["x"], t["y"], t["keep_prob"]])}


def _feeds(model, batch, step):
    return models.train_feeds(model, batch, step)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_training_losses_match_cpu(tmp_path, model, mode):
    batch, steps = SIZES[model][mode]
    graph, entries = _graph(model)
    losses = {}
    for target in ("cpu", "cuda"):
        options = {"emulate": mode == "emulated"} if target == "cuda" else {}
        path = compile_entries(graph, entries, tmp_path / target, target=target, dump_ir=False, **options)
        with runtime.load_artifact(path).new_state() as state:  # two batches in turn: the loss must fall
            losses[target] = [float(state.run("train", _feeds(model, batch, s % 2))["loss:0"]) for s in range(steps)]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=2e-4, atol=1e-5)
    assert losses["cpu"][-1] < losses["cpu"][0] or steps < 5


@pytest.mark.parametrize("mode", MODES)
def test_digits_sample_trains_to_cpu_accuracy(tmp_path, mode):
    """`kiln compile --target cuda` + `kiln train --data digits` reaches the CPU backend's
    validation accuracy: 10 epochs on a GPU, 2 on the emulator (~5 s per epoch there)."""
    epochs = 10 if mode == "device" else 2
    accuracy = {}
    for target in ("cpu", "cuda"):
        out = tmp_path / target
        kiln = [sys.executable, "-m", "compiler.cli"]
        emulate = ["--cuda-emulate"] if target == "cuda" and mode == "emulated" else []
        subprocess.run(kiln + ["compile", os.path.join(ROOT, "samples", "mnist_mlp.py"), "-o", str(out),
                               "--target", target, "--no-dump-ir"] + emulate, check=True, capture_output=True)
        subprocess.run(kiln + ["train", str(out), "--data", "digits", "--resize-images", "--epochs", str(epochs),
                               "--run-dir", str(out / "run")], check=True, capture_output=True)
        rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
        accuracy[target] = rows[-1]["val_accuracy"]
    assert accuracy["cuda"] >= (0.95 if epochs == 10 else 0.9), accuracy
    assert abs(accuracy["cuda"] - accuracy["cpu"]) <= 0.01, accuracy

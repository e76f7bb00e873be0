"""Training on the MLU backend (emulated) gives the CPU backend's losses: the MLP for 20 Adam
steps and the seed-002 CNN for 3; `kiln compile --target mlu` + `kiln train --data digits`
reaches the CPU artifact's accuracy; `tf.device("/mlu:0")` places a Session's graph on it."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.frontend.compile_graph import compile_entries
from compiler.frontend.placement import choose_target
from tests.test_cuda_training import ROOT, _feeds, _graph
from tests.mlu_kit import compiled_and_interpreted

SIZES = {"mlp": (8, 20), "cnn": (2, 3)}


@pytest.mark.parametrize("model, schedule", [("mlp", "forward"), ("mlp", "shuffle:3"), ("mlp", "reverse"),
                                             ("cnn", "shuffle:5")])
def test_training_losses_match_cpu(tmp_path, monkeypatch, model, schedule):
    """Under every task order ($KILN_MLU_SCHEDULE, read by each library at its first kernel)."""
    monkeypatch.setenv("KILN_MLU_SCHEDULE", schedule)
    batch, steps = SIZES[model]
    graph, entries = _graph(model)
    losses = {}
    for target in ("cpu", "mlu"):
        path = compile_entries(graph, entries, tmp_path / target, target=target, dump_ir=False)
        art = runtime.load_artifact(path)
        assert art.target["kind"] == target
        with art.new_state() as state:  # two batches in turn: the loss must fall
            losses[target] = [float(state.run("train", _feeds(model, batch, s % 2))["loss:0"]) for s in range(steps)]
    np.testing.assert_allclose(losses["mlu"], losses["cpu"], rtol=2e-4, atol=1e-5)
    assert losses["cpu"][-1] < losses["cpu"][0] or steps < 5


def test_digits_sample_trains_to_cpu_accuracy(tmp_path):
    """2 epochs of the digits sample: the MLU artifact's validation accuracy is the CPU's."""
    accuracy = {}
    for target in ("cpu", "mlu"):
        out = tmp_path / target
        kiln = [sys.executable, "-m", "compiler.cli"]
        subprocess.run(kiln + ["compile", os.path.join(ROOT, "samples", "mnist_mlp.py"), "-o", str(out),
                               "--target", target, "--no-dump-ir"], check=True, capture_output=True)
        subprocess.run(kiln + ["train", str(out), "--data", "digits", "--resize-images", "--epochs", "2",
                               "--run-dir", str(out / "run")], check=True, capture_output=True)
        rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
        accuracy[target] = rows[-1]["val_accuracy"]
    assert accuracy["mlu"] >= 0.9, accuracy
    assert abs(accuracy["mlu"] - accuracy["cpu"]) <= 0.01, accuracy


def test_device_placement_runs_on_the_mlu():
    """Ops under tf.device("/mlu:0") compile for the MLU backend (no interpreter fallback)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 4])
        with tf.device("/mlu:0"):
            y = tf.nn.sigmoid(x) * 2.0 + tf.reduce_mean(x)
        target = choose_target("compiled", None, [y], [])
        assert (target.backend, target.get("emulate")) == ("mlu", True)
        feed = {x: np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)}
        got, want = compiled_and_interpreted(y, feed, backend="compiled")
    np.testing.assert_allclose(got, want, rtol=1e-6)

"""`kiln train` / `kiln eval` / `kiln predict` as subprocesses on samples/mnist_mlp.py."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kiln(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": ROOT})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """samples/mnist_mlp.py compiled once and trained one epoch on digits."""
    d = tmp_path_factory.mktemp("cli_train")
    r = kiln("compile", os.path.join(ROOT, "samples/mnist_mlp.py"), "-o", d / "mlp", "--no-dump-ir")
    assert r.returncode == 0, r.stderr
    r = kiln("train", d / "mlp", "--data", "digits", "--resize-images", "--epochs", "1", "--ckpt-dir", d / "ck",
             "--run-dir", d / "run", "--no-progress")
    assert r.returncode == 0, r.stderr
    return d, r


def test_train_prints_epoch_line_and_writes_files(trained):
    d, r = trained
    assert "epoch 1/1  accuracy" in r.stdout or "epoch 1/1  loss" in r.stdout
    assert "val_accuracy" in r.stdout
    row = json.loads((d / "run/metrics.jsonl").read_text())
    assert row["epoch"] == 1 and row["val_accuracy"] > 0.5
    assert (d / "run/metrics.csv").read_text().startswith("run,epoch,")
    assert list((d / "ck").glob("ckpt-*.safetensors"))


def test_eval_and_predict(trained, tmp_path):
    d, _ = trained
    r = kiln("eval", d / "mlp", "--data", "digits", "--ckpt-dir", d / "ck")
    assert r.returncode == 0, r.stderr
    metrics = dict(zip(r.stdout.split()[::2], map(float, r.stdout.split()[1::2])))
    assert metrics["accuracy"] > 0.5 and metrics["loss"] > 0
    r = kiln("predict", d / "mlp", "--data", "digits", "--ckpt-dir", d / "ck", "--out", tmp_path / "p.npy")
    assert r.returncode == 0, r.stderr
    probs = np.load(tmp_path / "p.npy")
    assert probs.shape == (1797, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)
    np.save(tmp_path / "x.npy", np.zeros((3, 64), np.float32))   # resized as in training (checkpoint)
    r = kiln("predict", d / "mlp", "--data", tmp_path / "x.npy", "--ckpt-dir", d / "ck",
             "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 4 and rows[0][0] == "class" and len(rows[0]) == 11


@pytest.mark.parametrize("args, message", [
    (["train", "{d}/nope", "--data", "digits"], "artifact not found"),
    (["train", "{d}/mlp", "--data", "no_such_data"], "no such file"),
    (["train", "{d}/mlp", "--data", "digits", "--epochs", "0"], "must be positive"),
    (["train", "{d}/mlp"], "--data"),
    (["train", "{d}/mlp", "--data", "digits", "--val-split", "0.1", "--val-data", "digits"],
     "not allowed with"),
    (["eval", "{d}/mlp", "--data", "digits", "--ckpt-dir", "{d}/empty"], "no complete checkpoint"),
    (["predict", "{d}/mlp", "--data", "digits", "--out", "{d}/p.txt"], ".npy or .csv"),
    (["train", "{d}/ck", "--data", "digits"], "artifact not found"),
])
def test_wrong_arguments_exit_2(trained, args, message):
    d, _ = trained
    (d / "empty").mkdir(exist_ok=True)
    r = kiln(*[a.format(d=d) for a in args])
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_train_without_train_entry(trained, tmp_path):
    model = tmp_path / "m.py"
    model.write_text("from compiler import tf\n\ndef build():\n"
                     "    x = tf.placeholder(tf.float32, [None, 64], name='x')\n"
                     "    return {'predict': {'feeds': [x], 'fetches': {'y': tf.identity(x, name='y')}}}\n")
    assert kiln("compile", model, "-o", tmp_path / "a", "--no-dump-ir").returncode == 0
    r = kiln("train", tmp_path / "a", "--data", "digits")
    assert r.returncode == 2 and "no 'train' entry point" in r.stderr


def test_help_everywhere():
    for cmd in ("train", "eval", "predict"):
        r = kiln(cmd, "--help")
        assert r.returncode == 0 and "--data" in r.stdout


def test_inspect_an_artifact_by_entry(tmp_path):
    art = tmp_path / "softmax"
    assert kiln("compile", os.path.join(ROOT, "samples/mnist_softmax.py"), "-o", art).returncode == 0
    listing = kiln("inspect", art, "--list")
    assert listing.returncode == 0 and "memory-plan" in listing.stdout and "fusion" in listing.stdout
    predict = kiln("inspect", art, "--entry", "predict", "--stage", "fusion")
    assert predict.returncode == 0 and 'feed "x:0"' in predict.stdout and "labels" not in predict.stdout
    missing = kiln("inspect", art, "--entry", "nope", "--list")
    assert missing.returncode == 2 and "entries: eval, predict, train" in missing.stderr
    bare = kiln("compile", os.path.join(ROOT, "samples/mnist_softmax.py"), "-o", tmp_path / "bare", "--no-dump-ir")
    assert bare.returncode == 0
    assert kiln("inspect", tmp_path / "bare", "--list").returncode == 2


def test_train_writes_tensorboard_scalars_equal_to_metrics_jsonl(trained):
    """The run's event file (run folder/events/<run id>/) holds each metrics.jsonl number at
    step = epoch."""
    from tensorboard.backend.event_processing import event_accumulator as ea_mod  # the test extra

    d, _ = trained
    rows = [json.loads(line) for line in (d / "run/metrics.jsonl").read_text().splitlines()]
    files = list((d / "run/events").glob("*/events.out.tfevents.*"))
    assert len(files) == 1 and files[0].parent.name == rows[0]["run"]
    ea = ea_mod.EventAccumulator(str(files[0].parent), size_guidance={ea_mod.SCALARS: 0})
    ea.Reload()
    metrics = sorted(k for k in rows[0] if k not in ("run", "epoch"))
    assert sorted(ea.Tags()["scalars"]) == metrics and "val_accuracy" in metrics
    for key in metrics:
        events = ea.Scalars(key)
        assert [e.step for e in events] == [r["epoch"] for r in rows]
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in rows], rtol=1e-6)

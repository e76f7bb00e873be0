"""runtime.trainer: train / evaluate / predict over compiled artifacts, metrics files,
per-epoch checkpoints, exact resume, and runtime.data.fit_features."""
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from compiler import tf
from compiler.cli import main as kiln
from compiler.frontend.compile_graph import compile_entries
from runtime import checkpoint as ck
from runtime import data, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = '''
from compiler import tf


def build():
    tf.set_random_seed(1)
    x = tf.placeholder(tf.float32, [None, 16], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    w1 = tf.get_variable("w1", [16, 32], initializer=tf.truncated_normal_initializer(stddev=0.3))
    h = tf.nn.dropout(tf.nn.relu(tf.matmul(x, w1)), keep_prob=0.8)
    w2 = tf.get_variable("w2", [32, 10], initializer=tf.truncated_normal_initializer(stddev=0.3))
    logits = tf.matmul(h, w2)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                          name="loss")
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32), name="accuracy")
    train = tf.train.AdamOptimizer(0.01).minimize(loss, name="train")
    ev_logits = tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)
    ev_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                             logits=ev_logits), name="ev_loss")
    return {
        "train": {"feeds": [x, labels], "fetches": {"loss": loss, "accuracy": acc}, "targets": [train]},
        "eval": {"feeds": [x, labels], "fetches": {"loss": ev_loss}},
        "predict": {"feeds": [x], "fetches": {"probabilities": tf.nn.softmax(ev_logits, name="p")}},
    }
'''


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The model above (16 = 4x4 features: digits are resized 8x8 -> 4x4) compiled by kiln."""
    d = tmp_path_factory.mktemp("trainer")
    (d / "model.py").write_text(MODEL)
    assert kiln(["compile", str(d / "model.py"), "-o", str(d / "art"), "--no-dump-ir"]) == 0
    return str(d / "art")


@pytest.fixture(scope="module")
def digits():
    src = data.open_source("digits")
    return data.from_arrays(src.x[:400], src.y[:400], num_classes=10)


def _train(artifact, digits, tmp_path, **kw):
    args = {"epochs": 2, "batch_size": 32, "val_split": 0.2, "seed": 3, "progress": False, "log": lambda s: None,
            "resize_images": True}
    args.update(kw)
    return trainer.train(artifact, digits, **args)


def test_train_writes_metrics_checkpoints_and_learns(artifact, digits, tmp_path):
    hist = _train(artifact, digits, tmp_path, epochs=3, ckpt_dir=tmp_path / "ck", run_dir=tmp_path / "run")
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "time_s"} <= set(hist[0])
    assert hist[-1]["loss"] < hist[0]["loss"]
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in hist]
    with open(tmp_path / "run/metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and table[0]["epoch"] == "1"
    assert float(table[2]["val_loss"]) == pytest.approx(hist[2]["val_loss"])
    files = sorted(p.name for p in (tmp_path / "ck").glob("ckpt-*.safetensors"))
    assert len(files) == 3                                   # one per epoch
    _, step, meta = ck.load_checkpoint(ck.latest_checkpoint(tmp_path / "ck"))
    assert meta["epoch"] == 3 and meta["seed"] == 3 and step == 3 * 10   # 320 train ex / 32
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "run/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_gives_the_uninterrupted_losses(artifact, digits, tmp_path):
    full = _train(artifact, digits, tmp_path, epochs=3, ckpt_dir=tmp_path / "a")
    _train(artifact, digits, tmp_path, epochs=1, ckpt_dir=tmp_path / "b")
    resumed = _train(artifact, digits, tmp_path, epochs=3, ckpt_dir=tmp_path / "b", resume=True,
                     run_dir=tmp_path / "run")
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]
    assert strip(resumed) == strip(full)                     # exact: data order and dropout
    assert len((tmp_path / "run/metrics.jsonl").read_text().splitlines()) == 3
    other_seed = _train(artifact, digits, tmp_path, epochs=2, seed=4)
    assert other_seed[1]["loss"] != full[1]["loss"]


def test_evaluate_and_predict_use_the_checkpoint(artifact, digits, tmp_path):
    _train(artifact, digits, tmp_path, epochs=2, ckpt_dir=tmp_path / "ck")
    untrained = trainer.evaluate(artifact, digits, resize_images=True)
    trained = trainer.evaluate(artifact, digits, ckpt=str(tmp_path / "ck"))
    assert set(trained) == {"loss"} and trained["loss"] < untrained["loss"]
    x = digits.x[:50]
    np.save(tmp_path / "x.npy", x)
    out = trainer.predict(artifact, str(tmp_path / "x.npy"), ckpt=str(tmp_path / "ck"),
                          out=tmp_path / "p.npy")
    probs = np.load(tmp_path / "p.npy")
    assert probs.shape == (50, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(probs, out["probabilities"])
    trainer.predict(artifact, digits, ckpt=str(tmp_path / "ck"), out=tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["class", "probabilities_0"] and len(rows) == 401
    assert int(rows[1][0]) == int(probs[0].argmax())


def test_missing_entries_and_bad_inputs(artifact, digits, tmp_path):
    x = tf.placeholder(tf.float32, [None, 4], name="x")
    w = tf.get_variable("w", [4, 2], initializer=tf.zeros_initializer())
    y = tf.matmul(x, w, name="y")
    art = compile_entries(tf.get_default_graph(), {"predict": ([y], [], [x])}, tmp_path / "a",
                          dump_ir=False)
    with pytest.raises(trainer.TrainerError, match="no 'train' entry point"):
        trainer.train(str(art), digits, progress=False)
    out = trainer.predict(str(art), np.ones((3, 4), np.float32))   # fallback: tensor names
    assert out["y"].shape == (3, 2)
    with pytest.raises(trainer.TrainerError, match=r"\.npy or \.csv"):
        trainer.predict(artifact, digits, out=tmp_path / "p.txt")
    with pytest.raises(trainer.TrainerError, match="5 features per example.*--resize-images"):
        trainer.predict(artifact, np.ones((2, 5), np.float32))
    with pytest.raises(data.DataError, match="cannot fit"):
        trainer.predict(artifact, np.ones((2, 5), np.float32), resize_images=True)


def test_fit_features_resizes_square_images():
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    assert data.fit_features(x, (64,), 64).shape == (5, 64)
    big = data.fit_features(x, (64,), 784)
    assert big.shape == (5, 784) and big.dtype == np.float32
    assert big.min() >= x.min() - 1e-6 and big.max() <= x.max() + 1e-6
    assert np.allclose(data.fit_features(np.full((2, 8, 8), 0.5), (8, 8), 16), 0.5)
    small = data.fit_features(x, (64,), 16).reshape(5, 4, 4)   # 2x2 block means
    np.testing.assert_allclose(small[:, 0, 0], x.reshape(5, 8, 8)[:, :2, :2].mean((1, 2)), rtol=1e-5)
    with pytest.raises(data.DataError, match="square"):
        data.fit_features(x, (64,), 100 * 3 + 1)
    with pytest.raises(data.DataError, match="not a square"):
        data.fit_features(np.ones((2, 10)), (10,), 784)


def _cli_train(artifact, ckpt, run, *extra, env=None):
    cmd = [sys.executable, "-m", "compiler.cli", "train", artifact, "--data", "digits", "--resize-images", "--epochs", "3",
           "--batch-size", "64", "--seed", "3", "--ckpt-dir", str(ckpt), "--run-dir", str(run), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _losses(run):
    """Loss per epoch, the newest row of each epoch (runs append; a killed run's last epoch
    is trained again when resumed)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["epoch"]: r["loss"] for r in rows}


def test_sigkill_during_a_checkpoint_write_then_resume_reproduces_the_run(artifact, tmp_path):
    """`kiln train` is killed while its second checkpoint is half written: the newest complete
    checkpoint loads, nothing on disk is corrupt, and --resume gives the uninterrupted losses."""
    full = _cli_train(artifact, tmp_path / "ck_full", tmp_path / "run_full")
    assert full.wait(timeout=120) == 0, full.stderr.read()
    ckpt, run = tmp_path / "ck", tmp_path / "run"
    proc = _cli_train(artifact, ckpt, run, env={"KILN_CHECKPOINT_TEST_PAUSE": "0.5"})
    deadline = time.time() + 120
    mid_write = False
    while time.time() < deadline and not mid_write:  # the epoch-2 checkpoint's temp file exists
        index = ck.read_index(ckpt)
        mid_write = index is not None and len(index.all_model_checkpoint_paths) == 1 and \
            bool(list(ckpt.glob(".ckpt-*.tmp")))
        time.sleep(0.02)
    assert mid_write, "never saw the second checkpoint being written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    latest = ck.latest_checkpoint(ckpt)
    _, _, meta = ck.load_checkpoint(latest)
    assert meta["epoch"] == 1
    for f in ckpt.glob("*.safetensors"):  # no partial file passes for a checkpoint
        ck.load_checkpoint(f)
    resumed = _cli_train(artifact, ckpt, run, "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    assert _losses(run) == _losses(tmp_path / "run_full")

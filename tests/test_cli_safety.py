"""The `kiln` commands never lose a user's work: checkpoints, metrics and artifacts survive
mistakes and interruptions, and every refusal says what to do (issue: "The CLI never
loses a user's work").  CLI runs are subprocesses, as a user runs them."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime import checkpoint as ck
from runtime import cuda, load_artifact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = '''
from compiler import tf


def build():
    tf.set_random_seed(1)
    x = tf.placeholder(tf.float32, [None, 64], name="x")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    w = tf.get_variable("w", [64, 10], initializer=tf.truncated_normal_initializer(stddev=0.1))
    logits = tf.matmul(x, w)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                          name="loss")
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32), name="accuracy")
    train = tf.train.GradientDescentOptimizer(0.5).minimize(loss, name="train")
    return {
        "train": {"feeds": [x, labels], "fetches": {"loss": loss, "accuracy": acc}, "targets": [train]},
        "eval": {"feeds": [x, labels], "fetches": {"loss": loss, "accuracy": acc}},
        "predict": {"feeds": [x], "fetches": {"probabilities": tf.nn.softmax(logits, name="p")}},
    }
'''


def kiln(*args, cwd=None, env=None, umask=None):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def popen_kiln(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "compiler.cli", *map(str, args)],
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def digests(folder) -> dict:
    """``relative path -> sha256`` of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety_model")
    (d / "model.py").write_text(MODEL)
    return d / "model.py"


@pytest.fixture(scope="module")
def compiled(model_file):
    """A pristine artifact compiled once; tests copy it."""
    out = model_file.parent / "art"
    r = kiln("compile", model_file, "-o", out, "--no-dump-ir")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def art(compiled, tmp_path):
    shutil.copytree(compiled, tmp_path / "art")
    return tmp_path / "art"


def train(art, ckpt, run, *extra, epochs=2):
    return kiln("train", art, "--data", "digits", "--epochs", epochs, "--ckpt-dir", ckpt,
                "--run-dir", run, *extra)


# ----------------------------------------------------------------------------- checkpoints + metrics
def test_training_into_a_checkpoint_folder_that_has_checkpoints_is_refused(art, tmp_path):
    ckpt, run = tmp_path / "ck", tmp_path / "run"
    assert train(art, ckpt, run).returncode == 0
    before_ckpt, before_rows = digests(ckpt), (run / "metrics.jsonl").read_text()
    r = train(art, ckpt, run, epochs=3)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "already holds checkpoints" in r.stderr
    assert "--resume" in r.stderr and "--overwrite" in r.stderr
    assert digests(ckpt) == before_ckpt                        # every checkpoint byte intact
    assert (run / "metrics.jsonl").read_text() == before_rows  # and the metrics


def test_resume_needs_a_checkpoint_folder(art, tmp_path):
    r = kiln("train", art, "--data", "digits", "--resume", "--run-dir", tmp_path / "run")
    assert r.returncode == 2 and "--resume needs --ckpt-dir" in r.stderr
    assert not (tmp_path / "run").exists()                     # refused before any training


def test_overwrite_replaces_the_checkpoints_and_appends_the_metrics(art, tmp_path):
    ckpt, run = tmp_path / "ck", tmp_path / "run"
    assert train(art, ckpt, run, epochs=3).returncode == 0
    first = rows(run)
    r = train(art, ckpt, run, "--overwrite", epochs=1)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in ckpt.glob("*.safetensors"))
    assert len(files) == 1                                     # only the new run's checkpoint
    _, _, meta = ck.load_checkpoint(ck.latest_checkpoint(ckpt))
    assert meta["epoch"] == 1
    after = rows(run)
    assert after[:3] == first                                  # the first run's rows untouched
    assert len(after) == 4 and after[3]["epoch"] == 1 and after[3]["run"] != first[0]["run"]
    table = (run / "metrics.csv").read_text().splitlines()
    assert table[0].startswith("run,epoch,") and len(table) == 5


def test_a_second_run_appends_under_its_own_run_id(art, tmp_path):
    run = tmp_path / "run"
    assert train(art, tmp_path / "a", run).returncode == 0
    assert train(art, tmp_path / "b", run).returncode == 0
    got = rows(run)
    assert [r["epoch"] for r in got] == [1, 2, 1, 2]
    assert got[0]["run"] == got[1]["run"] != got[2]["run"] == got[3]["run"]


def test_resume_into_another_run_folder_backfills_the_earlier_epochs(art, tmp_path):
    ckpt = tmp_path / "ck"
    assert train(art, ckpt, tmp_path / "run1").returncode == 0
    r = train(art, ckpt, tmp_path / "run2", "--resume", epochs=3)
    assert r.returncode == 0, r.stderr
    got = rows(tmp_path / "run2")
    assert [r["epoch"] for r in got] == [1, 2, 3]
    assert [r["run"] for r in got[:2]] == [r["run"] for r in rows(tmp_path / "run1")]


def test_ctrl_c_names_the_checkpoint_to_resume_and_exits_130(art, tmp_path):
    ckpt, run = tmp_path / "ck", tmp_path / "run"
    # Each checkpoint write pauses 0.4 s (test hook), so the run is still going after epoch 1.
    proc = popen_kiln("train", art, "--data", "digits", "--epochs", 50, "--ckpt-dir", ckpt,
                      "--run-dir", run, env={"KILN_CHECKPOINT_TEST_PAUSE": "0.2"})
    deadline = time.time() + 120
    while time.time() < deadline and ck.latest_checkpoint(ckpt, verify=False) is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kiln: interrupted in epoch "), err
    assert "/50; newest checkpoint " in lines[0] and "rerun with --resume" in lines[0]
    newest = ck.latest_checkpoint(ckpt)
    assert os.path.basename(newest) in lines[0]
    _, _, meta = ck.load_checkpoint(newest)
    assert f"(epoch {meta['epoch']})" in lines[0]
    r = train(art, ckpt, run, "--resume", epochs=meta["epoch"] + 1)
    assert r.returncode == 0 and f"resumed from {newest}" in r.stdout


# ----------------------------------------------------------------------------- artifacts
def test_interrupted_recompile_leaves_the_old_artifact_loadable(model_file, art, tmp_path):
    """SIGKILL while a recompile into an existing artifact is under way: the old artifact
    (and its ckpt/ folder) still loads and runs; the next compile cleans up and swaps."""
    ckpt = art / "ckpt"
    assert train(art, ckpt, tmp_path / "run").returncode == 0
    before = digests(art)
    # with IR dumps: takes a while; without the compile cache, so that the build itself runs
    # in the staging folder beside the artifact (a cached compile only copies there:
    # tests/test_compile_cache.py kills one while it builds into the cache)
    proc = popen_kiln("compile", model_file, "-o", art, env={"KILN_CACHE": "0"})
    deadline = time.time() + 120
    staging = []
    while time.time() < deadline and not staging:
        staging = [p for p in tmp_path.iterdir() if p.name.startswith(".art.new-")
                   and (p / "ir").is_dir()]
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    assert staging, "never saw the compile's staging folder"
    assert digests(art) == before                              # the old artifact as it was
    state = load_artifact(art).new_state()
    ck.restore_state(state, ckpt)
    out = state.run("predict", {"x:0": np.zeros((2, 64), np.float32)})
    assert out["p:0"].shape == (2, 10)
    state.close()
    r = kiln("compile", model_file, "-o", art, "--no-dump-ir")
    assert r.returncode == 0, r.stderr
    assert "kept from the earlier artifact folder: ckpt" in r.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art.")]   # stale staging gone
    assert {k: v for k, v in digests(art).items() if k.startswith("ckpt/")} == \
        {k: v for k, v in before.items() if k.startswith("ckpt/")}
    load_artifact(art)


def test_a_failed_compile_keeps_the_old_artifact(art, tmp_path):
    before = digests(art)
    broken = tmp_path / "broken.py"
    broken.write_text(MODEL.replace("[64, 10]", "[65, 10]"))   # matmul shape error in build()
    r = kiln("compile", broken, "-o", art)
    assert r.returncode == 2 and "broken.py" in r.stderr
    assert digests(art) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art.")]


def test_compile_refuses_a_folder_that_is_not_an_artifact(model_file, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    r = kiln("compile", model_file, "-o", mine)
    assert r.returncode == 2 and "without a Kiln artifact" in r.stderr
    assert sorted(os.listdir(mine)) == ["notes.txt"]


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(model_file, tmp_path, umask, file_mode, dir_mode):
    art = tmp_path / "art"
    assert kiln("compile", model_file, "-o", art, umask=umask).returncode == 0
    r = kiln("train", art, "--data", "digits", "--ckpt-dir", art / "ckpt", "--run-dir", tmp_path / "run",
             umask=umask)
    assert r.returncode == 0, r.stderr
    assert kiln("predict", art, "--data", "digits", "--out", tmp_path / "p.csv", umask=umask).returncode == 0
    files = [art / "manifest.json", art / "init.safetensors", art / "src/model.ll",
             art / "ir/train/kernels.txt", ck.latest_checkpoint(art / "ckpt"), art / "ckpt/checkpoint",
             tmp_path / "run/metrics.jsonl", tmp_path / "run/metrics.csv", tmp_path / "p.csv"]
    for f in files:
        assert os.stat(f).st_mode & 0o777 == file_mode, f
    for d in (art, art / "ir", art / "ckpt"):
        assert os.stat(d).st_mode & 0o777 == dir_mode, d


# ----------------------------------------------------------------------------- eval / predict
def test_eval_scores_the_held_out_split_and_says_which_weights(art, tmp_path):
    ckpt, run = tmp_path / "ck", tmp_path / "run"
    assert train(art, ckpt, run, epochs=3).returncode == 0
    r = kiln("eval", art, "--data", "digits", "--ckpt-dir", ckpt)
    assert r.returncode == 0, r.stderr
    newest = ck.latest_checkpoint(ckpt)
    assert f"using checkpoint {newest} (step " in r.stderr and "epoch 3)" in r.stderr
    assert "the 180 held-out examples of digits" in r.stderr
    metrics = dict(zip(r.stdout.split()[::2], map(float, r.stdout.split()[1::2])))
    last = rows(run)[-1]                                      # validation of the last epoch
    assert metrics["loss"] == pytest.approx(last["val_loss"], abs=6e-5)   # printed to 4 places
    assert metrics["accuracy"] == pytest.approx(last["val_accuracy"], abs=6e-5)
    everything = kiln("eval", art, "--data", "digits", "--ckpt-dir", ckpt, "--split", "all")
    assert "all 1797 examples of digits" in everything.stderr
    untrained = kiln("eval", art, "--data", "digits")
    assert untrained.returncode == 0 and "initial (untrained) weights" in untrained.stderr
    p = kiln("predict", art, "--data", "digits", "--out", tmp_path / "p.npy", "--ckpt-dir", ckpt)
    assert p.returncode == 0 and "predicting 1797 examples" in p.stderr
    assert f"using checkpoint {newest}" in p.stderr


def test_features_that_do_not_match_the_model_are_an_error(art, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "wide.npz", x=rng.random((50, 100)).astype(np.float32), y=rng.integers(0, 10, 50))
    r = kiln("train", art, "--data", tmp_path / "wide.npz", "--ckpt-dir", tmp_path / "ck",
             "--run-dir", tmp_path / "run")
    assert r.returncode == 2
    assert "100 features per example" in r.stderr and "takes 64" in r.stderr and "--resize-images" in r.stderr
    assert not (tmp_path / "ck").exists()
    r = kiln("train", art, "--data", tmp_path / "wide.npz", "--resize-images", "--run-dir", tmp_path / "run")
    assert r.returncode == 0 and "resizing 10x10 images to 8x8 for input x:0" in r.stdout   # asked for
    np.savez(tmp_path / "odd.npz", x=rng.random((50, 99)).astype(np.float32), y=rng.integers(0, 10, 50))
    r = kiln("train", art, "--data", tmp_path / "odd.npz", "--resize-images", "--run-dir", tmp_path / "run")
    assert r.returncode == 2 and "not a square image size" in r.stderr


def test_a_file_that_is_not_npz_gets_a_clear_error(art, tmp_path):
    (tmp_path / "data.npz").write_text("label,pixel\n1,0.5\n")
    r = kiln("train", art, "--data", tmp_path / "data.npz", "--run-dir", tmp_path / "run")
    assert r.returncode == 2 and "not a valid .npz archive" in r.stderr
    assert "allow_pickle" not in r.stderr


# ----------------------------------------------------------------------------- output
def test_a_log_file_gets_one_line_per_epoch(art, tmp_path):
    r = train(art, tmp_path / "ck", tmp_path / "run", epochs=3)
    assert r.returncode == 0
    assert "\r" not in r.stdout + r.stderr                     # no progress-bar redraws in a log
    epoch_lines = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]


def test_extra_trainer_feed_is_refused_at_compile_time(tmp_path):
    model = tmp_path / "m.py"
    model.write_text(MODEL.replace('    logits = tf.matmul(x, w)\n',
                                   '    training = tf.placeholder(tf.bool, [], name="training")\n'
                                   '    logits = tf.matmul(x, w)\n')
                     .replace('"train": {"feeds": [x, labels]', '"train": {"feeds": [x, labels, training]'))
    r = kiln("compile", model, "-o", tmp_path / "out")
    assert r.returncode == 2
    assert "entry 'train' feeds 3 tensors" in r.stderr and "training:0" in r.stderr
    assert "samples/mnist_cnn.py" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(cuda.device_count() > 0, reason="this machine has a GPU")
def test_a_cuda_artifact_without_a_gpu_says_what_to_do(art, tmp_path):
    """A manifest that says CUDA (GPU build) on a machine without one: refused before any
    native code runs, with the ways out."""
    m = json.loads((art / "manifest.json").read_text())
    m["target"] = {"kind": "cuda", "arch": "sm_90", "emulated": False}
    (art / "manifest.json").write_text(json.dumps(m))
    r = kiln("train", art, "--data", "digits", "--run-dir", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "is a CUDA artifact (sm_90)" in r.stderr and "no usable CUDA GPU" in r.stderr
    assert "--target cpu" in r.stderr and "--cuda-emulate" in r.stderr


def test_compiling_for_cuda_without_a_gpu_prints_a_note(monkeypatch, capsys):
    """The note `kiln compile --target cuda` prints on a machine without a GPU (not for the
    emulator or the CPU target)."""
    from compiler import cli_compile
    from compiler.codegen.registry import Target
    monkeypatch.setattr(cuda, "device_count", lambda: 0)
    monkeypatch.setattr(cuda, "why_no_device", lambda: "no driver here")
    gpu = Target("cuda", (("arch", "sm_90"), ("emulate", False), ("tf32", False)))
    emulated = Target("cuda", (("arch", "sm_90"), ("emulate", True), ("tf32", False)))
    for target, expect in ((gpu, True), (emulated, False), (Target("cpu"), False)):
        note = cli_compile.device_note(target)
        assert ("no usable CUDA GPU (no driver here)" in note and "--cuda-emulate" in note) == expect, note


def test_a_swap_cut_by_sigkill_is_recovered_by_the_next_compile(compiled, tmp_path):
    """A compile killed between the swap's renames (old artifact moved aside, user's ckpt/
    already in the new folder, nothing at the output path): the next compile puts both back
    before it starts, so nothing is lost."""
    from compiler.artifact import new_staging_dir

    final = tmp_path / "art"
    shutil.copytree(compiled, final)
    (final / "ckpt").mkdir()
    (final / "ckpt" / "ckpt-7.safetensors").write_bytes(b"weights")
    dead = subprocess.Popen(["true"])
    dead.wait()                                                # a pid that no longer runs
    staged, aside = tmp_path / f".art.new-{dead.pid}-x", tmp_path / f".art.old-{dead.pid}-y"
    staged.mkdir()
    aside.mkdir()
    os.rename(final / "ckpt", staged / "ckpt")
    os.rename(final, aside / "art")
    fresh = new_staging_dir(final)
    assert (final / "ckpt" / "ckpt-7.safetensors").read_bytes() == b"weights"
    load_artifact(final)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".art.")) == [fresh.name]

"""The samples (SEEDS.md "Programs the documents train") as model files: each compiles with
load_model + compile_entries, and its artifact trains, evaluates and predicts."""
import importlib.util
import os

import numpy as np
import pytest

import runtime
from compiler.frontend.compile_graph import compile_entries
from compiler.model_file import load_model
from runtime import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
RNG_SEED = 0


def mnist_batch(rng, n=8):
    """MNIST-shaped classification data: 10 noisy class centres in [N, 784]."""
    centers = np.random.default_rng(99).random((10, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return centers[y] + 0.3 * rng.standard_normal((n, 784), dtype=np.float32), y


def image_batch(rng, n=8):
    y = rng.integers(0, 10, n)
    return rng.random((n, 32, 32, 3), dtype=np.float32) * 0.5 + 0.05 * y[:, None, None, None], y


def binary_batch(rng, n=16):
    x = rng.standard_normal((n, 20)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def regression_batch(rng, n=16):
    x = rng.uniform(0, 50, (n, 1)).astype(np.float32)
    return x, (3 * x[:, 0] + 2).astype(np.float32)


# sample -> (batch maker or None for feed-less, predict fetch key, predict shape per example)
CASES = {
    "linear_regression": (regression_batch, "predictions", ()),
    "plane_fit": (None, "predictions", None),
    "mnist_softmax": (mnist_batch, "probabilities", (10,)),
    "mnist_mlp": (mnist_batch, "probabilities", (10,)),
    "mnist_cnn": (mnist_batch, "probabilities", (10,)),
    "lenet5": (mnist_batch, "probabilities", (10,)),
    "model_class": (mnist_batch, "probabilities", (10,)),
    "image_cnn": (image_batch, "probabilities", (10,)),
    "binary_mlp": (binary_batch, "probabilities", (1,)),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compile each sample once (lazily); returns ``name -> (artifact, {entry: record})``."""
    cache, root = {}, tmp_path_factory.mktemp("samples")

    def get(name):
        if name not in cache:
            model, entries = load_model(os.path.join(SAMPLES, name + ".py"))
            out = compile_entries(model.graph, {n: e.as_compile_entry() for n, e in entries.items()},
                                  root / name, dump_ir=False)
            cache[name] = (runtime.load_artifact(out), {n: e.record() for n, e in entries.items()})
        return cache[name]

    return get


def fetch(out, records, entry, key):
    return out[records[entry]["fetches"][key]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_trains_evaluates_and_predicts(compiled, name):
    make, pred_key, per_example = CASES[name]
    art, records = compiled(name)
    assert set(records) == {"train", "eval", "predict"}
    assert "loss" in records["train"]["fetches"] and records["train"]["targets"]
    rng = np.random.default_rng(RNG_SEED)
    x, y = make(rng) if make else (None, None)
    feeds = {"x": x, "labels": y} if make else {}
    with art.new_state() as state:
        before = float(fetch(state.run("eval", feeds), records, "eval", "loss"))
        losses = [float(fetch(state.run("train", feeds), records, "train", "loss")) for _ in range(3)]
        evaluated = state.run("eval", feeds)
        after = float(fetch(evaluated, records, "eval", "loss"))
        pred = fetch(state.run("predict", {"x": x} if make else {}), records, "predict", pred_key)
    assert np.all(np.isfinite(losses)) and np.isfinite(after)
    assert after < before, (name, before, losses, after)
    if per_example is not None:
        assert pred.shape == (len(x),) + per_example
    else:
        assert pred.shape == (1, 100)
    if pred_key == "probabilities" and per_example == (10,):
        assert np.allclose(pred.sum(axis=1), 1.0, atol=1e-4)
    if "accuracy" in records["eval"]["fetches"]:
        assert 0.0 <= float(fetch(evaluated, records, "eval", "accuracy")) <= 1.0


def test_mnist_cnn_dropout_only_in_train(compiled):
    """train's loss (dropout) is random; eval's and predict's (no dropout) are deterministic."""
    art, records = compiled("mnist_cnn")
    x, y = mnist_batch(np.random.default_rng(1))
    with art.new_state() as state:
        evals = [fetch(state.run("eval", {"x": x, "labels": y}), records, "eval", "loss") for _ in range(2)]
        preds = [fetch(state.run("predict", {"x": x}), records, "predict", "probabilities") for _ in range(2)]
    assert evals[0] == evals[1] and np.array_equal(preds[0], preds[1])
    assert records["train"]["fetches"]["loss"] != records["eval"]["fetches"]["loss"]


def test_plane_fit_artifact_converges(compiled):
    art, _ = compiled("plane_fit")
    with art.new_state() as state:
        for _ in range(200):
            state.run("train", {})
        w, b = state.read_variable("W"), state.read_variable("b")
    np.testing.assert_allclose(w, [[0.1, 0.2]], atol=1e-3)
    np.testing.assert_allclose(b, [0.3], atol=1e-3)


def test_binary_mlp_trains_from_a_csv(compiled, tmp_path):
    """A generated CSV (20 features + 0/1 label) read by runtime.data feeds binary_mlp."""
    x, y = binary_batch(np.random.default_rng(2), 96)
    path = tmp_path / "binary.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", fmt="%.5f")
    src = data.open_source(str(path))
    art, records = compiled("binary_mlp")
    with art.new_state() as state:
        first = float(fetch(state.run("eval", {"x": x, "labels": y}), records, "eval", "loss"))
        with data.batches(src, 32, epochs=5, seed=0) as it:
            for xb, yb in it:
                assert xb.shape[1:] == (20,) and yb.dtype == np.int64
                state.run("train", {"x": xb, "labels": yb})
        last = float(fetch(state.run("eval", {"x": x, "labels": y}), records, "eval", "loss"))
    assert last < first


def test_image_cnn_reads_an_image_folder(compiled, tmp_path):
    """An image folder read with size=32, channels=3 matches image_cnn's feed."""
    pil = pytest.importorskip("PIL.Image")
    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pil.new("RGB", (40, 30), color).save(tmp_path / cls / f"{i}.png")
    src = data.open_source(f"images:{tmp_path}", size=32, channels=3)
    art, records = compiled("image_cnn")
    assert tuple(src.feature_shape) == tuple(art.entry("predict").feeds[0].shape[1:])
    x, y = next(iter(src.chunks()))
    with art.new_state() as state:
        out = state.run("train", {"x": x, "labels": y})
    assert np.isfinite(fetch(out, records, "train", "loss"))


def load_sample(name):
    spec = importlib.util.spec_from_file_location(f"sample_{name}", os.path.join(SAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, argv", [
    ("linear_regression", ["--steps", "200"]), ("mnist_softmax", ["--steps", "2", "--batch-size", "8"]),
    ("mnist_cnn", ["--steps", "1", "--batch-size", "4"]), ("lenet5", ["--steps", "2", "--batch-size", "8"]),
    ("image_cnn", ["--steps", "1", "--batch-size", "4"]), ("binary_mlp", ["--steps", "3"]),
])
def test_sample_main_runs_through_session(name, argv, capsys):
    load_sample(name).main(argv)
    text = capsys.readouterr().out
    assert ("loss" in text) or ("end error" in text), text


def test_model_class_main_saves_and_loads(tmp_path, capsys):
    load_sample("model_class").main(["--steps", "2", "--batch-size", "8", "--save-dir", str(tmp_path)])
    text = capsys.readouterr().out
    assert f"Model saved in file: {tmp_path / 'lenet5.ckpt'}" in text
    assert "Model restored from file:" in text


def test_plane_fit_main_unchanged(tmp_path, capsys):
    load_sample("plane_fit").main(["--steps", "201", "--ckpt-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("0 [[") and lines[-1].startswith("final loss")
    assert "checkpoint saved to" in lines[-1] and (tmp_path / "checkpoint").exists()

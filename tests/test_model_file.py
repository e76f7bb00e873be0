"""Model files and `kiln compile`: the convention of docs/model-files.md end to end."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import runtime
from compiler.cli import main
from compiler.codegen.registry import backend_names
from compiler.model_file import ModelFileError, load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kiln(*args):
    """Run ``python -m compiler.cli ARGS`` from the repo root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """samples/mnist_mlp.py compiled once through the real command line."""
    out = tmp_path_factory.mktemp("art") / "mlp"
    proc = kiln("compile", "samples/mnist_mlp.py", "-o", out, "--no-dump-ir")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_compile_prints_a_summary(mlp):
    out, proc = mlp
    text = proc.stdout
    assert f"-> {out}" in text and "target cpu" in text
    for name in ("train", "eval", "predict"):
        assert f"  {name} " in text
    assert "variables: " in text and "(6 trainable)" in text
    assert not any((out / "ir").glob("*/*.kir"))  # --no-dump-ir


def test_manifest_records_the_fetch_keys(mlp):
    out, _ = mlp
    m = json.loads((out / "manifest.json").read_text())
    entries = m["model"]["entries"]
    assert m["model"]["source"] == "mnist_mlp.py"
    assert entries["train"]["fetches"] == {"loss": "loss:0", "accuracy": "accuracy:0"}
    assert entries["train"]["targets"] == ["train"]
    assert entries["predict"] == {"feeds": ["x:0"], "fetches": {"probabilities": "probabilities:0"},
                                  "targets": []}
    fetch_names = [f["name"] for f in m["entry_points"]["predict"]["fetches"]]
    assert fetch_names == ["probabilities:0"]


def test_artifact_runs_predict_and_train(mlp):
    out, _ = mlp
    art = runtime.load_artifact(out)
    keys = art.manifest["model"]["entries"]
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 784), dtype=np.float32), np.array([0, 1, 2, 3])
    with art.new_state() as state:
        probs = state.run("predict", {"x": x})[keys["predict"]["fetches"]["probabilities"]]
        assert probs.shape == (4, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        before = state.read_variable("fc1/kernel")
        ev = state.run("eval", {"x": x, "labels": y})
        assert np.array_equal(state.read_variable("fc1/kernel"), before)  # eval trains nothing
        losses = [float(state.run("train", {"x": x, "labels": y})[keys["train"]["fetches"]["loss"]])
                  for _ in range(5)]
        assert losses[0] == pytest.approx(float(ev["loss:0"]), rel=1e-5)
        assert not np.array_equal(state.read_variable("fc1/kernel"), before)
        assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------- errors

def write(tmp_path, body, name="model.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


HEADER = """\
from compiler import tf


def build():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    y = tf.reduce_sum(x * 2.0, name="y")
"""


def compile_err(capsys, path, *extra, out="out"):
    code = main(["compile", path, "-o", str(os.path.join(os.path.dirname(path), out)), *extra])
    return code, capsys.readouterr().err


def test_syntax_error_names_file_and_line(tmp_path, capsys):
    path = write(tmp_path, "from compiler import tf\n\ndef build(:\n    pass\n")
    code, err = compile_err(capsys, path)
    assert code == 2 and err.startswith(f"kiln: {path}:3: syntax error")


def test_exception_in_build_names_the_model_line(tmp_path, capsys):
    path = write(tmp_path, HEADER + "    z = tf.no_such_op(y)\n    return {}\n")
    code, err = compile_err(capsys, path)
    assert code == 2 and err.startswith(f"kiln: {path}:7: error while building the model")
    assert "no_such_op" in err


def test_missing_build_function(tmp_path, capsys):
    path = write(tmp_path, "from compiler import tf\nx = tf.constant(1.0)\n")
    code, err = compile_err(capsys, path)
    assert code == 2 and f"kiln: {path}: defines no build() function" in err


@pytest.mark.parametrize("entries, message", [
    ('{"2bad": {"feeds": [x], "fetches": {"y": y}}}', "entry name '2bad' must be a C identifier"),
    ('{"predict": {"fetches": {"y": y}}}', "entry 'predict': missing 'feeds'"),
    ('{"predict": {"feeds": [x]}}', "entry 'predict': missing 'fetches'"),
    ('{"predict": {"feeds": [x], "fetches": {"y": 3}}}', "fetch 'y' is not a tensor"),
    ('{"train": {"feeds": [x], "fetches": {"y": y}}}', "'train' needs 'targets'"),
    ('[x, y]', "build() must return a non-empty dict of entry points"),
])
def test_bad_entries_name_the_file_and_entry(tmp_path, capsys, entries, message):
    path = write(tmp_path, HEADER + f"    return {entries}\n")
    code, err = compile_err(capsys, path)
    assert code == 2 and err.startswith(f"kiln: {path}:4: ") and message in err, err


def test_load_model_accepts_a_fetch_list_and_build_graph(tmp_path):
    path = write(tmp_path, HEADER.replace("def build()", "def build_graph()")
                 + '    return {"predict": {"feeds": x, "fetches": [y]}}\n')
    model, entries = load_model(path)
    assert model.build_name == "build_graph"
    assert list(entries["predict"].fetches) == ["y:0"] and entries["predict"].feeds[0].name == "x:0"
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(str(tmp_path / "nope.py"))


def test_unknown_target(tmp_path, capsys):
    path = write(tmp_path, HEADER + '    return {"predict": {"feeds": [x], "fetches": {"y": y}}}\n')
    with pytest.raises(SystemExit) as stop:   # argparse: usage + the choices
        compile_err(capsys, path, "--target", "tpu")
    err = capsys.readouterr().err
    choices = ", ".join(repr(name) for name in backend_names())
    assert stop.value.code == 2 and f"invalid choice: 'tpu' (choose from {choices})" in err and "'mlu'" in choices
    assert not (tmp_path / "out").exists()


def test_wrong_arguments_and_help():
    proc = kiln("compile", "samples/mnist_mlp.py")  # no -o
    assert proc.returncode == 2 and "usage: kiln compile" in proc.stderr
    assert "-o/--output" in proc.stderr
    proc = kiln("compile", "--help")
    assert proc.returncode == 0 and "--dump-ir" in proc.stdout and "docs/model-files.md" in proc.stdout


def test_legacy_build_graph_returning_tensors_is_explained(tmp_path, capsys):
    sample = write(tmp_path, HEADER.replace("def build()", "def build_graph()") + '    return {"x": x, "y": y}\n')
    code = main(["compile", sample, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "build_graph() returned a dict of tensors/ops, not of entry points" in err
    assert err.startswith(f"kiln: {sample}:") and not (tmp_path / "out").exists()


def test_tiny_model_compiles_in_process_with_ir_dumps(tmp_path, capsys):
    path = write(tmp_path, HEADER + '    return {"predict": {"feeds": [x], "fetches": {"total": y}}}\n')
    assert main(["compile", path, "-o", str(tmp_path / "out")]) == 0
    assert "predict" in capsys.readouterr().out
    assert list((tmp_path / "out" / "ir" / "predict").glob("*.kir"))
    art = runtime.load_artifact(tmp_path / "out")
    name = art.manifest["model"]["entries"]["predict"]["fetches"]["total"]
    with art.new_state() as state:
        assert float(state.run("predict", {"x": np.ones((2, 3), np.float32)})[name]) == 12.0

"""`kiln ir` / `kiln inspect` load model files as `kiln compile` does, elide large constants by
default, and `kiln --version`; in process through ``compiler.cli.main``."""
import importlib.metadata
import os
import re
import sys
import textwrap

import pytest

from compiler.artifact import KILN_VERSION
from compiler.cli import main
from compiler.ir.parser import IRParseError, parse_function
from compiler.ir.printer import ELIDED, elide_constants
from compiler.ir.verifier import verify
from compiler.passes.manager import PIPELINE
from tests.test_pass_manager import check_dot_syntax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = [os.path.join(ROOT, "samples", "mnist_mlp.py"), "--fetch", "train", "--fetch", "loss:0"]
PLANE = [os.path.join(ROOT, "samples", "plane_fit.py"), "--fetch", "train", "--fetch", "loss:0"]

BUILD_ONLY = '''\
from compiler import tf


def build():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w = tf.get_variable("w", [3, 1])
    mse = tf.reduce_mean(tf.square(tf.matmul(x, w)), name="mse")
    train = tf.train.GradientDescentOptimizer(0.1).minimize(mse, name="train")
    return {"train": {"feeds": [x], "fetches": {"objective": mse}, "targets": [train]},
            "eval": {"feeds": [x], "fetches": {"objective": mse, "half": mse * 0.5}}}
'''


def run(capsys, *args):
    """``kiln ARGS`` in process; returns (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fresh_import_of_common(monkeypatch):
    """samples/common.py not imported yet, so the model file's own import of it is tested."""
    monkeypatch.delitem(sys.modules, "common", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the sample adds the repo root to it
    samples = os.path.join(ROOT, "samples")
    assert samples not in sys.path
    yield
    assert samples not in sys.path  # the model file's folder is taken off the import path again


@pytest.fixture
def build_only(tmp_path):
    """A model file written as docs/model-files.md says: everything inside build()."""
    path = tmp_path / "build_only.py"
    path.write_text(BUILD_ONLY)
    return path


# ----------------------------------------------------------------------------- model files
def test_inspect_list_on_the_mlp_sample_imports_its_neighbour(capsys, fresh_import_of_common):
    code, out, err = run(capsys, "inspect", *MLP, "--list")
    assert code == 0, err
    rows = out.splitlines()
    assert [row.split()[1] for row in rows[1:]] == ["graph"] + [p.replace("_", "-") for p in PIPELINE]
    assert int(rows[-1].split()[3]) < int(rows[1].split()[3])  # fusion made fewer kernels


def test_inspect_stage_of_the_mlp_sample(capsys, fresh_import_of_common):
    code, out, err = run(capsys, "inspect", *MLP, "--stage", "fusion")
    assert code == 0, err
    assert out.startswith("func @step {") and 'feed "x:0"' in out and 'pattern="contraction"' in out
    code, full, _ = run(capsys, "inspect", *MLP, "--stage", "fusion", "--full-constants")
    assert code == 0 and elide_constants(full) == out
    verify(parse_function(full))


def test_inspect_diff_and_dot_of_the_mlp_sample(capsys, tmp_path, fresh_import_of_common):
    dot = tmp_path / "mlp.dot"
    code, out, err = run(capsys, "inspect", *MLP, "--diff", "cse", "fusion", "--dot", dot)
    assert code == 0, err
    assert out.startswith("--- 03-cse.kir\n+++ 05-fusion.kir\n") and "+  %" in out and "fused(" in out
    assert f"wrote DOT of stage 6 memory-plan to {dot}" in err
    text = dot.read_text()
    assert text.startswith('digraph "step" {') and "subgraph cluster_0" in text
    check_dot_syntax(text)


def test_model_file_defining_only_build(capsys, build_only):
    code, out, err = run(capsys, "ir", build_only, "--fetch", "train", "--fetch", "mse:0")
    assert code == 0, err
    assert 'feed "x:0"' in out and 'fetch "mse:0"' in out and 'state "w" = ' in out
    code, listing, err = run(capsys, "inspect", build_only, "--fetch", "train", "--fetch", "mse:0", "--list")
    assert code == 0 and listing.splitlines()[1].split()[1] == "graph"


def test_fetch_by_an_entry_points_key(capsys, build_only):
    code, out, err = run(capsys, "ir", build_only, "--fetch", "objective")
    assert code == 0, err
    assert 'fetch "mse:0"' in out and 'state "w" =' not in out  # no train target: no update
    code, out, err = run(capsys, "ir", build_only, "--fetch", "half")
    assert code == 0 and 'fetch "Mul:0"' in out


def test_unknown_name_lists_the_entry_points(capsys, build_only):
    code, out, err = run(capsys, "ir", build_only, "--fetch", "nothing")
    assert code == 2 and out == ""
    assert f"kiln: {build_only}: no tensor or op named 'nothing'" in err
    assert "the entry points use: train: train, mse:0; eval: mse:0, Mul:0" in err
    code, _, err = run(capsys, "inspect", build_only, "--fetch", "train", "--feed", "objective")
    assert code == 2 and "no tensor or op named 'objective'" in err  # keys name fetches, not feeds


def test_a_key_naming_different_tensors_is_refused(capsys, tmp_path):
    path = tmp_path / "clash.py"
    path.write_text(BUILD_ONLY.replace('{"objective": mse, "half"', '{"objective": mse * 2, "half"'))
    code, _, err = run(capsys, "ir", path, "--fetch", "objective")
    assert code == 2 and "fetch key 'objective' names several tensors: mse:0, Mul:0" in err


def test_entry_points_kiln_compile_refuses_still_help_with_names(capsys, tmp_path):
    path = tmp_path / "no_targets.py"  # 'train' without targets: kiln compile refuses it
    path.write_text(BUILD_ONLY.replace(', "targets": [train]}', "}"))
    code, out, err = run(capsys, "ir", path, "--fetch", "half")  # eval's key still resolves
    assert code == 0 and 'fetch "Mul:0"' in out, err
    code, _, err = run(capsys, "ir", path, "--fetch", "nothing")
    assert code == 2 and err.rstrip().endswith("the entry points use: eval: mse:0, Mul:0")


def test_script_without_build_lists_graph_names(capsys, tmp_path):
    path = tmp_path / "script.py"
    path.write_text("from compiler import tf\nx = tf.placeholder(tf.float32, [None, 2], name='x')\n"
                    "y = tf.reduce_sum(x * x, name='total')\n")
    code, out, err = run(capsys, "ir", path, "--fetch", "total:0")
    assert code == 0 and 'fetch "total:0"' in out, err
    code, _, err = run(capsys, "ir", path, "--fetch", "sum")
    assert code == 2 and "names in the graph include: x:0, Mul:0, total:0" in err


def test_model_file_errors_read_as_kiln_compiles(capsys, tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent("""\
        from compiler import tf


        def build():
            return tf.no_such_op()
        """))
    code, _, err = run(capsys, "ir", path, "--fetch", "x")
    assert code == 2 and err.startswith(f"kiln: {path}:5: error while building the model: AttributeError")


# ----------------------------------------------------------------------------- elision
def test_kiln_ir_elides_large_constants_unless_asked(capsys):
    code, out, err = run(capsys, "ir", *PLANE)
    assert code == 0, err
    assert f"dense<f32[2,100]>({ELIDED})" in out and f"dense<f32[100]>({ELIDED})" in out
    assert "dense<f32[]>(0.5)" in out  # small constants stay
    with pytest.raises(IRParseError, match="elided"):
        parse_function(out)
    code, full, _ = run(capsys, "ir", *PLANE, "--full-constants")
    assert code == 0 and ELIDED not in full and elide_constants(full) == out
    verify(parse_function(full))


def _with_first_value(text, value):
    """IR text whose f32[2,100] data constant starts with ``value`` instead."""
    changed, count = re.subn(r"(dense<f32\[2,100\]>\(\[\[)[^,]*", rf"\g<1>{value}", text, count=1)
    assert count == 1
    return changed


def test_inspect_diff_says_when_only_elided_values_differ(capsys, tmp_path):
    dump = tmp_path / "ir"
    assert run(capsys, "inspect", *PLANE, "--list", "--dump-dir", dump)[0] == 0
    graph = dump / "00-graph.kir"
    graph.write_text(_with_first_value(graph.read_text(), "0.25"))
    (dump / "02-simplify.kir").write_text(graph.read_text())
    code, out, _ = run(capsys, "inspect", dump, "--diff", "graph", "simplify")
    assert code == 0 and out == "(stages graph and simplify print the same IR)\n"
    (dump / "02-simplify.kir").write_text(_with_first_value(graph.read_text(), "0.75"))
    code, out, _ = run(capsys, "inspect", dump, "--diff", "graph", "simplify")
    assert out == "(stages graph and simplify differ only in elided constant values; --full-constants shows them)\n"
    code, out, _ = run(capsys, "inspect", dump, "--diff", "graph", "simplify", "--full-constants")
    assert "-  %2 : f32[2,100] = constant() {value=dense<f32[2,100]>([[0.25, " in out
    assert "+  %2 : f32[2,100] = constant() {value=dense<f32[2,100]>([[0.75, " in out


# ----------------------------------------------------------------------------- --version
def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"kiln {KILN_VERSION}\n" == f"kiln {importlib.metadata.version('kiln')}\n"


def test_version_without_package_metadata(capsys, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"kiln {KILN_VERSION}\n"

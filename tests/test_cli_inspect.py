"""`kiln inspect` and `kiln ir` through the real command line (subprocess, cwd = repo root)."""
import os
import subprocess
import sys

import pytest

from compiler.ir.parser import parse_function
from compiler.ir.printer import elide_constants
from compiler.ir.verifier import verify
from compiler.passes.manager import PIPELINE, load_dump
from tests.test_pass_manager import check_dot_syntax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["samples/plane_fit.py", "--fetch", "train", "--fetch", "loss:0"]


def kiln(*args):
    """Run ``python -m compiler.cli ARGS`` from the repo root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """The plane-fit pipeline dumped once by `kiln inspect --list --dump-dir` (shared by the tests)."""
    folder = tmp_path_factory.mktemp("plane_ir")
    proc = kiln("inspect", *MODEL, "--list", "--dump-dir", folder)
    assert proc.returncode == 0, proc.stderr
    return folder, proc


def test_list_on_a_model_runs_every_pass_and_dumps(dump):
    folder, proc = dump
    rows = proc.stdout.splitlines()
    assert rows[0].split() == ["#", "stage", "ops", "kernels", "ms", "summary"]
    names = [row.split()[1] for row in rows[1:]]
    assert names[0] == "graph" and len(names) == 1 + len(PIPELINE)
    assert [n.replace("-", "_") for n in names[1:]] == PIPELINE
    assert f"wrote {len(names)} stages to {folder}" in proc.stderr
    files = sorted(os.listdir(folder))
    assert files == sorted([f"{i:02d}-{n}.kir" for i, n in enumerate(names)] + ["stages.json"])
    first, last = rows[1].split(), rows[-1].split()
    assert int(last[3]) < int(first[3])  # fewer kernels at the end than in the lowered graph


def test_stage_zero_is_what_kiln_ir_prints(dump):
    folder, _ = dump
    ir = kiln("ir", *MODEL, "--full-constants")
    assert ir.returncode == 0, ir.stderr
    verify(parse_function(ir.stdout))
    staged = kiln("inspect", folder, "--stage", "0", "--full-constants")
    assert staged.returncode == 0 and staged.stdout == ir.stdout  # build(seed=0): the same data
    assert staged.stdout == (folder / "00-graph.kir").read_text()
    elided = kiln("ir", *MODEL)  # the default: the 200 + 100 data values are left out
    assert "dense<f32[2,100]>(__elided__)" in elided.stdout and "dense<f32[]>(0.5)" in elided.stdout
    assert elided.stdout == elide_constants(ir.stdout) == kiln("inspect", folder, "--stage", "0").stdout


def test_stage_by_name_on_model_and_dump_agree(dump):
    folder, _ = dump
    from_model = kiln("inspect", *MODEL, "--stage", "cse")
    from_dump = kiln("inspect", folder, "--stage", "cse")
    assert from_model.returncode == 0 and from_model.stdout.startswith("func @step {")
    assert from_dump.stdout == elide_constants((folder / "03-cse.kir").read_text()) != \
        (folder / "03-cse.kir").read_text()
    assert from_model.stdout == from_dump.stdout
    last = kiln("inspect", folder)  # default: the last stage
    assert last.stdout == elide_constants(load_dump(str(folder)).stages[-1].text)


def test_list_on_a_dump_reads_stages_json(dump):
    folder, proc = dump
    again = kiln("inspect", folder, "--list")
    assert again.returncode == 0
    assert again.stdout == proc.stdout  # the dump keeps the times and summaries of the run


def test_diff_of_two_stages(dump):
    folder, _ = dump
    proc = kiln("inspect", folder, "--diff", "graph", "1")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["--- 00-graph.kir", "+++ " + sorted(os.listdir(folder))[1]]
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    assert any("constant()" in line or "= " in line for line in removed)
    same = kiln("inspect", folder, "--diff", "cse", "cse")
    assert same.returncode == 0 and "print the same IR" in same.stdout


def test_dot_of_the_fused_stage(dump, tmp_path):
    folder, _ = dump
    out = tmp_path / "step.dot"
    proc = kiln("inspect", folder, "--stage", "fusion", "--dot", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --dot with --stage writes the file, prints no IR
    text = out.read_text()
    assert text.startswith('digraph "step" {') and text.rstrip().endswith("}")
    fused = (folder / sorted(os.listdir(folder))[PIPELINE.index("fusion") + 1]).read_text()
    assert ("subgraph cluster_0" in text) == ("fused" in fused)
    assert 'label="state W\\nf32[1,2]", shape=cylinder' in text and "fetch loss:0" in text
    check_dot_syntax(text)


def test_unknown_stage_lists_the_valid_ones(dump):
    folder, _ = dump
    proc = kiln("inspect", folder, "--stage", "nope")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unknown stage 'nope'; stages are: 0 graph, 1 " in proc.stderr
    assert kiln("inspect", folder, "--diff", "0", "99").returncode == 2


@pytest.mark.parametrize("args, message", [
    (["inspect", "no/such/model.py", "--fetch", "x"], "target not found: no/such/model.py"),
    (["inspect", "samples/plane_fit.py"], "samples/plane_fit.py: a model file needs at least one --fetch"),
    (["inspect", "samples/plane_fit.py", "--fetch", "nothing_here"],
     "no tensor or op named 'nothing_here' (The name 'nothing_here' refers to an Operation not in the "
     "graph.); the entry points use: train: train, loss:0; eval: loss:0; predict: predictions:0"),
    (["ir", "missing.py", "--fetch", "x"], "missing.py: model file not found"),
])
def test_wrong_arguments_exit_2_with_a_message(args, message):
    proc = kiln(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_dump_folder_rejects_model_options(dump):
    folder, _ = dump
    proc = kiln("inspect", folder, "--fetch", "train")
    assert proc.returncode == 2 and "apply to a model file" in proc.stderr


def test_bad_model_file_is_named(tmp_path):
    bad = tmp_path / "broken_model.py"
    bad.write_text("from compiler import tf\nx = tf.placeholder(tf.float32, [None, 3])\ny = tf.matmul(x, tf.ones([4, 2]))\n")
    proc = kiln("inspect", bad, "--fetch", "y")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"kiln: {bad}:3: error while building the model: " in proc.stderr  # as kiln compile says it
    syntax = tmp_path / "syntax_model.py"
    syntax.write_text("def broken(:\n")
    proc = kiln("inspect", syntax, "--fetch", "y")
    assert proc.returncode == 2 and f"kiln: {syntax}:1: syntax error" in proc.stderr


def test_passes_option_and_help():
    proc = kiln("inspect", *MODEL, "--passes", "constant-folding", "--list")
    assert proc.returncode == 0, proc.stderr
    assert [row.split()[1] for row in proc.stdout.splitlines()[1:]] == ["graph", "constant-folding"]
    helped = kiln("inspect", "--help")
    assert helped.returncode == 0
    for option in ("--fetch", "--feed", "--list", "--stage", "--diff", "--dot", "--dump-dir", "--passes",
                   "--full-constants"):
        assert option in helped.stdout
    assert "inspect" in kiln("--help").stdout


def test_unreadable_stage_and_unwritable_dot_are_clear(dump, tmp_path):
    folder, _ = dump
    bad = tmp_path / "bad_ir"
    bad.mkdir()
    for name in os.listdir(folder):
        (bad / name).write_text((folder / name).read_text())
    (bad / "00-graph.kir").write_text("garbage\n")
    proc = kiln("inspect", bad, "--stage", "0", "--dot", tmp_path / "g.dot")
    assert proc.returncode == 2 and "cannot read stage 0 graph (00-graph.kir): line 1, col 1" in proc.stderr
    proc = kiln("inspect", folder, "--dot", tmp_path / "new" / "dir.dot")   # missing folders are made
    assert proc.returncode == 0 and (tmp_path / "new" / "dir.dot").read_text().startswith("digraph")
    (tmp_path / "a_file").write_text("")
    proc = kiln("inspect", folder, "--dot", tmp_path / "a_file" / "dir.dot")
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr

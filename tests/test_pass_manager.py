"""Pass manager: order, per-stage records, dumps, verification, copying; DOT output."""
import importlib
import json
import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from compiler import tf
from compiler.ir.from_graph import lower_graph
from compiler.ir.function import Function, Instr, Param, Region, Value
from compiler.ir.interpreter import run_function
from compiler.ir.printer import print_function
from compiler.ir.types import N, TensorType, float32
from compiler.passes.base import PassResult, replace_uses
from compiler.passes.dot import to_dot
from compiler.passes.manager import (PIPELINE, PipelineError, clone_function, count_kernels, diff_stages,
                                     find_stage, format_table, load_dump, run_pipeline)

def small_fn():
    """y = relu(identity(x) * w + 1) over a fed x [N,3] and a variable w [3]; w' = w - 0.1."""
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w = tf.Variable(np.array([1.0, -2.0, 0.5], np.float32), name="w")
    y = tf.nn.relu(tf.identity(x) * w + 1.0, name="y")
    step = tf.assign_sub(w, tf.constant(0.1, shape=[3]), name="step")
    return lower_graph([y], [step.op], [x], name="small")


STATE = {"w": np.array([1.0, -2.0, 0.5], np.float32)}
FEEDS = {"x:0": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5}


def fake_pass(name, fn_body, log=None):
    """A pass object with NAME and run(fn) that applies ``fn_body(fn) -> (summary, stats)``."""
    def run(fn):
        if log is not None:
            log.append(name)
        summary, stats = fn_body(fn)
        return PassResult(fn, summary, stats)
    return SimpleNamespace(NAME=name, run=run)


def drop_identities(fn):
    """Remove identity ops, rewiring their uses (a real rewrite that changes the op count)."""
    dead = [ins for ins in fn.body if ins.kind == "identity"]
    replace_uses(fn, {ins.result: ins.operands[0] for ins in dead})
    fn.body = [ins for ins in fn.body if ins.kind != "identity"]
    return f"removed {len(dead)} identities", {"removed": len(dead)}


def noop(fn):
    return "no change", {}


def break_types(fn):
    """Declare a wrong result type on the first matmul-free elementwise op."""
    ins = next(i for i in fn.body if i.kind == "mul")
    ins.result.type = TensorType(ins.result.type.dtype, (7,))
    return "broke it", {}


# ----------------------------------------------------------------------------- running
def test_pipeline_names_are_the_pass_modules_in_order():
    assert PIPELINE == ["constant_folding", "simplify", "cse", "pruning", "fusion", "memory_plan"]


def test_passes_run_in_order_and_stages_are_recorded():
    fn = small_fn()
    log = []
    result = run_pipeline(fn, passes=[fake_pass("first", noop, log), fake_pass("drop-identity", drop_identities, log),
                                      fake_pass("last", noop, log)])
    assert log == ["first", "drop-identity", "last"]
    assert [(s.index, s.name) for s in result.stages] == [(0, "graph"), (1, "first"), (2, "drop-identity"), (3, "last")]
    drop = result.stages[2]
    n = len(fn.body)
    assert (drop.ops_before, drop.ops_after) == (n, n - 1)
    assert drop.summary == "removed 1 identities" and drop.stats == {"removed": 1}
    assert drop.time_ms >= 0.0 and drop.text == print_function(drop.fn)
    assert "identity" in result.stages[1].text and "identity" not in drop.text
    # kernels: no constant/identity/reshape; the graph has constants and the identity
    assert result.stages[0].kernels == count_kernels(fn) == sum(i.kind not in ("constant", "identity") for i in fn.body)
    assert result.fn is result.stages[-1].fn


def test_callers_function_and_earlier_stages_are_untouched():
    fn = small_fn()
    before = print_function(fn)
    body_ids = [id(ins) for ins in fn.body]

    def mutate(f):
        f.body[-1].loc = "changed"  # in-place edits of the pass's input
        f.fetches = []
        return "mutated", {}

    result = run_pipeline(fn, passes=[fake_pass("drop", drop_identities), fake_pass("mutate", mutate)])
    assert print_function(fn) == before and [id(i) for i in fn.body] == body_ids
    assert 'fetch "y:0"' in result.stages[1].text and result.stages[1].fn.fetches  # stage 1 kept its copy
    assert result.fn.fetches == [] and fn.body[-1].loc != "changed" and fn.fetches


def test_clone_function_copies_structure_and_shares_arrays():
    fn = small_fn()
    copy = clone_function(fn)
    assert print_function(copy) == print_function(fn)
    originals = {v for p in fn.params for v in [p.value]} | {v for i in fn.body for v in i.results}
    assert not any(v in originals for i in copy.body for v in i.results + i.operands)
    assert all(i.result.producer is i for i in copy.body)
    const = next(i for i in fn.body if i.kind == "constant")
    twin = copy.body[fn.body.index(const)]
    assert twin.attrs is not const.attrs and twin.attrs["value"] is const.attrs["value"]


def test_clone_function_copies_fused_regions():
    fn = fused_fn()
    copy = clone_function(fn)
    fused, twin = fn.body[0], copy.body[0]
    assert twin.region is not fused.region and twin.region.params[0] is not fused.region.params[0]
    assert twin.region.body[0].operands[0] is twin.region.params[0]
    assert twin.region.yields[0] is twin.region.body[-1].result
    assert copy.fetches[0][1] is twin.results[0] and twin.operands[0] is copy.params[0].value


def test_verify_failure_names_the_pass_and_stage():
    with pytest.raises(PipelineError, match=r"stage 02: IR does not verify after pass 'breaker'.*mul"):
        run_pipeline(small_fn(), passes=[fake_pass("fine", noop), fake_pass("breaker", break_types)])
    # without verification the broken IR goes through (so the check above is the manager's)
    result = run_pipeline(small_fn(), passes=[fake_pass("breaker", break_types)], verify_each=False)
    assert "f32[7]" in result.stages[1].text


def test_a_pass_that_raises_is_named():
    def boom(fn):
        raise ValueError("bad attr")

    with pytest.raises(PipelineError, match=r"stage 01: pass 'exploder' failed: ValueError: bad attr"):
        run_pipeline(small_fn(), passes=[fake_pass("exploder", boom)])


def test_missing_pass_module_is_a_clear_error():
    with pytest.raises(PipelineError, match=r"compiler\.passes\.no_such_pass does not exist"):
        run_pipeline(small_fn(), passes=["no_such_pass"])


def test_find_stage_by_index_name_and_file_stem():
    result = run_pipeline(small_fn(), passes=[fake_pass("constant-folding", noop), fake_pass("cse", noop)])
    stages = result.stages
    for key, index in [(0, 0), ("2", 2), ("02", 2), (-1, 2), ("last", 2), ("graph", 0),
                       ("constant_folding", 1), ("constant-folding", 1), ("01-constant-folding", 1)]:
        assert find_stage(stages, key).index == index, key
    with pytest.raises(KeyError, match=r"unknown stage 'fusion'; stages are: 0 graph, 1 constant-folding, 2 cse"):
        find_stage(stages, "fusion")
    with pytest.raises(KeyError, match="unknown stage '7'"):
        result.stage(7)


# ----------------------------------------------------------------------------- dumps
def test_dump_files_are_written_and_read_back(tmp_path):
    fn = small_fn()
    dump = tmp_path / "ir"
    (dump.mkdir())
    (dump / "05-stale.kir").write_text("old")
    result = run_pipeline(fn, passes=[fake_pass("drop-identity", drop_identities), fake_pass("cse", noop)],
                          dump_dir=str(dump))
    files = sorted(os.listdir(dump))
    assert files == ["00-graph.kir", "01-drop-identity.kir", "02-cse.kir", "stages.json"]
    index = json.loads((dump / "stages.json").read_text())
    assert index["function"] == "small" and index["format"] == "kiln-ir-dump"
    rec = index["stages"][1]
    assert rec["name"] == "drop-identity" and rec["file"] == "01-drop-identity.kir"
    assert rec["stats"] == {"removed": 1} and rec["ops_after"] == rec["ops_before"] - 1 and "text" not in rec
    loaded = load_dump(str(dump))
    for a, b in zip(result.stages, loaded.stages):
        assert (a.index, a.name, a.summary, a.stats, a.ops_after, a.kernels) == \
               (b.index, b.name, b.summary, b.stats, b.ops_after, b.kernels)
        assert b.text == a.text and print_function(b.function()) == a.text
    _, want = run_function(fn, STATE, FEEDS)
    _, got = run_function(loaded.fn, STATE, FEEDS)
    np.testing.assert_array_equal(got["y:0"], want["y:0"])


def test_dump_without_stages_json_loads_from_file_names(tmp_path):
    run_pipeline(small_fn(), passes=[fake_pass("cse", noop)], dump_dir=str(tmp_path))
    os.unlink(tmp_path / "stages.json")
    loaded = load_dump(str(tmp_path))
    assert [(s.index, s.name) for s in loaded.stages] == [(0, "graph"), (1, "cse")]
    with pytest.raises(FileNotFoundError, match="no IR dump folder"):
        load_dump(str(tmp_path / "missing"))


def test_table_and_diff():
    result = run_pipeline(small_fn(), passes=[fake_pass("drop-identity", drop_identities)])
    table = format_table(result.stages).splitlines()
    assert table[0].split() == ["#", "stage", "ops", "kernels", "ms", "summary"]
    assert table[2].split()[:4] == ["1", "drop-identity", str(result.stages[1].ops_after), str(result.stages[1].kernels)]
    assert table[2].endswith("removed 1 identities")
    diff = diff_stages(*result.stages)
    assert diff.startswith("--- 00-graph.kir\n+++ 01-drop-identity.kir\n")
    assert any(line.startswith("-") and "identity(" in line for line in diff.splitlines())
    assert diff_stages(result.stages[1], result.stages[1]) == ""


# ----------------------------------------------------------------------------- real passes
def test_real_pipeline_keeps_numerics_and_dumps(tmp_path):
    """The modules of PIPELINE run in order on the seed MLP step; the result agrees with the input."""
    from tests.models import mlp_train_step

    names = [importlib.import_module(f"compiler.passes.{m}").NAME for m in PIPELINE]
    fn, state, feeds = mlp_train_step(batch=4)
    result = run_pipeline(fn, dump_dir=str(tmp_path))
    assert [s.name for s in result.stages] == ["graph"] + names
    assert result.stages[-1].kernels < result.stages[0].kernels
    assert all(s.summary for s in result.stages)
    want_state, want = run_function(fn, state, feeds)
    got_state, got = run_function(load_dump(str(tmp_path)).fn, state, feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in want_state:
        np.testing.assert_allclose(got_state[key], want_state[key], rtol=1e-4, atol=1e-6, err_msg=key)


# ----------------------------------------------------------------------------- DOT
def fused_fn():
    """feed x f32[N,4], state b f32[4] -> one fused bias+relu kernel and a reduce; fetch both."""
    tx, tb, ts = TensorType(float32, (N, 4)), TensorType(float32, (4,)), TensorType(float32, ())
    x = Param("feed", "x:0", Value("x", tx))
    b = Param("state", "b", Value("b", tb))
    p0, p1 = Value("p0", tx), Value("p1", tb)
    add = Instr("add", [p0, p1], {}, Value("a", tx), loc="BiasAdd")
    relu = Instr("relu", [add.result], {}, Value("r", tx), loc="Relu")
    out = Value("y", tx)
    fused = Instr("fused", [x.value, b.value], {"pattern": "bias_relu"}, [out],
                  region=Region([p0, p1], [add, relu], [relu.result]))
    total = Instr("reduce_sum", [out], {"axes": (0, 1), "keepdims": False}, Value("s", ts), loc="Sum")
    return Function("fused_step", [x, b], [fused, total], [], [("y:0", out), ("s:0", total.result)])


def test_dot_of_a_fused_function():
    text = to_dot(fused_fn())
    assert text == GOLDEN_DOT
    check_dot_syntax(text)


GOLDEN_DOT = """\
digraph "fused_step" {
  rankdir=TB;
  graph [fontname="monospace", fontsize=10];
  node [fontname="monospace", fontsize=10];
  edge [color="#868e96"];
  n0 [label="feed x:0\\nf32[N,4]", shape=invhouse, style=filled, fillcolor="#cfe2ff"];
  n1 [label="state b\\nf32[4]", shape=cylinder, style=filled, fillcolor="#fff3bf"];
  subgraph cluster_0 {
    label="fused #0: bias_relu\\nf32[N,4]";
    style="rounded,filled"; fillcolor="#f8f0fc"; color="#9c36b5";
    n2 [label="add\\nf32[N,4]", shape=box, style=rounded, tooltip="BiasAdd"];
    n3 [label="relu\\nf32[N,4]", shape=box, style=rounded, tooltip="Relu"];
  }
  n4 [label="reduce_sum\\nf32[]", shape=box, style=rounded, tooltip="Sum"];
  n5 [label="fetch y:0\\nf32[N,4]", shape=house, style=filled, fillcolor="#d3f9d8"];
  n6 [label="fetch s:0\\nf32[]", shape=house, style=filled, fillcolor="#d3f9d8"];
  n0 -> n2;
  n1 -> n2;
  n2 -> n3;
  n3 -> n4;
  n3 -> n5;
  n4 -> n6;
}
"""


def check_dot_syntax(text):
    """Braces balance and every statement line ends as DOT requires; Graphviz parses it when present."""
    lines = text.splitlines()
    assert text.count("{") == text.count("}") and lines[-1] == "}"
    assert all(line.endswith((";", "{", "}")) for line in lines)
    if shutil.which("dot"):
        proc = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr


def test_dot_of_a_lowered_function_has_every_node_and_edge():
    fn = small_fn()
    text = to_dot(fn)
    lines = text.splitlines()
    nodes = [line for line in lines if "[label=" in line]
    edges = [line for line in lines if "->" in line]
    assert len(nodes) == len(fn.params) + len(fn.body) + len(fn.state_out) + len(fn.fetches)
    assert len(edges) == sum(len(i.operands) for i in fn.body) + len(fn.state_out) + len(fn.fetches)
    assert 'label="feed x:0\\nf32[N,3]", shape=invhouse' in text
    assert 'label="state w\\nf32[3]", shape=cylinder' in text
    assert "label=\"state' w\\nf32[3]\"" in text and 'label="fetch y:0' in text
    assert "cluster" not in text and text.startswith('digraph "small" {') and text.endswith("}\n")
    check_dot_syntax(text)

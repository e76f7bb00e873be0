"""Splitting a module for parallel LLVM compiles (compiler/codegen/llvm/split.py, build.py):
the parts link into a library that computes what the unsplit one does."""
import json
import os

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.codegen.llvm import build as llvm_build
from compiler.codegen.llvm.split import split_module
from compiler.frontend.compile_graph import compile_entries

TWO = """\
define internal i32 @"helper"(i32 %"x") nounwind
{
entry:
  %"y" = add i32 %"x", 1
  ret i32 %"y"
}

define i32 @"user"(i32 %"x") nounwind
{
entry:
  %"r" = call i32 @"helper"(i32 %"x")
  ret i32 %"r"
}
"""


def test_functions_used_across_parts_are_hidden_and_declared():
    parts = split_module(TWO, 2)
    assert len(parts) == 2
    helper_part = next(p for p in parts if 'define hidden i32 @"helper"' in p)
    user_part = next(p for p in parts if 'define i32 @"user"' in p)
    assert helper_part is not user_part
    assert 'declare hidden i32 @"helper"(i32 %"x") nounwind' in user_part
    assert "internal" not in helper_part


def test_unknown_syntax_is_not_split():
    weak = TWO.replace("define internal", "define weak")
    assert split_module(weak, 2) == [weak]
    assert split_module(TWO, 1) == [TWO]


def _mlp_step(out):
    """Compile a small MLP train step into ``out``; returns (feeds, fetch name)."""
    with tf.Graph().as_default() as g:
        tf.set_random_seed(4)
        x = tf.placeholder(tf.float32, [None, 20], name="x")
        y = tf.placeholder(tf.int64, [None], name="y")
        h = tf.layers.dense(x, 64, tf.nn.relu, name="fc1")
        logits = tf.layers.dense(h, 10, name="fc2")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
        train = tf.train.AdamOptimizer(1e-2).minimize(loss)
        compile_entries(g, {"step": ([loss], [train], [x, y])}, out, dump_ir=False)
    rng = np.random.default_rng(0)
    return {"x:0": rng.random((33, 20), dtype=np.float32), "y:0": rng.integers(0, 10, 33)}


def test_parallel_build_matches_the_serial_one(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE", "0")
    monkeypatch.setattr(llvm_build, "SPLIT_MIN_CHARS", 0)
    losses = {}
    for jobs in ("1", "3"):
        monkeypatch.setenv("KILN_LLVM_JOBS", jobs)
        feeds = _mlp_step(tmp_path / jobs)
        build = json.loads((tmp_path / jobs / "manifest.json").read_text())["build"]
        assert ("llvm_wait_s" in build) == (jobs != "1")  # the parts were compiled by forked children
        assert ("llvm_early_wait_s" in build) == (jobs != "1")  # the engine, while the kernels rendered
        assert "initial_values_ahead_s" in build  # drawn by a forked child (compiler/init_ahead.py)
        state = runtime.load_artifact(tmp_path / jobs).new_state()
        losses[jobs] = [float(state.run("step", feeds)["loss:0"]) for _ in range(5)]
    np.testing.assert_allclose(losses["3"], losses["1"], rtol=1e-6)
    assert losses["1"][-1] < losses["1"][0]  # it trains


def test_jobs_setting(monkeypatch):
    monkeypatch.setenv("KILN_LLVM_JOBS", "3")
    assert llvm_build.llvm_jobs() == 3
    monkeypatch.setenv("KILN_LLVM_JOBS", "many")
    with pytest.raises(llvm_build.BuildError, match="KILN_LLVM_JOBS='many'"):
        llvm_build.llvm_jobs()


SHARED = """\
@"counter" = internal global i32 0

define i32 @"set_counter"(i32 %"x") nounwind
{
entry:
  store i32 %"x", ptr @"counter"
  ret i32 0
}

define i32 @"get_counter"() nounwind
{
entry:
  %"v" = load i32, ptr @"counter"
  ret i32 %"v"
}
"""


def test_a_module_variable_is_one_variable_across_parts(tmp_path, monkeypatch):
    """A mutable internal global (the profiler's current kernel id) is defined in one part
    and declared in the others: the split library has one variable, not one per part."""
    import ctypes

    parts = split_module(SHARED, 2)
    assert len(parts) == 2
    assert sum('@"counter" = hidden global i32 0' in p for p in parts) == 1
    assert sum('@"counter" = external hidden global i32' in p for p in parts) == 1
    monkeypatch.setattr(llvm_build, "SPLIT_MIN_CHARS", 0)
    lib = ctypes.CDLL(llvm_build.compile_module(SHARED, str(tmp_path / "shared.so"), jobs=2).path)
    lib.set_counter(7)
    assert lib.get_counter() == 7
    aggregate = SHARED.replace("internal global i32 0", "internal global [2 x i32] [i32 1, i32 2]")
    assert split_module(aggregate, 2) == [aggregate]  # not handled: left whole


# a module with a GEMM engine (a function group named kiln_sgemm*) and one user of it
ENGINE = TWO.replace('define internal i32 @"helper"', 'define hidden i32 @"kiln_sgemm_t"').replace("helper", "kiln_sgemm_t")


def test_engine_compiled_early_is_linked_only_when_it_is_the_same(tmp_path):
    """``EarlyUnit`` compiles the engine (``kiln_sgemm*``) of a module snapshot in a child;
    ``compile_module`` links that object when the final module's engine is the same, and
    compiles the engine again (closing the child) when it is not."""
    import ctypes

    early = llvm_build.EarlyUnit()
    early(ENGINE)
    res = llvm_build.compile_module(ENGINE, str(tmp_path / "same.so"), jobs=2, early=early)
    assert "early_wait" in res.timings and ctypes.CDLL(res.path).user(1) == 2
    assert not (early.children or os.path.exists(early.tmp))
    other = ENGINE.replace("add i32 %\"x\", 1", "add i32 %\"x\", 5")
    early = llvm_build.EarlyUnit()
    early(ENGINE)
    res = llvm_build.compile_module(other, str(tmp_path / "other.so"), jobs=2, early=early)
    assert "early_wait" not in res.timings and ctypes.CDLL(res.path).user(1) == 6
    assert not (early.children or os.path.exists(early.tmp))


def test_closing_an_early_unit_stops_its_child():
    early = llvm_build.EarlyUnit()
    early(ENGINE)
    pid = early.children[0][0]
    early.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
    assert not os.path.exists(early.tmp)


def test_an_early_engine_that_fails_is_redone_here_with_its_error(tmp_path):
    """The child compiling the engine exits on bad IR; ``compile_module`` compiles the engine
    again in this process, which raises LLVM's error, and leaves no child or folder."""
    bad = ENGINE.replace('%"y" = add i32 %"x", 1', '%"y" = add i32 %"x", %"nowhere"')
    early = llvm_build.EarlyUnit()
    early(bad)
    pid = early.children[0][0]
    with pytest.raises(llvm_build.BuildError, match=r"(?s)invalid LLVM IR.*nowhere"):
        llvm_build.compile_module(bad, str(tmp_path / "bad.so"), jobs=2, early=early)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not os.path.exists(early.tmp) and not (tmp_path / "bad.so").exists()

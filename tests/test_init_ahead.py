"""Initial values drawn in a forked child while the compile runs (compiler/init_ahead.py):
the child's file is what the process would write, a failing child's error is raised here,
and a child still running when the compile fails is stopped.  Also the compile's pause of
Python's cyclic GC (``compile.gc_paused``)."""
import os
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from compiler.artifact import VariableInfo
from compiler.init_ahead import InitAhead

VARS = [VariableInfo("w", "float32", (3, 4), True), VariableInfo("m", "float32", (3, 4), False),
        VariableInfo("step", "int64", (), False)]


def values():
    return {"w": np.arange(12, dtype=np.float32).reshape(3, 4) - 5, "m": np.zeros((3, 4), np.float32),
            "step": np.zeros((), np.int64)}


def test_child_writes_the_file_and_reports_the_zeros(tmp_path):
    ahead = InitAhead(tmp_path / "init.safetensors", VARS, values)
    try:
        zeros, seconds = ahead.result()
    finally:
        ahead.close()
    assert sorted(zeros) == ["m", "step"] and seconds >= 0
    stored = load_file(str(tmp_path / "init.safetensors"))
    assert list(stored) == ["w"]
    np.testing.assert_array_equal(stored["w"], values()["w"])
    assert not os.path.exists(ahead.tmp)


def test_a_failing_child_is_redone_here_with_its_error(tmp_path):
    def broken():
        raise ValueError("initializer of 'w' failed")

    ahead = InitAhead(tmp_path / "init.safetensors", VARS, broken)
    try:
        with pytest.raises(ValueError, match="initializer of 'w' failed"):
            ahead.result()
    finally:
        ahead.close()
    assert not (tmp_path / "init.safetensors").exists()


def test_close_stops_a_running_child(tmp_path):
    def slow():
        time.sleep(60)
        return values()

    ahead = InitAhead(tmp_path / "init.safetensors", VARS, slow)
    pid = ahead.pid
    t0 = time.perf_counter()
    ahead.close()
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not (tmp_path / "init.safetensors").exists()


def test_covers_the_same_or_fewer_variables(tmp_path):
    ahead = InitAhead(tmp_path / "init.safetensors", VARS, values)
    try:
        assert ahead.covers(VARS[:2]) and ahead.covers(VARS)
        assert not ahead.covers(VARS + [VariableInfo("b", "float32", (4,), True)])
        assert not ahead.covers([VariableInfo("w", "float32", (4, 3), True)])  # another shape
    finally:
        ahead.close()


def test_gc_paused_leaves_survivors_old_and_frozen_objects_frozen():
    """``compile.gc_paused``: GC off inside, on after; the objects alive afterwards are in
    the oldest generation (no young collection has to scan them), and objects the program
    itself froze stay frozen."""
    import gc

    from compiler.compile import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        alive = [[i] for i in range(20000)]
    assert gc.isenabled() and gc.get_count()[0] < 1000 and len(gc.get_objects(0)) < 1000 and alive
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            more = [[j] for j in range(100)]
        assert gc.get_freeze_count() == frozen and more
    finally:
        gc.unfreeze()


def test_an_unused_child_leaves_nothing_in_the_artifact_folder(tmp_path):
    ahead = InitAhead(tmp_path / "init.safetensors", VARS, values)
    os.waitpid(ahead.pid, 0)  # finished, its file written in its own folder
    ahead.pid = None
    ahead.close()
    assert list(tmp_path.iterdir()) == []


def test_with_another_thread_running_nothing_forks(tmp_path, monkeypatch):
    """A compile in a process with another Python thread does not fork (a lock held at the
    fork would deadlock the child): the initial values are drawn here, the LLVM units
    compile here, and the artifact runs as usual."""
    import json
    import threading

    import runtime
    from compiler import tf
    from compiler.frontend.compile_graph import compile_entries

    monkeypatch.setenv("KILN_CACHE", "0")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        with tf.Graph().as_default() as g:
            x = tf.placeholder(tf.float32, [None, 8], name="x")
            y = tf.layers.dense(x, 4, kernel_initializer=tf.random_normal_initializer(seed=1), name="d")
            loss = tf.reduce_mean(tf.square(y), name="loss")
            train = tf.train.AdamOptimizer(0.1).minimize(loss)
            out = compile_entries(g, {"step": ([loss], [train], [x])}, tmp_path / "art", dump_ir=False)
    finally:
        stop.set()
    build = json.loads((out / "manifest.json").read_text())["build"]
    assert "initial_values_s" in build and "initial_values_ahead_s" not in build
    assert "llvm_wait_s" not in build and "llvm_early_wait_s" not in build
    state = runtime.load_artifact(out).new_state()
    first = float(state.run("step", {"x": np.ones((3, 8), np.float32)})["loss:0"])
    second = float(state.run("step", {"x": np.ones((3, 8), np.float32)})["loss:0"])
    assert np.isfinite(first) and second < first

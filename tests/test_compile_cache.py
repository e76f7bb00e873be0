"""The persistent compile cache (compiler/cache.py): hits skip LLVM, changes miss, damaged
entries are rebuilt, the size cap evicts least recently used entries, concurrent compiles
agree, KILN_CACHE=0 bypasses it; tf.Session shares it."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import runtime
from compiler import cache, tf
from compiler.codegen.llvm import build as llvm_build
from compiler.frontend.compile_graph import compile_entries, initial_values, variable_infos
from compiler.ir.ops.random import philox_word, random_bits

REPO = Path(__file__).resolve().parents[1]
MODEL = textwrap.dedent("""\
    from compiler import tf


    def build(units=3):
        tf.set_random_seed(1)
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        y = tf.placeholder(tf.float32, [None, units], name="y")
        w = tf.Variable(tf.random_uniform([4, units]), name="w")
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - y), name="loss")
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        return {"step": {"feeds": [x, y], "fetches": {"loss": loss}, "targets": [train]}}
""")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty cache of this test only."""
    root = tmp_path / "cache"
    monkeypatch.setenv("KILN_CACHE_DIR", str(root))
    monkeypatch.delenv("KILN_CACHE", raising=False)
    monkeypatch.delenv("KILN_CACHE_MAX_BYTES", raising=False)
    return root


def _entries(root: Path) -> list:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _compile(out, units=3, seed=1, **kw):
    """Compile the small regression model (its own graph) into ``out``; returns the manifest."""
    with tf.Graph().as_default() as g:
        tf.set_random_seed(seed)
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        y = tf.placeholder(tf.float32, [None, units], name="y")
        w = tf.Variable(tf.random_uniform([4, units]), name="w")
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - y), name="loss")
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        compile_entries(g, {"step": ([loss], [train], [x, y])}, out, **kw)
        expected = initial_values(g, variable_infos(g, ["w"]))["w"]
    return json.loads((Path(out) / "manifest.json").read_text()), expected


def _no_llvm(monkeypatch):
    """Make any LLVM build fail: a cache hit must not need one."""
    def refuse(*args, **kwargs):
        raise AssertionError("LLVM ran on a cache hit")
    monkeypatch.setattr(llvm_build, "compile_module", refuse)


def _init_w(out) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(Path(out) / "init.safetensors"))["w"]


def test_hit_on_unchanged_model_skips_llvm(cache_dir, tmp_path, monkeypatch):
    first, _ = _compile(tmp_path / "a")
    assert first["build"]["cache"] == "miss" and len(_entries(cache_dir)) == 1
    _no_llvm(monkeypatch)
    hits = cache.stats["hit"]
    second, _ = _compile(tmp_path / "b")
    assert second["build"]["cache"] == "hit" and cache.stats["hit"] == hits + 1
    assert not (tmp_path / "b" / cache.STAT_NAME).exists()  # the cache's own note stays in the cache
    assert second["files"] == first["files"] and second["build"]["cache_key"] == first["build"]["cache_key"]
    art = runtime.load_artifact(tmp_path / "b")  # whole: hashes checked
    assert list(art.manifest["entry_points"]) == ["step"]


def test_changed_model_or_option_misses(cache_dir, tmp_path):
    keys = {_compile(tmp_path / "a")[0]["build"]["cache_key"],
            _compile(tmp_path / "b", units=5)[0]["build"]["cache_key"],
            _compile(tmp_path / "c", dump_ir=False)[0]["build"]["cache_key"]}
    assert len(keys) == 3 and len(_entries(cache_dir)) == 3
    assert not (tmp_path / "c" / "ir" / "step").exists()


def test_hit_recomputes_initial_values_of_other_initializers(cache_dir, tmp_path, monkeypatch):
    """A graph seed only changes the initializer here (no random op in the step): the step's
    code is reused, the initial values are this graph's."""
    _compile(tmp_path / "a", seed=1)
    _no_llvm(monkeypatch)
    m, expected = _compile(tmp_path / "b", seed=2)
    assert m["build"]["cache"] == "hit"
    np.testing.assert_array_equal(_init_w(tmp_path / "b"), expected)
    assert not np.array_equal(_init_w(tmp_path / "a"), expected)
    runtime.load_artifact(tmp_path / "b")  # the new init file's hash is in the manifest


@pytest.mark.parametrize("damage", ["truncate_library", "bad_manifest", "missing_init", "flipped_byte"])
def test_corrupt_entry_is_rebuilt(cache_dir, tmp_path, damage):
    first, _ = _compile(tmp_path / "a")
    entry = cache_dir / first["build"]["cache_key"]
    if damage == "truncate_library":
        lib = entry / "lib" / "model.so"
        data = lib.read_bytes()
        lib.unlink()  # the output's hard link keeps its own copy
        lib.write_bytes(data[: len(data) // 2])
    elif damage == "bad_manifest":
        (entry / "manifest.json").unlink()
        (entry / "manifest.json").write_text("{not json")
    elif damage == "missing_init":
        (entry / "init.safetensors").unlink()
    else:  # same size, changed in place: only the hash tells
        with open(entry / "init.safetensors", "r+b") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 1]))
    corrupt = cache.stats["corrupt"]
    second, _ = _compile(tmp_path / "b")
    assert second["build"]["cache"] == "miss" and cache.stats["corrupt"] == corrupt + 1
    cache.verify_entry(entry)  # rebuilt whole
    runtime.load_artifact(tmp_path / "b")


def _fake_store(c, key, nbytes):
    c.store(key, lambda folder: (folder / "blob").write_bytes(b"x" * nbytes))


def test_lru_eviction_honours_the_cap(tmp_path):
    c = cache.CompileCache(tmp_path / "c", cap=2500)
    keys = [f"{i:032x}" for i in range(4)]
    for i, key in enumerate(keys[:2]):
        _fake_store(c, key, 1000)
        os.utime(c.entry(key), (1000 + i, 1000 + i))  # entry 0 older than entry 1
    assert c.lookup(keys[0], check=None) is not None  # a hit makes entry 0 the newest
    with c.open(keys[2], lambda folder: (folder / "blob").write_bytes(b"x" * 1000), check=None) as (_p, hit):
        assert not hit
    assert _entries(c.root) == sorted([keys[0], keys[2]])  # entry 1 went, the cap holds
    assert sum(e[1] for e in c.entries()) <= 2500
    with c.open(keys[3], lambda folder: (folder / "blob").write_bytes(b"x" * 5000), check=None):
        pass  # bigger than the cap alone: the new entry stays, all others go
    assert _entries(c.root) == [keys[3]]


def test_eviction_waits_for_readers(tmp_path):
    c = cache.CompileCache(tmp_path / "c", cap=0)
    _fake_store(c, "a" * 32, 10)
    with c._lock(exclusive=False):
        assert c.evict() == 0 and _entries(c.root) == ["a" * 32]
    assert c.evict() == 1 and _entries(c.root) == []


def test_max_bytes_setting(monkeypatch):
    monkeypatch.setenv("KILN_CACHE_MAX_BYTES", "3M")
    assert cache.max_bytes() == 3 << 20
    monkeypatch.setenv("KILN_CACHE_MAX_BYTES", "lots")
    with pytest.raises(cache.CacheConfigError, match="KILN_CACHE_MAX_BYTES='lots'"):
        cache.max_bytes()


def test_default_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("KILN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_root() == tmp_path / "kiln"


def test_cache_off_bypasses(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE", "0")
    m, _ = _compile(tmp_path / "a")
    assert "cache" not in m["build"] and _entries(cache_dir) == []
    runtime.load_artifact(tmp_path / "a")


def test_unwritable_cache_folder_compiles_without_it(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KILN_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="cannot be written; compiling without a cache"):
        m, _ = _compile(tmp_path / "a")
    assert "cache" not in m["build"]
    runtime.load_artifact(tmp_path / "a")


def test_two_processes_compile_the_same_model(cache_dir, tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-m", "compiler.cli", "compile", str(tmp_path / "model.py"),
                               "-o", str(tmp_path / f"out{i}")], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert len(_entries(cache_dir)) == 1
    cache.verify_entry(cache_dir / _entries(cache_dir)[0])
    assert not [p for p in cache_dir.iterdir() if ".new-" in p.name or ".trash-" in p.name]
    for i in range(2):
        runtime.load_artifact(tmp_path / f"out{i}")


def test_killed_compile_leaves_no_entry(cache_dir, tmp_path):
    """SIGKILL while a compile builds into the cache: no entry appears; the next compile
    builds a whole one and clears the dead builder's staging folder."""
    (tmp_path / "model.py").write_text(MODEL)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "compiler.cli", "compile", str(tmp_path / "model.py"), "-o", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, staging = time.time() + 120, []
    while time.time() < deadline and not staging:
        staging = [p for p in cache_dir.glob(".*.new-*") if (p / "ir").is_dir()] if cache_dir.is_dir() else []
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    assert staging, "never saw the compile's staging folder"
    assert _entries(cache_dir) == [] and not (tmp_path / "out").exists()
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0
    (entry,) = _entries(cache_dir)
    cache.verify_entry(cache_dir / entry)
    assert not [p for p in cache_dir.iterdir() if ".new-" in p.name]
    runtime.load_artifact(tmp_path / "out")


def test_session_reuses_the_cache_across_sessions(cache_dir, monkeypatch):
    x = tf.placeholder(tf.float32, [None, 2])
    v = tf.Variable(tf.ones([2]), name="v")
    y = tf.reduce_sum(x * v, 1)
    with tf.Session(config={"backend": "compiled"}) as sess:
        sess.run(v.initializer)
        first = sess.run(y, {x: [[1, 2], [3, 4]]})
    assert len(_entries(cache_dir)) == 1
    _no_llvm(monkeypatch)
    with tf.Session(config={"backend": "compiled"}) as sess:
        sess.run(v.initializer)
        np.testing.assert_array_equal(sess.run(y, {x: [[1, 2], [3, 4]]}), first)
    np.testing.assert_array_equal(first, [3, 7])


def test_session_without_cache_cleans_its_folder(cache_dir, monkeypatch):
    monkeypatch.setenv("KILN_CACHE", "0")
    x = tf.placeholder(tf.float32, [None, 2])
    with tf.Session(config={"backend": "compiled"}) as sess:
        np.testing.assert_array_equal(sess.run(x * 2.0, {x: [[1, 2]]}), [[2, 4]])
        tmp = sess._tmpdir
        assert tmp and _entries(Path(tmp))
    assert not os.path.exists(tmp) and _entries(cache_dir) == []


@pytest.mark.parametrize("size,step", [(0, 3), (1, 0), (70001, 7), (40000, 2 ** 40 + 3)])
def test_blocked_random_bits_match_philox(size, step):
    """The blocked initializer path draws the numbers of the reference Philox."""
    np.testing.assert_array_equal(random_bits(size, 2 ** 31 - 1, 12345, step),
                                  philox_word(np.arange(size, dtype=np.uint64), 2 ** 31 - 1, 12345, step))


def test_session_artifacts_have_zero_init(cache_dir):
    """A session's artifact holds no init file (its variables live in the session): the
    manifest says "init": "zeros", which the runtime validates and honours."""
    from runtime import manifest as mf

    x = tf.placeholder(tf.float32, [None, 3])
    v = tf.Variable(tf.ones([3]), name="v")
    with tf.Session(config={"backend": "compiled"}) as sess:
        sess.run(v.initializer)
        np.testing.assert_array_equal(sess.run(x + v, {x: [[1, 2, 3]]}), [[2, 3, 4]])
    (entry,) = _entries(cache_dir)
    assert not (cache_dir / entry / "init.safetensors").exists()
    art = runtime.load_artifact(cache_dir / entry)
    assert art.manifest["init"] == "zeros"
    np.testing.assert_array_equal(art.init_values()["v"], np.zeros(3, np.float32))
    bad = dict(art.manifest, init="ones")
    with pytest.raises(mf.ManifestError, match="'init' must be"):
        mf.validate_manifest(bad)
    del bad["init"]
    with pytest.raises(mf.ManifestError, match="'init.safetensors' is not listed"):
        mf.validate_manifest(bad)


def _reference_erfinv(x):
    """Giles' polynomial as first written (both branches everywhere, then a select)."""
    w = -np.log((1.0 - x) * (1.0 + x))
    ws, wl = w - 2.5, np.sqrt(w) - 3.0
    p, q = 2.81022636e-08, -0.000200214257
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):
        p = c + p * ws
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):
        q = c + q * wl
    return np.where(w < 5.0, p, q) * x


def test_blocked_erfinv_matches_the_reference():
    from compiler.ir.ops.random import erfinv

    x = np.random.default_rng(0).uniform(-1, 1, 70001)
    x[:4] = [0.0, 0.9999999, -0.99999999, 0.5]  # the tail branch (w >= 5) included
    np.testing.assert_array_equal(erfinv(x), _reference_erfinv(x))
    np.testing.assert_array_equal(erfinv(x[:600].reshape(20, 30)), _reference_erfinv(x[:600]).reshape(20, 30))


def _dropout_step(out, graph_seed=None):
    """Compile a step with a dropout op (unseeded unless ``graph_seed``); returns the manifest."""
    with tf.Graph().as_default() as g:
        if graph_seed is not None:
            tf.set_random_seed(graph_seed)
        x = tf.placeholder(tf.float32, [None, 8], name="x")
        w = tf.Variable(tf.random_normal([8, 4]), name="w")
        loss = tf.reduce_sum(tf.nn.dropout(tf.matmul(x, w), 0.5), name="loss")
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        compile_entries(g, {"step": ([loss], [train], [x])}, out, dump_ir=False)
    return json.loads((Path(out) / "manifest.json").read_text())


def test_unseeded_random_ops_hit(cache_dir, tmp_path):
    """Seeds drawn at random (no graph or op seed) do not make a model new: an artifact fixes
    its seeds when compiled, and the cached one's were drawn at random too.  Chosen seeds do."""
    assert _dropout_step(tmp_path / "a")["build"]["cache"] == "miss"
    assert _dropout_step(tmp_path / "b")["build"]["cache"] == "hit"
    assert _dropout_step(tmp_path / "c", graph_seed=1)["build"]["cache"] == "miss"
    assert _dropout_step(tmp_path / "d", graph_seed=2)["build"]["cache"] == "miss"
    assert _dropout_step(tmp_path / "e", graph_seed=2)["build"]["cache"] == "hit"
    runtime.load_artifact(tmp_path / "b")

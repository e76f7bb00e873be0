"""The runtime against a hand-written ABI library (tests/fixtures/tiny_model.c).

The fixture is built with the system C compiler into a temporary artifact directory with
init.safetensors and a manifest written by runtime.manifest; native tests skip without one.
"""
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import runtime
from runtime import manifest as mf
from runtime.executor import bind_batch, convert_array

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_model.c"
F32 = "float32"


def find_cc():
    """The system C compiler ($CC, cc, gcc or clang), or None."""
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def tiny_manifest(files):
    """The manifest of the tiny linear model (see the fixture's header comment)."""
    t = lambda name, shape, dtype=F32: {"name": name, "dtype": dtype, "shape": shape}
    entry = lambda name, feeds, fetches, si=(), so=(): {
        "symbol": f"kiln_entry_{name}", "feeds": feeds, "fetches": fetches,
        "state_in": list(si), "state_out": list(so)}
    wb = ["w", "b"]
    return {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "abi_version": mf.ABI_VERSION,
        "kiln_version": "0.1.0", "target": {"kind": "cpu", "triple": "test"},
        "library": "lib/model.so",
        "variables": [dict(t("w", [3, 2]), trainable=True), dict(t("b", [2]), trainable=True),
                      dict(t(mf.RNG_STEP, [], "int64"), trainable=False)],
        "entry_points": {
            "train": entry("train", [t("x:0", ["N", 3]), t("y:0", ["N", 2])], [t("loss:0", [])],
                           wb + [mf.RNG_STEP], wb + [mf.RNG_STEP]),
            "predict": entry("predict", [t("x:0", ["N", 3])], [t("pred:0", ["N", 2])], wb),
            "predict_flat": entry("predict_flat", [t("x:0", ["N*3"])], [t("pred:0", ["N", 2])], wb),
            "step": entry("step", [], [t("rng_step:0", [], "int64"), t("batch:0", [], "int64")],
                          [mf.RNG_STEP]),
        },
        "files": files,
    }


INIT = {"w": np.arange(6, dtype=np.float32).reshape(3, 2) / 10 - 0.2,
        "b": np.array([0.5, -0.5], np.float32), mf.RNG_STEP: np.array(0, np.int64)}


FILES = ["lib/model.so", mf.INIT_NAME, "src/model.c", "include/kiln_abi.h"]


def build_library(dest, *flags):
    """Compile ``dest/src/model.c`` against ``dest/include/kiln_abi.h`` into ``dest/lib/model.so``."""
    cc = find_cc()
    if cc is None:
        pytest.skip("no C compiler (cc/gcc/clang) found to build the ABI fixture")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-Werror", *flags, f"-I{dest / 'include'}",
                    "-o", str(dest / "lib" / "model.so"), str(dest / "src" / "model.c")],
                   check=True, capture_output=True)


def build_artifact(dest, abi_override=None):
    """Compile the fixture (against the generated ABI header) and write a complete artifact
    directory at ``dest``."""
    from compiler.codegen.c.environment import abi_header

    dest = Path(dest)
    for sub in ("lib", "src", "include"):
        (dest / sub).mkdir(parents=True)
    shutil.copy(FIXTURE, dest / "src" / "model.c")
    (dest / "include" / "kiln_abi.h").write_text(abi_header())
    build_library(dest, *([f"-DKILN_ABI_OVERRIDE={abi_override}"] if abi_override is not None else []))
    save_file(dict(INIT), str(dest / mf.INIT_NAME))
    mf.write_manifest(dest, tiny_manifest(mf.file_hashes(dest, FILES)))
    return dest


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("kiln") / "tiny")


@pytest.fixture(scope="module")
def art(base_dir):
    return runtime.load_artifact(base_dir)


@pytest.fixture
def state(art):
    with art.new_state() as s:
        yield s


@pytest.fixture
def copy_dir(base_dir, tmp_path):
    """A fresh copy of the artifact (a new path, so dlopen loads it anew)."""
    return Path(shutil.copytree(base_dir, tmp_path / "copy"))


def ref_train(w, b, x, y, lr=0.1):
    """One SGD step on mean squared error, as the fixture computes it."""
    diff = x @ w + b - y
    d = 2 * diff / diff.size
    return w - lr * (x.T @ d), b - lr * d.sum(0), float(np.mean(diff ** 2))


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


# ---------------------------------------------------------------- import hygiene (no native)

BANNED = ("compiler", "llvmlite", "jinja2")


def test_runtime_imports_nothing_from_the_compiler():
    code = ("import sys, pkgutil, importlib, runtime\n"
            "for m in pkgutil.walk_packages(runtime.__path__, 'runtime.'):\n"
            "    importlib.import_module(m.name)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {BANNED!r})\n"
            "print(bad)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_runtime_sources_have_no_compiler_import():
    for path in (ROOT / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not [n for n in names if n.split(".")[0] in BANNED], path


# ---------------------------------------------------------------- manifest (no native)

def test_manifest_round_trip_and_digest(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "model.so").write_bytes(b"not really a library")
    (tmp_path / mf.INIT_NAME).write_bytes(b"init")
    digest = mf.file_digest(tmp_path / "lib" / "model.so")
    assert digest == "sha256:" + hashlib.sha256(b"not really a library").hexdigest()
    m = tiny_manifest(mf.file_hashes(tmp_path, ["lib/model.so", mf.INIT_NAME]))
    mf.write_manifest(tmp_path, m)
    assert mf.read_manifest(tmp_path) == m
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init.safetensors", "lib", "manifest.json"]
    specs = mf.entry_specs(m)
    assert specs["predict_flat"].feeds[0].shape == ("N*3",)
    assert [v.index for v in mf.variable_specs(m)] == [0, 1, 2]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("files"), "missing key(s) 'files'"),
    (lambda m: m.update(format="zip"), "format is 'zip'"),
    (lambda m: m.update(format_version=7), "artifact format_version 7, runtime supports 1"),
    (lambda m: m["variables"][0].update(shape=["N", 2]), "cannot have a batch dim"),
    (lambda m: m["variables"][0].update(dtype="complex64"), "unsupported dtype 'complex64'"),
    (lambda m: m["entry_points"]["train"]["feeds"][0].update(shape=["M", 3]), "bad dim 'M'"),
    (lambda m: m["entry_points"]["train"].update(symbol="train"), "symbol must be"),
    (lambda m: m["entry_points"]["train"]["state_out"].append("v"), "unknown variable 'v'"),
    (lambda m: m["files"].update({"lib/model.so": "md5:00"}), "expected 'sha256:"),
    (lambda m: m["files"].update({"../x": "sha256:" + "0" * 64}), "bad file path '../x'"),
    (lambda m: m["files"].pop("lib/model.so"), "is not listed in 'files'"),
])
def test_manifest_validation_errors(edit, message):
    m = tiny_manifest({"lib/model.so": "sha256:" + "0" * 64, mf.INIT_NAME: "sha256:" + "1" * 64})
    edit(m)
    with pytest.raises(runtime.ManifestError) as e:
        mf.validate_manifest(m, source="here/manifest.json")
    assert message in str(e.value) and "here/manifest.json" in str(e.value)


def test_batch_binding_and_dtype_rules():
    spec = lambda *shape: mf.TensorSpec("t", F32, shape)
    assert bind_batch([spec("N", 3), spec("N*3")], [np.zeros((4, 3)), np.zeros(12)]) == 4
    assert bind_batch([spec(2)], [np.zeros(2)]) == 1
    with pytest.raises(ValueError, match="multiple of 3"):
        bind_batch([spec("N*3")], [np.zeros(10)])
    assert convert_array([1.0, 2.0], F32, "x").dtype == np.float32
    assert convert_array(np.arange(3), F32, "x").flags.c_contiguous
    assert convert_array(np.arange(3, dtype=np.int64), "int32", "x").dtype == np.int32
    for value, dtype in [([1.5], "int32"), ([1], "bool"), ([2 ** 40], "int32"), ("a", F32)]:
        with pytest.raises(ValueError):
            convert_array(value, dtype, "x")


# ---------------------------------------------------------------- native

def test_load_and_describe(art):
    assert sorted(art.entry_points) == ["predict", "predict_flat", "step", "train"]
    assert [v.name for v in art.variables] == ["w", "b", mf.RNG_STEP]
    assert art.target["kind"] == "cpu" and "tiny" in repr(art)
    with pytest.raises(KeyError, match="available"):
        art.entry("eval")


def test_train_matches_numpy(state):
    w, b = INIT["w"].astype(np.float64), INIT["b"].astype(np.float64)
    for step in range(5):
        x, y = batch(8, seed=step)
        loss = state.run("train", {"x:0": x, "y:0": y})["loss:0"]
        w, b, ref_loss = ref_train(w, b, x.astype(np.float64), y.astype(np.float64))
        assert loss.shape == () and loss.dtype == np.float32
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(state.read_variable("w"), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.read_variable("b"), b, rtol=1e-5, atol=1e-6)
    assert state.read_variable(mf.RNG_STEP) == 5


def test_predict_and_batch_sizes(state):
    for n in (1, 5, 64):
        x, _ = batch(n)
        want = x @ INIT["w"] + INIT["b"]
        got = state.run("predict", {"x": x.astype(np.float64)})["pred:0"]   # ":0" optional
        assert got.shape == (n, 2)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        flat = state.run("predict_flat", {"x:0": x.reshape(-1)})["pred:0"]
        np.testing.assert_array_equal(flat, got)


def test_no_batch_feed_means_batch_one(state):
    out = state.run("step", {})
    assert out == {"rng_step:0": 0, "batch:0": 1}
    assert out["rng_step:0"].dtype == np.int64


def test_variables_read_write(state, art):
    assert state.variable_names() == ["w", "b", mf.RNG_STEP]
    values = state.variables()
    for k, v in INIT.items():
        np.testing.assert_array_equal(values[k], v)
    state.write_variable("w", np.ones((3, 2)))                 # float64 -> float32 is fine
    np.testing.assert_array_equal(state.read_variable("w"), np.ones((3, 2), np.float32))
    state.write_variable(mf.RNG_STEP, 41)
    assert state.run("step")["rng_step:0"] == 41
    with pytest.raises(ValueError, match=r"shape \[2, 3\].*shape \[3, 2\]"):
        state.write_variable("w", np.ones((2, 3)))
    with pytest.raises(ValueError, match="dtype float64"):
        state.write_variable(mf.RNG_STEP, 1.5)
    with pytest.raises(KeyError, match="no variable 'v'"):
        state.read_variable("v")
    with art.new_state(initialize=False) as zero:
        assert not zero.read_variable("w").any()


@pytest.mark.parametrize("feeds, message", [
    ({"x:0": np.zeros((2, 3))}, r"missing feed\(s\) \['y:0'\].*expected feeds: \['x:0', 'y:0'\]"),
    ({"x:0": np.zeros((2, 3)), "y:0": np.zeros((2, 2)), "z": 1}, r"unknown feed\(s\) \['z'\]"),
    ({"x:0": np.zeros((2, 4)), "y:0": np.zeros((2, 2))},
     r"shape \[2, 4\] for feed 'x:0', which has shape \[N, 3\]"),
    ({"x:0": np.zeros(3), "y:0": np.zeros((2, 2))}, "rank 2 expected"),
    ({"x:0": np.zeros((2, 3)), "y:0": np.zeros((3, 2))},
     "batch size 3 does not match batch size 2 of 'x:0'"),
    ({"x:0": np.zeros((2, 3), np.int32), "y:0": np.zeros((2, 2), complex)}, "dtype complex128"),
])
def test_feed_errors(state, feeds, message):
    with pytest.raises(ValueError, match=message):
        state.run("train", feeds)
    assert state.read_variable(mf.RNG_STEP) == 0     # nothing ran


def test_int_feed_given_as_float_is_refused():
    spec = mf.EntrySpec("e", "kiln_entry_e", (mf.TensorSpec("labels:0", "int32", ("N",)),), (), (), ())
    from runtime.executor import prepare_feeds
    with pytest.raises(ValueError, match="dtype float64 to feed 'labels:0' of dtype int32"):
        prepare_feeds(spec, {"labels:0": np.array([1.0, 2.0])})
    assert prepare_feeds(spec, {"labels": [1, 2]})[1] == 2


def test_native_error_codes(state):
    with pytest.raises(runtime.KilnRuntimeError) as e:
        state.run("predict", {"x:0": np.zeros((0, 3), np.float32)})
    err = e.value
    assert (err.code, err.code_name, err.entry) == (1, "KILN_EINVAL", "predict")
    assert err.message == "batch size must be >= 1, got 0"
    assert str(err) == "predict failed with KILN_EINVAL (1): batch size must be >= 1, got 0"
    x, y = batch(4)
    x[0, 0] = np.nan
    with pytest.raises(runtime.KilnRuntimeError, match="KILN_ECHECK.*loss is not finite"):
        state.run("train", {"x:0": x, "y:0": y})
    assert state.read_variable(mf.RNG_STEP) == 0


def test_closed_state_refuses_calls(art):
    s = art.new_state()
    s.close()
    s.close()
    assert s.closed and "closed" in repr(s)
    with pytest.raises(RuntimeError, match="closed"):
        s.run("step")


def test_states_are_independent_and_thread_safe(art):
    states = [art.new_state() for _ in range(4)]
    x, y = batch(16)
    threads = [threading.Thread(target=lambda s=s: [s.run("train", {"x:0": x, "y:0": y})
                                                    for _ in range(50)]) for s in states]
    [t.start() for t in threads]
    [t.join() for t in threads]
    ws = [s.read_variable("w") for s in states]
    assert all(np.array_equal(w, ws[0]) for w in ws) and states[0].read_variable(mf.RNG_STEP) == 50
    for s in states:
        s.close()


def _rewrite_manifest(d, fn):
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def test_tampered_file_is_refused(copy_dir):
    lib = copy_dir / "lib" / "model.so"
    want = mf.file_digest(lib)
    lib.write_bytes(lib.read_bytes() + b"\0")
    with pytest.raises(runtime.IntegrityError) as e:
        runtime.load_artifact(copy_dir)
    assert str(lib) in str(e.value) and want in str(e.value) and mf.file_digest(lib) in str(e.value)
    lib.unlink()
    with pytest.raises(runtime.IntegrityError, match="missing"):
        runtime.load_artifact(copy_dir)


def test_abi_version_mismatch_is_refused(tmp_path, copy_dir):
    d = build_artifact(tmp_path / "abi2", abi_override=2)
    with pytest.raises(runtime.AbiVersionError, match="artifact ABI version 2, runtime supports 1"):
        runtime.load_artifact(d)
    _rewrite_manifest(copy_dir, lambda m: m.update(abi_version=2))
    with pytest.raises(runtime.AbiVersionError, match="manifest.json: artifact ABI version 2"):
        runtime.load_artifact(copy_dir)


def test_manifest_problems_name_the_file(copy_dir, tmp_path):
    with pytest.raises(runtime.ManifestError, match=r"manifest.json: not found"):
        runtime.load_artifact(tmp_path / "nowhere")
    (copy_dir / "manifest.json").write_text("{not json")
    with pytest.raises(runtime.ManifestError, match=r"manifest.json: invalid JSON"):
        runtime.load_artifact(copy_dir)
    (copy_dir / "manifest.json").write_text('{"format": "kiln-artifact"}')
    with pytest.raises(runtime.ManifestError, match=r"manifest.json: missing key\(s\) 'format_version'"):
        runtime.load_artifact(copy_dir)


def test_init_file_lacking_a_variable(copy_dir):
    save_file({"w": INIT["w"], "b": INIT["b"]}, str(copy_dir / mf.INIT_NAME))
    _rewrite_manifest(copy_dir, lambda m: m["files"].update(
        {mf.INIT_NAME: mf.file_digest(copy_dir / mf.INIT_NAME)}))
    art = runtime.load_artifact(copy_dir)
    with pytest.raises(runtime.ArtifactError, match="no initial value for variable 'kiln/rng_step'"):
        art.new_state()


def test_rebuilt_library_at_same_path_runs_new_code(copy_dir, art):
    """dlopen caches by path; the runtime must still run the bytes it verified."""
    first = runtime.load_artifact(copy_dir)
    src = copy_dir / "src" / "model.c"
    src.write_text(src.read_text().replace("#define LR 0.1f", "#define LR 0.0f"))
    build_library(copy_dir)
    _rewrite_manifest(copy_dir, lambda m: m.update(files=mf.file_hashes(copy_dir, FILES)))
    second = runtime.load_artifact(copy_dir)
    x, y = batch(4)
    with first.new_state() as a, second.new_state() as b:
        a.run("train", {"x:0": x, "y:0": y})
        b.run("train", {"x:0": x, "y:0": y})
        assert not np.array_equal(a.read_variable("w"), INIT["w"])
        np.testing.assert_array_equal(b.read_variable("w"), INIT["w"])


def test_copied_artifact_runs_in_fresh_process_with_runtime_only(copy_dir, tmp_path):
    moved = Path(shutil.move(str(copy_dir), str(tmp_path / "elsewhere")))
    code = ("import sys, numpy as np, runtime\n"
            f"art = runtime.load_artifact({str(moved)!r})\n"
            "with art.new_state() as s:\n"
            "    out = s.run('predict', {'x:0': np.ones((2, 3), np.float32)})\n"
            "print(out['pred:0'].tolist())\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BANNED!r}))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    lines = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path), check=True,
                           capture_output=True, text=True).stdout.splitlines()
    want = (np.ones((2, 3), np.float32) @ INIT["w"] + INIT["b"]).tolist()
    np.testing.assert_allclose(json.loads(lines[0]), want, rtol=1e-5, atol=1e-6)
    assert lines[1] == "[]"


def test_library_copies_are_removed_at_exit(copy_dir, tmp_path):
    """The private copy of a rebuilt library (dlopen's per-path cache) is a temp file of the
    process; it goes when the process exits."""
    other = Path(shutil.copytree(copy_dir, tmp_path / "other"))
    src = other / "src" / "model.c"
    src.write_text(src.read_text().replace("#define LR 0.1f", "#define LR 0.0f"))
    build_library(other)
    _rewrite_manifest(other, lambda m: m.update(files=mf.file_hashes(other, FILES)))
    code = ("import shutil, sys, runtime\n"
            "from runtime import abi\n"
            f"runtime.load_artifact({str(copy_dir)!r})\n"
            f"shutil.rmtree({str(copy_dir)!r}); shutil.copytree({str(other)!r}, {str(copy_dir)!r})\n"
            f"runtime.load_artifact({str(copy_dir)!r})\n"
            "print(abi._copies_dir)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    copies = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                            text=True).stdout.strip()
    assert copies and "kiln-lib-" in copies and not os.path.exists(copies)

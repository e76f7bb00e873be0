"""Artifacts: the generated C ABI (docs/ABI.md), the artifact writer and the compile driver.

Part 1 tests compiler/codegen/llvm/module.py on a hand-built kernel-IR Program rendered by a
minimal stand-in renderer (defined here), apart from lowering and the real renderer: the
workspace layout, bufs[], constants, copies, kernel errors, variable read/write/bind.
Part 2 compiles the MLP training step with compile_entries, loads the artifact in a fresh
process that imports only ``runtime`` and compares its losses with the interpreter's.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir

import runtime
from compiler import tf
from tests.models import mlp_tensors
from compiler.artifact import (
    EntryInfo,
    VariableInfo,
    write_artifact,
)
from compiler.codegen.registry import make_target
from compiler.codegen.llvm.gemm_kernel import (
    F32,
    I32,
    I64,
    PTR,
    c64,
    counted_loop,
    new_function,
)
from compiler.codegen.llvm.module import build_module
from compiler.ir.types import Sym, float32
from compiler.lower.kernel_ir import BufferDecl, Kernel, Program
from runtime.abi import KILN_ECHECK, KILN_EINVAL, aligned_empty

ROOT = Path(__file__).resolve().parent.parent


# ============================================================================ part 1: stand-in
# The stand-in renders a kernel from a tiny spec in ``Kernel.body`` (not kernel-IR statements):
# ("scale", k): writes[0][i] = reads[0][i] * k; ("add",): reads[0][i] + reads[1][i] (f32, over
# the elements of writes[0] at batch N); ("fail", code): "boom" into err, return code.
CONST = np.array([1.0, 2.0, 3.0], np.float32)


def _numel(b, shape, n):
    size = c64(int(np.prod([getattr(d, "coef", d) for d in shape], dtype=np.int64)))
    for d in shape:
        if isinstance(d, Sym):
            size = b.mul(size, n)
    return size


def render_standin(module, program, prefix):
    """Render ``program``'s spec kernels; returns their function names in order."""
    return [_render_one(module, program, k, prefix + k.name) for k in program.kernels]


def _render_one(module, program, k, name):
    fn, b = new_function(module, name, I32, [PTR, I64, PTR], ["bufs", "N", "err"])
    bufs, n, err = fn.args
    order = list(program.buffers)

    def ptr(buf):
        return b.load(b.gep(bufs, [c64(order.index(buf))], source_etype=PTR), typ=PTR)
    op = k.body[0]
    if op == "fail":
        for i, byte in enumerate(b"boom\0"):
            b.store(ir.Constant(ir.IntType(8), byte), b.gep(err, [c64(i)], source_etype=ir.IntType(8)))
        b.ret(ir.Constant(I32, k.body[1]))
        return fn.name
    srcs, dst = [ptr(r) for r in k.reads], ptr(k.writes[0])

    def body(b, i, _):
        vals = [b.load(b.gep(s, [i], source_etype=F32), typ=F32) for s in srcs]
        v = b.fmul(vals[0], ir.Constant(F32, k.body[1])) if op == "scale" else b.fadd(*vals)
        b.store(v, b.gep(dst, [i], source_etype=F32))
        return []
    counted_loop(b, c64(0), _numel(b, program.buffers[k.writes[0]].shape, n), c64(1), body)
    b.ret(ir.Constant(I32, 0))
    return fn.name


def _decl(name, shape, role, **kw):
    return BufferDecl(name, float32, tuple(shape), role, **kw)


def standin_programs():
    """Entry points over variables ``v`` f32[3] and ``w`` f32[2]:

    * ``step`` (feed x [N,3]; fetches y [N,3], s [3]): t = 2x (batch arena), z = t + t
      (batch scratch), u = v + CONST (static arena), v = u (in place); copies y <- z,
      s <- v.  So y = 4x, s = v_old + CONST and v grows by CONST each step.
    * ``boom``: one kernel failing with code 3 ("boom"), origin ``check_range loc("lbl")``.
    * ``peek`` (no feeds, no kernels, no batch): fetch w via a copy.
    """
    N = Sym(1)
    bufs = [_decl("x", [N, 3], "feed", index=0), _decl("y", [N, 3], "fetch", index=0),
            _decl("s", [3], "fetch", index=1), _decl("v", [3], "state", key="v"),
            _decl("t", [N, 3], "arena", space="batch", offset=64),
            _decl("u", [3], "arena", space="static", offset=64),
            _decl("k", [3], "const", data=CONST),
            _decl("z", [N, 3], "scratch", space="batch", offset=0)]
    kernels = [Kernel("twice", ["x"], ["t"], ("scale", 2.0), "mul loc(\"t\")"),
               Kernel("sum", ["t", "t"], ["z"], ("add",), "add loc(\"z\")"),
               Kernel("bias", ["v", "k"], ["u"], ("add",), "add loc(\"u\")"),
               Kernel("update", ["u"], ["v"], ("scale", 1.0), "assign loc(\"v\")")]
    step = Program("step", {d.name: d for d in bufs}, kernels, static_bytes=128, batch_bytes=128,
                   scratch_static_bytes=64, scratch_batch_bytes=64,
                   copies=[("y", "z"), ("s", "v")], feeds=["x:0"], fetches=["y:0", "s:0"])
    boom = Program("boom", {"v": _decl("v", [3], "state", key="v")},
                   [Kernel("fail", ["v"], [], ("fail", 3), 'check_range loc("lbl")')])
    peek = Program("peek", {"w": _decl("w", [2], "state", key="w"),
                            "o": _decl("o", [2], "fetch", index=0)}, [],
                   copies=[("o", "w")], fetches=["o:0"])
    return {"step": step, "boom": boom, "peek": peek}


STANDIN_VARIABLES = [("v", "float32", (3,)), ("w", "float32", (2,))]
STANDIN_ENTRIES = {
    "step": EntryInfo([("x:0", "float32", ["N", 3])],
                      [("y:0", "float32", ["N", 3]), ("s:0", "float32", [3])], ["v"], ["v"]),
    "boom": EntryInfo([], [], ["v"], []),
    "peek": EntryInfo([], [("o:0", "float32", [2])], ["w"], []),
}
V0, W0 = np.array([0.5, -1.0, 2.0], np.float32), np.array([5.0, 6.0], np.float32)


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    module = build_module(standin_programs(), STANDIN_VARIABLES, render=render_standin)
    variables = [VariableInfo(n, d, s, True) for n, d, s in STANDIN_VARIABLES]
    return write_artifact(tmp_path_factory.mktemp("standin"), module, variables,
                          {"v": V0, "w": W0}, STANDIN_ENTRIES, make_target("cpu"), {"note": 1})


@pytest.fixture
def standin(standin_dir):
    with runtime.load_artifact(standin_dir).new_state() as s:
        yield s


def test_artifact_layout_and_manifest(standin_dir):
    m = runtime.read_manifest(standin_dir)
    assert sorted(m["files"]) == ["include/kiln_abi.h", "init.safetensors", "lib/model.so", "src/model.ll"]
    assert (standin_dir / "ir").is_dir()
    assert m["entry_points"]["step"]["feeds"] == [{"name": "x:0", "dtype": "float32", "shape": ["N", 3]}]
    assert m["build"]["note"] == 1 and m["build"]["llvm_optimize_s"] >= 0
    assert m["target"]["kind"] == "cpu" and m["target"]["features"]
    assert "define i32 @\"kiln_entry_step\"" in (standin_dir / "src" / "model.ll").read_text()


@pytest.mark.parametrize("batches", [(2, 5, 1), (1000, 3)])
def test_step_buffers_constants_copies(standin, batches):
    v = V0.copy()
    for n in batches:  # the workspace grows, then is reused
        x = np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32)
        out = standin.run("step", {"x": x})
        np.testing.assert_array_equal(out["y:0"], 4 * x)
        np.testing.assert_array_equal(out["s:0"], v + CONST)
        v = v + CONST
        np.testing.assert_array_equal(standin.read_variable("v"), v)
    np.testing.assert_array_equal(standin.run("peek")["o:0"], W0)


def test_kernel_error_names_its_origin(standin):
    with pytest.raises(runtime.KilnRuntimeError) as info:
        standin.run("boom")
    assert info.value.code == KILN_ECHECK
    assert info.value.message == 'check_range loc("lbl"): boom'


def test_batch_zero_is_einval_only_for_batched_entries(standin):
    with pytest.raises(runtime.KilnRuntimeError, match="batch size must be >= 1, got 0") as info:
        standin.run("step", {"x": np.zeros((0, 3), np.float32)})
    assert info.value.code == KILN_EINVAL
    lib, h = standin._lib, standin._handle
    out = (ctypes.c_void_p * 1)(aligned_empty((2,), np.float32).ctypes.data)
    assert lib.entries["peek"](h, 0, None, out) == 0  # no batch dim: the batch is ignored


def _raw(state, fn, index, ptr, nbytes):
    code = getattr(state._lib, fn)(state._handle, index, ptr, nbytes)
    return code, state._lib.error_message(state._handle)


def test_variable_byte_counts_and_indices_are_checked(standin):
    buf = aligned_empty((4,), np.float32)
    for fn in ("read_variable", "write_variable", "bind_variable"):
        code, msg = _raw(standin, fn, 0, buf.ctypes.data, 8)
        assert code == KILN_EINVAL and "variable 0 ('v'): byte count 8, expected 12" in msg
        code, msg = _raw(standin, fn, 2, buf.ctypes.data, 8)
        assert (code, msg) == (KILN_EINVAL, "no variable with index 2 (have 2)")
        assert _raw(standin, fn, -1, buf.ctypes.data, 8)[0] == KILN_EINVAL
    assert _raw(standin, "read_variable", 0, buf.ctypes.data, 12) == (0, "")  # error cleared
    code, msg = _raw(standin, "bind_variable", 0, buf.ctypes.data + 4, 12)
    assert code == KILN_EINVAL and "not 64-byte aligned" in msg


def test_bound_variable_is_the_storage(standin):
    arr = aligned_empty((3,), np.float32)
    arr[...] = [10, 20, 30]
    standin.bind_variable("v", arr)
    assert standin.bound_array("v") is arr
    out = standin.run("step", {"x": np.ones((1, 3), np.float32)})
    np.testing.assert_array_equal(out["s:0"], [11, 22, 33])
    np.testing.assert_array_equal(arr, [11, 22, 33])  # updated in place
    standin.write_variable("v", np.zeros(3, np.float32))
    np.testing.assert_array_equal(arr, 0)  # writes go to the bound memory
    arr[...] = 7
    np.testing.assert_array_equal(standin.read_variable("v"), 7)
    standin.unbind_variable("v")  # back to state storage, value kept
    arr[...] = -1
    np.testing.assert_array_equal(standin.read_variable("v"), 7)
    with pytest.raises(ValueError, match="64-byte aligned"):
        standin.bind_variable("v", aligned_empty((4,), np.float32)[1:])
    with pytest.raises(ValueError, match="float32 \\[3\\]"):
        standin.bind_variable("v", aligned_empty((3,), np.float64))


# ============================================================================ part 2: MLP artifact
BATCH, STEPS = 16, 3


def mlp_graph(seed=0):
    """The MLP of tests/models.py in a graph of its own; returns (graph, tensors)."""
    g = tf.Graph()
    with g.as_default():
        return g, mlp_tensors(seed)


def mlp_batches(steps=STEPS, batch=BATCH, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch))
            for _ in range(steps)]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    from compiler.frontend.compile_graph import compile_entries

    g, t = mlp_graph()
    entries = {"train": ([t["loss"]], [t["train"]], [t["x"], t["labels"]]),
               "predict": ([t["logits"]], [], [t["x"]])}
    out = compile_entries(g, entries, tmp_path_factory.mktemp("mlp") / "mlp")
    with tf.Session(graph=g, config={"backend": "interpreter"}) as sess:
        sess.run(tf.variables_initializer(g.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)))
        losses = [float(sess.run([t["loss"], t["train"]], {t["x"]: x, t["labels"]: y})[0])
                  for x, y in mlp_batches()]
    return out, losses


def test_mlp_manifest_and_dumps(mlp):
    out, _ = mlp
    m = runtime.read_manifest(out)
    names = [v["name"] for v in m["variables"]]
    assert names[:2] == ["fc1/kernel", "fc1/bias"] and "kiln/rng_step" not in names
    trainable = {v["name"]: v["trainable"] for v in m["variables"]}
    assert trainable["fc1/kernel"] and not trainable[next(n for n in names if "Adam" in n)]
    train = m["entry_points"]["train"]
    assert [f["name"] for f in train["feeds"]] == ["x:0", "labels:0"]
    assert train["feeds"][0]["shape"] == ["N", 784] and train["fetches"][0]["shape"] == []
    assert set(train["state_out"]) >= {"fc1/kernel", "fc1/bias"}
    assert m["entry_points"]["predict"]["state_out"] == []
    for key in ("pipeline_s", "lowering_s", "render_s", "llvm_optimize_s", "llvm_codegen_s", "llvm_link_s"):
        assert m["build"][key] >= 0, key
    assert m["build"]["total_s"] >= m["build"]["llvm_optimize_s"]
    assert (out / "ir" / "train" / "00-graph.kir").is_file()
    assert (out / "ir" / "train" / "kernels.txt").read_text().startswith("program @train")
    assert any(p.name.endswith("memory-plan.kir") for p in (out / "ir" / "train").iterdir())


def test_zero_variables_are_not_in_the_init_file(mlp, tmp_path):
    """Adam's slots and the biases start as zeros: the manifest says so and init.safetensors leaves them out;
    the runtime's initial values still hold every variable, zeros included, and a bad
    ``init`` value in a variable record is refused."""
    from safetensors.numpy import load_file

    out, _ = mlp
    m = runtime.read_manifest(out)
    zeros = {v["name"] for v in m["variables"] if v.get("init") == "zeros"}
    stored = load_file(str(out / "init.safetensors"))
    assert {"fc1/kernel/Adam", "fc1/kernel/Adam_1", "fc1/bias"} <= zeros
    assert "fc1/kernel" in stored and not zeros & stored.keys()
    assert zeros | stored.keys() == {v["name"] for v in m["variables"]}
    values = runtime.load_artifact(out).init_values()
    assert all(not values[n].any() and values[n].shape == tuple(
        next(v["shape"] for v in m["variables"] if v["name"] == n)) for n in zeros)
    np.testing.assert_array_equal(values["fc1/kernel"], stored["fc1/kernel"])
    m["variables"][0]["init"] = "ones"
    with pytest.raises(runtime.ManifestError, match="'fc1/kernel': 'init' must be"):
        runtime.validate_manifest(m)


FRESH = r"""
import json, sys
import numpy as np
import runtime
data = np.load(sys.argv[2])
art = runtime.load_artifact(sys.argv[1])
losses = []
with art.new_state() as s:
    for i in range(int(data["steps"])):
        losses.append(float(s.run("train", {"x": data[f"x{i}"], "labels": data[f"y{i}"]})["loss:0"]))
    pred = next(iter(s.run("predict", {"x": data["x0"]}).values()))
print(json.dumps({"losses": losses, "pred_shape": list(pred.shape),
                  "compiler": sorted(m for m in sys.modules if m.split(".")[0] in ("compiler", "llvmlite"))}))
"""


def test_fresh_process_runs_a_copied_artifact(mlp, tmp_path):
    out, want = mlp
    copy = shutil.copytree(out, tmp_path / "copied")
    data = {"steps": STEPS}
    for i, (x, y) in enumerate(mlp_batches()):
        data[f"x{i}"], data[f"y{i}"] = x, y
    np.savez(tmp_path / "data.npz", **data)
    proc = subprocess.run([sys.executable, "-c", FRESH, str(copy), str(tmp_path / "data.npz")],
                          cwd=str(ROOT), capture_output=True, text=True, check=False, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["compiler"] == []
    assert got["pred_shape"] == [BATCH, 10]
    np.testing.assert_allclose(got["losses"], want, rtol=5e-6)
    assert got["losses"][-1] < got["losses"][0]


def test_tampering_is_refused(mlp, tmp_path):
    out, _ = mlp
    for rel, edit, err in [("lib/model.so", lambda b: b + b"\0", runtime.IntegrityError),
                           ("init.safetensors", lambda b: b[:-1] + bytes([b[-1] ^ 1]), runtime.IntegrityError),
                           ("src/model.ll", lambda b: b.replace(b"kiln", b"k1ln", 1), runtime.IntegrityError)]:
        d = shutil.copytree(out, tmp_path / rel.replace("/", "_"))
        (d / rel).write_bytes(edit((d / rel).read_bytes()))
        with pytest.raises(err, match=rel.split("/")[-1]):
            runtime.load_artifact(d)
    d = shutil.copytree(out, tmp_path / "abi")
    m = json.loads((d / "manifest.json").read_text())
    m["abi_version"] = 2
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(runtime.AbiVersionError, match="artifact ABI version 2, runtime supports 1"):
        runtime.load_artifact(d)


def test_mlp_abi_functions(mlp):
    out, _ = mlp
    art = runtime.load_artifact(out)
    with art.new_state() as s:
        w = s.read_variable("fc1/kernel")
        np.testing.assert_array_equal(w, art.init_values()["fc1/kernel"])
        x, _ = mlp_batches(1, batch=3)[0]
        bound = aligned_empty(w.shape, np.float32)
        bound[...] = 0
        s.bind_variable("fc1/kernel", bound)  # zero weights: logits == the logits bias path
        zero_pred = next(iter(s.run("predict", {"x": x}).values()))
        np.testing.assert_allclose(zero_pred, np.broadcast_to(zero_pred[0], zero_pred.shape), rtol=1e-6)
        bound[...] = w  # the native code reads the caller's memory
        s.write_variable("fc1/bias", s.read_variable("fc1/bias"))
        pred = next(iter(s.run("predict", {"x": x}).values()))
        assert not np.allclose(pred, zero_pred)
        code, msg = _raw(s, "write_variable", 0, bound.ctypes.data, bound.nbytes - 4)
        assert code == KILN_EINVAL and "byte count" in msg
        with pytest.raises(runtime.KilnRuntimeError, match="batch size must be >= 1, got 0"):
            s.run("predict", {"x": np.zeros((0, 784), np.float32)})

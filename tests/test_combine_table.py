"""The accumulator combines live once (compiler/lower/combine.py, docs/lowering.md): the
identity is neutral bit for bit, IR reductions start where numpy does, and the reference
evaluator, the LLVM backend and the emulated CUDA backend agree bit for bit on reductions
whose partial accumulators start at the identity (-0.0 sums, -inf maxima, ...)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from compiler import tf
from compiler.ir.types import N, as_dtype
from compiler.lower import kernel_ir as K
from compiler.lower import run_program
from compiler.lower.combine import COMBINES, identity, identity_value, reduction_init
from tests.cuda_kit import RawAbiLib, needs_emulator

I64 = as_dtype("int64")
DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
# (combine, dtype, the value every input holds): a partial accumulator that does not start
# at the identity changes the result (+0.0 for -0.0, 0 for all-negative maxima, ...).
CASES = [("add", "float32", -0.0), ("add", "float64", -0.0), ("mul", "float32", 1.0),
         ("max", "float32", -np.inf), ("min", "float64", np.inf),
         ("max", "int32", np.iinfo(np.int32).min), ("min", "int64", np.iinfo(np.int64).max),
         ("max", "uint8", 0), ("min", "uint8", 255), ("add", "int32", 0),
         ("and", "bool", True), ("or", "bool", False)]
BATCH = 600  # a CUDA block reduction, several LLVM vectors plus a masked tail


def _samples(dtype):
    """Values that tell a wrong identity apart: signed zeros, infinities, the integer ends."""
    if dtype == "bool":
        return np.array([False, True])
    if np.dtype(dtype).kind == "f":
        return np.array([-0.0, 0.0, 1.5, -2.0, np.inf, -np.inf], dtype)
    info = np.iinfo(dtype)
    return np.array([info.min, 0, 1, info.max], dtype)


def _bits(a):
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


@pytest.mark.parametrize("combine,dtype", [(c, d) for c in sorted(COMBINES) for d in DTYPES
                                           if (c in ("and", "or")) == (d == "bool")])
def test_identity_is_neutral_bit_for_bit(combine, dtype):
    x = _samples(dtype)
    e = np.asarray(identity_value(combine, as_dtype(dtype)), dtype)
    got = COMBINES[combine].ufunc(e, x).astype(dtype)
    np.testing.assert_array_equal(_bits(got), _bits(x))
    assert identity(combine, as_dtype(dtype)).dtype == as_dtype(dtype)


def test_float_sum_identity_is_negative_zero():
    assert np.signbit(identity_value("add", as_dtype("float32")))
    assert np.signbit(identity(combine="add", dtype=as_dtype("float64")).value)


@pytest.mark.parametrize("kind,dtype", [(k, d) for k in ("reduce_sum", "reduce_prod") for d in ("float32", "int32")]
                         + [("reduce_all", "bool"), ("reduce_any", "bool")])
def test_reduction_init_is_numpys_empty_reduction(kind, dtype):
    """An empty reduction gives the interpreter's (numpy's) value: +0.0 for a float sum."""
    fn = {"reduce_sum": np.sum, "reduce_prod": np.prod, "reduce_all": np.all, "reduce_any": np.any}[kind]
    want = np.asarray(fn(np.zeros(0, dtype)), dtype) if dtype != "bool" else np.asarray(fn(np.zeros(0, bool)))
    got = np.asarray(reduction_init(kind, as_dtype(dtype)).value, want.dtype)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_no_module_keeps_its_own_table():
    """Only combine.py maps combine names to op kinds (or back): every user imports it."""
    root = Path(__file__).resolve().parent.parent / "compiler"
    pair = re.compile(r"""["'](max|maximum|and|logical_and)["']\s*[:,]\s*["'](maximum|max|logical_and|and)["']""")
    owners = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if pair.search(p.read_text()))
    assert owners == ["lower/combine.py"]


# ----------------------------------------------------------------------------- every backend
def _program() -> K.Program:
    """One kernel per case: ``acc = identity; for i < N (vectorized): acc = combine(acc, x[i])``."""
    bufs, kernels = {}, []
    for j, (combine, dtype, _) in enumerate(CASES):
        dt = as_dtype(dtype)
        x, out = f"x{j}", f"out{j}"
        bufs[x] = K.BufferDecl(x, dt, (N,), "feed", index=j, key=f"{x}:0")
        acc, i = K.Var(f"acc{j}", dt), K.Var(f"i{j}", I64)
        body = K.Block([K.DeclareAcc(acc, identity(combine, dt)),
                        K.For(i, K.Const(0, I64), K.Batch(I64), K.Accumulate(acc, combine, K.Load(x, i, dt)),
                              vectorize=True),
                        K.Store(out, K.Const(0, I64), acc)])
        kernels.append(K.Kernel(f"{combine}_{dtype}", [x], [out], body))
    for j, (_, dtype, _) in enumerate(CASES):
        bufs[f"out{j}"] = K.BufferDecl(f"out{j}", as_dtype(dtype), (), "fetch", index=j, key=f"out{j}:0")
    keys = [f"x{j}:0" for j in range(len(CASES))], [f"out{j}:0" for j in range(len(CASES))]
    return K.Program("p", bufs, kernels, feeds=keys[0], fetches=keys[1])


def _inputs():
    return [np.full(BATCH, value, dtype) for _, dtype, value in CASES]


def _run_library(path) -> list:
    lib = RawAbiLib(path)
    try:
        outs = [np.zeros((), dtype) for _, dtype, _ in CASES]
        code, message = lib.run("p", _inputs(), outs, BATCH)
        assert code == 0, message
        return outs
    finally:
        lib.close()


@needs_emulator
def test_backends_start_partial_accumulators_at_the_identity(tmp_path):
    from compiler.codegen.cuda import program_variables, render_module
    from compiler.codegen.cuda.build import compile_cuda
    from compiler.codegen.llvm.build import compile_module
    from compiler.codegen.llvm.module import build_module

    program = _program()
    _, fetched = run_program(program, {}, {f"x{j}:0": x for j, x in enumerate(_inputs())}, BATCH)
    compile_module(build_module({"p": program}, []), str(tmp_path / "cpu.so"))
    compile_cuda(render_module({"p": program}, program_variables([program])), tmp_path / "cuda.so", emulate=True)
    results = {"interpreter": [fetched[f"out{j}:0"] for j in range(len(CASES))],
               "llvm": _run_library(tmp_path / "cpu.so"), "cuda": _run_library(tmp_path / "cuda.so")}
    wrong = [f"{backend}: {combine} over {dtype} {value!r} gave {outs[j]!r}"
             for j, (combine, dtype, value) in enumerate(CASES) for backend, outs in results.items()
             if _bits(np.asarray(outs[j], dtype)) != _bits(np.asarray(value, dtype))]
    assert not wrong


@needs_emulator
def test_sums_of_negative_zeros_agree_with_the_interpreter():
    """reduce_sum / reduce_mean of -0.0 over the kept-trailing, leading and all axes: the
    interpreter (numpy: +0.0), the LLVM backend and the emulated CUDA backend, bit for bit."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 300], name="x")
        outs = {"rows": tf.reduce_sum(x, 1), "cols": tf.reduce_sum(x, 0), "all": tf.reduce_sum(x),
                "mean": tf.reduce_mean(x, 1), "max": tf.reduce_max(x * 0.0 - np.inf, 1)}
        feed = {x: np.full((40, 300), -0.0, np.float32)}
        got = {}
        for name, config in (("interpreter", {"backend": "interpreter"}), ("llvm", {}),
                             ("cuda", {"backend": "cuda", "cuda_emulate": True})):
            with tf.Session(config=config) as sess:
                got[name] = sess.run(outs, feed)
    for key in outs:
        want = _bits(got["interpreter"][key])
        for backend in ("llvm", "cuda"):
            np.testing.assert_array_equal(_bits(got[backend][key]), want, err_msg=f"{backend} {key}")

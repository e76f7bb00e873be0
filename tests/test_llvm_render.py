"""The LLVM renderer of the kernel IR against numpy and the op registry.

Hand-built kernel-IR programs (a tiny builder below) are rendered into one LLVM module,
compiled once for the test module (fixture ``lib``) and called through ctypes with the
kernel ABI ``i32 f(ptr bufs, i64 N, ptr err)``.
"""
import math
import re

import numpy as np
import pytest

from compiler.codegen.llvm.mathfuncs import KINDS as MATH_KINDS
from compiler.ir.opdef import EvalContext, get_opdef
from compiler.ir.ops.math import ARITH, COMPARE, LOGICAL, UNARY
from compiler.ir.types import (ShapeError, TensorType, as_dtype, bool_, float32)
from compiler.lower import kernel_ir as K



from tests.llvm_kit import Cases, loop, N, O, ulp_diff, ulp_error, V

CASES = Cases()
case = CASES.add


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """Every case of this module, rendered into one module and compiled once."""
    return CASES.build(tmp_path_factory)


def run(lib, name, n, **arrays):
    return CASES.run(lib, name, n, **arrays)


# ----------------------------------------------------------------------------- elementwise ops
FLOAT_EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, np.inf, -np.inf, np.nan, 1e-30,
               3e38, -3e38, 88.0, -88.0, 100.0, -100.0, 1e-45, 7.0, -7.0, 3.0]
ELEM_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")  # int8 shares int32's code
N_ELEM = 61  # 3 vectors of 16 (or 7 of 8) plus a tail


def _kinds_for(dtype):
    """(kind, arity, result dtype) for every elementwise kind whose type rule accepts ``dtype``."""
    out = []
    t = TensorType(as_dtype(dtype), ())
    for table, arity in ((UNARY, 1), (ARITH, 2), (COMPARE, 2), (LOGICAL, 2)):
        for kind in table:
            try:
                out.append((kind, arity, get_opdef(kind).infer([t] * arity).dtype))
            except ShapeError:
                continue
    return out


ELEMENTWISE = []
for _d in ELEM_DTYPES:
    _dt = as_dtype(_d)
    for _kind, _arity, _out in _kinds_for(_d):
        ELEMENTWISE.append((_kind, _arity, _d))
        _args = (K.Load("x", V("i"), _dt), K.Load("y", V("i"), _dt))[:_arity]
        case(f"ew_{_kind}_{_dt.short}", {"x": _dt, "y": _dt, "z": _out},
             loop("i", N, K.Store("z", V("i"), K.Op(_kind, _args, _out)), vectorize=True))
case("ew_select_f32", {"c": bool_, "x": float32, "y": float32, "z": float32},
     loop("i", N, K.Store("z", V("i"), O("select", K.Load("c", V("i"), bool_), K.Load("x", V("i"), float32),
                                          K.Load("y", V("i"), float32), dtype=float32)), vectorize=True))


def _inputs(kind, dtype, rng):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        edges = np.array(FLOAT_EDGES, dt)
        x = np.concatenate([edges, rng.uniform(-6, 6, N_ELEM - len(edges))]).astype(dt)
        y = np.concatenate([edges[::-1], rng.uniform(-6, 6, N_ELEM - len(edges))]).astype(dt)
        return x, y
    if dt.kind == "b":
        return rng.integers(0, 2, N_ELEM).astype(bool), rng.integers(0, 2, N_ELEM).astype(bool)
    info = np.iinfo(dt)
    lo, hi = max(info.min, -100), min(info.max, 100)
    x = rng.integers(lo, hi + 1, N_ELEM).astype(dt)
    x[:4] = [info.min, info.max, 0, 1] if info.min < 0 else [0, info.max, 1, 2]
    y = rng.integers(lo, hi + 1, N_ELEM).astype(dt)
    if kind in ("div", "floordiv", "mod"):
        y[y == 0] = 3
        y[:3] = [-1, 7, -7] if info.min < 0 else [1, 7, 9]
    if kind == "pow":
        y = rng.integers(0, 7, N_ELEM).astype(dt)
    return x, y


def _check_values(kind, dtype, got, want):
    if np.dtype(want.dtype).kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=f"{kind} {dtype}")
        return
    tol = 4 if kind in MATH_KINDS or kind == "pow" else 0
    d = ulp_diff(got, want.astype(got.dtype))
    assert d.max() <= tol, f"{kind} {dtype}: {d.max()} ulp at x index {int(np.argmax(d))}"


@pytest.mark.parametrize("kind,arity,dtype", ELEMENTWISE, ids=[f"{k}-{d}" for k, _, d in ELEMENTWISE])
def test_elementwise_matches_registry(lib, kind, arity, dtype):
    rng = np.random.default_rng(abs(hash((kind, dtype))) % 2 ** 32)
    x, y = _inputs(kind, dtype, rng)
    want = np.asarray(get_opdef(kind).evaluate(EvalContext(), *[x, y][:arity]))
    z = np.zeros(N_ELEM, want.dtype)
    status, _ = run(lib, f"ew_{kind}_{as_dtype(dtype).short}", N_ELEM, x=x, y=y, z=z)
    assert status == 0
    _check_values(kind, dtype, z, want)


def test_select_and_bool_storage(lib):
    rng = np.random.default_rng(1)
    c = rng.integers(0, 2, N_ELEM).astype(bool)
    x, y = rng.normal(size=(2, N_ELEM)).astype(np.float32)
    z = np.zeros(N_ELEM, np.float32)
    assert run(lib, "ew_select_f32", N_ELEM, c=c, x=x, y=y, z=z)[0] == 0
    np.testing.assert_array_equal(z, np.where(c, x, y))
    isnan = np.zeros(N_ELEM, np.uint8)
    xs = np.where(c, np.nan, x).astype(np.float32)
    run(lib, "ew_is_nan_f32", N_ELEM, x=xs, y=xs, z=isnan.view(bool))
    assert set(np.unique(isnan)) <= {0, 1}  # stored as one byte 0/1
    np.testing.assert_array_equal(isnan.astype(bool), c)


def test_integer_division_by_zero_does_not_trap(lib):
    x = np.array([5, -5, 7, np.iinfo(np.int32).min], np.int32)
    y = np.array([0, 0, -1, -1], np.int32)
    for kind, want in (("floordiv", [0, 0, -7, np.iinfo(np.int32).min]), ("mod", [0, 0, 0, 0])):
        z = np.ones(4, np.int32)
        assert run(lib, f"ew_{kind}_i32", 4, x=x, y=y, z=z)[0] == 0
        np.testing.assert_array_equal(z, want)


# ----------------------------------------------------------------------------- casts
CAST_DTYPES = ("float32", "float64", "float16", "int32", "int64", "uint8", "int8", "bool")
for _src in CAST_DTYPES:
    _s = as_dtype(_src)
    case(f"cast_{_s.short}", {"x": _s, **{f"o_{as_dtype(d).short}": as_dtype(d) for d in CAST_DTYPES}},
         loop("i", N, *[K.Store(f"o_{as_dtype(d).short}", V("i"), K.Cast(K.Load("x", V("i"), _s), as_dtype(d)))
                        for d in CAST_DTYPES if d != _src]
              + [K.Store(f"o_{_s.short}", V("i"), K.Load("x", V("i"), _s))], vectorize=True))


@pytest.mark.parametrize("src", CAST_DTYPES)
def test_casts_match_registry(lib, src):
    rng = np.random.default_rng(7)
    n = 45
    if np.dtype(src).kind == "f":
        edges = [0.0, -0.0, 0.5, -0.5, 1.5, -1.7, 255.5, 300.0, -129.0, 127.9, np.nan, np.inf, -np.inf, 3e9, -3e9]
        with np.errstate(over="ignore"):
            x = np.concatenate([edges, rng.uniform(-300, 300, n - len(edges))]).astype(src)
    elif src == "bool":
        x = rng.integers(0, 2, n).astype(bool)
    else:
        info = np.iinfo(src)
        x = rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, n).astype(src)
        x[:2] = [info.min, info.max]
    outs = {f"o_{as_dtype(d).short}": np.zeros(n, d) for d in CAST_DTYPES}
    assert run(lib, f"cast_{as_dtype(src).short}", n, x=x, **outs)[0] == 0
    for d in CAST_DTYPES:
        with np.errstate(all="ignore"):
            want = get_opdef("cast").evaluate(EvalContext(), x, dtype=as_dtype(d))
        np.testing.assert_array_equal(outs[f"o_{as_dtype(d).short}"], want, err_msg=f"{src} -> {d}")


# ----------------------------------------------------------------------------- math accuracy
_erf64 = np.vectorize(math.erf, otypes=[np.float64])
ACCURACY = {  # kind: (reference in float64, input sampler, max ulp)
    "exp": (np.exp, lambda r: r.uniform(-103.9, 88.7, 200000), 1.5),
    "log": (np.log, lambda r: np.exp(r.uniform(-103, 88, 200000)), 1.5),
    "log1p": (np.log1p, lambda r: np.concatenate([r.uniform(-1, 1, 100000), np.exp(r.uniform(-60, 80, 100000))]), 3),
    "expm1": (np.expm1, lambda r: np.concatenate([r.uniform(-1, 1, 100000), r.uniform(-100, 88, 100000)]), 3),
    "tanh": (np.tanh, lambda r: np.concatenate([r.uniform(-1, 1, 100000), r.uniform(-20, 20, 100000),
                                                  np.exp(r.uniform(-30, 0, 10000))]), 3),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda r: r.uniform(-80, 80, 200000), 3),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(x)), lambda r: r.uniform(-90, 10, 200000), 3),
    "softplus": (lambda x: np.logaddexp(x, 0.0), lambda r: r.uniform(-80, 80, 200000), 3),
    "erf": (_erf64, lambda r: np.concatenate([r.uniform(-5, 5, 50000), np.exp(r.uniform(-40, 1, 10000))]), 1.5),
    "sin": (np.sin, lambda r: np.concatenate([r.uniform(-10, 10, 100000), r.uniform(-1e6, 1e6, 100000),
                                               r.uniform(-1e30, 1e30, 500)]), 1.5),
    "cos": (np.cos, lambda r: np.concatenate([r.uniform(-10, 10, 100000), r.uniform(-1e6, 1e6, 100000),
                                               r.uniform(-1e30, 1e30, 500)]), 1.5),
}


@pytest.mark.parametrize("kind", sorted(ACCURACY))
def test_float32_math_accuracy(lib, kind):
    ref, sample, max_ulp = ACCURACY[kind]
    rng = np.random.default_rng(11)
    x = sample(rng).astype(np.float32)
    z = np.empty_like(x)
    assert run(lib, f"ew_{kind}_f32", x.size, x=x, y=x, z=z)[0] == 0
    with np.errstate(all="ignore"):
        err = ulp_error(z, ref(x.astype(np.float64)))
    assert err.max() <= max_ulp, f"{kind}: {err.max():.2f} ulp at x={x[np.argmax(err)]!r}"


def test_math_uses_no_libm_calls_for_float32(lib):
    """The float32 exp/log/tanh/... vector loops are straight-line code (sin/cos only call
    sinf/cosf on their rare slow path)."""
    text = lib.ir_text
    for kind in ("exp", "log", "tanh", "sigmoid", "erf", "log1p", "expm1"):
        body = text[text.index(f'define i32 @"t_ew_{kind}_f32"'):]
        body = body[:body.index("\n}")]
        callees = set(re.findall(r'call [^@]*@"?([A-Za-z_][\w.]*)', body))
        assert all(c.startswith("llvm.") for c in callees), (kind, callees)



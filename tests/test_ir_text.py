"""IR text form: printer/parser round trips, attr literals, parse errors, and the verifier."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler.ir import ops as _ops  # noqa: F401  (fills the registry)
from compiler.ir.function import Function, Instr, Param, Value, ValueNamer
from compiler.ir.interpreter import run_function
from compiler.ir.opdef import REGISTRY, infer_type, register_op
from compiler.ir.parser import IRParseError, parse_function, parse_module
from compiler.ir.printer import format_attr, print_function, print_module
from compiler.ir.types import (ALL_DTYPES, N, ShapeError, Sym, TensorType, bool_, broadcast_shapes,
                               float16, float32, float64, int32, int64)
from compiler.ir.verifier import IRVerifyError, verify


# ----------------------------------------------------------------------------- test-only ops
def _infer_test_add(inputs):
    a, b = inputs
    if a.dtype != b.dtype:
        raise ShapeError(f"operand dtypes differ: {a.dtype.name} vs {b.dtype.name}")
    return TensorType(a.dtype, broadcast_shapes(a.shape, b.shape))


def _infer_test_sum(inputs, *, axis, keepdims):
    (x,) = inputs
    shape = tuple((1 if i == axis else d) for i, d in enumerate(x.shape) if keepdims or i != axis)
    return TensorType(x.dtype, shape)


def _infer_test_attrs(inputs, **_attrs):
    return inputs[0] if inputs else TensorType(float32, ())


def _register_test_ops():
    if "test_add" in REGISTRY:
        return
    register_op("test_add", _infer_test_add, lambda ctx, a, b: a + b, arity=2)
    register_op("test_sum", _infer_test_sum,
                lambda ctx, x, *, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype), arity=1)
    register_op("test_attrs", _infer_test_attrs,
                lambda ctx, *xs, **_: xs[0] if xs else np.zeros((), np.float32), arity=None)


_register_test_ops()


def _f(*shape, dtype=float32) -> TensorType:
    return TensorType(dtype, tuple(shape))


def build_sample() -> Function:
    """A tiny train-step-like function: feed, state, constant, ops, a state update and fetches."""
    new = ValueNamer()
    fn = Function("train_step")
    x, w = new(_f(N, 3)), new(_f(1, 3))
    fn.params += [Param("feed", "x:0", x), Param("state", "dense/w", w)]

    def emit(kind, operands, attrs, loc=""):
        v = new(infer_type(kind, [o.type for o in operands], attrs))
        fn.body.append(Instr(kind, operands, attrs, v, loc))
        return v

    y = emit("test_add", [x, w], {}, "dense/add")
    s = emit("test_sum", [y], {"axis": 1, "keepdims": False}, "loss/Sum")
    half = emit("constant", [], {"value": np.array([[0.5, -1.0, 2.0]], np.float32)})
    w2 = emit("test_add", [w, half], {}, "update/w")
    fn.state_out.append(("dense/w", w2))
    fn.fetches += [("loss:0", s), ("y:0", y)]
    return fn


GOLDEN = """\
func @train_step {
  %0 : f32[N,3] = feed "x:0"
  %1 : f32[1,3] = state "dense/w"
  %2 : f32[N,3] = test_add(%0, %1)  loc("dense/add")
  %3 : f32[N] = test_sum(%2) {axis=1, keepdims=false}  loc("loss/Sum")
  %4 : f32[1,3] = constant() {value=dense<f32[1,3]>([[0.5, -1.0, 2.0]])}
  %5 : f32[1,3] = test_add(%1, %4)  loc("update/w")
  state "dense/w" = %5
  fetch "loss:0" = %3
  fetch "y:0" = %2
}
"""


# ----------------------------------------------------------------------------- round trips
def test_golden_text():
    assert print_function(build_sample()) == GOLDEN


def test_print_parse_print_is_identical_and_verifies():
    fn = build_sample()
    verify(fn)
    parsed = parse_function(print_function(fn))
    verify(parsed)
    assert print_function(parsed) == GOLDEN
    assert [(p.kind, p.key) for p in parsed.params] == [("feed", "x:0"), ("state", "dense/w")]
    assert [k for k, _ in parsed.fetches] == ["loss:0", "y:0"]
    assert parsed.state_out[0][1] is parsed.body[-1].result


def test_parsed_function_runs_the_same():
    fn = build_sample()
    parsed = parse_function(print_function(fn))
    feeds = {"x:0": np.arange(6, dtype=np.float32).reshape(2, 3)}
    state = {"dense/w": np.ones((1, 3), np.float32)}
    (s1, f1), (s2, f2) = run_function(fn, state, feeds), run_function(parsed, state, feeds)
    for a, b in zip(list(s1.values()) + list(f1.values()), list(s2.values()) + list(f2.values())):
        np.testing.assert_array_equal(a, b)


def test_renumbering_and_free_form_names():
    text = """
    // a hand-written function: names, spacing and comments are free
    func @"my step/1" {
      %x : i32[N*2] = feed "x"
      %y:i32[N*2]=identity(%x)   loc("y")
      fetch "y" = %y
    }"""
    fn = parse_function(text)
    verify(fn)
    assert fn.name == "my step/1"
    out = print_function(fn)
    assert out.splitlines()[0] == 'func @"my step/1" {'
    assert '%1 : i32[N*2] = identity(%0)  loc("y")' in out
    assert print_function(parse_function(out)) == out


def test_module_with_two_functions():
    fn1, fn2 = build_sample(), build_sample()
    fn2.name = "eval_step"
    fns = parse_module(print_module([fn1, fn2]))
    assert [f.name for f in fns] == ["train_step", "eval_step"]
    with pytest.raises(IRParseError, match="exactly one function"):
        parse_function(print_module([fn1, fn2]))


def test_real_math_ops_round_trip():
    if not all(k in REGISTRY for k in ("matmul", "add", "reduce_sum")):
        pytest.skip("math ops not registered yet")
    new, fn = ValueNamer(), Function("mlp")
    x, w, b = new(_f(N, 4)), new(_f(4, 2)), new(_f(2))
    fn.params += [Param("feed", "x:0", x), Param("state", "w", w), Param("state", "b", b)]
    for kind, operands, attrs in (("matmul", [x, w], {"transpose_a": False, "transpose_b": False}),
                                  ("add", None, {}), ("reduce_sum", None, {"axes": (0, 1), "keepdims": False})):
        operands = operands or ([fn.body[-1].result, b] if kind == "add" else [fn.body[-1].result])
        fn.body.append(Instr(kind, operands, attrs, new(infer_type(kind, [o.type for o in operands], attrs))))
    fn.fetches.append(("loss:0", fn.body[-1].result))
    text = print_function(fn)
    assert "%3 : f32[N,2] = matmul(%0, %1) {transpose_a=false, transpose_b=false}" in text
    assert "{axes=(0, 1), keepdims=false}" in text
    parsed = parse_function(text)
    verify(parsed)
    assert print_function(parsed) == text


# ----------------------------------------------------------------------------- attr literals
def attr_equal(a, b) -> bool:
    """Exact equality of attr values: same Python types, NaN equals NaN, -0.0 differs from 0.0."""
    if isinstance(a, np.ndarray):
        if not (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        if a.dtype.kind == "f":
            same_nan = np.array_equal(np.isnan(a), np.isnan(b))
            ok = ~np.isnan(a)
            return same_nan and np.array_equal(a[ok], b[ok]) and np.array_equal(np.signbit(a[ok]), np.signbit(b[ok]))
        return np.array_equal(a, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(attr_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(attr_equal(a[k], b[k]) for k in a)
    return a == b


def round_trip_attr(value):
    """Put ``value`` into an instruction, print, parse, return (parsed attr, text)."""
    new, fn = ValueNamer(), Function("f")
    fn.body.append(Instr("test_attrs", [], {"a": value}, new(_f())))
    text = print_function(fn)
    parsed = parse_function(text)
    assert print_function(parsed) == text
    return parsed.body[0].attrs["a"], text


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**70, 0.5, -0.0, 1e-300, 5e-324, 1e16, float("inf"), float("-inf"),
    float(np.float32(0.1)), "", "plain", 'q"uote\\back', "tab\tnl\nnul\x00", "üñí €", "\u2028\U0001f600",
    float32, bool_, int64, N, Sym(3), _f(N, 784), [], (), (1,), [1, [2, (3, "x")]], (N, Sym(10), 5),
    {"k": [1.5, None], "z": {"": ()}}, np.zeros((0, 3), np.float32), np.zeros((3, 0), np.int32),
    np.array(7, np.int64), np.array([True, False]), np.array([[1, 2], [3, 4]], np.uint8),
    np.array([np.inf, -np.inf, np.nan, -0.0, 1e-45], np.float32), np.array([0.1, 65504], np.float16),
    np.array([-2**63, 2**63 - 1], np.int64), np.array([1 / 3, 1e308], np.float64),
])
def test_attr_round_trip(value):
    got, _ = round_trip_attr(value)
    assert attr_equal(value, got), (value, got)


def test_numpy_scalars_come_back_as_python_scalars():
    for value, want in ((np.float32(0.1), float(np.float32(0.1))), (np.int64(3), 3), (np.bool_(True), True)):
        got, _ = round_trip_attr(value)
        assert attr_equal(want, got)


def test_attr_spellings():
    assert format_attr(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)) == "dense<f32[2,2]>([[1.0, 2.0], [3.0, 4.0]])"
    assert format_attr(np.array(0.5, np.float32)) == "dense<f32[]>(0.5)"
    assert format_attr(np.array([0.1], np.float32)) == "dense<f32[1]>([0.1])"
    assert format_attr([N, Sym(4), float("nan"), float("-inf")]) == "[N, N*4, nan, -inf]"
    assert format_attr((float64, "a\"b")) == '(f64, "a\\"b")'
    assert format_attr(_f(N, 3, dtype=int32)) == "i32[N,3]"


def test_attrs_are_sorted():
    new, fn = ValueNamer(), Function("f")
    fn.body.append(Instr("test_attrs", [], {"zeta": 1, "alpha": 2, "mid": 3}, new(_f())))
    assert "{alpha=2, mid=3, zeta=1}" in print_function(fn)


_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
            | st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(ALL_DTYPES)
            | st.integers(-5, 50).map(Sym))
_arrays = st.sampled_from(ALL_DTYPES).flatmap(
    lambda d: hnp.arrays(d.np, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))
_attr_values = st.recursive(
    _scalars | _arrays,
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                   | st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_attr_values)
def test_attr_round_trip_property(value):
    got, _ = round_trip_attr(value)
    assert attr_equal(value, got), (value, got)


# ----------------------------------------------------------------------------- parse errors
@pytest.mark.parametrize("text, line, message", [
    ('func @f {\n  %0 : f33[] = feed "x"\n}', 2, "unknown dtype 'f33'"),
    ('func @f {\n  %0 : f32[] = feed "x"\n  fetch "y" = %9\n}', 3, "undefined value %9"),
    ('func @f {\n  %0 : f32[] = feed "x"\n  %0 : f32[] = feed "y"\n}', 3, "defined twice"),
    ('func @f {\n  %0 : f32[] = feed "x" $\n}', 2, "unexpected character '$'"),
    ('func @f {\n  %0 : f32[] = feed "x"\n', 3, "missing '}'"),
    ('func @f {\n  %0 : f32[] = test_attrs() {a=(1)}\n}', 2, "trailing comma"),
    ('func @f {\n  %0 : f32[] = test_attrs() {a=dense<f32[2]>([1.0])}\n}', 2, "list of 2 items"),
    ('func @f {\n  %0 : f32[] = test_attrs() {a=dense<bool[1]>([1])}\n}', 2, "not a bool element"),
    ('func @f {\n  %0 : f32[] = test_attrs() {a=dense<u8[1]>([300])}\n}', 2, "bad dense literal"),
    ('func @f {\n  %0 : f32[] = test_attrs() {a="\\q"}\n}', 2, "unknown escape"),
    ('func @f {\n  %0 : f32[] = test_attrs() {a=banana}\n}', 2, "unknown word 'banana'"),
    ('func @f {\n  %0 : f32[] = test_attrs() {a=1, a=2}\n}', 2, "given twice"),
    ('func @f {\n  %0 : f32[2.5] = feed "x"\n}', 2, "expected an integer"),
    ('func @f {\n  %0 : f32[] = test_attrs(%0 %0)\n}', 2, "expected ','"),
])
def test_parse_errors_name_line_and_column(text, line, message):
    with pytest.raises(IRParseError, match=re.escape(message)) as info:
        parse_function(text)
    err = info.value
    assert err.line == line
    assert err.source_line == text.split("\n")[line - 1]
    assert f"line {line}, col {err.col}" in str(err) and err.source_line in str(err)


def test_parse_error_column_points_at_token():
    text = 'func @f {\n  %0 : f32[] = feed "x"\n  fetch "y" = %9\n}'
    with pytest.raises(IRParseError) as info:
        parse_function(text)
    assert info.value.col == text.split("\n")[2].index("%9") + 1


# ----------------------------------------------------------------------------- verifier
def _fn_with(body_builder) -> Function:
    """A function with feed %0 : f32[N,3]; ``body_builder(fn, new, x)`` adds the rest."""
    new, fn = ValueNamer(), Function("bad")
    x = new(_f(N, 3))
    fn.params.append(Param("feed", "x", x))
    body_builder(fn, new, x)
    return fn


def _identity(fn, new, operand, loc=""):
    v = new(operand.type)
    fn.body.append(Instr("identity", [operand], {}, v, loc))
    return v


def _use_before_def(fn, new, x):
    later = new(x.type)
    fn.body.append(Instr("identity", [later], {}, new(x.type)))
    fn.body.append(Instr("identity", [x], {}, later))


def _undefined(fn, new, x):
    _identity(fn, new, Value("ghost", x.type), "use/ghost")


def _defined_twice(fn, new, x):
    v = _identity(fn, new, x)
    fn.body.append(Instr("identity", [x], {}, v))


def _unknown_kind(fn, new, x):
    fn.body.append(Instr("frobnicate", [x], {}, new(x.type)))


def _graph_only(fn, new, x):
    fn.body.append(Instr("assign", [x, x], {}, new(x.type), "assign_op"))


def _bad_type(fn, new, x):
    fn.body.append(Instr("identity", [x], {}, new(_f(N, 4)), "dense/Relu"))


def _shape_error(fn, new, x):
    y = new(_f(2, 5))
    fn.params.append(Param("feed", "y", y))
    fn.body.append(Instr("test_add", [x, y], {}, new(x.type), "bad/add"))


def _missing_attr(fn, new, x):
    fn.body.append(Instr("test_sum", [x], {"axis": 0}, new(_f(3))))


def _arity(fn, new, x):
    fn.body.append(Instr("identity", [x, x], {}, new(x.type)))


def _dup_param(fn, new, x):
    fn.params.append(Param("feed", "x", new(x.type)))


def _state_type(fn, new, x):
    w = new(_f(3))
    fn.params.append(Param("state", "w", w))
    fn.state_out.append(("w", _identity(fn, new, x)))


def _dup_state(fn, new, x):
    fn.state_out += [("w", x), ("w", x)]


def _dup_fetch(fn, new, x):
    fn.fetches += [("y", x), ("y", _identity(fn, new, x))]


def _fetch_undefined(fn, new, x):
    fn.fetches.append(("y", Value("ghost", x.type)))


@pytest.mark.parametrize("builder, message", [
    (_use_before_def, r"#0 %1 = identity\(\.\.\.\): %2 is used before its definition"),
    (_undefined, r"loc\(\"use/ghost\"\): value 'ghost' is not defined"),
    (_defined_twice, r"#1 .*%1 is defined twice"),
    (_unknown_kind, "unknown op kind 'frobnicate'"),
    (_graph_only, r"assign\(\.\.\.\) loc\(\"assign_op\"\): op kind 'assign' is graph-only"),
    (_bad_type, r"loc\(\"dense/Relu\"\): declared type f32\[N,4\] but the type rule gives f32\[N,3\]"),
    (_shape_error, r"loc\(\"bad/add\"\): type rule rejects operands \(f32\[N,3\], f32\[2,5\]\).*incompatible"),
    (_missing_attr, "type rule failed with attrs.*keepdims"),
    (_arity, "identity expects 1 operands, got 2"),
    (_dup_param, "duplicate feed param key 'x'"),
    (_state_type, r"state output \"w\" = %2: new value has type f32\[N,3\] but the state param has f32\[3\]"),
    (_dup_state, "duplicate state output key 'w'"),
    (_dup_fetch, "duplicate fetch output key 'y'"),
    (_fetch_undefined, "fetch output \"y\".*not defined"),
])
def test_verifier_catches(builder, message):
    fn = _fn_with(builder)
    print_function(fn)  # dumps of broken IR still print
    with pytest.raises(IRVerifyError, match=message):
        verify(fn)


def test_verifier_reports_forward_reference_from_text():
    text = 'func @f {\n  %0 : f32[] = feed "x"\n  %1 : f32[] = identity(%2)\n  %2 : f32[] = identity(%0)\n}'
    with pytest.raises(IRVerifyError, match="used before its definition"):
        verify(parse_function(text))


def test_verifier_accepts_state_passthrough_and_new_state():
    def build(fn, new, x):
        w = new(_f(3))
        fn.params.append(Param("state", "w", w))
        fn.state_out += [("w", _identity(fn, new, w)), ("fresh", x)]
        fn.fetches.append(("x", x))

    verify(_fn_with(build))


def test_half_and_double_types_round_trip():
    new, fn = ValueNamer(), Function("f")
    for i, d in enumerate((float16, float64, bool_)):
        fn.params.append(Param("feed", f"in{i}", new(_f(N, 2, dtype=d))))
    text = print_function(fn)
    assert "f16[N,2]" in text and "f64[N,2]" in text and "bool[N,2]" in text
    assert print_function(parse_function(text)) == text


def test_non_identifier_attr_keys_are_quoted():
    new, fn = ValueNamer(), Function("f")
    fn.body.append(Instr("test_attrs", [], {"a-b": 1, "none": 2}, new(_f())))
    text = print_function(fn)
    assert '{"a-b"=1, none=2}' in text
    assert parse_function(text).body[0].attrs == {"a-b": 1, "none": 2}


def test_lowered_graph_round_trips():
    tf = pytest.importorskip("compiler").tf
    from compiler.ir.from_graph import lower_graph

    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        w = tf.Variable(tf.ones([4, 3]), name="w")
        loss = tf.reduce_sum(tf.nn.relu(tf.matmul(x, w)), name="loss")
        update = tf.assign_sub(w, tf.ones([4, 3]) * 0.1)
        fn = lower_graph([loss], [update.op], [x], name="train_step")
    verify(fn)
    text = print_function(fn)
    assert '%2 : f32[N,3] = matmul(%0, %1) {transpose_a=false, transpose_b=false}  loc("MatMul")' in text
    parsed = parse_function(text)
    verify(parsed)
    assert print_function(parsed) == text

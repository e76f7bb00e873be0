"""Fused instrs (regions, several results), buffers and the memory line: text, verifier, interpreter."""
from __future__ import annotations

import re

import numpy as np
import pytest

from compiler.ir import ops as _ops  # noqa: F401  (fills the registry)
from compiler.ir.function import Buffer, Function, Instr, Param, Region, ValueNamer
from compiler.ir.interpreter import ArenaSimulator, MemoryPlanError, run_function
from compiler.ir.opdef import infer_type
from compiler.ir.parser import IRParseError, parse_function
from compiler.ir.printer import print_function
from compiler.ir.types import N, TensorType, float32, int64
from compiler.ir.verifier import IRVerifyError, verify

MATMUL = {"transpose_a": False, "transpose_b": False}


def _f(*shape, dtype=float32) -> TensorType:
    return TensorType(dtype, tuple(shape))


def emit(body, new, kind, operands, attrs=None, loc=""):
    """Append a plain instr with its type from the registry; returns its result."""
    attrs = attrs or {}
    v = new(infer_type(kind, [o.type for o in operands], attrs))
    body.append(Instr(kind, operands, attrs, v, loc))
    return v


def group(body, new, operands, build, pattern, loc=""):
    """``build(body, *values)`` inline (``pattern`` None) or as one fused instr over ``operands``."""
    if pattern is None:
        return build(body, *operands)
    params = [new(v.type) for v in operands]
    inner: list = []
    yields = build(inner, *params)
    results = [new(v.type) for v in yields]
    body.append(Instr("fused", operands, {"pattern": pattern}, results, loc, Region(params, inner, yields)))
    return results


PLAN = [[Buffer("batch", 0)], [Buffer("static", 0)], [Buffer("static", 64)],
        [Buffer("state", 0, "fc/bias"), Buffer("static", 128)]]
MEMORY = {"static_bytes": 140, "batch_bytes": 12, "naive_static_bytes": 40, "naive_batch_bytes": 12}


def build_step(fused: bool = True, planned: bool = True) -> Function:
    """relu(x @ w + b) -> loss = sum; then a two-result update of the bias (sub and mul by a constant)."""
    new, fn = ValueNamer(), Function("train_step")
    x, w, b = new(_f(N, 4)), new(_f(4, 3)), new(_f(3))
    fn.params += [Param("feed", "x:0", x), Param("state", "fc/kernel", w), Param("state", "fc/bias", b)]

    def dense(body, x, w, b):
        y = emit(body, new, "matmul", [x, w], MATMUL, "fc/MatMul")
        y = emit(body, new, "add", [y, b], loc="fc/BiasAdd")
        return [emit(body, new, "relu", [y], loc="fc/Relu")]

    def update(body, b, c):
        return [emit(body, new, "sub", [b, c], loc="update/sub"), emit(body, new, "mul", [b, c], loc="update/mul")]

    (h,) = group(fn.body, new, [x, w, b], dense, "contraction" if fused else None)
    loss = emit(fn.body, new, "reduce_sum", [h], {"axes": (0, 1), "keepdims": False}, "loss")
    c = emit(fn.body, new, "constant", [], {"value": np.array([0.5, 1.0, 2.0], np.float32)})
    b2, scaled = group(fn.body, new, [b, c], update, "loop" if fused else None, "update")
    fn.state_out.append(("fc/bias", b2))
    fn.fetches += [("loss:0", loss), ("scaled:0", scaled)]
    if planned:
        for ins, buffers in zip(fn.body, PLAN):
            ins.buffers = list(buffers)
        fn.memory = dict(MEMORY)
    return fn


GOLDEN = """\
func @train_step {
  memory {batch_bytes=12, naive_batch_bytes=12, naive_static_bytes=40, static_bytes=140}
  %0 : f32[N,4] = feed "x:0"
  %1 : f32[4,3] = state "fc/kernel"
  %2 : f32[3] = state "fc/bias"
  %3 : f32[N,3] = fused(%0, %1, %2) {pattern="contraction"} {
    ^(%4 : f32[N,4], %5 : f32[4,3], %6 : f32[3]):
    %7 : f32[N,3] = matmul(%4, %5) {transpose_a=false, transpose_b=false}  loc("fc/MatMul")
    %8 : f32[N,3] = add(%7, %6)  loc("fc/BiasAdd")
    %9 : f32[N,3] = relu(%8)  loc("fc/Relu")
    yield %9
  }  -> batch@0
  %10 : f32[] = reduce_sum(%3) {axes=(0, 1), keepdims=false}  loc("loss")  -> static@0
  %11 : f32[3] = constant() {value=dense<f32[3]>([0.5, 1.0, 2.0])}  -> static@64
  %12, %13 : f32[3], f32[3] = fused(%2, %11) {pattern="loop"} {
    ^(%14 : f32[3], %15 : f32[3]):
    %16 : f32[3] = sub(%14, %15)  loc("update/sub")
    %17 : f32[3] = mul(%14, %15)  loc("update/mul")
    yield %16, %17
  }  loc("update")  -> state "fc/bias", static@128
  state "fc/bias" = %12
  fetch "loss:0" = %10
  fetch "scaled:0" = %13
}
"""

FEEDS = {"x:0": np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4)}
STATE = {"fc/kernel": np.linspace(-0.5, 0.7, 12, dtype=np.float32).reshape(4, 3),
         "fc/bias": np.array([0.1, -0.2, 0.3], np.float32)}


def run(fn, **kwargs):
    return run_function(fn, {k: v.copy() for k, v in STATE.items()}, FEEDS, **kwargs)


def assert_same_outputs(a, b):
    (sa, fa), (sb, fb) = a, b
    assert sa.keys() == sb.keys() and fa.keys() == fb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key])
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key])


# ----------------------------------------------------------------------------- text form
def test_golden_text():
    fn = build_step()
    verify(fn)
    assert print_function(fn) == GOLDEN


def test_round_trip_is_byte_identical_and_keeps_the_structure():
    parsed = parse_function(GOLDEN)
    verify(parsed)
    assert print_function(parsed) == GOLDEN
    fused = parsed.body[3]
    assert fused.kind == "fused" and len(fused.results) == 2 and fused.loc == "update"
    assert fused.buffers == [Buffer("state", 0, "fc/bias"), Buffer("static", 128)]
    assert fused.region.yields == [ins.result for ins in fused.region.body]
    assert fused.region.body[0].operands == fused.region.params
    assert parsed.memory == MEMORY
    assert parsed.state_out[0][1] is fused.results[0]


def test_no_memory_line_or_buffers_before_planning():
    text = print_function(build_step(planned=False))
    assert "memory" not in text and "->" not in text
    assert print_function(parse_function(text)) == text
    assert "  }\n  %10 : f32[] = reduce_sum(%3)" in text


def test_hand_written_text_with_free_names():
    text = """
    func @f {
      memory {static_bytes=8}   // any attr-dict
      %x : f32[2] = feed "x"
      %s, %t : f32[2], f32[2] = fused(%x) {pattern="loop"} {
        ^(%p : f32[2]):
        %q : f32[2] = neg(%p)
        yield %q, %p
      }  -> static@0, static  "k"@4
      fetch "s" = %s
    }"""
    fn = parse_function(text)
    assert fn.body[0].buffers == [Buffer("static", 0), Buffer("static", 4, "k")]
    out = print_function(fn)
    assert '%1, %2 : f32[2], f32[2] = fused(%0) {pattern="loop"} {' in out
    assert '  }  -> static@0, static "k"@4' in out
    assert print_function(parse_function(out)) == out
    with pytest.raises(IRVerifyError, match="a static buffer has no key"):
        verify(fn)


@pytest.mark.parametrize("text, line, message", [
    ('func @f {\n  %0 : f32[] = feed "x"\n  %1 : f32[] = fused(%0) {\n    ^(%2 : f32[]):\n    yield %0\n  }\n}',
     5, "%0 is not defined in this region"),
    ('func @f {\n  %0 : f32[] = feed "x"\n  %1 : f32[] = fused(%0) {\n    ^(%2 : f32[]):\n    yield %2\n  }\n'
     + '  fetch "y" = %2\n}', 7, "%2 is defined inside a region"),
    ('func @f {\n  %0, %1 : f32[] = feed "x"\n}', 2, "2 values but 1 types"),
    ('func @f {\n  %0, %1 : f32[], f32[] = feed "x"\n}', 2, "a feed param defines one value"),
    ('func @f {\n  memory {a=1}\n  memory {a=1}\n}', 3, "memory line is given twice"),
    ('func @f {\n  %0 : f32[] = fused() {\n    ^():\n    %1 : f32[] = feed "x"\n    yield %1\n  }\n}',
     4, "params cannot appear inside a region"),
    ('func @f {\n  %0 : f32[] = fused() {\n    ^():\n    fetch "y" = %0\n  }\n}', 4, "expected an instruction or 'yield'"),
    ('func @f {\n  %0 : f32[] = fused() {\n    ^(%0 : f32[]):\n    yield %0\n  }\n}', 3, "defined twice"),
    ('func @f {\n  %0 : f32[] = feed "x"\n  %1 : f32[] = identity(%0)  -> 5\n}', 3, "expected a buffer space"),
])
def test_region_parse_errors(text, line, message):
    with pytest.raises(IRParseError, match=re.escape(message)) as info:
        parse_function(text)
    assert info.value.line == line


# ----------------------------------------------------------------------------- interpreter
def test_fused_runs_like_unfused():
    fused, plain = run(build_step(fused=True)), run(build_step(fused=False))
    assert_same_outputs(fused, plain)
    want = STATE["fc/bias"] - np.array([0.5, 1.0, 2.0], np.float32)
    np.testing.assert_array_equal(fused[0]["fc/bias"], want)


def test_parsed_fused_function_runs_the_same():
    assert_same_outputs(run(parse_function(GOLDEN)), run(build_step(fused=False)))


def test_random_ops_may_be_fused():
    """Counter-based draws are pure in (seed, step, element), so a dropout mask may live in a region."""
    def build(fused):
        new, fn = ValueNamer(), Function("dropout")
        x, step = new(_f(N, 8)), new(_f(dtype=int64))
        fn.params += [Param("feed", "x", x), Param("state", "kiln/rng_step", step)]

        def dropout(body, x, step):
            u = emit(body, new, "random_uniform", [step], {"shape": (N, 8), "dtype": float32, "seed": 1, "seed2": 2})
            half = emit(body, new, "constant", [], {"value": np.array(0.5, np.float32)})
            keep = emit(body, new, "greater_equal", [u, half])
            return [emit(body, new, "mul", [x, emit(body, new, "cast", [keep], {"dtype": float32})])]

        fn.fetches.append(("y", group(fn.body, new, [x, step], dropout, "loop" if fused else None)[0]))
        return fn

    fn = build(True)
    verify(fn)
    feeds, state = {"x": np.ones((6, 8), np.float32)}, {"kiln/rng_step": np.array(3, np.int64)}
    got, want = run_function(fn, state, feeds)[1]["y"], run_function(build(False), state, feeds)[1]["y"]
    np.testing.assert_array_equal(got, want)
    assert 0 < got.sum() < got.size


# ----------------------------------------------------------------------------- memory plan check
def test_valid_plan_gives_the_same_numbers_through_the_arena():
    plain = run(build_step(fused=False))
    assert_same_outputs(run(build_step(), check_memory_plan=True), plain)
    assert_same_outputs(run(parse_function(GOLDEN), check_memory_plan=True), plain)


def _replan(position: int, buffers: list, memory: dict | None = None) -> Function:
    fn = build_step()
    fn.body[position].buffers = buffers
    if memory is not None:
        fn.memory = memory
    return fn


@pytest.mark.parametrize("fn, message", [
    (_replan(3, [Buffer("state", 0, "fc/bias"), Buffer("static", 0)]),
     r"writes %13 to static bytes \[0, 12\), over %10 at static bytes \[0, 4\): an output of the function"),
    (_replan(3, [Buffer("static", 128), Buffer("static", 132)]), "another result of the same instr"),
    (_replan(2, [Buffer("static", 2)]), r"over %10 at static bytes \[0, 4\)"),
    (_replan(1, [Buffer("batch", 0)]), "still live"),
    (_replan(3, [Buffer("state", 0, "fc/bias"), Buffer("static", 128)], {"static_bytes": 100}),
     r"static bytes \[128, 140\) lies outside its memory of 100 bytes"),
], ids=["clobbers-output", "results-overlap", "partial-overlap", "wrong-arena", "outside-arena"])
def test_overlapping_plan_is_caught(fn, message):
    with pytest.raises(MemoryPlanError, match=message):
        run(fn, check_memory_plan=True)


def test_in_place_state_write_is_caught_while_the_old_value_is_needed():
    fn = build_step()
    fn.fetches.append(("old_bias", fn.params[2].value))  # the old bias is read at the end
    with pytest.raises(MemoryPlanError, match=r'writes %12 to state "fc/bias" bytes \[0, 12\), over %2'):
        run(fn, check_memory_plan=True)
    assert_same_outputs(run(fn), run(fn))  # without the check, buffers are ignored


def test_without_the_overlap_check_a_bad_plan_gives_wrong_numbers(monkeypatch):
    """The arena is real: values are read back from their planned bytes."""
    fn = _replan(2, [Buffer("static", 0)])  # the constant overwrites the loss
    monkeypatch.setattr(ArenaSimulator, "_check_free", lambda *args: None)
    got, want = run(fn, check_memory_plan=True)[1]["loss:0"], run(fn)[1]["loss:0"]
    assert got != want


def _view_step(view_buffer: Buffer, use_h_later: bool) -> Function:
    """h = relu(x) at batch@0; v = reshape(h) at ``view_buffer``; y = neg(v) at batch@64; maybe fetch h."""
    new, fn = ValueNamer(), Function("views")
    x = new(_f(N, 4))
    fn.params.append(Param("feed", "x", x))
    h = emit(fn.body, new, "relu", [x])
    v = emit(fn.body, new, "reshape", [h], {"shape": (N, 2, 2)})
    y = emit(fn.body, new, "neg", [v])
    for ins, buf in zip(fn.body, [Buffer("batch", 0), view_buffer, Buffer("batch", 16)]):
        ins.buffers = [buf]
    fn.fetches += [("y", y)] + ([("h", h)] if use_h_later else [])
    return fn


def test_views_share_their_operand_bytes_and_in_place_updates_are_allowed():
    feeds = {"x": np.arange(-8, 12, dtype=np.float32).reshape(5, 4)}
    for fn in (_view_step(Buffer("batch", 0), True), _view_step(Buffer("batch", 32), True)):
        verify(fn)
        assert_same_outputs(run_function(fn, {}, feeds, check_memory_plan=True), run_function(fn, {}, feeds))
    in_place = _view_step(Buffer("batch", 0), False)
    in_place.body[2].buffers = [Buffer("batch", 0)]  # neg over its dying operand: same bytes, fine
    assert_same_outputs(run_function(in_place, {}, feeds, check_memory_plan=True), run_function(in_place, {}, feeds))
    clobber = _view_step(Buffer("batch", 0), True)
    clobber.body[2].buffers = [Buffer("batch", 0)]  # ... but h is still fetched
    with pytest.raises(MemoryPlanError, match="output of the function"):
        run_function(clobber, {}, feeds, check_memory_plan=True)


# ----------------------------------------------------------------------------- verifier
def _region_of(fn, i=0):
    return fn.body[i].region


def _swap_param(fn):
    r = _region_of(fn)
    r.params = r.params[:2]


def _param_type(fn):
    r = _region_of(fn)
    r.params[2].type = _f(4)


def _yield_count(fn):
    r = _region_of(fn, 3)
    r.yields = r.yields[:1]


def _yield_type(fn):
    fn.body[3].results[1].type = _f(N)


def _inner_type(fn):
    _region_of(fn).body[1].result.type = _f(N, 4)


def _inner_order(fn):
    body = _region_of(fn).body
    body[0], body[1] = body[1], body[0]


def _capture(fn):
    _region_of(fn).body[1].operands[1] = fn.params[2].value


def _escape(fn):
    fn.fetches.append(("inner", _region_of(fn).body[0].result))


def _nested(fn):
    """Wrap the relu of the first region in a fused instr of its own."""
    new, body = ValueNamer(), _region_of(fn).body
    relu = body[2]
    p, q = new(relu.operands[0].type), new(relu.result.type)
    body[2] = Instr("fused", relu.operands, {"pattern": "loop"}, relu.results,
                    region=Region([p], [Instr("relu", [p], {}, q)], [q]))


def _two_results(fn):
    fn.body[1].results.append(ValueNamer()(_f()))


def _no_region(fn):
    fn.body[0].region = None


def _region_on_plain(fn):
    fn.body[1].region = Region([], [], [])


def _buffer_count(fn):
    fn.body[3].buffers = fn.body[3].buffers[:1]


def _buffer_space(fn):
    fn.body[1].buffers = [Buffer("gpu", 0)]


def _wrong_arena(fn):
    fn.body[0].buffers = [Buffer("static", 0)]


def _state_key(fn):
    fn.body[3].buffers = [Buffer("state", 0, "fc/nope"), Buffer("static", 128)]


def _state_size(fn):
    fn.body[0].buffers = [Buffer("state", 0, "fc/bias")]


def _region_buffers(fn):
    _region_of(fn).body[0].buffers = [Buffer("batch", 0)]


def _past_arena(fn):
    fn.memory["static_bytes"] = 100


def _negative_offset(fn):
    fn.body[1].buffers = [Buffer("static", -4)]


def _memory_size(fn):
    fn.memory["batch_bytes"] = 1.5


@pytest.mark.parametrize("mutate, message", [
    (_swap_param, r"#0 %3 = fused\(\.\.\.\): the region has 2 block params for 3 operands"),
    (_param_type, r"block param 2 \(%6\) has type f32\[4\] but operand 2 \(%2\) has f32\[3\]"),
    (_yield_count, "the region has 1 yields for 2 results"),
    (_yield_type, r"yield 1 \(%17\) has type f32\[3\] but result 1 \(%13\) has f32\[N\]"),
    (_inner_type, r"#0\.1 %8 = add\(\.\.\.\) loc\(\"fc/BiasAdd\"\): declared type f32\[N,4\] but the type rule"),
    (_inner_order, r"#0\.0 %7 = add.*%8 is used before its definition"),
    (_capture, r"#0\.1 .*the region uses %2, defined outside it"),
    (_escape, r'fetch output "inner" = %7: %7 is defined inside a fused region'),
    (_nested, "fused regions are flat"),
    (_two_results, "a plain reduce_sum instr must have exactly one result, got 2"),
    (_no_region, "a fused instr needs a region"),
    (_region_on_plain, r"only fused instrs carry a region \(if and while carry two\), not reduce_sum"),
    (_buffer_count, "1 buffers for 2 results"),
    (_buffer_space, "buffer space must be one of"),
    (_wrong_arena, r"a value of type f32\[N,3\] belongs in the batch arena, not static"),
    (_state_key, "state buffer 'fc/nope' is not a state param or state output"),
    (_state_size, r"a f32\[N,3\] value does not fit state 'fc/bias' of type f32\[3\]"),
    (_region_buffers, "only top-level instrs have buffers"),
    (_past_arena, r"bytes \[128, 140\) lie outside the static arena \(static_bytes=100\)"),
    (_negative_offset, "buffer offset must be an int >= 0"),
    (_memory_size, "batch_bytes must be an int >= 0"),
])
def test_verifier_catches(mutate, message):
    fn = build_step()
    mutate(fn)
    print_function(fn)  # broken IR still prints
    with pytest.raises(IRVerifyError, match=message):
        verify(fn)

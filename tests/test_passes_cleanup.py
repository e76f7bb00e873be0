"""The cleanup passes: constant folding, pruning, CSE, simplify, on small hand-written
functions: golden before/after IR, the folding size cap, and what each pass must leave
alone.  Whole training steps: tests/test_passes_cleanup_steps.py.
"""
import numpy as np
import pytest

from compiler.ir.interpreter import InterpreterError, run_function
from compiler.ir.parser import parse_function
from compiler.passes import constant_folding, cse, pruning, simplify
from compiler.passes.cse import attr_key
from tests.passes_kit import apply, clone, normalized


# ----------------------------------------------------------------------------- constant folding
FOLD_IN = """
func @f {
  %x : f32[N,3] = feed "x:0"
  %w : f32[3,2] = state "w"
  %step : i64[] = state "kiln/rng_step"
  %a : f32[] = constant() {value=dense<f32[]>(2.0)}
  %b : f32[2] = constant() {value=dense<f32[2]>([1.0, 3.0])}
  %c : f32[2] = mul(%a, %b)  loc("c")
  %d : f32[2] = sqrt(%c)  loc("d")
  %s : i32[2] = shape(%w) {out_type=i32}  loc("s")
  %sn : i32[2] = shape(%x) {out_type=i32}  loc("sn")
  %big : f32[300,300] = broadcast_to(%a) {shape=(300, 300)}  loc("big")
  %i : i64[2] = constant() {value=dense<i64[2]>([1, 12])}
  %bad : i64[2] = check_range(%i) {high=10, low=0, what="label"}  loc("bad")
  %r : f32[2] = random_uniform(%step) {dtype=f32, seed=1, seed2=2, shape=(2,)}  loc("r")
  %y : f32[N,2] = matmul(%x, %w) {transpose_a=false, transpose_b=false}  loc("y")
  %z : f32[N,2] = add(%y, %d)  loc("z")
  fetch "z" = %z
  fetch "s" = %s
  fetch "sn" = %sn
  fetch "big" = %big
  fetch "bad" = %bad
  fetch "r" = %r
}
"""

FOLD_OUT = """\
func @f {
  %0 : f32[N,3] = feed "x:0"
  %1 : f32[3,2] = state "w"
  %2 : i64[] = state "kiln/rng_step"
  %3 : f32[] = constant() {value=dense<f32[]>(2.0)}
  %4 : f32[2] = constant() {value=dense<f32[2]>([1.4142135, 2.4494898])}  loc("d")
  %5 : i32[2] = constant() {value=dense<i32[2]>([3, 2])}  loc("s")
  %6 : i32[2] = shape(%0) {out_type=i32}  loc("sn")
  %7 : f32[300,300] = broadcast_to(%3) {shape=(300, 300)}  loc("big")
  %8 : i64[2] = constant() {value=dense<i64[2]>([1, 12])}
  %9 : i64[2] = check_range(%8) {high=10, low=0, what="label"}  loc("bad")
  %10 : f32[2] = random_uniform(%2) {dtype=f32, seed=1, seed2=2, shape=(2,)}  loc("r")
  %11 : f32[N,2] = matmul(%0, %1) {transpose_a=false, transpose_b=false}  loc("y")
  %12 : f32[N,2] = add(%11, %4)  loc("z")
  fetch "z" = %12
  fetch "s" = %5
  fetch "sn" = %6
  fetch "big" = %7
  fetch "bad" = %9
  fetch "r" = %10
}
"""


def test_constant_folding_golden():
    """Folds mul+sqrt and a static shape; keeps the batch shape, the big broadcast, the bad
    check_range and the random draw; the constants only the fold used are gone."""
    text, result = apply(constant_folding, FOLD_IN)
    assert text == FOLD_OUT
    assert result.summary == "folded 3 ops (4 constants remain)"
    assert result.stats == {"folded": 3, "too_large": 1, "failed": 1, "inlined_ifs": 0, "removed_constants": 2, "constants": 4}


def test_folding_size_cap_is_a_keyword():
    text = """
    func @f {
      %a : f32[] = constant() {value=dense<f32[]>(2.0)}
      %b : f32[16,16] = broadcast_to(%a) {shape=(16, 16)}  loc("b")
      fetch "b" = %b
    }"""
    assert constant_folding.MAX_FOLD_ELEMENTS == 65536
    capped, result = apply(constant_folding, text, max_elements=255)
    assert "broadcast_to" in capped and result.stats["too_large"] == 1 and result.stats["folded"] == 0
    folded, result = apply(constant_folding, text)
    assert "broadcast_to" not in folded and result.stats["folded"] == 1
    fn = parse_function(folded)
    np.testing.assert_array_equal(run_function(fn, {}, {})[1]["b"], np.full((16, 16), 2.0, np.float32))


def test_folding_leaves_a_bad_check_range_to_fail_at_run_time():
    before = parse_function(FOLD_IN)
    after = clone(before)
    constant_folding.run(after)
    feeds = {"x:0": np.ones((2, 3), np.float32)}
    state = {"w": np.ones((3, 2), np.float32), "kiln/rng_step": np.array(0, np.int64)}
    messages = []
    for fn in (before, after):
        with pytest.raises(InterpreterError) as err:
            run_function(fn, state, feeds)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "label: received a value of 12 which is outside the valid range of [0, 10)" in messages[0]


# ----------------------------------------------------------------------------- pruning
PRUNE_IN = """
func @f {
  %x : f32[N,3] = feed "x:0"
  %unused_feed : f32[N] = feed "extra:0"
  %labels : i64[N] = feed "labels:0"
  %w : f32[3,2] = state "w"
  %b : f32[2] = state "b"
  %never : f32[4] = state "never_read"
  %xi : f32[N,3] = identity(%x)  loc("xi")
  %xs : f32[N,3] = stop_gradient(%xi)  loc("xs")
  %y : f32[N,2] = matmul(%xs, %w) {transpose_a=false, transpose_b=false}  loc("y")
  %dead : f32[N,2] = relu(%y)  loc("dead")
  %dead2 : f32[N,2] = exp(%dead)  loc("dead2")
  %chk : i64[N] = check_range(%labels) {high=2, low=0, what="label"}  loc("chk")
  %bi : f32[2] = identity(%b)  loc("bi")
  %z : f32[N,2] = add(%y, %bi)  loc("z")
  state "b" = %bi
  fetch "z" = %z
}
"""

PRUNE_OUT = """\
func @f {
  %0 : f32[N,3] = feed "x:0"
  %1 : f32[N] = feed "extra:0"
  %2 : i64[N] = feed "labels:0"
  %3 : f32[3,2] = state "w"
  %4 : f32[2] = state "b"
  %5 : f32[N,2] = matmul(%0, %3) {transpose_a=false, transpose_b=false}  loc("y")
  %6 : f32[N,2] = add(%5, %4)  loc("z")
  fetch "z" = %6
}
"""


def test_pruning_golden():
    """Identity chains go, the write-back of an unchanged b goes, dead ops and the unused
    check_range go, the never-read state param goes, every feed stays."""
    text, result = apply(pruning, PRUNE_IN)
    assert text == PRUNE_OUT
    assert result.stats == {"identities": 3, "unchanged_state_writes": 1, "dead_ops": 3, "if_results": 0,
                            "loop_values": 0, "region_ops": 0, "unused_state": 1}
    assert result.summary == ("removed 3 dead ops, 3 identities, 1 unchanged state writes, "
                              "1 unused state (never_read)")


def test_pruning_keeps_a_state_write_of_another_variable():
    text = """
    func @f {
      %a : f32[2] = state "a"
      %b : f32[2] = state "b"
      state "b" = %a
      state "a" = %a
    }"""
    out, result = apply(pruning, text)
    assert out == normalized('func @f { %a : f32[2] = state "a"  state "b" = %a }')
    assert result.stats["unchanged_state_writes"] == 1 and result.stats["unused_state"] == 1


# ----------------------------------------------------------------------------- cse
CSE_IN = """
func @f {
  %x : f32[N,3] = feed "x:0"
  %step : i64[] = state "kiln/rng_step"
  %one : f32[] = constant() {value=dense<f32[]>(1.0)}  loc("one")
  %one2 : f32[] = constant() {value=dense<f32[]>(1.0)}  loc("one2")
  %zero : f32[] = constant() {value=dense<f32[]>(0.0)}  loc("zero")
  %nzero : f32[] = constant() {value=dense<f32[]>(-0.0)}  loc("nzero")
  %one64 : f64[] = constant() {value=dense<f64[]>(1.0)}  loc("one64")
  %a : f32[N,3] = add(%x, %one)  loc("a")
  %b : f32[N,3] = add(%one2, %x)  loc("b")
  %c : f32[N,3] = sub(%x, %one)  loc("c")
  %d : f32[N,3] = sub(%one2, %x)  loc("d")
  %e : f32[N,3] = mul(%a, %b)  loc("e")
  %s1 : f32[N] = reduce_sum(%e) {axes=(1,), keepdims=false}  loc("s1")
  %s2 : f32[N] = reduce_sum(%e) {axes=(1,), keepdims=false}  loc("s2")
  %s3 : f32[N,1] = reduce_sum(%e) {axes=(1,), keepdims=true}  loc("s3")
  %p1 : f32[N,3] = add(%x, %zero)  loc("p1")
  %p2 : f32[N,3] = add(%x, %nzero)  loc("p2")
  %r1 : f32[2] = random_uniform(%step) {dtype=f32, seed=1, seed2=2, shape=(2,)}  loc("r1")
  %r2 : f32[2] = random_uniform(%step) {dtype=f32, seed=1, seed2=2, shape=(2,)}  loc("r2")
  fetch "c" = %c
  fetch "d" = %d
  fetch "s1" = %s1
  fetch "s2" = %s2
  fetch "s3" = %s3
  fetch "p1" = %p1
  fetch "p2" = %p2
  fetch "r1" = %r1
  fetch "r2" = %r2
  fetch "one64" = %one64
}
"""

CSE_OUT = """\
func @f {
  %0 : f32[N,3] = feed "x:0"
  %1 : i64[] = state "kiln/rng_step"
  %2 : f32[] = constant() {value=dense<f32[]>(1.0)}  loc("one")
  %3 : f32[] = constant() {value=dense<f32[]>(0.0)}  loc("zero")
  %4 : f32[] = constant() {value=dense<f32[]>(-0.0)}  loc("nzero")
  %5 : f64[] = constant() {value=dense<f64[]>(1.0)}  loc("one64")
  %6 : f32[N,3] = add(%0, %2)  loc("a")
  %7 : f32[N,3] = sub(%0, %2)  loc("c")
  %8 : f32[N,3] = sub(%2, %0)  loc("d")
  %9 : f32[N,3] = mul(%6, %6)  loc("e")
  %10 : f32[N] = reduce_sum(%9) {axes=(1,), keepdims=false}  loc("s1")
  %11 : f32[N,1] = reduce_sum(%9) {axes=(1,), keepdims=true}  loc("s3")
  %12 : f32[N,3] = add(%0, %3)  loc("p1")
  %13 : f32[N,3] = add(%0, %4)  loc("p2")
  %14 : f32[2] = random_uniform(%1) {dtype=f32, seed=1, seed2=2, shape=(2,)}  loc("r1")
  %15 : f32[2] = random_uniform(%1) {dtype=f32, seed=1, seed2=2, shape=(2,)}  loc("r2")
  fetch "c" = %7
  fetch "d" = %8
  fetch "s1" = %10
  fetch "s2" = %10
  fetch "s3" = %11
  fetch "p1" = %12
  fetch "p2" = %13
  fetch "r1" = %14
  fetch "r2" = %15
  fetch "one64" = %5
}
"""


def test_cse_golden():
    """Equal constants and the commuted add merge (then the reduce_sum they make equal);
    sub is not commutative, keepdims differs, 0.0 is not -0.0, f32 1.0 is not f64 1.0,
    and random draws never merge."""
    text, result = apply(cse, CSE_IN)
    assert text == CSE_OUT
    assert result.summary == "merged 3 duplicate ops (1 constants)"


def test_attr_keys_are_exact():
    assert attr_key(True) != attr_key(1)
    assert attr_key(0.0) != attr_key(-0.0)
    assert attr_key(float("nan")) == attr_key(float("nan"))
    assert attr_key((1, 2)) != attr_key([1, 2])
    assert attr_key(np.zeros(2, np.float32)) != attr_key(np.zeros(2, np.float64))
    assert attr_key(np.zeros(2, np.float32)) != attr_key(np.zeros((2, 1), np.float32))
    assert attr_key(np.arange(3)) == attr_key(np.arange(3))
    assert attr_key({"a": [1, (2.5,)]}) == attr_key({"a": [1, (2.5,)]})


# ----------------------------------------------------------------------------- simplify
SIMPLIFY_IN = """
func @f {
  %x : f32[N,3] = feed "x:0"
  %k : i32[N,3] = feed "k:0"
  %one : f32[] = constant() {value=dense<f32[]>(1.0)}
  %zero : f32[] = constant() {value=dense<f32[]>(0.0)}
  %two : f32[] = constant() {value=dense<f32[]>(2.0)}
  %four : f32[] = constant() {value=dense<f32[]>(4.0)}
  %ones : f32[1,3] = constant() {value=dense<f32[1,3]>([[1.0, 1.0, 1.0]])}
  %izero : i32[] = constant() {value=dense<i32[]>(0)}
  %yes : bool[] = constant() {value=dense<bool[]>(true)}
  %a : f32[N,3] = mul(%x, %one)  loc("a")
  %b : f32[N,3] = add(%zero, %a)  loc("b")
  %c : f32[N,3] = sub(%b, %zero)  loc("c")
  %d : f32[N,3] = div(%c, %one)  loc("d")
  %e : f32[N,3] = div(%d, %four)  loc("e")
  %f : f32[N,3] = pow(%e, %two)  loc("f")
  %g : f32[N,3] = mul(%f, %f)  loc("g")
  %h : f32[N,3] = neg(%g)  loc("h")
  %i : f32[N,3] = neg(%h)  loc("i")
  %t : f32[3,N] = transpose(%i) {perm=(1, 0)}  loc("t")
  %t2 : f32[N,3] = transpose(%t) {perm=(1, 0)}  loc("t2")
  %r : f32[N*3] = reshape(%t2) {shape=(N*3,)}  loc("r")
  %r2 : f32[N,1,3] = reshape(%r) {shape=(N, 1, 3)}  loc("r2")
  %s : f32[N,3] = reduce_sum(%r2) {axes=(1,), keepdims=false}  loc("s")
  %sel : f32[N,3] = select(%yes, %s, %x)  loc("sel")
  %an : f32[N,3] = add_n(%sel)  loc("an")
  %cc : f64[N,3] = cast(%an) {dtype=f64}  loc("cc")
  %cb : f32[N,3] = cast(%cc) {dtype=f32}  loc("cb")
  %bc : f32[N,3] = broadcast_to(%cb) {shape=(N, 3)}  loc("bc")
  %kz : i32[N,3] = mul(%k, %izero)  loc("kz")
  %kk : i32[N,3] = sub(%k, %k)  loc("kk")
  %wide : f32[N,3] = mul(%x, %ones)  loc("wide")
  %x1 : f32[N,1] = reduce_max(%x) {axes=(1,), keepdims=true}  loc("x1")
  %w1 : f32[N,3] = mul(%x1, %ones)  loc("w1")
  %ng : f32[N,3] = sub(%zero, %x)  loc("ng")
  fetch "bc" = %bc
  fetch "kz" = %kz
  fetch "kk" = %kk
  fetch "wide" = %wide
  fetch "w1" = %w1
  fetch "ng" = %ng
}
"""

SIMPLIFY_OUT = """\
func @f {
  %0 : f32[N,3] = feed "x:0"
  %1 : i32[N,3] = feed "k:0"
  %2 : f32[] = constant() {value=dense<f32[]>(0.25)}  loc("e")
  %3 : f32[N,3] = mul(%0, %2)  loc("e")
  %4 : f32[N,3] = square(%3)  loc("f")
  %5 : f32[N,3] = square(%4)  loc("g")
  %6 : i32[] = constant() {value=dense<i32[]>(0)}  loc("kz")
  %7 : i32[N,3] = broadcast_to(%6) {shape=(N, 3)}  loc("kz")
  %8 : i32[] = constant() {value=dense<i32[]>(0)}  loc("kk")
  %9 : i32[N,3] = broadcast_to(%8) {shape=(N, 3)}  loc("kk")
  %10 : f32[N,1] = reduce_max(%0) {axes=(1,), keepdims=true}  loc("x1")
  %11 : f32[N,3] = broadcast_to(%10) {shape=(N, 3)}  loc("w1")
  %12 : f32[N,3] = neg(%0)  loc("ng")
  fetch "bc" = %5
  fetch "kz" = %7
  fetch "kk" = %9
  fetch "wide" = %0
  fetch "w1" = %11
  fetch "ng" = %12
}
"""


def test_simplify_golden():
    """Every rule fires once or more; x*[1,1,1] of a narrower x becomes a broadcast_to."""
    text, result = apply(simplify, SIMPLIFY_IN)
    assert text == SIMPLIFY_OUT
    assert result.stats["simplified"] == 22
    assert result.summary.startswith("simplified 22 ops (x*1: 3, int-x*0: 1, x*x: 1, x+0: 1, ")
    assert "reshape-chain: 3" in result.summary


def test_simplify_keeps_the_numbers():
    before = parse_function(SIMPLIFY_IN)
    after = clone(before)
    simplify.run(after)
    rng = np.random.default_rng(0)
    feeds = {"x:0": rng.standard_normal((5, 3)).astype(np.float32),
             "k:0": rng.integers(-5, 5, (5, 3)).astype(np.int32)}
    _, out_a = run_function(before, {}, feeds)
    _, out_b = run_function(after, {}, feeds)
    for key in out_a:
        np.testing.assert_array_equal(out_b[key], out_a[key], err_msg=key)


def _unary_case(op_line, x_type="f32[N,3]", consts=""):
    """A function of one feed %x and some constants whose fetch is %y = <op_line>."""
    return f"""func @f {{
      %x : {x_type} = feed "x:0"
      {consts}
      {op_line}
      fetch "y" = %y
    }}"""


@pytest.mark.parametrize("before", [
    # floats: x*0 and x-x are not 0 (NaN, inf)
    _unary_case("%y : f32[N,3] = mul(%x, %z)", consts="%z : f32[] = constant() {value=dense<f32[]>(0.0)}"),
    _unary_case("%y : f32[N,3] = sub(%x, %x)"),
    # 1/3 is not exact, 0.5 is not exact for pow (pow(-inf, 0.5) = inf but sqrt(-inf) = nan)
    _unary_case("%y : f32[N,3] = div(%x, %z)", consts="%z : f32[] = constant() {value=dense<f32[]>(3.0)}"),
    _unary_case("%y : f32[N,3] = pow(%x, %z)", consts="%z : f32[] = constant() {value=dense<f32[]>(0.5)}"),
    # f32 -> i32 -> f32 truncates
    _unary_case("%c : i32[N,3] = cast(%x) {dtype=i32}\n      %y : f32[N,3] = cast(%c) {dtype=f32}"),
    # a non-uniform condition
    _unary_case("%y : f32[N,3] = select(%c, %x, %z)",
                consts="%c : bool[3] = constant() {value=dense<bool[3]>([true, false, true])}\n"
                       "      %z : f32[] = constant() {value=dense<f32[]>(0.0)}"),
    # a reduction over a real axis
    _unary_case("%y : f32[N] = reduce_sum(%x) {axes=(1,), keepdims=false}"),
])
def test_simplify_leaves_inexact_rewrites_alone(before):
    text, result = apply(simplify, before)
    assert text == normalized(before)
    assert result.summary == "simplified 0 ops"


def test_simplify_composes_transposes():
    before = _unary_case("%t : f32[3,4,N] = transpose(%x) {perm=(1, 2, 0)}\n"
                         "      %y : f32[4,N,3] = transpose(%t) {perm=(1, 2, 0)}", x_type="f32[N,3,4]")
    text, _ = apply(simplify, before)
    assert text == normalized(_unary_case("%y : f32[4,N,3] = transpose(%x) {perm=(2, 0, 1)}", x_type="f32[N,3,4]"))
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    got = run_function(parse_function(text), {}, {"x:0": x})[1]["y"]
    np.testing.assert_array_equal(got, x.transpose(1, 2, 0).transpose(1, 2, 0))


def test_simplify_lossless_cast_chain():
    before = _unary_case("%c : i64[N,3] = cast(%x) {dtype=i64}\n      %y : f32[N,3] = cast(%c) {dtype=f32}",
                         x_type="i32[N,3]")
    text, result = apply(simplify, before)
    assert text == normalized(_unary_case("%y : f32[N,3] = cast(%x) {dtype=f32}", x_type="i32[N,3]"))
    assert result.stats["rules"] == {"cast-chain": 1}

"""The cleanup passes (constant folding, pruning, CSE, simplify) on whole training steps:
the interpreter's numbers before and after on the MLP and seed-002 CNN steps (batch 8), in
the listed and the pass manager's order, output types, idempotence, the passes' statistics,
and that stateful ops and fused instrs are left alone.
"""
import pytest

from compiler.ir.function import Function, Instr, Param, Region, Value
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from compiler.ir.types import TensorType, float32, N
from compiler.ir.verifier import verify
from compiler.passes import constant_folding, cse, pruning, simplify
from tests.models import cnn_train_step, mlp_train_step
from tests.passes_kit import PASSES, PIPELINE_ORDER, assert_same_step, clone, normalized, output_types


@pytest.fixture(scope="module")
def mlp():
    return mlp_train_step(batch=8)


@pytest.fixture(scope="module")
def cnn():
    return cnn_train_step(batch=8)


def _check_passes(model, order):
    """Run ``order`` on a copy of the model step: verify, same numbers, same output types,
    idempotent (a second run changes nothing).  Returns the op count after each pass."""
    fn, state, feeds = model
    current = clone(fn)
    counts = [("input", len(current.body))]
    for p in order:
        types = dict(output_types(current))
        fetch_keys = [k for k, _ in current.fetches]
        result = p.run(current)
        verify(result.fn)
        text = print_function(result.fn)
        again = p.run(result.fn)
        assert print_function(again.fn) == text, f"{p.NAME} is not idempotent"
        assert [k for k, _ in result.fn.fetches] == fetch_keys
        assert all(types[k] == t for k, t in output_types(result.fn)), f"{p.NAME} changed an output type"
        assert_same_step(fn, result.fn, state, feeds)
        counts.append((p.NAME, len(result.fn.body)))
        current = result.fn
    return counts


@pytest.mark.parametrize("order", [PASSES, PIPELINE_ORDER], ids=["listed", "pipeline"])
def test_mlp_step_numbers_types_idempotence(mlp, order):
    counts = _check_passes(mlp, order)
    assert counts[-1][1] < 0.75 * counts[0][1], counts


def test_cnn_step_numbers_types_idempotence(cnn):
    counts = _check_passes(cnn, PIPELINE_ORDER)
    assert counts[-1][1] < 0.75 * counts[0][1], counts


def test_mlp_pass_statistics(mlp):
    """Adam's per-parameter constants dedupe, g*g becomes square, the stop_gradient goes."""
    fn = clone(mlp[0])
    folded = constant_folding.run(fn).stats
    pruned = pruning.run(fn).stats
    merged = cse.run(fn).stats
    simplified = simplify.run(fn).stats
    assert folded["folded"] >= 12 and pruned["identities"] == 1
    assert merged["merged_constants"] >= 20
    assert simplified["rules"]["x*x"] == 6  # Adam's g*g for 3 kernels + 3 biases
    assert not any(ins.kind in ("identity", "stop_gradient") for ins in fn.body)


def test_stateful_ops_are_untouched(cnn):
    """Dropout's random draw survives every pass with its attrs, and so do two equal draws."""
    text = """
    func @f {
      %step : i64[] = state "kiln/rng_step"
      %r1 : f32[4] = random_normal(%step) {dtype=f32, seed=3, seed2=4, shape=(4,)}  loc("r1")
      %r2 : f32[4] = random_normal(%step) {dtype=f32, seed=3, seed2=4, shape=(4,)}  loc("r2")
      %s : f32[4] = add(%r1, %r2)
      fetch "s" = %s
    }"""
    fn = parse_function(text)
    for p in PASSES:
        p.run(fn)
    assert print_function(fn) == normalized(text)
    step = clone(cnn[0])
    draws = [(ins.kind, dict(ins.attrs)) for ins in step.body if ins.kind.startswith("random")]
    for p in PIPELINE_ORDER:
        p.run(step)
    assert draws and [(ins.kind, dict(ins.attrs)) for ins in step.body if ins.kind.startswith("random")] == draws


def test_fused_instrs_are_skipped():
    """A fused instr (made later by fusion) is neither folded, merged, simplified nor looked into."""
    t = TensorType(float32, (N, 3))
    x, p, q, out = Value("x", t), Value("p", t), Value("q", t), Value("out", t)
    inner = Instr("identity", [p], {}, q)
    fused = Instr("fused", [x], {}, [out], "f", region=Region([p], [inner], [q]))
    fn = Function("f", [Param("feed", "x:0", x)], [fused], [], [("y", out)])
    for p_ in PASSES:
        p_.run(fn)
    assert fn.body == [fused] and fused.region.body == [inner] and fused.operands == [x]

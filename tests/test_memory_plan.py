"""Memory planning: an independent checker of the plan, hand-built (and fused) cases, and the
MLP / CNN training steps.

The checker does not reuse the pass's liveness: it derives each value's lifetime itself and
turns every buffer into real byte ranges for a given batch size N, then demands that values
live at the same kernel never share a byte unless they hold the same data (a view) or are an
in-place state update meeting the old value at the update's own kernel.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from compiler.ir import ops as _ops  # noqa: F401  (fills the op registry)
from compiler.ir.function import Buffer, Function, Instr, Param, Region, Value
from compiler.ir.interpreter import MemoryPlanError, run_function
from compiler.ir.opdef import infer_type
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from compiler.ir.types import N, Sym, TensorType, float32, resolve_shape
from compiler.ir.verifier import verify
from compiler.passes import memory_plan
from compiler.passes.memory_plan import ALIGN, ELEMENTWISE, arena_bytes
from tests.models import cnn_train_step, mlp_train_step

VIEWS = {"reshape", "identity", "stop_gradient"}


# ----------------------------------------------------------------------------- hand-built IR
class Builder:
    """Builds a Function (or a fused region body) op by op, typing each result with the registry."""

    def __init__(self, name="f"):
        self.fn = Function(name)
        self.body = self.fn.body
        self.count = 0

    def _value(self, ttype):
        self.count += 1
        return Value(f"v{self.count}", ttype)

    def param(self, kind, key, shape):
        value = self._value(TensorType(float32, tuple(shape)))
        self.fn.params.append(Param(kind, key, value))
        return value

    def op(self, kind, *operands, **attrs):
        result = self._value(infer_type(kind, [v.type for v in operands], attrs))
        self.body.append(Instr(kind, operands, attrs, result))
        return result

    def const(self, value):
        return self.op("constant", value=np.asarray(value, np.float32))

    def fused(self, operands, build, pattern="loop"):
        """A fused instr: ``build(region_builder, *block_params)`` returns the yielded values."""
        inner = Builder()
        inner.count = self.count + 1000
        params = [inner._value(v.type) for v in operands]
        yields = list(build(inner, *params))
        results = [self._value(y.type) for y in yields]
        self.body.append(Instr("fused", operands, {"pattern": pattern}, results,
                               region=Region(params, inner.body, yields)))
        return results


# ----------------------------------------------------------------------------- the checker
def _nbytes(value, batch):
    return int(np.prod(resolve_shape(value.type.shape, batch), dtype=np.int64)) * value.type.dtype.np.itemsize


def _lifetimes(fn):
    """value -> [first, last] kernel position, computed directly from the body and outputs."""
    life = {p.value: [-1, -1] for p in fn.params}
    for pos, ins in enumerate(fn.body):
        for v in ins.results:
            life[v] = [pos, pos]
        for v in ins.operands:
            life[v][1] = max(life[v][1], pos)
    for v in fn.outputs():
        life[v][1] = len(fn.body)
    return life


def _origin(value):
    """The value whose data a chain of views shows (same data => sharing bytes is fine)."""
    while isinstance(value.producer, Instr) and value.producer.kind in VIEWS:
        value = value.producer.operands[0]
    return value


def _buffer_of(value):
    producer = value.producer
    if isinstance(producer, Param):
        return Buffer(producer.kind, 0, producer.key)  # state / caller (feed) memory
    return producer.buffers[producer.results.index(value)]


def _byte_range(value, buf, batch, memory):
    """(memory region, first byte, end byte) of ``value`` at batch size ``batch``; checks bounds."""
    size = _nbytes(value, batch)
    if buf.space in ("state", "feed"):
        return (buf.space, buf.key), 0, size
    scale, limit = (batch, memory["batch_bytes"] * batch) if buf.space == "batch" else (1, memory["static_bytes"])
    start = buf.offset * scale
    assert start % ALIGN == 0 and start + size <= limit, f"{value} at {buf} does not fit the arena"
    return buf.space, start, start + size


def _inplace_meeting(a, b, life):
    """True when b is an in-place update of the state read by a, meeting a only at b's kernel."""
    ins = b.producer
    meets_at_def = life[a][1] == life[b][0]
    elementwise = isinstance(ins, Instr) and (ins.kind in ELEMENTWISE or ins.attrs.get("pattern") in ("loop", "contraction"))
    return _origin(a).producer.__class__ is Param and meets_at_def and elementwise


def check_plan(fn, batches=(1, 3, 64)):
    """Assert the plan of ``fn`` is sound for every batch size in ``batches`` (and that it verifies)."""
    verify(fn)
    life = _lifetimes(fn)
    state_out = set((k, v) for k, v in fn.state_out)
    for ins in fn.body:
        assert ins.buffers is not None and len(ins.buffers) == len(ins.results), ins
        for v, buf in zip(ins.results, ins.buffers):
            assert buf.space in ("static", "batch", "state"), buf
            assert buf.offset % ALIGN == 0
            if ins.kind == "constant":
                assert buf.space == "static"
            if ins.kind in VIEWS and _buffer_of(ins.operands[0]).space != "feed":
                assert buf == _buffer_of(ins.operands[0]), f"view {v} does not alias its operand"
            if buf.space == "state" and not (ins.kind in VIEWS):
                assert (buf.key, v) in state_out, f"{v} written over state {buf.key} but is not its update"
    values = list(life)
    for batch in batches:
        spans = {v: _byte_range(v, _buffer_of(v), batch, fn.memory) for v in values}
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                (ra, sa, ea), (rb, sb, eb) = spans[a], spans[b]
                if ra != rb or ea <= sb or eb <= sa or _origin(a) is _origin(b):
                    continue
                la, lb = life[a], life[b]
                consts = a.producer.kind == "constant" if isinstance(a.producer, Instr) else False
                both_live = la[0] <= lb[1] and lb[0] <= la[1]
                assert not consts, f"constant {a} shares bytes with {b}"
                assert not both_live or _inplace_meeting(a, b, life), \
                    f"N={batch}: {a} {la} and {b} {lb} overlap in {ra} [{sa},{ea}) / [{sb},{eb})"


def assert_same_numbers(fn, state, feeds):
    """Running through the simulated arena (bytes really shared) gives the interpreter's results."""
    want_state, want = run_function(fn, state, feeds)
    got_state, got = run_function(fn, state, feeds, check_memory_plan=True)
    assert got.keys() == want.keys() and got_state.keys() == want_state.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    for key in want_state:
        np.testing.assert_array_equal(got_state[key], want_state[key])


# ----------------------------------------------------------------------------- small cases
def _chain(depth):
    b = Builder()
    v = b.param("feed", "x", [N, 16])
    for _ in range(depth):
        v = b.op("exp", v)
    b.fn.fetches.append(("y", v))
    return b.fn


def test_a_chain_reuses_two_buffers_golden():
    fn = _chain(4)
    result = memory_plan.run(fn)
    check_plan(fn)
    # 16 f32 = 64 bytes per batch element: kernels ping-pong between two buffers
    assert [str(ins.buffers) for ins in fn.body] == [
        "[Buffer(space='batch', offset=0, key='')]", "[Buffer(space='batch', offset=64, key='')]",
        "[Buffer(space='batch', offset=0, key='')]", "[Buffer(space='batch', offset=64, key='')]"]
    assert fn.memory == {"static_bytes": 0, "batch_bytes": 128, "naive_static_bytes": 0,
                         "naive_batch_bytes": 256, "inplace_state": 0}
    assert result.summary == "arena 0 B + 128 B*N vs naive 0 B + 256 B*N; 0 state updates in place"
    assert arena_bytes(fn, 10) == 1280


def test_arena_bytes_needs_a_plan():
    with pytest.raises(ValueError, match="memory-plan"):
        arena_bytes(_chain(1), 1)


def test_sizes_are_aligned_and_scalars_get_a_line():
    b = Builder()
    x = b.param("feed", "x", [N, 3])
    s = b.op("reduce_sum", x, axes=(0, 1), keepdims=False)  # f32[] = 4 bytes -> 64
    y = b.op("mul", x, s)  # 12 bytes per batch element -> 64
    b.fn.fetches += [("s", s), ("y", y)]
    memory_plan.run(b.fn)
    check_plan(b.fn, batches=(1, 5, 17))
    assert b.fn.memory["static_bytes"] == 64 and b.fn.memory["batch_bytes"] == 64


def test_views_alias_and_keep_their_operand_alive():
    b = Builder()
    x = b.param("feed", "x", [N, 16])
    w = b.param("state", "w", [16])
    a = b.op("exp", x)                      # 0
    r = b.op("identity", a)                 # 1: a's last direct use
    flat = b.op("reshape", x, shape=(Sym(16),))  # 2: a view of a feed is a copy
    c = b.op("neg", x)                      # 3: must not take a's bytes, r still reads them
    d = b.op("add", r, c)                   # 4
    wv = b.op("stop_gradient", w)           # 5: a view of state
    e = b.op("mul", d, wv)                  # 6
    b.fn.fetches += [("e", e), ("flat", flat)]
    result = memory_plan.run(b.fn)
    check_plan(b.fn)
    bufs = {v: ins.buffers[0] for ins in b.fn.body for v in ins.results}
    assert bufs[r] == bufs[a] and bufs[wv] == Buffer("state", 0, "w")
    assert bufs[flat].space == "batch" and bufs[c] != bufs[a]
    assert result.stats["views"] == 2
    rng = np.random.default_rng(0)
    assert_same_numbers(b.fn, {"w": rng.random(16, np.float32)}, {"x": rng.random((5, 16), np.float32)})


def test_a_fetched_view_keeps_its_owner_to_the_end():
    b = Builder()
    x = b.param("feed", "x", [N, 16])
    a = b.op("exp", x)
    r = b.op("reshape", a, shape=(N, 4, 4))  # a's only direct use
    c = b.op("exp", b.op("neg", x))          # neither may land on a's bytes
    b.fn.fetches += [("r", r), ("c", c)]
    memory_plan.run(b.fn)
    check_plan(b.fn)
    assert b.fn.memory["batch_bytes"] == 3 * 64


def test_constants_live_the_whole_step():
    b = Builder()
    x = b.param("feed", "x", [64])
    k = b.const(np.ones(64))
    y = b.op("mul", x, k)
    z = b.op("exp", y)
    b.fn.fetches.append(("z", z))
    memory_plan.run(b.fn)
    check_plan(b.fn)
    assert b.fn.body[0].buffers[0].space == "static"
    assert b.fn.memory["static_bytes"] == 3 * 256  # y dies at z, yet nothing reuses the constant


# ----------------------------------------------------------------------------- in-place state
def _sgd(read_old_after=False, kind="sub"):
    """new_w = w - lr * g, optionally reading the old w again after the update."""
    b = Builder()
    w = b.param("state", "w", [4, 4])
    g = b.param("feed", "g", [4, 4])
    step = b.op("mul", g, b.const(0.1))
    new_w = b.op("transpose", w, perm=(1, 0)) if kind == "transpose" else b.op(kind, w, step)
    b.fn.state_out.append(("w", new_w))
    if read_old_after:
        b.fn.fetches.append(("old_sum", b.op("reduce_sum", w, axes=(0, 1), keepdims=False)))
    return b.fn, new_w


def _buffer(fn, value):
    return value.producer.buffers[value.producer.results.index(value)]


SGD_PLANNED = '''func @f {
  memory {batch_bytes=0, inplace_state=1, naive_batch_bytes=0, naive_static_bytes=192, static_bytes=128}
  %0 : f32[4,4] = state "w"
  %1 : f32[4,4] = feed "g"
  %2 : f32[] = constant() {value=dense<f32[]>(0.1)}  -> static@0
  %3 : f32[4,4] = mul(%1, %2)  -> static@64
  %4 : f32[4,4] = sub(%0, %3)  -> state "w"
  state "w" = %4
}
'''


def test_elementwise_update_is_written_in_place_golden():
    fn, new_w = _sgd()
    result = memory_plan.run(fn)
    check_plan(fn)
    assert _buffer(fn, new_w) == Buffer("state", 0, "w")
    assert fn.memory["inplace_state"] == 1 and result.summary.endswith("1 state update in place")
    assert print_function(fn) == SGD_PLANNED
    assert print_function(parse_function(SGD_PLANNED)) == SGD_PLANNED


def _fetch_old_w(fn):
    fn.fetches.append(("w_before", fn.params[0].value))
    return fn


@pytest.mark.parametrize("make", [
    lambda: _sgd(read_old_after=True)[0],  # a reduce_sum of the old w after the update
    lambda: _fetch_old_w(_sgd()[0]),        # the old w is an output
    lambda: _sgd(kind="transpose")[0],      # new_w[i,j] = w[j,i]: writing over w would clobber it
], ids=["read-later", "fetched", "transpose"])
def test_update_is_not_in_place_when_unsafe(make):
    fn = make()
    memory_plan.run(fn)
    check_plan(fn)
    assert dict(fn.state_out)["w"].producer.buffers[0].space == "static" and fn.memory["inplace_state"] == 0


def test_an_unsafe_in_place_plan_computes_wrong_numbers():
    fn, new_w = _sgd(read_old_after=True)
    memory_plan.run(fn)
    arrays = {"w": np.arange(16, dtype=np.float32).reshape(4, 4)}, {"g": np.ones((4, 4), np.float32)}
    assert_same_numbers(fn, *arrays)
    new_w.producer.buffers = [Buffer("state", 0, "w")]  # what an unsafe planner would do
    with pytest.raises(MemoryPlanError, match="still live"):
        run_function(fn, *arrays, check_memory_plan=True)


def test_reading_the_old_value_through_a_view_is_not_in_place():
    b = Builder()
    w = b.param("state", "w", [1, 4])
    flat = b.op("reshape", w, shape=(4,))   # same bytes, other indexing: the rule stays conservative
    new_w = b.op("add", w, flat)
    b.fn.state_out.append(("w", new_w))
    memory_plan.run(b.fn)
    check_plan(b.fn)
    assert _buffer(b.fn, flat) == Buffer("state", 0, "w") and _buffer(b.fn, new_w).space == "static"


def _fused_update(region_ops, pattern="loop"):
    """State w f32[8], feed g f32[8]; one fused kernel yields (new_w, norm) from region_ops."""
    b = Builder()
    w = b.param("state", "w", [8])
    g = b.param("feed", "g", [8])
    new_w, other = b.fused([w, g], region_ops, pattern=pattern)
    b.fn.state_out.append(("w", new_w))
    b.fn.fetches.append(("other", other))
    return b.fn, new_w, other


def _axpy(r, w, g):
    return [r.op("sub", w, r.op("mul", g, r.const(0.5))), r.op("square", g)]


def _recentred(r, w, g):
    mean = r.op("reduce_mean", w, axes=(0,), keepdims=False)  # every element of w feeds each result
    return [r.op("sub", w, mean), g]


def test_fused_loop_update_is_in_place_and_results_do_not_share():
    fn, new_w, other = _fused_update(_axpy)
    memory_plan.run(fn)
    check_plan(fn)
    assert _buffer(fn, new_w) == Buffer("state", 0, "w") and _buffer(fn, other).space == "static"
    assert '  }  -> state "w", static@0' in print_function(fn).splitlines()
    assert_same_numbers(fn, {"w": np.arange(8, dtype=np.float32)}, {"g": np.ones(8, np.float32)})


@pytest.mark.parametrize("ops,pattern", [(_recentred, "loop"), (_axpy, "reduce")])
def test_fused_update_reading_old_value_across_elements_is_not_in_place(ops, pattern):
    fn, new_w, other = _fused_update(ops, pattern)
    memory_plan.run(fn)
    check_plan(fn)
    assert _buffer(fn, new_w).space == "static" and fn.memory["inplace_state"] == 0
    assert _buffer(fn, other) != _buffer(fn, new_w)


def _fused_weight_update(anchor_reads_w):
    """w f32[4,4] -= 0.1 * (x^T g) in one contraction kernel; optionally the anchor reads w too."""
    b = Builder()
    w = b.param("state", "w", [4, 4])
    x = b.param("feed", "x", [3, 4])
    g = b.param("feed", "g", [3, 4])

    def region(r, pw, px, pg):
        grad = r.op("matmul", px, pg, transpose_a=True, transpose_b=False)
        if anchor_reads_w:
            grad = r.op("matmul", pw, pw, transpose_a=False, transpose_b=False)
        return [r.op("sub", pw, r.op("mul", grad, r.const(0.1)))]

    new_w, = b.fused([w, x, g], region, pattern="contraction")
    b.fn.state_out.append(("w", new_w))
    return b.fn, new_w


@pytest.mark.parametrize("anchor_reads_w", [False, True])
def test_contraction_epilogue_update_is_in_place_unless_the_anchor_reads_it(anchor_reads_w):
    fn, new_w = _fused_weight_update(anchor_reads_w)
    memory_plan.run(fn)
    check_plan(fn)
    assert (_buffer(fn, new_w) == Buffer("state", 0, "w")) is not anchor_reads_w
    rng = np.random.default_rng(1)
    assert_same_numbers(fn, {"w": rng.random((4, 4), np.float32)},
                        {"x": rng.random((3, 4), np.float32), "g": rng.random((3, 4), np.float32)})


def test_multi_result_fused_kernels_reuse_across_kernels():
    b = Builder()
    x = b.param("feed", "x", [N, 16])
    s, t = b.fused([x], lambda r, p: [r.op("exp", p), r.op("neg", p)])    # 0
    u, = b.fused([s, t], lambda r, p, q: [r.op("add", p, q)])            # 1: s, t die here
    v, = b.fused([u], lambda r, p: [r.op("tanh", p)])                   # 2: may reuse s or t
    b.fn.fetches.append(("v", v))
    memory_plan.run(b.fn)
    check_plan(b.fn)
    bufs = [buf for ins in b.fn.body for buf in ins.buffers]
    assert len(set(bufs[:3])) == 3 and bufs[3] in bufs[:2]
    assert_same_numbers(b.fn, {}, {"x": np.linspace(-1, 1, 48, dtype=np.float32).reshape(3, 16)})
    assert b.fn.memory["batch_bytes"] == 3 * 64 and b.fn.memory["naive_batch_bytes"] == 4 * 64


# ----------------------------------------------------------------------------- whole training steps
def _peak_live_bytes(fn, space):
    """Most aligned bytes of ``space`` live at one kernel (a view's uses keep its owner alive)."""
    life, owner, size = _lifetimes(fn), {}, {}
    for ins in fn.body:
        for v, buf in zip(ins.results, ins.buffers):
            aliased = ins.kind in VIEWS and buf == _buffer_of(ins.operands[0])
            owner[v] = owner.get(ins.operands[0], ins.operands[0]) if aliased else v
            if buf.space == space and not aliased:
                size[v] = -(-_nbytes(v, 1) // ALIGN) * ALIGN
                if ins.kind == "constant":
                    life[v] = [-1, len(fn.body)]
    for v, own in owner.items():
        if own in size:
            life[own][1] = max(life[own][1], life[v][1])
    return max(sum(n for v, n in size.items() if life[v][0] <= t <= life[v][1]) for t in range(len(fn.body) + 1))


SUMMARY = r"arena \S+ \S+ \+ \S+ \S+\*N vs naive \S+ \S+ \+ \S+ \S+\*N; (\d+) state updates in place"


@pytest.mark.parametrize("model,fused,numbers", [
    (mlp_train_step, False, True), (mlp_train_step, True, True), (cnn_train_step, False, False)],
    ids=["mlp", "mlp-fused", "cnn"])
def test_training_step_plans(model, fused, numbers):
    """Sound for several N, far below naive, every update in place (after fusion too: Adam runs in
    contraction epilogues and loops), near the peak-live lower bound, same numbers."""
    fn, state, feeds = model(batch=4)
    if fused:
        from compiler.passes import fusion

        fusion.run(fn)
    result = memory_plan.run(fn)
    check_plan(fn, batches=(1, 4, 33))
    mem = fn.memory
    assert mem["static_bytes"] < mem["naive_static_bytes"] / 3 and mem["batch_bytes"] < mem["naive_batch_bytes"] / 1.2
    assert mem["inplace_state"] == len(fn.state_out) >= 20  # weights, Adam slots, beta powers
    assert re.fullmatch(SUMMARY, result.summary).group(1) == str(len(fn.state_out))
    # no plan can be smaller than the bytes live at the busiest kernel; greedy-by-size is within 10%
    for space in ("static", "batch"):
        peak = _peak_live_bytes(fn, space)
        assert peak <= mem[f"{space}_bytes"] <= 1.1 * peak
    if numbers:
        assert_same_numbers(fn, state, feeds)
    before = [list(ins.buffers) for ins in fn.body]
    memory_plan.run(fn)
    assert [list(ins.buffers) for ins in fn.body] == before  # planning is deterministic

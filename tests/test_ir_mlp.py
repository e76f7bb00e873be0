"""The MLP training step (784→256→128→10, Adam) as IR: verify, print, parse back, run."""
import numpy as np
import pytest

from compiler import tf
from compiler.ir.from_graph import lower_graph
from compiler.ir.interpreter import run_function
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from compiler.ir.verifier import verify
from tests.models import mlp_tensors


def build_mlp():
    t = mlp_tensors(seed=0)
    return t["x"], t["labels"], t["loss"], t["train"]


@pytest.fixture(scope="module")
def mlp_step():
    with tf.Graph().as_default():
        x, labels, loss, train = build_mlp()
        fn = lower_graph([loss], [train], [x, labels], name="train_step")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            state = {p.key: sess.variable_value(p.key) for p in fn.state_in()}
        yield fn, state


def test_mlp_train_step_verifies_and_round_trips(mlp_step):
    fn, _ = mlp_step
    verify(fn)
    text = print_function(fn)
    assert text.splitlines()[0] == "func @train_step {"
    assert "f32[N,784]" in text and "matmul" in text
    parsed = parse_function(text)
    verify(parsed)
    assert print_function(parsed) == text


def test_mlp_state_is_every_variable_and_slot(mlp_step):
    fn, _ = mlp_step
    written = {key for key, _ in fn.state_out}
    read = {p.key for p in fn.state_in()}
    for layer in ("fc1", "fc2", "logits"):
        for var in ("kernel", "bias"):
            name = f"{layer}/{var}"
            assert {name, f"{name}/Adam", f"{name}/Adam_1"} <= written
    assert {"beta1_power", "beta2_power"} <= written
    assert written <= read | {"kiln/rng_step"}


def test_parsed_step_computes_the_same_numbers(mlp_step):
    fn, state = mlp_step
    parsed = parse_function(print_function(fn))
    rng = np.random.default_rng(0)
    feeds = {"x:0": rng.random((7, 784), dtype=np.float32), "labels:0": rng.integers(0, 10, 7)}
    new_a, out_a = run_function(fn, state, feeds)
    new_b, out_b = run_function(parsed, state, feeds)
    assert out_a.keys() == out_b.keys() and new_a.keys() == new_b.keys()
    for key in out_a:
        np.testing.assert_array_equal(out_a[key], out_b[key])
    for key in new_a:
        np.testing.assert_array_equal(new_a[key], new_b[key])
    assert np.isfinite(out_a["loss:0"]) and out_a["loss:0"] > 1.0

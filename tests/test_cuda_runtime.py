"""The CUDA backend's host side (docs/ABI.md on a device): state, variables, steps as CUDA
graphs, errors — run on the host emulator (always) and on a GPU when there is one, against
the CPU backend compiling the same graph."""
import os

import numpy as np
import pytest

from compiler import tf
from runtime import KilnRuntimeError
from runtime.abi import KILN_EBACKEND, KILN_ECHECK, KILN_EINVAL, KILN_ENOMEM
from tests import models
from tests.cuda_kit import MODES, assert_states_close, emu_configure, load_pair, needs_emulator


def _mlp_entries():
    graph = tf.Graph()
    with graph.as_default():
        t = models.mlp_tensors(seed=0)
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(t["logits"], 1), t["labels"]), tf.float32), name="acc")
        entries = {"train": ([t["loss"]], [t["train"]], [t["x"], t["labels"]]),
                   "eval": ([t["loss"], acc], [], [t["x"], t["labels"]])}
    return graph, entries


@pytest.fixture(scope="module", params=MODES)
def mlp(request, tmp_path_factory):
    graph, entries = _mlp_entries()
    return load_pair(graph, entries, tmp_path_factory.mktemp(f"mlp-{request.param}"), request.param)


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    return {"x:0": rng.random((n, 784), dtype=np.float32), "labels:0": rng.integers(0, 10, n).astype(np.int64)}


def test_training_steps_match_cpu_across_batch_sizes(mlp):
    """Steps at batches 4, 9, 4 (the graph is re-captured when N changes) and eval in between
    give the CPU backend's losses and variables."""
    cpu, gpu = mlp
    with cpu.new_state() as c, gpu.new_state() as g:
        assert_states_close(c, g, rtol=0, atol=0)  # both start from init.safetensors
        for step, n in enumerate((4, 9, 4, 4)):
            feeds = _batch(n, step)
            lc, lg = c.run("train", feeds)["loss:0"], g.run("train", feeds)["loss:0"]
            np.testing.assert_allclose(lg, lc, rtol=1e-5, atol=1e-6, err_msg=f"step {step} (batch {n})")
            ec, eg = c.run("eval", _batch(7, 100 + step)), g.run("eval", _batch(7, 100 + step))
            for name in ec:
                np.testing.assert_allclose(eg[name], ec[name], rtol=1e-5, atol=1e-6, err_msg=name)
        assert_states_close(c, g)


def test_without_graphs_same_results(mlp, monkeypatch):
    cpu, gpu = mlp
    monkeypatch.setenv("KILN_CUDA_GRAPHS", "0")
    with cpu.new_state() as c, gpu.new_state() as g:
        for step in range(2):
            feeds = _batch(5, step)
            np.testing.assert_allclose(g.run("train", feeds)["loss:0"], c.run("train", feeds)["loss:0"], rtol=1e-5)
        assert_states_close(c, g)


def test_variables_read_write(mlp):
    _, gpu = mlp
    with gpu.new_state() as g:
        w = np.arange(784 * 256, dtype=np.float32).reshape(784, 256)
        g.write_variable("fc1/kernel", w)
        np.testing.assert_array_equal(g.read_variable("fc1/kernel"), w)
        np.testing.assert_array_equal(g.read_variable("fc1/bias"), gpu.init_values()["fc1/bias"])
        with pytest.raises(ValueError, match="shape"):
            g.write_variable("fc1/kernel", w[:2])
        lib, handle = gpu.library, g._handle
        code = lib.read_variable(handle, 99, None, 4)
        assert code == KILN_EINVAL and "no variable with index 99" in lib.error_message(handle)
        code = lib.read_variable(handle, 0, w.ctypes.data, 8)
        assert code == KILN_EINVAL and "byte count 8, expected" in lib.error_message(handle)


def test_failed_check_reports_like_cpu(mlp):
    """A label out of range stops the step with the CPU backend's message; the state still
    works afterwards."""
    cpu, gpu = mlp
    feeds = _batch(6, 0)
    feeds["labels:0"][3] = 12
    messages = []
    for art in (cpu, gpu):
        with art.new_state() as s, pytest.raises(KilnRuntimeError) as info:
            s.run("train", feeds)
        assert info.value.code == KILN_ECHECK
        messages.append(info.value.message)
    assert messages[1] == messages[0]
    assert "12" in messages[1]
    with gpu.new_state() as g:
        with pytest.raises(KilnRuntimeError):
            g.run("train", feeds)
        assert np.isfinite(g.run("train", _batch(6, 1))["loss:0"])


def test_batch_zero_is_einval(mlp):
    _, gpu = mlp
    with gpu.new_state() as g:
        lib, handle = gpu.library, g._handle
        code = lib.entries["train"](handle, 0, None, None)
        assert code == KILN_EINVAL and lib.error_message(handle) == "batch size must be >= 1, got 0"


@needs_emulator
def test_no_device_and_out_of_memory(tmp_path):
    """Emulator fault injection: no GPU -> kiln_create fails with the reason; a failing
    cudaMalloc at create or for the workspace -> a clear error, never a crash."""
    graph, entries = _mlp_entries()
    _, gpu = load_pair(graph, entries, tmp_path, "emulated")
    try:
        emu_configure(gpu, devices=0)
        with pytest.raises(KilnRuntimeError, match="no CUDA device") as info:
            gpu.new_state()
        assert info.value.code == KILN_EBACKEND
        emu_configure(gpu, devices=1, fail_malloc_at=3)  # the third variable's allocation
        with pytest.raises(KilnRuntimeError, match="cannot allocate"):
            gpu.new_state()
        emu_configure(gpu, devices=1, fail_malloc_at=0)
        with gpu.new_state() as g:
            n_vars = len(g.variable_names())
            emu_configure(gpu, devices=1, fail_malloc_at=1)  # the workspace of the first step
            with pytest.raises(KilnRuntimeError, match="device workspace") as info:
                g.run("train", _batch(3, 0))
            assert info.value.code == KILN_ENOMEM
            emu_configure(gpu, devices=1, fail_malloc_at=0)
            assert np.isfinite(g.run("train", _batch(3, 0))["loss:0"])
            assert n_vars == len(gpu.manifest["variables"])
    finally:
        emu_configure(gpu, devices=1, fail_malloc_at=0)


@pytest.mark.parametrize("mode", MODES)
def test_session_on_gpu_device(mode):
    """tf.device('/gpu:0') runs the step on the CUDA backend: losses and variables match a
    CPU session; variables read back, Variable.load and a second signature see the device's
    values; a Saver round-trips them."""
    config = {"backend": "compiled", "cuda_emulate": mode == "emulated"}
    results = {}
    for where in ("/cpu:0", "/gpu:0"):
        graph = tf.Graph()
        with graph.as_default(), tf.device(where):
            t = models.mlp_tensors(seed=3)
            init = tf.global_variables_initializer()
            with tf.Session(config=config) as sess:
                sess.run(init)
                losses = [sess.run([t["loss"], t["train"]], _feed(t, 6, s))[0] for s in range(3)]
                logits = sess.run(t["logits"], _feed(t, 4, 9))
                kernel = tf.global_variables()[0]
                value = sess.run(kernel)
                kernel.load(value * 0.5, sess)
                after = sess.run(t["loss"], _feed(t, 6, 0))
                results[where] = (losses, logits, value, after)
    for a, b in zip(results["/cpu:0"], results["/gpu:0"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def _feed(t, n, seed):
    f = _batch(n, seed)
    return {t["x"]: f["x:0"], t["labels"]: f["labels:0"]}


def test_session_without_gpu_is_invalid_argument(monkeypatch):
    monkeypatch.delenv("KILN_CUDA_EMULATE", raising=False)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 2])
        with tf.device("/device:GPU:0"):
            y = tf.nn.relu(x) * 2.0
        feed = {x: np.array([[1.0, -1.0]], np.float32)}
        hidden = tf.ConfigProto(device_count={"GPU": 0}, kiln_backend="compiled")
        with tf.Session(config=hidden) as sess, pytest.raises(tf.errors.InvalidArgumentError, match="Cannot assign a device"):
            sess.run(y, feed)
        soft = tf.ConfigProto(device_count={"GPU": 0}, allow_soft_placement=True, kiln_backend="compiled")
        with tf.Session(config=soft) as sess:
            np.testing.assert_array_equal(sess.run(y, feed), [[2.0, 0.0]])
    assert os.environ.get("KILN_CUDA_EMULATE") is None

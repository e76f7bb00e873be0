"""tf.Session on the compiled backend against the reference interpreter (same graph, same data).

Every session here forces its backend through ``config`` (tests/conftest.py sets
KILN_BACKEND=interpreter for the API tests).  Losses are compared with a float32 tolerance
that grows with the steps (different summation orders), dropout masks exactly.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from compiler import tf
from tests.models import mlp_tensors
from compiler.frontend.session import select_backend

COMPILED = {"backend": "compiled"}  # + "cache_dir": one cache shared by this module's tests
INTERP = {"backend": "interpreter"}


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """Signatures that recur across tests (same graph, same IR) are compiled once."""
    COMPILED["cache_dir"] = str(tmp_path_factory.mktemp("kiln-cache"))
    yield
    del COMPILED["cache_dir"]


def train_losses(build, batches, config, steps, extra=()):
    """Build the graph in a fresh Graph, init, run ``steps`` train steps; returns the fetches."""
    g = tf.Graph()
    with g.as_default():
        t = build()
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            out = []
            for i in range(steps):
                feed = {t[k]: v for k, v in batches(i).items()}
                out.append(sess.run([t["loss"], t["train"], *[t[e] for e in extra]], feed))
            return out, sess


def assert_losses_match(got, want, rtol0=2e-6, growth=1e-6):
    """Step i within rtol0 + i*growth of the interpreter (float32 summation order differs;
    measured: <= 1e-6 relative over 20 MLP/CNN steps, so a real bug shows far above this)."""
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=rtol0 + i * growth, atol=1e-6, err_msg=f"step {i}")


# ----------------------------------------------------------------------------- plane fit
def test_plane_fit_reaches_the_plane():
    """The classic TF1 intro: fit y = 0.1 x1 + 0.2 x2 + 0.3 with gradient descent."""
    rng = np.random.default_rng(0)
    x_data = rng.random((2, 100)).astype(np.float32)
    y_data = np.dot([0.100, 0.200], x_data) + 0.300
    with tf.Graph().as_default():
        b = tf.Variable(tf.zeros([1]))
        W = tf.Variable(tf.random_uniform([1, 2], -1.0, 1.0, seed=1))
        y = tf.matmul(W, x_data) + b
        loss = tf.reduce_mean(tf.square(y - y_data))
        train = tf.train.GradientDescentOptimizer(0.5).minimize(loss)
        with tf.Session(config=COMPILED) as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(201):
                sess.run(train)
            w_val, b_val = sess.run([W, b])
            assert any(p.state is not None for p in sess._cache.values())  # really compiled
    np.testing.assert_allclose(w_val, [[0.1, 0.2]], atol=1e-3)
    np.testing.assert_allclose(b_val, [0.3], atol=1e-3)


# ----------------------------------------------------------------------------- MLP
def mlp():
    return mlp_tensors(seed=3)


def mnist_like(i, batch=16, one_hot=False):
    rng = np.random.default_rng(100 + i)
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    return x, (np.eye(10, dtype=np.float32)[y] if one_hot else y)


def test_mlp_trains_like_the_interpreter():
    def batches(i):
        x, y = mnist_like(i % 2)  # two batches in turn: the loss must go down
        return {"x": x, "labels": y}
    got, _ = train_losses(mlp, batches, COMPILED, 20)
    want, _ = train_losses(mlp, batches, INTERP, 20)
    assert_losses_match([r[0] for r in got], [r[0] for r in want])
    assert got[-1][0] < got[0][0]


def test_label_out_of_range_is_the_interpreters_error():
    messages = []
    for config in (COMPILED, INTERP):
        with tf.Graph().as_default():
            t = mlp()
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                x, y = mnist_like(0)
                y[3] = 10
                with pytest.raises(ValueError) as info:
                    sess.run(t["loss"], {t["x"]: x, t["labels"]: y})
                messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "10" in messages[0]


# ----------------------------------------------------------------------------- CNN (seed 002)
def cnn():
    tf.set_random_seed(7)
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    y = tf.placeholder(tf.float32, [None, 10], name="y_actual")
    keep_prob = tf.placeholder(tf.float32, [], name="keep_prob")

    def conv_pool(h, w, b):
        h = tf.nn.relu(tf.nn.conv2d(h, w, strides=[1, 1, 1, 1], padding="SAME") + b)
        return tf.nn.max_pool(h, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")
    weight = lambda shape: tf.Variable(tf.truncated_normal(shape, stddev=0.1))
    bias = lambda shape: tf.Variable(tf.constant(0.1, shape=shape))
    h = conv_pool(tf.reshape(x, [-1, 28, 28, 1]), weight([5, 5, 1, 32]), bias([32]))
    h = conv_pool(h, weight([5, 5, 32, 64]), bias([64]))
    fc = tf.nn.relu(tf.matmul(tf.reshape(h, [-1, 7 * 7 * 64]), weight([3136, 1024])) + bias([1024]))
    dropped = tf.nn.dropout(fc, keep_prob)
    logits = tf.matmul(dropped, weight([1024, 10])) + bias([10])
    loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits))
    return {"x": x, "y": y, "keep_prob": keep_prob, "fc": fc, "dropped": dropped, "loss": loss,
            "train": tf.train.AdamOptimizer(1e-4).minimize(loss)}


def test_cnn_trains_like_the_interpreter_with_the_same_dropout_masks():
    def batches(i):
        x, y = mnist_like(0, batch=8, one_hot=True)  # one batch: the loss must go down
        return {"x": x, "y": y, "keep_prob": np.float32(0.5)}
    got, _ = train_losses(cnn, batches, COMPILED, 20, extra=("fc", "dropped"))
    want, _ = train_losses(cnn, batches, INTERP, 20, extra=("fc", "dropped"))
    assert_losses_match([r[0] for r in got], [r[0] for r in want])
    for step in (0, 1, 19):  # the same Philox draws: kept where both backends keep
        (_, _, fc_c, drop_c), (_, _, fc_i, drop_i) = got[step], want[step]
        live = (fc_c > 1e-3) & (fc_i > 1e-3)
        assert live.sum() > 100
        np.testing.assert_array_equal(drop_c[live] != 0, drop_i[live] != 0)
        np.testing.assert_allclose(drop_c, drop_i, rtol=1e-4, atol=1e-4)
    losses = [r[0] for r in got]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])  # noisy (dropout), but learning


# ----------------------------------------------------------------------------- batch sizes
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_batch_sizes_on_one_artifact(batch):
    """One compiled signature serves every batch size (the same session, growing workspace)."""
    results = {}
    for name, config in (("c", COMPILED), ("i", INTERP)):
        with tf.Graph().as_default():
            tf.set_random_seed(5)
            x = tf.placeholder(tf.float32, [None, 5])
            h = tf.layers.dense(x, 9, activation=tf.nn.tanh)
            out = tf.nn.softmax(tf.layers.dense(h, 3))
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                xs = [np.random.default_rng(b).standard_normal((b, 5)).astype(np.float32)
                      for b in (batch, 2 * batch + 1, batch)]
                results[name] = [sess.run(out, {x: v}) for v in xs]
                if name == "c":
                    assert len([p for p in sess._cache.values() if p.state is not None]) == 1
    for a, b in zip(results["c"], results["i"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert results["c"][0].shape == (batch, 3)


# ----------------------------------------------------------------------------- backend choice
class _Proto:
    kiln_backend = "interpreter"


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("KILN_BACKEND", raising=False)
    assert select_backend(None) == "compiled"
    assert select_backend(INTERP) == "interpreter"
    assert select_backend(_Proto()) == "interpreter"
    monkeypatch.setenv("KILN_BACKEND", "interpreter")
    assert select_backend(None) == "interpreter"
    assert select_backend({"backend": "compiled"}) == "compiled"  # the config wins
    with pytest.raises(ValueError, match="unknown Kiln backend 'gpu'"):
        select_backend({"backend": "gpu"})


def test_interpreter_fallback_builds_nothing():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 2])
        v = tf.Variable(tf.ones([2]))
        with tf.Session(config=_Proto()) as sess:
            sess.run(v.initializer)
            np.testing.assert_array_equal(sess.run(x * v, {x: [[1, 2]]}), [[1, 2]])
            assert sess._tmpdir is None and all(p.state is None for p in sess._cache.values())


# ----------------------------------------------------------------------------- variables
def test_uninitialized_variable_raises_before_native_code():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 2])
        v = tf.Variable(tf.ones([2]), name="W")
        with tf.Session(config=COMPILED) as sess:
            with pytest.raises(ValueError, match="Attempting to use uninitialized value W"):
                sess.run(x * v, {x: [[1, 2]]})
            sess.run(v.initializer)
            np.testing.assert_array_equal(sess.run(x * v, {x: [[1, 2]]}), [[1, 2]])
            assert sess.run(x * v, {x: np.zeros((0, 2))}).shape == (0, 2)  # empty: interpreted


def test_one_copy_of_each_variable_updated_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 2])
        v = tf.Variable(tf.zeros([2]), name="acc")
        step = tf.assign_add(v, tf.reduce_sum(x, 0))
        for _ in range(2):  # the second session finds the artifact in the cache
            with tf.Session(config={"backend": "compiled"}) as sess:
                sess.run(v.initializer)
                arr = sess._arrays["acc"]
                sess.run(step, {x: [[1, 2], [3, 4]]})
                assert sess._arrays["acc"] is arr  # bound storage, updated in place
                np.testing.assert_array_equal(arr, [4, 6])
                v.load([10, 20], sess)  # copied into the same array
                np.testing.assert_array_equal(sess.run(step, {x: [[1, 1]]}), [11, 21])
                assert sess._arrays["acc"] is arr
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1


def test_env_backend_is_respected(monkeypatch):
    monkeypatch.setenv("KILN_BACKEND", "interpreter")
    with tf.Graph().as_default():
        v = tf.Variable(tf.ones([3]))
        with tf.Session() as sess:
            sess.run(v.initializer)
            sess.run(tf.assign_add(v, v * 2))
            assert sess.backend == "interpreter" and sess._tmpdir is None
            np.testing.assert_array_equal(sess.run(v), [3, 3, 3])
    assert os.environ["KILN_BACKEND"] == "interpreter"


def test_compiled_random_shuffle_is_the_interpreters_permutation():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 2], name="x")
        y = tf.random_shuffle(x, seed=5)
        data = np.arange(26, dtype=np.float32).reshape(13, 2)
        runs = {}
        for backend in ("compiled", "interpreter"):
            with tf.Session(config={"backend": backend}) as sess, warnings.catch_warnings():
                warnings.simplefilter("error")  # no silent fallback to the interpreter
                runs[backend] = [sess.run(y, {x: data}) for _ in range(2)]
    for a, b in zip(runs["compiled"], runs["interpreter"]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs["compiled"][0], runs["compiled"][1])  # a fresh permutation each step

"""Shapes known at run time (issue 12): TF's static-shape rules, and Session runs that
specialize on the fed shapes while keeping the batch dim symbolic.

TF's results come from tests/goldens/dynamic_shapes.json (tests/make_dynamic_shape_goldens.py,
run where TensorFlow is installed); values are checked against numpy.
"""
import json
import os

import numpy as np
import pytest

from compiler import tf
from tests.cuda_kit import MODES, race_checking
from tests.dynamic_shape_cases import graph_cases

GOLDENS = json.load(open(os.path.join(os.path.dirname(__file__), "goldens", "dynamic_shapes.json")))
COMPILED = {"backend": "compiled"}
RNG = np.random.default_rng(12)


# ----------------------------------------------------------------------------- TensorShape vs TF
@pytest.mark.parametrize("case", GOLDENS["tensor_shape"], ids=lambda c: f"{c['a']}-{c['b']}")
def test_tensor_shape_rules_match_tf(case):
    a, b = tf.TensorShape(case["a"]), tf.TensorShape(case["b"])
    assert a.is_compatible_with(b) == case["compatible"]
    try:
        merged = str(a.merge_with(b))
    except ValueError:
        merged = "error"
    assert merged == case["merge"]
    assert str(a.most_specific_compatible_shape(b)) == case["most_specific"]
    assert str(a.concatenate(b)) == case["concat"]
    assert (a == b) == case["equal"]
    try:
        broadcast = str(tf.broadcast_static_shape(a, b))
    except ValueError:
        broadcast = "error"
    assert broadcast == case["broadcast"]


def test_tensor_shape_unknown_rank_api():
    s = tf.TensorShape(None)
    assert s.ndims is None and s.dims is None and not s.is_fully_defined() and s.num_elements() is None
    with pytest.raises(ValueError, match="as_list\\(\\) is not defined on an unknown TensorShape"):
        s.as_list()
    assert str(s) == "<unknown>" and repr(s) == "TensorShape(None)"
    assert tf.TensorShape([None, 3]).with_rank(2).as_list() == [None, 3]
    assert s.with_rank(2).as_list() == [None, None]
    with pytest.raises(ValueError, match="must have rank 3"):
        tf.TensorShape([1, 2]).with_rank(3)
    assert tf.TensorShape([2, None])[1] is None and tf.TensorShape([2, 3])[1:] == tf.TensorShape([3])


@pytest.mark.parametrize("name", sorted(GOLDENS["graph"]))
def test_graph_static_shapes_match_tf(name):
    built = graph_cases(tf)
    with tf.Graph().as_default():
        assert str(built[name]().shape) == GOLDENS["graph"][name]


def test_set_shape_merges_and_refuses_conflicts():
    with tf.Graph().as_default():
        t = tf.placeholder(tf.float32, [None, None])
        t.set_shape([None, 3])
        assert t.shape.as_list() == [None, 3]
        with pytest.raises(ValueError, match="not compatible"):
            t.set_shape([None, 4])
        with tf.Session() as sess:
            np.testing.assert_array_equal(sess.run(t * 2.0, {t: np.ones((2, 3))}), np.full((2, 3), 2.0))
            with pytest.raises(ValueError, match=r"Cannot feed value of shape \(2, 4\)"):
                sess.run(t, {t: np.ones((2, 4))})


def test_incompatible_static_shapes_name_op_and_shapes():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r"add.*\[N,4\].*\[3,5\]|\[\?,4\].*\[3,5\]"):
            tf.placeholder(tf.float32, [None, 4]) + tf.ones([3, 5])
        with pytest.raises(ValueError, match=r"matmul.*inner dimensions differ"):
            tf.matmul(tf.placeholder(tf.float32, [None, None, 3]), tf.ones([4, 2]))


# ----------------------------------------------------------------------------- feed errors
@pytest.mark.parametrize("case", GOLDENS["feed_errors"], ids=lambda c: str(c["shape"]))
@pytest.mark.parametrize("backend", ["interpreter", "compiled"])
def test_feed_error_has_tfs_wording_before_any_compile(case, backend):
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, case["shape"], name="x")
        with tf.Session(config={"backend": backend}) as sess:
            with pytest.raises(ValueError) as info:
                sess.run(x * 2.0, {x: np.zeros(case["value_shape"])})
            assert not sess._cache  # refused before lowering or compiling anything
    want = case["message"].replace(case["name"], "'x:0'")  # TF 1.x quotes the name and shape
    want = want.replace("which has shape ", "which has shape '") + "'"
    assert str(info.value) == want


# ----------------------------------------------------------------------------- the idioms (interpreter)
def test_keep_prob_placeholder_without_shape_in_dropout_trains():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        keep_prob = tf.placeholder(tf.float32, name="keep_prob")
        w = tf.Variable(np.arange(8, dtype=np.float32).reshape(4, 2) / 8)
        h = tf.nn.dropout(x, keep_prob)
        loss = tf.reduce_sum(tf.matmul(h, w))
        grad = tf.gradients(loss, [w])[0]
        xv = RNG.standard_normal((3, 4)).astype(np.float32)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            np.testing.assert_allclose(sess.run(h, {x: xv, keep_prob: 1.0}), xv)
            np.testing.assert_allclose(sess.run(grad, {x: xv, keep_prob: 1.0}),
                                       np.repeat(xv.sum(0)[:, None], 2, 1), rtol=1e-6)
            dropped = sess.run(h, {x: xv, keep_prob: 0.5})
            assert np.all(np.isclose(dropped, 0) | np.isclose(dropped, 2 * xv))
            with pytest.raises(ValueError, match="mul|shapes|broadcast"):
                sess.run(h, {x: xv, keep_prob: [0.5, 0.5]})  # TF: not a scalar either


def test_placeholder_fed_scalars_and_vectors():
    with tf.Graph().as_default():
        p = tf.placeholder(tf.float32, name="p")
        y = p * 2.0 + 1.0
        total = tf.reduce_sum(y)
        with tf.Session() as sess:
            assert sess.run(y, {p: 3.0}) == 7.0
            for value in ([1.0, 2.0], np.ones((2, 3), np.float32)):
                np.testing.assert_allclose(sess.run(y, {p: value}), np.asarray(value) * 2 + 1)
                assert sess.run(total, {p: value}) == pytest.approx(float(np.sum(np.asarray(value) * 2 + 1)))
            assert sess.run(tf.rank(p), {p: np.ones((2, 3, 1))}) == 3
            assert sess.run(tf.size(p), {p: np.ones((2, 3))}) == 6


def test_random_normal_of_tf_shape_reparameterization():
    """VAE: z = mu + exp(logvar / 2) * eps with eps ~ N(0, 1) of z's run-time shape."""
    with tf.Graph().as_default():
        mu = tf.placeholder(tf.float32, [None, None], name="mu")
        logvar = tf.placeholder(tf.float32, [None, None], name="logvar")
        eps = tf.random_normal(tf.shape(mu), seed=3)
        z = mu + tf.exp(logvar / 2) * eps
        with tf.Session() as sess:
            mv = RNG.standard_normal((200, 5)).astype(np.float32)
            e, zv = sess.run([eps, z], {mu: mv, logvar: np.zeros((200, 5))})
            assert e.shape == (200, 5) and abs(e.mean()) < 0.1 and abs(e.std() - 1) < 0.1
            np.testing.assert_allclose(sess.run(z, {mu: mv[:3, :2], logvar: np.full((3, 2), -80.0)}),
                                       mv[:3, :2], atol=1e-6)


def test_range_of_the_batch_dim_and_shape_arithmetic():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 6], name="x")
        idx = tf.range(0, tf.shape(x)[0])
        odd = tf.range(1, tf.shape(x)[0], 2)
        pairs = tf.reshape(x, tf.stack([tf.shape(x)[0] * 2, -1]))
        zeros = tf.zeros(tf.shape(x))
        filled = tf.fill([tf.shape(x)[0], 2], 7.0)
        tiled = tf.tile(tf.ones([1, 2]), [tf.shape(x)[0], 1])
        with tf.Session() as sess:
            for n in (1, 4):
                xv = RNG.standard_normal((n, 6)).astype(np.float32)
                i, o, p, zz, f, t = sess.run([idx, odd, pairs, zeros, filled, tiled], {x: xv})
                np.testing.assert_array_equal(i, np.arange(n))
                np.testing.assert_array_equal(o, np.arange(1, n, 2))
                np.testing.assert_array_equal(p, xv.reshape(n * 2, 3))
                assert zz.shape == (n, 6) and not zz.any()
                np.testing.assert_array_equal(f, np.full((n, 2), 7.0))
                np.testing.assert_array_equal(t, np.ones((n, 2)))


def test_shape_values_fold_to_constants_or_read_the_batch_when_lowered():
    """Lowered with the fed shapes, a static shape value is a constant; one holding the
    batch dim stays a run-time op, and shape attrs made from it hold N."""
    from compiler.ir.from_graph import lower_graph

    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, None], name="x")
        inner = tf.shape(x)[1] * 2
        rows = tf.shape(x)[0]
        ones = tf.ones(tf.stack([rows, inner]))
        grid = tf.broadcast_to(tf.reshape(tf.range(rows), [-1, 1]), tf.shape(x))
        fn = lower_graph([inner, rows, ones, grid], (), [x], feed_shapes={x: (4, 7)})
        by_fetch = dict(fn.fetches)
        assert by_fetch[inner.name].producer.kind == "constant"
        assert int(by_fetch[inner.name].producer.attrs["value"]) == 14
        assert by_fetch[rows.name].producer.kind != "constant"
        assert str(by_fetch[ones.name].type) == "f32[N,14]" and str(by_fetch[grid.name].type) == "i32[N,7]"
        with tf.Session() as sess:
            o, g = sess.run([ones, grid], {x: np.zeros((3, 7), np.float32)})
            np.testing.assert_array_equal(o, np.ones((3, 14)))
            np.testing.assert_array_equal(g, np.repeat(np.arange(3)[:, None], 7, 1))


def test_unknown_inner_dims_take_the_fed_sizes():
    with tf.Graph().as_default():
        a = tf.placeholder(tf.float32, [None, None], name="a")
        b = tf.placeholder(tf.float32, [None, 28, None], name="b")
        w = tf.constant(RNG.standard_normal((5, 3)).astype(np.float32))
        y = tf.matmul(a, w)
        s = tf.reduce_mean(b, axis=[1, 2]) + tf.cast(tf.shape(b)[2], tf.float32)
        e = tf.expand_dims(a, 1)
        with tf.Session() as sess:
            av = RNG.standard_normal((4, 5)).astype(np.float32)
            np.testing.assert_allclose(sess.run(y, {a: av}), av @ w.op.attrs["value"], rtol=1e-5)
            assert sess.run(e, {a: av}).shape == (4, 1, 5)
            for shape in ((2, 28, 3), (3, 28, 7)):
                bv = RNG.standard_normal(shape).astype(np.float32)
                np.testing.assert_allclose(sess.run(s, {b: bv}), bv.mean((1, 2)) + shape[2], rtol=1e-5)
            with pytest.raises(ValueError, match="matmul.*inner dimensions"):
                sess.run(y, {a: np.ones((4, 6), np.float32)})


def np_softmax_xent(labels, logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return -(labels * (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))).sum(-1)


def test_softmax_xent_constant_labels_merge_with_batch_logits():
    labels = np.eye(4, dtype=np.float32)[[0, 2, 3]]
    with tf.Graph().as_default():
        logits = tf.placeholder(tf.float32, [None, 4], name="logits")
        xe = tf.nn.softmax_cross_entropy_with_logits(labels=tf.constant(labels), logits=logits)
        assert xe.shape.as_list() == [3]
        lv = RNG.standard_normal((3, 4)).astype(np.float32)
        with tf.Session() as sess:
            np.testing.assert_allclose(sess.run(xe, {logits: lv}), np_softmax_xent(labels, lv), rtol=1e-5)
            with pytest.raises(ValueError, match=r"\[5,4\].*\[3,4\]|\[3,4\].*\[5,4\]"):
                sess.run(xe, {logits: np.zeros((5, 4), np.float32)})


def test_batch_dim_meeting_static_sizes_specializes():
    """concat/pad of the batch dim with static sizes: TF allows them; Kiln specializes the
    run on the batch size (the dim N + 1 has no symbolic form)."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        both = tf.concat([x, tf.zeros([1, 3])], 0)
        padded = tf.pad(x, [[1, 0], [0, 0]])
        with tf.Session() as sess:
            for n in (2, 5):
                xv = np.ones((n, 3), np.float32)
                c, p = sess.run([both, padded], {x: xv})
                np.testing.assert_array_equal(c, np.concatenate([xv, np.zeros((1, 3))]))
                np.testing.assert_array_equal(p, np.pad(xv, [[1, 0], [0, 0]]))


def _mlp_values(x_shape, u_shape, xv, uv):
    """Loss and gradients of a small net over placeholders of the given declared shapes."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, x_shape, name="x")
        u = tf.placeholder(tf.float32, u_shape, name="u")
        w = tf.Variable(np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3))
        b = tf.Variable(np.full((3,), 0.1, np.float32))
        h = tf.nn.relu(tf.matmul(x, w) + b) * u
        loss = tf.reduce_mean(tf.square(h)) + tf.reduce_mean(x, axis=0)[1] + tf.reduce_sum(u * u)
        fetches = [loss] + tf.gradients(loss, [w, b, x, u])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return sess.run(fetches, {x: xv, u: uv})


@pytest.mark.parametrize("u_value", [2.0, [1.0, 2.0, 3.0]], ids=["scalar_u", "vector_u"])
def test_unknown_shapes_give_the_static_programs_values_and_gradients(u_value):
    """Differential: the same net with [None, None] / unknown-rank placeholders and with
    static ones gives the same loss and gradients (broadcast gradients summed at lowering)."""
    xv = RNG.standard_normal((4, 5)).astype(np.float32)
    uv = np.asarray(u_value, np.float32)
    dynamic = _mlp_values([None, None], None, xv, uv)
    static = _mlp_values([4, 5], list(uv.shape), xv, uv)
    for d, s in zip(dynamic, static):
        assert np.shape(d) == np.shape(s)
        np.testing.assert_allclose(d, s, rtol=1e-6)


def test_a_shape_from_run_time_values_is_refused_when_built():
    with tf.Graph().as_default():
        n = tf.placeholder(tf.int32, [2], name="n")
        with pytest.raises(ValueError, match="fill: Kiln needs a static shape.*placeholder 'n'"):
            tf.fill(n, 1.0)


# ----------------------------------------------------------------------------- compiled: one artifact per shape signature
def compiled_plans(sess):
    return [p for p in sess._cache.values() if p.state is not None]


def test_compiled_batch_sizes_share_one_artifact_and_new_sizes_compile():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, None], name="x")
        keep_prob = tf.placeholder(tf.float32, name="keep_prob")
        idx = tf.cast(tf.range(tf.shape(x)[0]), tf.float32)
        y = tf.reduce_sum(tf.nn.dropout(x, keep_prob), axis=1) + idx
        with tf.Session(config=COMPILED) as sess:
            for n in (2, 7, 3):
                xv = RNG.standard_normal((n, 5)).astype(np.float32)
                np.testing.assert_allclose(sess.run(y, {x: xv, keep_prob: 1.0}), xv.sum(1) + np.arange(n),
                                           rtol=1e-5, atol=1e-6)
            assert len(compiled_plans(sess)) == 1 and len(sess._artifacts) == 1
            xv = RNG.standard_normal((2, 9)).astype(np.float32)
            np.testing.assert_allclose(sess.run(y, {x: xv, keep_prob: 1.0}), xv.sum(1) + np.arange(2),
                                       rtol=1e-5, atol=1e-6)
            assert len(compiled_plans(sess)) == 2 and len(sess._artifacts) == 2


def test_compiled_static_batch_signature_per_batch_size():
    labels = np.eye(4, dtype=np.float32)[[1, 1, 0]]
    with tf.Graph().as_default():
        logits = tf.placeholder(tf.float32, [None, 4], name="logits")
        xe = tf.nn.softmax_cross_entropy_with_logits(labels=tf.constant(labels), logits=logits)
        lv = RNG.standard_normal((3, 4)).astype(np.float32)
        with tf.Session(config=COMPILED) as sess:
            for _ in range(2):
                np.testing.assert_allclose(sess.run(xe, {logits: lv}), np_softmax_xent(labels, lv), rtol=1e-5)
            assert len(compiled_plans(sess)) == 1


@pytest.mark.parametrize("mode", MODES)
def test_cuda_range_of_the_batch_dim_one_artifact(mode):
    """The ``range`` kernel of an [N] length on the CUDA backend (emulated here; on a GPU too)."""
    with tf.Graph().as_default(), race_checking():
        x = tf.placeholder(tf.float32, [None, None], name="x")
        keep_prob = tf.placeholder(tf.float32, name="keep_prob")
        y = tf.reduce_sum(tf.nn.dropout(x, keep_prob), axis=1) + tf.cast(tf.range(tf.shape(x)[0]), tf.float32)
        with tf.Session(config={"backend": "cuda", "cuda_emulate": mode == "emulated"}) as sess:
            for n in (2, 5):
                xv = RNG.standard_normal((n, 3)).astype(np.float32)
                np.testing.assert_allclose(sess.run(y, {x: xv, keep_prob: 1.0}), xv.sum(1) + np.arange(n),
                                           rtol=1e-5, atol=1e-6)
            assert len(compiled_plans(sess)) == 1 and len(sess._artifacts) == 1


# ----------------------------------------------------------------------------- kiln compile
MODEL = """\
from compiler import tf
from tests.cuda_kit import MODES, race_checking


def build():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    {line}
    y = tf.reduce_sum(x) + tf.reduce_sum(z)
    return {{"infer": {{"feeds": [x, z], "fetches": {{"y": y}}}}}}
"""


@pytest.mark.parametrize("line, message", [
    ('z = tf.placeholder(tf.float32, name="keep_prob")',
     "entry 'infer': placeholder 'keep_prob' has no shape: declare it, e.g. as "
     "tf.placeholder(tf.float32, shape=[]) for a scalar"),
    ('z = tf.placeholder(tf.float32, [None, 28, None], name="z")',
     "entry 'infer': placeholder 'z' has unknown dim 2 (shape [?,28,?]): give it a size"),
])
def test_kiln_compile_needs_static_shapes_and_says_how(tmp_path, capsys, line, message):
    from compiler.cli import main

    path = tmp_path / "model.py"
    path.write_text(MODEL.format(line=line))
    code = main(["compile", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"kiln: {path}: {message}" in err, err

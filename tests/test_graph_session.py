"""Graph construction, Session.run semantics, feeds and fetches, name scopes."""
import collections

import numpy as np
import pytest

from compiler import tf


def test_placeholder_batch_dim_serves_any_batch_size():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    y = tf.reduce_sum(x * 2.0, axis=1)
    assert x.shape.as_list() == [None, 3]
    assert y.shape.as_list() == [None]
    with tf.Session() as sess:
        for n in (1, 7, 64):
            data = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
            np.testing.assert_allclose(sess.run(y, {x: data}), (data * 2).sum(1))


def test_placeholders_may_have_unknown_dims_and_rank():
    """As in TF1: an inner None dim and no shape at all are legal (known at the feed)."""
    assert tf.placeholder(tf.float32, [3, None]).shape.as_list() == [3, None]
    assert tf.placeholder(tf.float32).shape.ndims is None


def test_unfed_placeholder_error_names_it():
    x = tf.placeholder(tf.float32, [None, 784], name="x")
    with tf.Session() as sess:
        with pytest.raises(ValueError, match=r"You must feed a value for placeholder tensor 'x' with dtype float32 and shape \[\?,784\]"):
            sess.run(x + 1.0)


def test_fed_value_of_wrong_shape_or_dtype_is_refused():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    labels = tf.placeholder(tf.int32, [None], name="labels")
    with tf.Session() as sess:
        with pytest.raises(ValueError, match=r"Cannot feed value of shape \(2, 4\) for Tensor 'x:0'"):
            sess.run(x, {x: np.zeros((2, 4))})
        with pytest.raises(ValueError, match="Cannot feed value of dtype float64 to tensor 'labels:0'"):
            sess.run(labels, {labels: np.zeros(3)})
        with pytest.raises(ValueError, match="batch size"):
            sess.run(x + tf.cast(tf.expand_dims(labels, 1), tf.float32) if hasattr(tf, "expand_dims") else x,
                     {x: np.zeros((2, 3)), labels: np.zeros(3, np.int32)})


def test_nested_fetches_keep_their_structure():
    a = tf.constant(1.0, name="a")
    b = tf.constant([2.0, 3.0], name="b")
    Pair = collections.namedtuple("Pair", "first second")
    with tf.Session() as sess:
        out = sess.run({"a": a, "pair": Pair(a, [b, (a,)]), "op": tf.no_op()})
    assert out["a"] == 1.0 and isinstance(out["a"], np.float32)
    assert isinstance(out["pair"], Pair)
    np.testing.assert_array_equal(out["pair"].second[0], [2.0, 3.0])
    assert out["pair"].second[1] == (1.0,)
    assert out["op"] is None


def test_fetch_by_name_and_get_tensor_by_name():
    with tf.name_scope("outer"):
        c = tf.constant(5, name="c")
    assert c.name == "outer/c:0"
    g = tf.get_default_graph()
    assert g.get_tensor_by_name("outer/c:0") is c
    with tf.Session() as sess:
        assert sess.run("outer/c:0") == 5
    with pytest.raises(KeyError):
        g.get_tensor_by_name("nothing:0")


def test_unique_names_and_nested_scopes():
    a = tf.constant(1, name="k")
    b = tf.constant(1, name="k")
    with tf.name_scope("s"):
        with tf.name_scope("t"):
            c = tf.constant(1, name="k")
    with tf.name_scope("s"):
        d = tf.constant(1, name="k")
    assert [a.op.name, b.op.name, c.op.name, d.op.name] == ["k", "k_1", "s/t/k", "s_1/k"]


def test_eval_uses_default_session_and_errors_without_one():
    t = tf.constant([1.0, 2.0]) * 3.0
    with pytest.raises(ValueError, match="No default session"):
        t.eval()
    with tf.Session():
        np.testing.assert_allclose(t.eval(), [3.0, 6.0])


def test_tensor_is_not_a_bool_and_closed_session_refuses():
    t = tf.constant(True)
    with pytest.raises(TypeError, match="not allowed"):
        bool(t)
    sess = tf.Session()
    sess.close()
    with pytest.raises(RuntimeError, match="closed Session"):
        sess.run(t)


def test_constant_fills_short_value_with_last_element():
    with tf.Session() as sess:
        np.testing.assert_array_equal(sess.run(tf.constant([1, 2], shape=[2, 3])), [[1, 2, 2], [2, 2, 2]])
        np.testing.assert_array_equal(sess.run(tf.constant(-1.0, shape=[2, 2])), -np.ones((2, 2)))
    assert tf.constant([1.5]).dtype == tf.float32
    assert tf.constant([1, 2]).dtype == tf.int32
    assert tf.constant(np.array([1.0])).dtype == tf.float64
    with pytest.raises(ValueError, match="Too many elements"):
        tf.constant([1, 2, 3], shape=[2])


def test_only_needed_ops_run():
    x = tf.placeholder(tf.float32, [2])
    unused = x * 2.0  # needs the feed, but is not fetched
    c = tf.constant(3.0)
    with tf.Session() as sess:
        assert sess.run(c) == 3.0
        assert unused.op.type == "mul"


def test_feeding_an_intermediate_tensor_cuts_the_graph():
    x = tf.placeholder(tf.float32, [2], name="x")
    h = x * 2.0
    y = h + 1.0
    with tf.Session() as sess:
        np.testing.assert_allclose(sess.run(y, {h: np.array([10.0, 20.0])}), [11.0, 21.0])


def test_group_and_control_dependencies_run_targets():
    v = tf.Variable(0, name="counter")
    inc = tf.assign_add(v, 1)
    with tf.control_dependencies([inc]):
        marker = tf.no_op()
    both = tf.group(marker, tf.no_op())
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(both)
        sess.run(both)
        assert sess.run(v) == 2


def test_interactive_session_is_default():
    sess = tf.InteractiveSession()
    try:
        assert tf.get_default_session() is sess
        assert tf.constant(4.0).eval() == 4.0
    finally:
        sess.close()
    assert tf.get_default_session() is None


def test_cross_graph_inputs_are_rejected():
    a = tf.constant(1.0)
    with tf.Graph().as_default():
        b = tf.constant(2.0)
        with pytest.raises(ValueError, match="same graph"):
            tf.add(a, b)


def test_session_errors_are_tf_errors():
    x = tf.placeholder(tf.float32, [None, 2], name="x")
    w = tf.Variable([1.0, 2.0], name="w")
    labels = tf.placeholder(tf.int32, [None], name="labels")
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x)
    with tf.Session() as sess:
        with pytest.raises(tf.errors.InvalidArgumentError, match="You must feed a value for placeholder tensor 'x'"):
            sess.run(x * 2.0)
        with pytest.raises(tf.errors.FailedPreconditionError, match="uninitialized value w"):
            sess.run(w)
        with pytest.raises(tf.errors.InvalidArgumentError, match="outside the valid range"):
            sess.run(loss, {x: np.zeros((1, 2)), labels: [5]})
    assert issubclass(tf.errors.InvalidArgumentError, tf.errors.OpError)
    assert issubclass(tf.errors.InvalidArgumentError, ValueError)  # what Kiln raised before

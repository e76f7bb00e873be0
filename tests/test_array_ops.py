"""Array/shape ops: values against numpy, SEEDS examples, gradients, errors, batch dims."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from tests.helpers import check_gradients, run_fn

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape)


def const_run(fetch_fn):
    """Build fetch_fn() in a fresh graph (constants only) and evaluate it."""
    with tf.Graph().as_default():
        out = fetch_fn()
        with tf.Session() as sess:
            return sess.run(out)


def run_batched(fn, *arrays, batch_arrays=1):
    """Build fn over placeholders whose leading dim is None; feed ``arrays`` (batch any size)."""
    with tf.Graph().as_default():
        phs = [tf.placeholder(tf.as_dtype(a.dtype), (None,) + a.shape[1:]) if i < batch_arrays
               else tf.placeholder(tf.as_dtype(a.dtype), a.shape) for i, a in enumerate(arrays)]
        out = fn(*phs)
        with tf.Session() as sess:
            return sess.run(out, dict(zip(phs, arrays)))


# ----------------------------------------------------------------------------- SEEDS examples
def test_seeds_examples():
    cube = [[[1, 1, 1], [2, 2, 2]], [[3, 3, 3], [4, 4, 4]], [[5, 5, 5], [6, 6, 6]]]
    table = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # a list would mean 3 partitions (TF)
    got = const_run(lambda: {
        "stack": tf.stack([[3, 2, 4, 5, 6], [1, 6, 7, 8, 0]], axis=1),
        "concat": tf.concat([[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]], 1),
        "slice": tf.slice(cube, [1, 0, 0], [2, 1, 3]),
        "gather": tf.gather(cube, [0, 2]),
        "pad": tf.pad([[1, 2], [1, 2]], [[1, 1], [1, 1]]),
        "emb": tf.nn.embedding_lookup(table, [[1, 2], [0, 1]]),
    })
    np.testing.assert_array_equal(got["stack"], [[3, 1], [2, 6], [4, 7], [5, 8], [6, 0]])
    np.testing.assert_array_equal(got["concat"], [[1, 2, 3, 7, 8, 9], [4, 5, 6, 10, 11, 12]])
    np.testing.assert_array_equal(got["slice"], [[[3, 3, 3]], [[5, 5, 5]]])
    np.testing.assert_array_equal(got["gather"], np.array(cube)[[0, 2]])
    np.testing.assert_array_equal(got["pad"], [[0, 0, 0, 0], [0, 1, 2, 0], [0, 1, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(got["emb"], [[[4, 5, 6], [7, 8, 9]], [[1, 2, 3], [4, 5, 6]]])


# ----------------------------------------------------------------------------- creation
def test_creation_ops():
    got = const_run(lambda: {
        "zeros": tf.zeros([2, 3]), "ones": tf.ones((2,), tf.int32), "fill": tf.fill([2, 2], 7),
        "zl": tf.zeros_like(tf.constant([[1, 2]])), "ol": tf.ones_like([1.5, 2.5], dtype=tf.int64),
        "lin": tf.linspace(1.0, 2.0, 5), "r1": tf.range(5), "r2": tf.range(1.0, 4), "r3": tf.range(10, 1, -3),
        "r4": tf.range(0, 2, 0.5, dtype=tf.float64), "scalar": tf.zeros([]),
    })
    assert got["zeros"].dtype == np.float32 and got["zeros"].shape == (2, 3) and not got["zeros"].any()
    np.testing.assert_array_equal(got["ones"], np.ones(2, np.int32))
    np.testing.assert_array_equal(got["fill"], np.full((2, 2), 7, np.int32))
    assert got["zl"].dtype == np.int32 and got["ol"].dtype == np.int64
    np.testing.assert_allclose(got["lin"], [1.0, 1.25, 1.5, 1.75, 2.0])
    assert got["lin"].dtype == np.float32
    assert got["r1"].dtype == np.int32 and list(got["r1"]) == [0, 1, 2, 3, 4]
    assert got["r2"].dtype == np.float32 and list(got["r2"]) == [1.0, 2.0, 3.0]
    assert list(got["r3"]) == [10, 7, 4]
    assert got["r4"].dtype == np.float64 and list(got["r4"]) == [0, 0.5, 1, 1.5]
    assert got["scalar"].shape == ()


def test_one_hot_and_sequence_mask():
    idx = np.array([[0, 2], [3, -1]], np.int32)

    def np_one_hot(indices, depth, axis):
        out = (indices[..., None] == np.arange(depth)).astype(np.float32)
        return np.moveaxis(out, -1, axis)

    got = const_run(lambda: {
        "last": tf.one_hot(idx, 4), "first": tf.one_hot(idx, 3, axis=0),
        "mid": tf.one_hot(idx, 4, on_value=5, off_value=-1, axis=1),
        "mask": tf.sequence_mask([1, 3, 0], 4), "mask2": tf.sequence_mask([2, 1], dtype=tf.float32),
    })
    np.testing.assert_array_equal(got["last"], np_one_hot(idx, 4, -1))
    np.testing.assert_array_equal(got["first"], np_one_hot(idx, 3, 0))
    np.testing.assert_array_equal(got["mid"], np.where(np_one_hot(idx, 4, 1) > 0, 5, -1))
    assert got["mid"].dtype == np.int32 and got["last"].dtype == np.float32
    np.testing.assert_array_equal(got["mask"], np.arange(4) < np.array([1, 3, 0])[:, None])
    np.testing.assert_array_equal(got["mask2"], [[1, 1], [1, 0]])


# ----------------------------------------------------------------------------- values vs numpy
X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
VALUE_CASES = {
    "reshape": (lambda x: tf.reshape(x, [-1, 4]), lambda x: x.reshape(-1, 4)),
    "reshape_tuple": (lambda x: tf.reshape(x, (4, 3, 2)), lambda x: x.reshape(4, 3, 2)),
    "reshape_shape": (lambda x: tf.reshape(x, tf.TensorShape([6, 4])), lambda x: x.reshape(6, 4)),
    "transpose": (lambda x: tf.transpose(x), lambda x: x.transpose()),
    "transpose_perm": (lambda x: tf.transpose(x, [1, 0, 2]), lambda x: x.transpose(1, 0, 2)),
    "expand_dims": (lambda x: tf.expand_dims(x, -1), lambda x: x[..., None]),
    "expand_dims_dim": (lambda x: tf.expand_dims(x, dim=1), lambda x: x[:, None]),
    "squeeze": (lambda x: tf.squeeze(tf.reshape(x, [1, 2, 1, 12])), lambda x: x.reshape(2, 12)),
    "squeeze_dims": (lambda x: tf.squeeze(tf.reshape(x, [1, 2, 1, 12]), squeeze_dims=[2]),
                     lambda x: x.reshape(1, 2, 12)),
    "concat_neg": (lambda x: tf.concat([x, 2 * x], -1), lambda x: np.concatenate([x, 2 * x], -1)),
    "stack_neg": (lambda x: tf.stack([x, x + 1], axis=-1), lambda x: np.stack([x, x + 1], -1)),
    "slice_m1": (lambda x: tf.slice(x, [1, 1, 0], [-1, 2, 3]), lambda x: x[1:, 1:3, :3]),
    "strided": (lambda x: tf.strided_slice(x, [0, 2, 1], [2, -4, 4], [1, -1, 2]), lambda x: x[0:2, 2:-4:-1, 1:4:2]),
    "strided_masks": (lambda x: tf.strided_slice(x, [0, 0, 1], [0, 0, 3], begin_mask=1, end_mask=3,
                                                 shrink_axis_mask=4), lambda x: x[:, :, 1]),
    "strided_newaxis": (lambda x: tf.strided_slice(x, [0, 0, 1], [1, 1, 2], ellipsis_mask=2, new_axis_mask=1),
                        lambda x: x[None, ..., 1:2]),
    "key_mix": (lambda x: x[1, ::-2, None, 1:], lambda x: x[1, ::-2, None, 1:]),
    "key_ellipsis": (lambda x: x[..., -1], lambda x: x[..., -1]),
    "key_empty": (lambda x: x[:, 5:], lambda x: x[:, 5:]),
    "key_tensor": (lambda x: x[tf.constant(1)], lambda x: x[1]),
    "reverse": (lambda x: tf.reverse(x, [0, -1]), lambda x: x[::-1, :, ::-1]),
    "reverse_v2": (lambda x: tf.reverse_v2(x, [1]), lambda x: x[:, ::-1]),
    "tile": (lambda x: tf.tile(x, [2, 1, 3]), lambda x: np.tile(x, (2, 1, 3))),
    "broadcast_to": (lambda x: tf.broadcast_to(x[:, :1], [5, 2, 3, 4]),
                     lambda x: np.broadcast_to(x[:, :1], (5, 2, 3, 4))),
    "pad_const": (lambda x: tf.pad(x, [[0, 1], [2, 0], [1, 1]], constant_values=-3),
                  lambda x: np.pad(x, [[0, 1], [2, 0], [1, 1]], constant_values=-3)),
    "pad_reflect": (lambda x: tf.pad(x, [[1, 1], [2, 1], [3, 0]], "REFLECT"),
                    lambda x: np.pad(x, [[1, 1], [2, 1], [3, 0]], "reflect")),
    "pad_symmetric": (lambda x: tf.pad(x, [[2, 1], [3, 3], [0, 4]], "symmetric"),
                      lambda x: np.pad(x, [[2, 1], [3, 3], [0, 4]], "symmetric")),
    "gather_axis1": (lambda x: tf.gather(x, [[2, 0], [1, 1]], axis=1), lambda x: x[:, [[2, 0], [1, 1]]]),
    "gather_nd": (lambda x: tf.gather_nd(x, [[[1, 2], [0, 0]]]), lambda x: x[[[1, 0]], [[2, 0]]]),
    "gather_nd_full": (lambda x: tf.gather_nd(x, [[1, 2, 3], [0, 1, 0]]), lambda x: x[[1, 0], [2, 1], [3, 0]]),
    "segment": (lambda x: tf.unsorted_segment_sum(x, [2, -1], 3), lambda x: np.stack([0 * x[0], 0 * x[0], x[0]])),
    "segment_sum": (lambda x: tf.math.segment_sum(x[0], tf.constant([0, 0, 2])),
                    lambda x: np.stack([x[0, 0] + x[0, 1], 0 * x[0, 0], x[0, 2]])),
    "scatter_nd": (lambda x: tf.scatter_nd([[1], [1], [0]], x[0], [3, 4]),
                   lambda x: np.stack([x[0, 2], x[0, 0] + x[0, 1], 0 * x[0, 0]])),
    "identity_n": (lambda x: tf.identity_n([x])[0], lambda x: x),
}


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_values_match_numpy(case):
    tf_fn, np_fn = VALUE_CASES[case]
    np.testing.assert_array_equal(run_fn(tf_fn, X), np_fn(X))


def test_split_unstack_and_shapes():
    x = rand(4, 6)
    parts = run_fn(lambda t: tf.split(t, [1, -1, 2], axis=1), x)
    for got, want in zip(parts, np.split(x, [1, 4], axis=1)):
        np.testing.assert_array_equal(got, want)
    halves = run_fn(lambda t: tf.split(t, 2), x)
    np.testing.assert_array_equal(halves[1], x[2:])
    rows = run_fn(lambda t: tf.unstack(t, axis=1), x)
    assert len(rows) == 6 and np.array_equal(rows[3], x[:, 3])
    got = run_fn(lambda t: [tf.shape(t), tf.size(t), tf.rank(t), tf.shape_n([t, t[0]])[1]], x)
    assert list(got[0]) == [4, 6] and got[1] == 24 and got[2] == 2 and list(got[3]) == [6]
    assert got[0].dtype == np.int32


def test_embedding_lookup_partitioned():
    table = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    ids = np.array([[6, 0], [3, 5]], np.int32)
    mod = [table[p::3] for p in range(3)]
    div = [table[:3], table[3:5], table[5:]]
    got = const_run(lambda: [tf.nn.embedding_lookup(mod, ids), tf.nn.embedding_lookup(div, ids, "div")])
    np.testing.assert_array_equal(got[0], table[ids])
    np.testing.assert_array_equal(got[1], table[ids])


# ----------------------------------------------------------------------------- gradients
W = rand(2, 3, 4)
GRAD_CASES = {
    "reshape": (lambda x: tf.reshape(x, [4, -1]), [W]),
    "transpose": (lambda x: tf.transpose(x, [2, 0, 1]), [W]),
    "expand_squeeze": (lambda x: tf.squeeze(tf.expand_dims(x, 1), [1]), [W]),
    "concat": (lambda x, y: tf.concat([x, y, x], 1), [W, rand(2, 1, 4)]),
    "stack": (lambda x, y: tf.stack([x, y], 1), [W, rand(2, 3, 4)]),
    "unstack": (lambda x: tf.unstack(x, axis=2)[1] * 2 + tf.unstack(x, axis=2)[3], [W]),
    "split": (lambda x: tf.split(x, [1, 3], 2)[1], [W]),
    "slice": (lambda x: tf.slice(x, [1, 0, 1], [1, -1, 2]), [W]),
    "key": (lambda x: x[:, ::-2, None, 1::2], [W]),
    "reverse": (lambda x: tf.reverse(x, [1, 2]), [W]),
    "gather": (lambda x: tf.gather(x, [[1, 1], [0, 1]]), [W]),
    "gather_axis2": (lambda x: tf.gather(x, [3, 0, 3], axis=2), [W]),
    "gather_nd": (lambda x: tf.gather_nd(x, [[1, 2], [1, 2], [0, 1]]), [W]),
    "embedding_mod": (lambda a, b: tf.nn.embedding_lookup([a, b], [[0, 3], [3, 2]]), [rand(2, 3), rand(2, 3)]),
    "pad_constant": (lambda x: tf.pad(x, [[1, 0], [0, 2], [1, 1]], constant_values=2.0), [W]),
    "pad_reflect": (lambda x: tf.pad(x, [[1, 1], [2, 1], [3, 2]], "REFLECT"), [W]),
    "pad_symmetric": (lambda x: tf.pad(x, [[2, 0], [3, 1], [1, 4]], "SYMMETRIC"), [W]),
    "tile": (lambda x: tf.tile(x, [2, 1, 3]), [W]),
    "broadcast_to": (lambda x: tf.broadcast_to(x, [3, 2, 3, 4]), [rand(2, 1, 4)]),
    "identity": (lambda x: tf.identity(x) * 3, [W]),
    "one_hot_values": (lambda on: tf.one_hot([[0, 2]], 3, on_value=on[0], off_value=tf.constant(0.5, tf.float64)),
                       [np.array([2.0])]),
    "segment_sum": (lambda x: tf.unsorted_segment_sum(x, [[1, -1, 1], [0, 3, 3]], 4), [W]),
    "scatter_nd": (lambda u: tf.scatter_nd([[0, 1], [0, 1], [2, 0]], u, [3, 2, 4]), [rand(3, 4)]),
    "fill_value": (lambda v: tf.fill([2, 3], v[0]), [np.array([1.5])]),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_gradients_match_finite_differences(case):
    fn, arrays = GRAD_CASES[case]
    check_gradients(fn, *arrays)


@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT", "SYMMETRIC"])
def test_second_order_pad_and_slice(mode):
    """Gradients of gradients go through pad_grad / strided_slice_grad and back."""
    def fn(x):
        y = tf.pad(x[:, 1:], [[1, 1], [1, 1]], mode)
        return tf.gradients(tf.reduce_sum(tf.square(y) * tf.reshape(tf.range(20, dtype=tf.float64), [5, 4])), x)[0]

    check_gradients(fn, rand(3, 3))


def test_gather_gradient_sums_duplicates():
    got = check_gradients(lambda p: tf.gather(p, [2, 2, 0]), rand(3, 2))
    assert got[0][1].tolist() == [0.0, 0.0]


def test_stop_gradient_and_shape_not_differentiable():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [2])
        g = tf.gradients(tf.reduce_sum(tf.stop_gradient(x) * 2.0 + tf.cast(tf.shape(x)[0], tf.float32)), x)
        assert g == [None]


# ----------------------------------------------------------------------------- batch dim
BATCH_CASES = {
    "reshape": (lambda x: tf.reshape(x, [-1, 12]), lambda x: x.reshape(-1, 12)),
    "reshape_shape_tensor": (lambda x: tf.reshape(x, [tf.shape(x)[0], -1]), lambda x: x.reshape(len(x), -1)),
    "reshape_flat_back": (lambda x: tf.reshape(tf.reshape(x, [-1]), tf.shape(x)), lambda x: x),
    "transpose": (lambda x: tf.transpose(x, [1, 0, 2]), lambda x: x.transpose(1, 0, 2)),
    "expand_squeeze": (lambda x: tf.squeeze(tf.expand_dims(x, 1), 1), lambda x: x),
    "concat0": (lambda x: tf.concat([x, x * 2], 0), lambda x: np.concatenate([x, x * 2], 0)),
    "concat1": (lambda x: tf.concat([x, x * 2], 1), lambda x: np.concatenate([x, x * 2], 1)),
    "stack": (lambda x: tf.stack([x, x], 1), lambda x: np.stack([x, x], 1)),
    "split_batch": (lambda x: tf.split(tf.concat([x, 2 * x], 0), 2)[1], lambda x: 2 * x),
    "unstack": (lambda x: tf.unstack(x, axis=1)[2], lambda x: x[:, 2]),
    "keys": (lambda x: x[:, 1:, ::-1], lambda x: x[:, 1:, ::-1]),
    "key_first": (lambda x: x[0], lambda x: x[0]),
    "key_last": (lambda x: x[-1, :, None], lambda x: x[-1, :, None]),
    "key_reverse": (lambda x: x[::-1], lambda x: x[::-1]),
    "slice": (lambda x: tf.slice(x, [0, 1, 1], [-1, 2, 2]), lambda x: x[:, 1:3, 1:3]),
    "reverse": (lambda x: tf.reverse(x, [0]), lambda x: x[::-1]),
    "gather1": (lambda x: tf.gather(x, [2, 0], axis=1), lambda x: x[:, [2, 0]]),
    "gather_rows": (lambda x: tf.gather(x, [0, 0]), lambda x: x[[0, 0]]),
    "gather_nd": (lambda x: tf.gather_nd(x, [[0, 1]]), lambda x: x[[0], [1]]),
    "pad": (lambda x: tf.pad(x, [[0, 0], [1, 1], [0, 2]], "SYMMETRIC"),
            lambda x: np.pad(x, [[0, 0], [1, 1], [0, 2]], "symmetric")),
    "tile": (lambda x: tf.tile(x, [2, 1, 1]), lambda x: np.tile(x, (2, 1, 1))),
    "broadcast": (lambda x: tf.broadcast_to(x[:, :1, :1], tf.shape(x)),
                  lambda x: np.broadcast_to(x[:, :1, :1], x.shape)),
    "zeros_like": (lambda x: tf.zeros_like(x) + tf.ones(tf.shape(x)), lambda x: np.ones_like(x)),
    "fill": (lambda x: tf.fill(tf.stack([tf.shape(x)[0], 2]), 3.0), lambda x: np.full((len(x), 2), 3.0, np.float32)),
    "shape": (lambda x: tf.shape(x), lambda x: np.array(x.shape, np.int32)),
    "size": (lambda x: tf.size(x), lambda x: np.int32(x.size)),
    "segment": (lambda x: tf.unsorted_segment_sum(tf.transpose(x, [1, 0, 2]), [1, 1, 0], 2),
                lambda x: np.stack([x[:, 2], x[:, 0] + x[:, 1]])),
}


@pytest.mark.parametrize("case", sorted(BATCH_CASES))
def test_batch_dim_two_sizes(case):
    tf_fn, np_fn = BATCH_CASES[case]
    for n in (2, 5):
        x = rand(n, 3, 4).astype(np.float32)
        np.testing.assert_array_equal(run_batched(tf_fn, x), np_fn(x))


def test_batch_indices_and_one_hot():
    table = rand(5, 3).astype(np.float32)
    for n in (1, 4):
        ids = RNG.integers(0, 5, size=(n, 2)).astype(np.int32)
        got = run_batched(lambda i, t: [tf.nn.embedding_lookup(t, i), tf.one_hot(i[:, 0], 5)], ids, table)
        np.testing.assert_array_equal(got[0], table[ids])
        np.testing.assert_array_equal(got[1], np.eye(5, dtype=np.float32)[ids[:, 0]])


@pytest.mark.parametrize("case", ["concat0", "gather_rows", "split_batch", "keys", "key_first", "pad", "tile",
                                  "broadcast", "unstack", "segment", "key_reverse"])
def test_batch_gradients_two_sizes(case):
    """tf.gradients on [None, ...] placeholders, compared with finite differences at two batch sizes."""
    tf_fn = BATCH_CASES[case][0]
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float64, [None, 3, 4])
        y = tf_fn(x)
        loss = tf.reduce_sum(tf.square(y) * 0.5 + y)
        (g,) = tf.gradients(loss, x)
        with tf.Session() as sess:
            for n in (2, 3):
                a = rand(n, 3, 4)
                numeric = np.zeros_like(a)
                for j in range(a.size):
                    d = np.zeros(a.size)
                    d[j] = 1e-6
                    up = sess.run(loss, {x: a + d.reshape(a.shape)})
                    down = sess.run(loss, {x: a - d.reshape(a.shape)})
                    numeric.reshape(-1)[j] = (up - down) / 2e-6
                np.testing.assert_allclose(sess.run(g, {x: a}), numeric, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- errors
def _batch_x():
    return tf.placeholder(tf.float32, [None, 3, 4])


ERROR_CASES = {
    "reshape_count": (lambda: tf.reshape(tf.zeros([2, 3]), [4, 2]), r"reshape.*\[2,3\].*\[4,2\]"),
    "reshape_two_unknown": (lambda: tf.reshape(tf.zeros([2, 3]), [-1, -1]), "only one input size may be -1"),
    "reshape_indivisible": (lambda: tf.reshape(tf.zeros([2, 3]), [-1, 4]), r"Reshape.*\[2,3\]"),
    "reshape_batch": (lambda: tf.reshape(_batch_x(), [-1, 5]), r"Reshape.*\[N,3,4\]"),
    "transpose": (lambda: tf.transpose(tf.zeros([2, 3]), [0, 0]), r"transpose.*permutation.*\[2,3\]"),
    "squeeze": (lambda: tf.squeeze(tf.zeros([2, 3]), [1]), r"Squeeze.*dim\[1\].*got 3"),
    "expand_dims": (lambda: tf.expand_dims(tf.zeros([2]), 3), "ExpandDims: axis 3 is out of range"),
    "concat": (lambda: tf.concat([tf.zeros([2, 3]), tf.zeros([3, 3])], 1), r"concat.*\[2,3\].*\[3,3\]"),
    "stack": (lambda: tf.stack([tf.zeros([2]), tf.zeros([3])]), r"stack.*\[2\].*\[3\]"),
    "split": (lambda: tf.split(tf.zeros([5, 2]), 2), r"split.*\[5,2\].*2 parts"),
    "split_sizes": (lambda: tf.split(tf.zeros([5, 2]), [2, 2]), r"split: sizes \[2, 2\]"),
    "unstack_batch": (lambda: tf.unstack(_batch_x()), "batch dim"),
    "slice": (lambda: tf.slice(tf.zeros([2, 3]), [0, 2], [1, 2]), r"Slice.*\[2,3\]"),
    "key_bounds": (lambda: tf.zeros([2, 3])[:, 3], "index 3 of dimension 1 out of bounds"),
    "key_too_many": (lambda: tf.zeros([2])[0, 0], "too many indices"),
    "key_list": (lambda: tf.zeros([2])[[0, 1]], "Only integers, slices"),
    "key_partial_batch": (lambda: _batch_x()[1:], "batch dim"),
    "gather_float": (lambda: tf.gather(tf.zeros([3]), tf.constant([0.0])), "gather indices must be int32"),
    "gather_nd": (lambda: tf.gather_nd(tf.zeros([3]), [[0, 1]]), r"gather_nd.*\[1,2\].*\[3\]"),
    "pad_reflect": (lambda: tf.pad(tf.zeros([2, 3]), [[0, 0], [3, 0]], "REFLECT"), r"pad.*REFLECT.*<= 2"),
    "pad_rank": (lambda: tf.pad(tf.zeros([2, 3]), [[1, 1]]), r"Pad: paddings must have shape \[2, 2\]"),
    "tile": (lambda: tf.tile(tf.zeros([2, 3]), [2]), r"tile.*multiples \[2\].*\[2,3\]"),
    "broadcast_to": (lambda: tf.broadcast_to(tf.zeros([2, 3]), [4, 3]), r"broadcast.*\[2,3\].*\[4,3\]"),
    "boolean_mask": (lambda: tf.boolean_mask(tf.zeros([3]), [True, False, True]), "boolean_mask.*depends on the mask"),
    "segment_sum": (lambda: tf.math.segment_sum(tf.zeros([2]), tf.placeholder(tf.int32, [2])), "segment_sum"),
    "one_hot": (lambda: tf.one_hot(tf.constant([0.5]), 3), "one_hot: indices must be integers"),
    "range": (lambda: tf.range(0, 5, 0), "Range: delta must not be 0"),
    "fill_tensor": (lambda: tf.fill(tf.placeholder(tf.int32, [2]), 1.0), "fill: Kiln needs a static shape"),
    "sequence_mask": (lambda: tf.sequence_mask(tf.placeholder(tf.int32, [2])), "sequence_mask: maxlen"),
    "strided_dynamic": (lambda: tf.strided_slice(tf.zeros([3]), tf.placeholder(tf.int32, [1]), [2]),
                        "strided_slice: Kiln needs begin/end/size values"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_construction_errors(case):
    build, pattern = ERROR_CASES[case]
    with tf.Graph().as_default():
        with pytest.raises((ValueError, TypeError), match=pattern):
            build()


def test_scalars_and_defaults():
    got = const_run(lambda: [tf.reshape(tf.constant(3.0), [1]), tf.constant(2)[...], tf.stack([1, 2]),
                             tf.shape(tf.constant(1.0)), tf.gather([5, 6, 7], [2], axis=None),
                             tf.reshape([1, 2, 3, 4], tf.stack([2, tf.constant(-1)]))])
    assert got[0].tolist() == [3.0] and got[1] == 2 and got[2].tolist() == [1, 2]
    assert got[3].shape == (0,) and got[3].dtype == np.int32 and got[4].tolist() == [7]
    assert got[5].tolist() == [[1, 2], [3, 4]]


def test_ir_text_round_trip():
    """Every array kind prints and parses back (attrs with batch dims, nested tuples, floats)."""
    from compiler.ir.from_graph import lower_graph
    from compiler.ir.parser import parse_function
    from compiler.ir.printer import print_function

    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3, 4])
        outs = [tf.concat([x, x], 0), x[::-1, 1:, None, -1], tf.pad(x, [[0, 0], [1, 1], [2, 0]], "REFLECT"),
                tf.pad(x, [[0, 0], [1, 0], [0, 0]], constant_values=1.5), tf.shape(x), tf.gather(x, [0, 1]),
                tf.tile(x, [2, 1, 1]), tf.gather_nd(x, [[0, 1]]), tf.scatter_nd([[1]], [[1.0, 2.0]], [3, 2]),
                tf.unsorted_segment_sum(tf.transpose(x, [1, 0, 2]), [0, 0, 1], 2)]
        outs += tf.gradients(tf.reduce_sum(outs[2]) + tf.reduce_sum(outs[5]) + tf.reduce_sum(outs[1]), x)
        text = print_function(lower_graph(outs, feed_tensors=[x]))
    for kind in ("pad_grad", "unsorted_segment_sum", "strided_slice_grad", "scatter_nd", "slice {"):
        assert kind.split()[0] + "(" in text
    assert print_function(parse_function(text)) == text


def test_runtime_index_error_names_op():
    with tf.Graph().as_default():
        idx = tf.placeholder(tf.int32, [2])
        out = tf.gather(tf.zeros([3]), idx)
        with tf.Session() as sess:
            with pytest.raises(ValueError, match=r"gather.*index 7 is not in \[0, 3\)"):
                sess.run(out, {idx: np.array([0, 7], np.int32)})

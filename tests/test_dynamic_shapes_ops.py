"""Differential sweep: ops (and their gradients) over a [None, None] placeholder give what the
same graph over a static [4, 5] placeholder gives (reference interpreter), and ops that need
a dim Kiln cannot defer say which."""
import numpy as np
import pytest

from compiler import tf

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 5)).astype(np.float32)

OPS = {
    "concat_inner": lambda a: tf.concat([a, a * 2.0], 1),
    "concat_batch": lambda a: tf.concat([a, a], 0),
    "stack": lambda a: tf.stack([a, a], 1),
    "transpose": lambda a: tf.transpose(a, [1, 0]),
    "softmax": tf.nn.softmax,
    "log_softmax": tf.nn.log_softmax,
    "softmax_xent": lambda a: tf.nn.softmax_cross_entropy_with_logits_v2(labels=tf.nn.softmax(a * 0.5), logits=a),
    "sigmoid_xent": lambda a: tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(a), logits=a),
    "bias_add": lambda a: tf.nn.bias_add(a, tf.ones([5])),
    "reduce_max": lambda a: tf.reduce_max(a, 1),
    "reduce_prod": lambda a: tf.reduce_prod(a, 0),
    "reduce_mean_all": tf.reduce_mean,
    "expand_squeeze": lambda a: tf.squeeze(tf.expand_dims(a, 2), [2]),
    "slice": lambda a: a[:, 1:3],
    "reverse": lambda a: a[:, ::-1],
    "gather": lambda a: tf.gather(a, [0, 2], axis=1),
    "split": lambda a: tf.split(a, [2, 3], axis=1)[1],
    "pad": lambda a: tf.pad(a, [[0, 0], [1, 2]]),
    "tile": lambda a: tf.tile(a, [1, 2]),
    "matmul_self": lambda a: tf.matmul(a, a, transpose_b=True),
    "l2_normalize": lambda a: tf.nn.l2_normalize(a, 1),
    "moments": lambda a: tf.nn.moments(a, [0])[1],
    "where": lambda a: tf.where(a > 0, a, tf.zeros_like(a)),
    "clip": lambda a: tf.clip_by_value(a, -0.5, 0.5),
    "one_hot_argmax": lambda a: tf.one_hot(tf.argmax(a, 1), 5) * a,
    "reshape_flat": lambda a: tf.reshape(a, [-1]) * 2.0,
    "reshape_back": lambda a: tf.reshape(tf.reshape(a, [-1]), tf.shape(a)),
}


def values_and_gradient(fn, shape):
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, shape, name="x")
        y = fn(x)
        g = tf.gradients(tf.reduce_sum(y * y), [x])[0]
        with tf.Session() as sess:
            return sess.run([y, g], {x: X})


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_and_gradient_with_unknown_dims_match_static(name):
    dynamic = values_and_gradient(OPS[name], [None, None])
    static = values_and_gradient(OPS[name], [4, 5])
    for d, s in zip(dynamic, static):
        assert np.shape(d) == np.shape(s)
        np.testing.assert_allclose(d, s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build, message", [
    (lambda a: tf.unstack(a, axis=1), r"unstack: cannot unstack along the unknown dim 1 of \[N,\?\]"),
    (lambda a: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.zeros([4], tf.int32), logits=a),
     r"class dim of logits \[N,\?\] must be static"),
    (lambda a: tf.nn.conv2d(tf.expand_dims(tf.expand_dims(a, 2), 3), tf.ones([3, 3, 1, 1]), [1, 1, 1, 1], "SAME"),
     r"conv2d: height and width must be static"),
    (lambda a: tf.nn.softmax(tf.placeholder(tf.float32)), r"softmax: the rank of Placeholder.* is unknown"),
])
def test_ops_needing_a_dim_at_build_time_say_which(build, message):
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=message):
            build(tf.placeholder(tf.float32, [None, None]))

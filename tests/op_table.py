"""Every op and its gradient in one graph, for the differential tests of each backend
(tests/test_compiled_ops.py: LLVM; tests/test_cuda_ops.py: CUDA) against the interpreter."""
import warnings

import numpy as np

from compiler import tf


def _ops(x, img, ids, m):
    """name -> output tensor, over x f32[N,6], img f32[N,6,6,2], ids i32[N], m f32[6,6]."""
    kernel = tf.constant(np.linspace(-1, 1, 3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4))
    table = tf.constant(np.linspace(-2, 2, 10 * 6, dtype=np.float32).reshape(10, 6))
    return {
        "add": x + m[0], "sub": x - 0.5, "mul": x * m[1], "div": x / (tf.abs(m[2]) + 1.0),
        "pow": tf.pow(tf.abs(x) + 0.5, 1.5), "maximum": tf.maximum(x, m[3]), "minimum": tf.minimum(x, 0.1),
        "neg": -x, "abs": tf.abs(x), "exp": tf.exp(x), "log": tf.log(tf.abs(x) + 1.0),
        "sqrt": tf.sqrt(tf.abs(x) + 0.1), "rsqrt": tf.rsqrt(tf.abs(x) + 0.1), "square": tf.square(x),
        "tanh": tf.tanh(x), "sigmoid": tf.sigmoid(x), "relu": tf.nn.relu(x), "elu": tf.nn.elu(x),
        "softplus": tf.nn.softplus(x), "log1p": tf.log1p(tf.abs(x)), "sin": tf.sin(x), "cos": tf.cos(x),
        "erf": tf.erf(x), "reciprocal": tf.reciprocal(tf.abs(x) + 1.0),
        "select": tf.where(x > 0.0, x, x * 0.1), "cast": tf.cast(tf.cast(x * 3.0, tf.int32), tf.float32) * x,
        "squared_difference": tf.squared_difference(x, m[4]), "add_n": tf.add_n([x, x * 2.0, m[5] + x]),
        "reduce_sum": tf.reduce_sum(x, 1), "reduce_sum_batch": tf.reduce_sum(x, 0),
        "reduce_mean": tf.reduce_mean(x, 1, keepdims=True), "reduce_mean_all": tf.reduce_mean(x),
        "reduce_max": tf.reduce_max(x, 1), "reduce_min": tf.reduce_min(x, 0),
        "reduce_prod": tf.reduce_prod(x * 0.5 + 1.0, 1), "logsumexp": tf.reduce_logsumexp(x, 1),
        "matmul": tf.matmul(x, m), "matmul_t": tf.matmul(x, m, transpose_b=True),
        "matmul_grad_shape": tf.matmul(x, x, transpose_a=True),
        "dense_relu": tf.nn.relu(tf.nn.bias_add(tf.matmul(x, m), m[0])),
        "softmax": tf.nn.softmax(x), "log_softmax": tf.nn.log_softmax(x),
        "xent": tf.nn.softmax_cross_entropy_with_logits(labels=tf.nn.softmax(m[:1] + 0.0 * x), logits=x),
        "sparse_xent": tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=x),
        "sigmoid_xent": tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.sigmoid(m[1] + 0.0 * x), logits=x),
        "l2_loss": tf.nn.l2_loss(x), "clip_by_value": tf.clip_by_value(x, -0.5, 0.5),
        "clip_by_norm": tf.clip_by_norm(x, 1.0, axes=[1]),
        "reshape": tf.reshape(x, [-1, 3, 2]) * 2.0, "transpose": tf.transpose(tf.reshape(x, [-1, 2, 3]), [0, 2, 1]),
        "expand_squeeze": tf.squeeze(tf.expand_dims(x, 1), [1]) + 1.0, "concat": tf.concat([x, x * 2.0], 1),
        "stack": tf.stack([x, -x], axis=1), "slice": tf.slice(x, [0, 1], [-1, 3]), "strided": x[:, ::2] * 3.0,
        "split": tf.split(x, 3, axis=1)[1] * 2.0, "gather": tf.gather(m, ids), "gather_x": tf.gather(x, [0, 5, 2], axis=1),
        "embedding": tf.nn.embedding_lookup(table, ids) * x, "pad": tf.pad(x, [[0, 0], [1, 2]]),
        "pad_reflect": tf.pad(x, [[0, 0], [2, 1]], "REFLECT"), "tile": tf.tile(x, [1, 2]),
        "broadcast_to": tf.broadcast_to(m[0], [6, 6]) + 0.0 * m, "reverse": tf.reverse(x, [1]),
        "reverse_sequence": tf.reverse_sequence(x, ids, seq_axis=1),
        "reverse_sequence_time": tf.transpose(tf.reverse_sequence(tf.transpose(x), ids, seq_axis=0, batch_axis=1)),
        "one_hot": tf.one_hot(ids, 6) * x, "argmax": tf.cast(tf.argmax(x, 1), tf.float32),
        "conv_same": tf.nn.conv2d(img, kernel, [1, 1, 1, 1], "SAME"),
        "conv_valid_s2": tf.nn.conv2d(img, kernel, [1, 2, 2, 1], "VALID"),
        "conv_direct_cin1": tf.nn.relu(tf.nn.conv2d(img[:, :, :, :1], kernel[:, :, :1, :], [1, 1, 1, 1], "SAME") + m[0, :4]),
        "depthwise": tf.nn.depthwise_conv2d(img, kernel[:, :, :, :1] + 0.0 * tf.ones([3, 3, 2, 1]), [1, 1, 1, 1], "SAME"),
        "conv_transpose": tf.nn.conv2d_transpose(tf.nn.conv2d(img, kernel, [1, 1, 1, 1], "SAME"), kernel,
                                                 [None, 6, 6, 2], [1, 1, 1, 1], "SAME"),
        "max_pool": tf.nn.max_pool(img, [1, 2, 2, 1], [1, 2, 2, 1], "VALID"),
        "max_pool_same": tf.nn.max_pool(img, [1, 3, 3, 1], [1, 2, 2, 1], "SAME"),
        "max_pool_3x3_tiled": tf.nn.max_pool(img, [1, 3, 3, 1], [1, 3, 3, 1], "SAME"),
        "avg_pool": tf.nn.avg_pool(img, [1, 3, 3, 1], [1, 2, 2, 1], "SAME"),
        "dropout": tf.nn.dropout(x, 0.5, seed=3),
        "random_normal_scaled": x * tf.random_normal([6], seed=4),
    }


def op_results(config, batches):
    """{batch: {op: (compiled, interpreted)}} for outputs and gradients; ``config`` is the
    compiled session's config (backend, device options)."""
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(1)
        x = tf.placeholder(tf.float32, [None, 6], name="x")
        img = tf.placeholder(tf.float32, [None, 6, 6, 2], name="img")
        ids = tf.placeholder(tf.int32, [None], name="ids")
        m = tf.Variable(rng.standard_normal((6, 6)).astype(np.float32), name="m")
        outs = _ops(x, img, ids, m)
        names = sorted(outs)
        fetches = {}
        for name in names:
            y = outs[name]
            w = tf.constant(rng.standard_normal(y.shape.as_list()[1:] or [1]).astype(np.float32))
            loss = tf.reduce_sum(y * (w if y.shape.ndims > 1 else tf.reduce_sum(w)))
            grads = tf.gradients(loss, [x, img, m])
            fetches[name] = (y, [g if g is not None else tf.zeros([]) for g in grads])
        init = tf.global_variables_initializer()
        sessions = {"compiled": tf.Session(config=config), "interpreter": tf.Session(config={"backend": "interpreter"})}
        out = {}
        for backend, sess in sessions.items():
            sess.run(init)
        for batch in batches:
            feed = {x: rng.standard_normal((batch, 6)).astype(np.float32),
                    img: rng.standard_normal((batch, 6, 6, 2)).astype(np.float32),
                    ids: rng.integers(0, 6, batch).astype(np.int32)}
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a fallback to the interpreter would warn: fail instead
                compiled = sessions["compiled"].run(fetches, feed)
            interpreted = sessions["interpreter"].run(fetches, feed)
            out[batch] = {name: (compiled[name], interpreted[name]) for name in names}
    return out


def op_names():
    with tf.Graph().as_default():
        return sorted(_ops(tf.placeholder(tf.float32, [None, 6]), tf.placeholder(tf.float32, [None, 6, 6, 2]),
                           tf.placeholder(tf.int32, [None]), tf.Variable(np.zeros((6, 6), np.float32))))


def assert_op_matches(results, op, batch, rtol=2e-5, grad_rtol=2e-4):
    """The compiled output and gradients of ``op`` agree with the interpreter's."""
    (y_c, grads_c), (y_i, grads_i) = results[batch][op]
    np.testing.assert_allclose(y_c, y_i, rtol=rtol, atol=rtol, err_msg=f"{op} output")
    for which, g_c, g_i in zip(("x", "img", "m"), grads_c, grads_i):
        np.testing.assert_allclose(g_c, g_i, rtol=grad_rtol, atol=grad_rtol, err_msg=f"{op} gradient wrt {which}")

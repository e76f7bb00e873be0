"""Graph ops over placeholders of partly unknown shape, written once for TensorFlow and Kiln:
tests/make_dynamic_shape_goldens.py records TF's static shapes of them, and
tests/test_dynamic_shapes.py checks Kiln gives the same.  Imports neither framework: each
case takes the ``tf`` module."""
from __future__ import annotations

import numpy as np


def graph_cases(tf) -> dict:
    """{name: function building the op in the default graph and returning its tensor}."""
    def ph(shape):
        return tf.placeholder(tf.float32, shape)

    return {
        "add_unknown_rank": lambda: ph(None) * ph([None, 4]),
        "add_none_5": lambda: ph([None, 1]) + ph([None, 5]),
        "add_1_none": lambda: ph([3, 1]) + ph([None]),
        "matmul_none": lambda: tf.matmul(ph([None, None]), tf.ones([7, 3])),
        "reduce_all_unknown_rank": lambda: tf.reduce_sum(ph(None)),
        "shape_of_unknown_rank": lambda: tf.shape(ph(None)),
        "reshape_minus_one": lambda: tf.reshape(ph([None, None]), [-1, 2]),
        "expand_dims": lambda: tf.expand_dims(ph([None, None]), 1),
        "concat_axis1": lambda: tf.concat([ph([None, None]), ph([None, 4])], 1),
        "random_from_shape": lambda: tf.random_normal(tf.shape(ph([None, 4]))),
        "range_of_batch": lambda: tf.range(0, tf.shape(ph([None, 4]))[0]),
        "softmax_xent_merge": lambda: tf.nn.softmax_cross_entropy_with_logits_v2(
            labels=tf.constant(np.ones((3, 4), np.float32)), logits=ph([None, 4])),
        "dropout_unknown_keep_prob": lambda: tf.nn.dropout(ph([None, 4]), ph(None)),
    }

"""Record TF's static-shape rules for tests/test_dynamic_shapes.py (needs TensorFlow).

Run with the TF venv:  /work/tfenv/bin/python tests/make_dynamic_shape_goldens.py
It writes tests/goldens/dynamic_shapes.json: TensorShape merge/compatibility results,
broadcast_static_shape, the static shapes TF gives graph ops with unknown dims, and TF's
feed-error messages.  Kiln's tests read the file and never import TensorFlow.
"""
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf
from dynamic_shape_cases import graph_cases

tf.disable_v2_behavior()

SHAPES = [None, [], [None], [3], [None, 3], [2, None], [2, 3], [2, 4], [None, None], [1, 3], [2, 1, 3]]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens", "dynamic_shapes.json")


def outcome(fn):
    """str of the result, or 'error'."""
    try:
        return str(fn())
    except ValueError:
        return "error"


def tensor_shape_cases():
    cases = []
    for a in SHAPES:
        for b in SHAPES:
            ta, tb = tf.TensorShape(a), tf.TensorShape(b)
            cases.append({"a": a, "b": b, "compatible": ta.is_compatible_with(tb),
                          "merge": outcome(lambda: ta.merge_with(tb)),
                          "most_specific": str(ta.most_specific_compatible_shape(tb)),
                          "concat": str(ta.concatenate(tb)),
                          "broadcast": outcome(lambda: tf.broadcast_static_shape(ta, tb)),
                          "equal": ta == tb})
    return cases


def graph_shapes():
    """Static shapes of graph ops over placeholders of partly unknown shape."""
    built = graph_cases(tf)
    out = {}
    for name, fn in built.items():
        with tf.Graph().as_default():
            out[name] = str(fn().shape)
    return out


def feed_errors():
    """TF's message for a fed value whose shape contradicts the placeholder's."""
    out = []
    with tf.Graph().as_default(), tf.Session() as sess:
        for shape, value in (([None, 4], np.zeros(3)), ([None, 28, None], np.zeros((2, 5, 3))), ([], np.zeros(2))):
            x = tf.placeholder(tf.float32, shape, name="x")
            try:
                sess.run(x, {x: value})
            except ValueError as err:
                out.append({"shape": shape, "value_shape": list(value.shape), "name": x.name, "message": str(err)})
    return out


def main():
    data = {"tensorflow": tf.__version__, "tensor_shape": tensor_shape_cases(), "graph": graph_shapes(),
            "feed_errors": feed_errors()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

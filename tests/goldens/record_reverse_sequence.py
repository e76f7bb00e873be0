"""Record TF's tf.reverse_sequence values into tests/goldens/reverse_sequence.npz (run with real TF).

    /work/tfenv/bin/python tests/goldens/record_reverse_sequence.py

Each case of ``CASES`` (name, input, lengths, seq_axis, batch_axis) stores ``name/x``,
``name/lengths``, ``name/axes`` and TF's ``name/out``; float cases with finite inputs also
store ``name/w`` and ``name/grad`` (the gradient of ``sum(out * w)`` w.r.t. the input).
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reverse_sequence.npz")


def _with_nonfinite():
    """[3,5,2] float32; row 1 holds an inf and a NaN inside its reversed span."""
    x = np.arange(30, dtype=np.float32).reshape(3, 5, 2) - 7.5
    x[1, 1, 0], x[1, 3, 1], x[2, 4, 0] = np.inf, np.nan, -np.inf
    return x


def _cases():
    rng = np.random.default_rng(7)
    return [
        ("nonfinite", _with_nonfinite(), np.array([0, 4, 5], np.int32), 1, 0),
        ("time_major", rng.standard_normal((4, 3, 2)), np.array([2, 4, 1], np.int64), 0, 1),
        ("batch_last", rng.standard_normal((5, 2, 3)).astype(np.float32), np.array([3, 0, 5], np.int32), 0, 2),
        ("rank4", rng.standard_normal((2, 3, 4, 2)).astype(np.float32), np.array([4, 2, 0], np.int32), 2, 1),
        ("int32", rng.integers(-50, 50, (2, 4, 3)).astype(np.int32), np.array([3, 1], np.int64), 1, 0),
        ("int64", rng.integers(-2**40, 2**40, (4, 2)).astype(np.int64), np.array([2, 1, 0, 2], np.int32), 1, 0),
        ("bool", rng.integers(0, 2, (3, 4)).astype(bool), np.array([1, 4, 2], np.int32), 1, 0),
    ]


def main():
    tf.disable_v2_behavior()
    arrays = {}
    for name, x, lengths, seq_axis, batch_axis in _cases():
        with tf.Graph().as_default(), tf.Session() as sess:
            xt = tf.constant(x)
            y = tf.reverse_sequence(xt, lengths, seq_axis=seq_axis, batch_axis=batch_axis)
            arrays.update({f"{name}/x": x, f"{name}/lengths": lengths, f"{name}/axes": np.array([seq_axis, batch_axis]),
                           f"{name}/out": sess.run(y)})
            if x.dtype.kind == "f" and np.isfinite(x).all():
                w = np.random.default_rng(len(name)).standard_normal(x.shape).astype(x.dtype)
                arrays[f"{name}/w"] = w
                arrays[f"{name}/grad"] = sess.run(tf.gradients(tf.reduce_sum(y * w), xt)[0])
    np.savez(OUT, **arrays)
    print(f"wrote {OUT}: {len(arrays)} arrays")


if __name__ == "__main__":
    main()

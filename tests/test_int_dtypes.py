"""Narrow integer dtypes (int8, uint8, int16, uint16) through the stack: names, feeds/fetches,
casts, wrapping arithmetic and reductions — numpy as the oracle, the compiled LLVM and CUDA
backends against the reference interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from compiler.ir.types import as_dtype

from tests.cuda_kit import MODES

NARROW = ["int8", "uint8", "int16", "uint16"]


def test_dtype_names():
    for name in NARROW:
        dt = getattr(tf, name)
        assert dt is as_dtype(name) is as_dtype(np.dtype(name)) is getattr(tf.dtypes, name)
        assert dt.is_integer and not dt.is_floating and dt.name == name
        assert dt.is_unsigned == name.startswith("u")
        assert (dt.min, dt.max) == (np.iinfo(name).min, np.iinfo(name).max)
    assert as_dtype("i16") is tf.int16 and as_dtype("u16") is tf.uint16


def _operands(name):
    info = np.iinfo(name)
    a = np.array([info.min, info.max, 7, 0, 3, 100, info.max - 1], name)
    b = np.array([3, 2, 5, 1, 4, 9, info.max], name)  # no zero: integer x // 0 is a runtime error
    if info.min < 0:
        b[2] = -2
    return a, b


def _graph(name):
    """Ops over placeholders of ``name`` with their numpy oracles (wrapping like numpy)."""
    dt = getattr(tf, name)
    x, y = tf.placeholder(dt, [None]), tf.placeholder(dt, [None])
    f = tf.placeholder(tf.float32, [None])
    pairs = [
        (x + y, lambda a, b, fv: a + b), (x - y, lambda a, b, fv: a - b), (x * y, lambda a, b, fv: a * b),
        (tf.maximum(x, y), lambda a, b, fv: np.maximum(a, b)), (tf.equal(x, y), lambda a, b, fv: a == b),
        (x // y, lambda a, b, fv: np.floor_divide(a, b)), (x % y, lambda a, b, fv: np.mod(a, b)),
        (tf.cast(x, tf.float32), lambda a, b, fv: a.astype(np.float32)),
        (tf.cast(tf.cast(x, tf.int64), dt), lambda a, b, fv: a),
        (tf.cast(f, dt), lambda a, b, fv: fv.astype(np.int64).astype(name)),  # in range: truncate toward 0
        (tf.reduce_max(x), lambda a, b, fv: a.max()), (tf.reduce_sum(x), lambda a, b, fv: a.sum(dtype=name)),
        (x / y, lambda a, b, fv: np.true_divide(a, b, dtype=np.float32)),
    ]
    return (x, y, f), pairs


def _feed(name, phs):
    a, b = _operands(name)
    info = np.iinfo(name)
    fv = np.array([1.7, -2.5, 3.9, info.max - 0.5, info.min + 0.25, 12.0, 0.0], np.float32)
    fv = np.clip(fv, info.min, info.max).astype(np.float32)
    return dict(zip(phs, (a, b, fv))), (a, b, fv)


@pytest.mark.parametrize("name", NARROW)
def test_narrow_int_ops_match_numpy(name):
    with tf.Graph().as_default():
        phs, pairs = _graph(name)
        feed, args = _feed(name, phs)
        with np.errstate(all="ignore"), tf.Session() as sess:
            got = sess.run([t for t, _ in pairs], feed)
            for i, ((t, oracle), value) in enumerate(zip(pairs, got)):
                want = np.asarray(oracle(*args))
                assert value.dtype == want.dtype, (i, t.name)
                np.testing.assert_array_equal(value, want, err_msg=f"{t.name} ({name})")
        assert pairs[-1][0].dtype == tf.float32  # TF: (u)int8/(u)int16 truediv gives float32


def _all_dtypes_run(config):
    with tf.Graph().as_default():
        fetches, feed = [], {}
        for name in NARROW:
            phs, pairs = _graph(name)
            feed.update(_feed(name, phs)[0])
            fetches += [t for t, _ in pairs]
        with tf.Session(config=config) as sess:
            return sess.run(fetches, feed)


def test_narrow_ints_compiled_llvm_matches_interpreter():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent fallback to the interpreter
        got = _all_dtypes_run({"backend": "compiled"})
    for g, r in zip(got, _all_dtypes_run(None)):
        assert g.dtype == r.dtype
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("mode", MODES)
def test_narrow_ints_cuda_matches_interpreter(mode):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = _all_dtypes_run({"backend": "cuda", "cuda_emulate": mode == "emulated"})
    for g, r in zip(got, _all_dtypes_run(None)):
        assert g.dtype == r.dtype
        np.testing.assert_array_equal(g, r)


def test_narrow_int_feed_errors():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.int16, [None, 2])
        with tf.Session() as sess:
            with pytest.raises(ValueError, match="Cannot feed value of dtype float64 to tensor .* of dtype int16"):
                sess.run(x + 1, {x: np.zeros((1, 2))})
            with pytest.raises(ValueError, match="Cannot feed value of shape"):
                sess.run(x + 1, {x: np.zeros((2, 3), np.int16)})

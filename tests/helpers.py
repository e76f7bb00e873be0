"""Shared test utilities: run a graph function, and check gradients by central differences."""
from __future__ import annotations

import numpy as np

from compiler import tf


def run_fn(fn, *arrays, dtype=None):
    """Build ``fn`` over placeholders shaped like ``arrays`` in a fresh graph and evaluate it."""
    with tf.Graph().as_default():
        phs = [tf.placeholder(dtype or tf.as_dtype(a.dtype), a.shape) for a in arrays]
        out = fn(*phs)
        with tf.Session() as sess:
            return sess.run(out, dict(zip(phs, arrays)))


def check_gradients(fn, *arrays, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0, wrt=None):
    """Compare tf.gradients of ``sum(fn(*xs) * w)`` (w random) with central differences.

    Runs in float64 through the reference interpreter; ``wrt`` lists which inputs to check
    (default: all floating ones).  Variables ``fn`` makes (layers) are initialized first.
    Returns the symbolic gradients.
    """
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a) for a in arrays]
    arrays = [a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a for a in arrays]
    wrt = [i for i, a in enumerate(arrays) if a.dtype == np.float64] if wrt is None else list(wrt)
    with tf.Graph().as_default():
        phs = [tf.placeholder(tf.as_dtype(a.dtype), a.shape) for a in arrays]
        y = fn(*phs)
        w = rng.standard_normal(size=[d for d in y.shape.as_list()]) if y.shape.ndims else rng.standard_normal()
        loss = tf.reduce_sum(y * tf.constant(np.asarray(w, dtype=np.float64)))
        grads = tf.gradients(loss, [phs[i] for i in wrt])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            feed = dict(zip(phs, arrays))
            symbolic = sess.run([g if g is not None else tf.zeros_like(phs[i]) for g, i in zip(grads, wrt)], feed)
            for g, i in zip(symbolic, wrt):
                numeric = np.zeros_like(arrays[i])
                flat = arrays[i].reshape(-1)
                for j in range(flat.size):
                    orig = flat[j]
                    flat[j] = orig + eps
                    up = sess.run(loss, feed)
                    flat[j] = orig - eps
                    down = sess.run(loss, feed)
                    flat[j] = orig
                    numeric.reshape(-1)[j] = (up - down) / (2 * eps)
                np.testing.assert_allclose(g, numeric, rtol=rtol, atol=atol,
                                           err_msg=f"gradient of input {i} (shape {arrays[i].shape})")
    return symbolic


def ev(t, feed=None):
    """Evaluate tensors in a session over the current default graph."""
    with tf.Session() as sess:
        return sess.run(t, feed)


def assert_exports_kiln_abi(lib, entry_points, label=""):
    """The shared library ``lib`` exports the Kiln C ABI's functions and one
    ``kiln_entry_<name>`` per entry point (checked with ``nm`` where it exists)."""
    import shutil
    import subprocess

    nm = shutil.which("nm")
    if not nm:
        return
    syms = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    for sym in ["kiln_create", "kiln_destroy", "kiln_read_variable", "kiln_write_variable",
                "kiln_last_error", "kiln_abi_version"] + [f"kiln_entry_{e}" for e in entry_points]:
        assert sym in syms, (label, sym)

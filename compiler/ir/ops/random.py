"""Random op kinds: counter-based Philox4x32-10 draws keyed by (seed, seed2, step, element).

Every random kind takes one operand, the step counter (``i64[]``, the hidden state
``kiln/rng_step``), and attrs ``shape`` (may hold the batch dim), ``dtype``, ``seed``,
``seed2``.  Element ``i`` of a draw uses Philox with key ``(seed, seed2)`` and counter
``(i_lo, i_hi, step_lo, step_hi)``, and takes output word 0.  So a value depends only on
(seed, op seed, step, position): reproducible, resumable, and the same on every backend.

Inside a ``tf.while_loop`` the step operand is not ``kiln/rng_step`` itself but
``rng_fold(step, iteration)`` (one fold per enclosing loop, outermost first), so each
iteration draws fresh numbers; outside loops draws are keyed by the plain step.
``rng_fold`` hashes its two i64 operands with Philox (like JAX's ``fold_in``) into a 63-bit
non-negative i64: two keys of one op collide with probability about 2**-63.
"""
from __future__ import annotations

import numpy as np

from ..opdef import register_op
from ..types import ShapeError, TensorType, as_dtype

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def philox4x32(counter: np.ndarray, key: tuple) -> np.ndarray:
    """Philox4x32-10 on ``counter`` (uint64 array [..., 4] holding 32-bit words)."""
    c = [counter[..., j].astype(np.uint64) for j in range(4)]
    k0, k1 = np.uint64(key[0]) & _MASK, np.uint64(key[1]) & _MASK
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        p0, p1 = _M0 * c[0], _M1 * c[2]
        c = [((p1 >> np.uint64(32)) ^ c[1] ^ k0) & _MASK, p1 & _MASK,
             ((p0 >> np.uint64(32)) ^ c[3] ^ k1) & _MASK, p0 & _MASK]
    return np.stack(c, axis=-1)


def philox_word(index: np.ndarray, seed: int, seed2: int, step: int) -> np.ndarray:
    """Word 0 of Philox with key (seed, seed2) and counter (index lo, index hi, step lo, step hi)
    for each element of ``index`` (int64 or uint64 array; uint32 result)."""
    i = np.asarray(index).astype(np.uint64)
    step = np.uint64(int(step) & 0xFFFFFFFFFFFFFFFF)
    counter = np.stack([i & _MASK, i >> np.uint64(32), np.broadcast_to(step & _MASK, i.shape),
                        np.broadcast_to(step >> np.uint64(32), i.shape)], -1)
    return philox4x32(counter, (seed, seed2))[..., 0].astype(np.uint32)


_CHUNK = 1 << 15  # elements per block of random_bits: its temporaries stay in the L2 cache


class _Work:
    """Scratch for :func:`_philox_word0`: five uint64 buffers of one block and the block's
    element offsets 0..block-1 (reused across blocks: temporaries of this size would be
    fresh pages from the OS every time, which cost more than the arithmetic)."""

    def __init__(self, block: int):
        self.bufs = [np.empty(block, np.uint64) for _ in range(5)]
        self.offsets = np.arange(block, dtype=np.uint64)


def _philox_word0(lo0: int, n: int, hi: int, step: int, key: tuple, work: _Work) -> np.ndarray:
    """Word 0 of Philox4x32-10 for the ``n`` counters (lo0 + i, hi, step lo, step hi): the
    rounds of :func:`philox4x32` in uint64 lanes holding 32-bit words, every operation in
    place in ``work``'s buffers.  Returns one of them (valid until ``work`` is used again)."""
    c0, c1, c2, c3, t = (b[:n] for b in work.bufs)
    np.add(work.offsets[:n], np.uint64(lo0), out=c0)
    c1.fill(hi)
    c2.fill(step & 0xFFFFFFFF)
    c3.fill(step >> 32)
    k0, k1 = np.uint64(key[0]) & _MASK, np.uint64(key[1]) & _MASK
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        np.multiply(c0, _M0, out=c0)  # p0
        np.multiply(c2, _M1, out=c2)  # p1
        np.right_shift(c2, _SHIFT, out=t)
        np.bitwise_xor(c1, t, out=c1)
        np.bitwise_xor(c1, k0, out=c1)  # n0 = hi(p1) ^ c1 ^ k0
        np.right_shift(c0, _SHIFT, out=t)
        np.bitwise_xor(c3, t, out=c3)
        np.bitwise_xor(c3, k1, out=c3)  # n2 = hi(p0) ^ c3 ^ k1
        np.bitwise_and(c2, _MASK, out=c2)
        np.bitwise_and(c0, _MASK, out=c0)
        c0, c1, c2, c3 = c1, c2, c3, c0  # the new words: n0, lo(p1), n2, lo(p0)
    return c0


def random_bits(size: int, seed: int, seed2: int, step: int) -> np.ndarray:
    """Word 0 of Philox for elements 0..size-1 at ``step`` (uint32); the same numbers as
    ``philox_word(np.arange(size), ...)``, computed in cache-sized blocks (initializers of
    large variables draw millions)."""
    step = int(step) & 0xFFFFFFFFFFFFFFFF
    out = np.empty(size, np.uint32)
    work = _Work(min(size, _CHUNK))
    for start in range(0, size, _CHUNK):
        stop = min(size, start + _CHUNK)
        hi, lo0 = start >> 32, start & 0xFFFFFFFF
        if (stop - 1) >> 32 != hi:  # a block crossing a 2**32 boundary: the general path
            out[start:stop] = philox_word(np.arange(start, stop, dtype=np.uint64), seed, seed2, step)
            continue
        out[start:stop] = _philox_word0(lo0, stop - start, hi, step, (seed, seed2), work)
    return out


# the two Philox keys of rng_fold's high and low word (arbitrary odd constants)
FOLD_KEYS = ((0x6A09E667, 0xBB67AE85), (0x3C6EF372, 0xA54FF53A))


def _infer_fold(inputs):
    for what, t in zip(("step", "iteration"), inputs):
        if t.dtype.name != "int64" or t.shape != ():
            raise ShapeError(f"rng_fold: the {what} operand must be i64[], got {t}")
    return inputs[0]


def _eval_fold(ctx, step, iteration):
    """(word_hi // 2) * 2**32 + word_lo, with the words Philox(index=iteration, step=step) under
    the two FOLD_KEYS: 63 bits, never negative, no i64 overflow on any backend."""
    hi, lo = (int(philox_word(np.asarray(iteration, np.int64), k0, k1, int(step))) for k0, k1 in FOLD_KEYS)
    return np.array((hi // 2) * 2 ** 32 + lo, np.int64)


def bits_to_unit(bits: np.ndarray) -> np.ndarray:
    """Top 24 bits to a float32 in the open interval (0, 1)."""
    return (((bits >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -24))


_ERFINV_P = (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
             -0.00417768164, 0.246640727, 1.50140941)  # after 2.81022636e-08, in w - 2.5
_ERFINV_Q = (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
             0.00943887047, 1.00167406, 2.83297682)  # after -0.000200214257, in sqrt(w) - 3


def _erfinv_block(x: np.ndarray) -> np.ndarray:
    """:func:`erfinv` of one block; the tail polynomial only where ``w >= 5`` (rare)."""
    w = -np.log((1.0 - x) * (1.0 + x))
    ws = w - 2.5
    p = 2.81022636e-08
    for c in _ERFINV_P:
        p = c + p * ws
    big = ~(w < 5.0)
    if big.any():
        wl = np.sqrt(w[big]) - 3.0
        q = -0.000200214257
        for c in _ERFINV_Q:
            q = c + q * wl
        p[big] = q
    return p * x


def erfinv(x: np.ndarray) -> np.ndarray:
    """Inverse error function, Giles' single-precision polynomial (the same on every backend),
    evaluated in float64 in cache-sized blocks (initializers of large variables draw
    millions of normals)."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, _CHUNK):
        out[start:start + _CHUNK] = _erfinv_block(flat[start:start + _CHUNK])
    return out.reshape(x.shape)


_ERF_SQRT2 = 0.9544997361036416  # erf(2/sqrt(2)): mass within two standard deviations


def _unit(ctx, step, shape, seed, seed2):
    dims = ctx.shape(shape)
    size = int(np.prod(dims, dtype=np.int64))
    return bits_to_unit(random_bits(size, seed, seed2, int(step))).reshape(dims)


def _eval_uniform(ctx, step, *, shape, dtype, seed, seed2):
    return _unit(ctx, step, shape, seed, seed2).astype(as_dtype(dtype).np)


def _eval_normal(ctx, step, *, shape, dtype, seed, seed2):
    u = _unit(ctx, step, shape, seed, seed2).astype(np.float64)
    return (np.sqrt(2.0) * erfinv(2.0 * u - 1.0)).astype(as_dtype(dtype).np)


def _eval_truncated(ctx, step, *, shape, dtype, seed, seed2):
    u = _unit(ctx, step, shape, seed, seed2).astype(np.float64)
    return (np.sqrt(2.0) * erfinv((2.0 * u - 1.0) * _ERF_SQRT2)).astype(as_dtype(dtype).np)


def _infer_draw(inputs, *, shape, dtype, seed, seed2):
    (step,) = inputs
    if step.dtype.name != "int64" or step.shape != ():
        raise ShapeError(f"the step operand must be i64[], got {step}")
    dtype = as_dtype(dtype)
    if not dtype.is_floating:
        raise ShapeError(f"random draws are floating, got {dtype.name}")
    return TensorType(dtype, tuple(shape))


def _infer_shuffle(inputs, *, seed, seed2):
    step, value = inputs
    if value.rank == 0:
        raise ShapeError("random_shuffle needs a tensor of rank >= 1")
    return value


def _eval_shuffle(ctx, step, value, *, seed, seed2):
    keys = random_bits(value.shape[0], seed, seed2, int(step))
    return value[np.argsort(keys, kind="stable")]


register_op("random_uniform", _infer_draw, _eval_uniform, arity=1, stateful=True, doc="U(0,1) open interval")
register_op("random_normal", _infer_draw, _eval_normal, arity=1, stateful=True, doc="N(0,1) via erfinv")
register_op("truncated_normal", _infer_draw, _eval_truncated, arity=1, stateful=True,
            doc="N(0,1) restricted to (-2, 2) via erfinv of a scaled uniform")
register_op("rng_fold", _infer_fold, _eval_fold, arity=2,
            doc="the random step of a loop iteration: a Philox hash of (step, iteration)")
register_op("random_shuffle", _infer_shuffle, _eval_shuffle, arity=2, stateful=True,
            doc="permute along axis 0 by sorting Philox keys")

"""Train-step time of an RNN written with tf.while_loop (its gradient: the forward loop's
stacks and a backward loop): Kiln's reference interpreter vs the compiled LLVM session.

    python bench/control_flow_rnn.py [--steps 50] [--batch 64] [--repeats 5]

One graph: ``h = tanh(x_t W + h U)`` for ``--steps`` time steps, mean-square loss, SGD on W
and U.  Each backend warms up once (the compiled one compiles then), then times
``--repeats`` steps; the losses must agree.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compiler import tf  # noqa: E402


def build(steps: int):
    """The RNN training graph: (graph, input placeholder, loss, train op)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, steps, 32], name="x")
        w = tf.Variable(np.random.default_rng(0).standard_normal((32, 128)).astype(np.float32) * 0.1, name="w")
        u = tf.Variable(np.random.default_rng(1).standard_normal((128, 128)).astype(np.float32) * 0.05, name="u")
        xs = tf.transpose(x, [1, 0, 2])

        def body(t, h):
            return t + 1, tf.tanh(tf.matmul(tf.gather(xs, t), w) + tf.matmul(h, u))

        h0 = tf.zeros_like(tf.matmul(x[:, 0, :], w))
        _, h = tf.while_loop(lambda t, h: t < steps, body, (0, h0), maximum_iterations=steps)
        loss = tf.reduce_mean(tf.square(h))
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
    return graph, x, loss, train


def time_backend(backend: str, args) -> tuple:
    """(ms per step, last loss) of ``args.repeats`` steps on ``backend``."""
    graph, x, loss, train = build(args.steps)
    feed = {x: np.random.default_rng(2).standard_normal((args.batch, args.steps, 32)).astype(np.float32)}
    with graph.as_default(), tf.Session(config={"backend": backend}) as sess, warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to the interpreter is an error here
        sess.run(tf.global_variables_initializer())
        sess.run([loss, train], feed)
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            value, _ = sess.run([loss, train], feed)
    return (time.perf_counter() - t0) / args.repeats * 1e3, float(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="time steps of the loop (default 50)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per backend (default 5)")
    args = parser.parse_args(argv)
    results = {b: time_backend(b, args) for b in ("interpreter", "compiled")}
    for backend, (ms, loss) in results.items():
        print(f"{backend:<12} {ms:9.1f} ms/step  loss {loss:.6f}")
    (_, a), (_, b) = results.values()
    if not np.isclose(a, b, rtol=1e-4):
        print(f"losses differ: {a} vs {b}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

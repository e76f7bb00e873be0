"""Control flow in a training program: a polynomial evaluated by Horner's rule inside
tf.while_loop (trained through the loop), tf.cond choosing the loss, and tf.case choosing
the learning rate from the global step."""
from __future__ import print_function

import numpy as np
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

flags = tf.app.flags
flags.DEFINE_integer("steps", 40, "training steps")
flags.DEFINE_integer("degree", 3, "polynomial degree")
FLAGS = flags.FLAGS


def horner(coeffs, x, degree):
    """sum_k coeffs[k] x^(degree-k), one coefficient per loop iteration."""
    def cond(i, acc):
        return i < degree + 1

    def body(i, acc):
        return i + 1, acc * x + tf.gather(coeffs, i)

    _, y = tf.while_loop(cond, body, (tf.constant(0), tf.zeros_like(x)), maximum_iterations=degree + 1)
    return y


def main(_):
    rng = np.random.RandomState(0)
    xs = rng.uniform(-1, 1, size=200).astype(np.float32)
    ys = (0.5 * xs ** 3 - xs + 0.25 + 0.05 * rng.randn(200)).astype(np.float32)

    x = tf.placeholder(tf.float32, [None], name="x")
    y = tf.placeholder(tf.float32, [None], name="y")
    robust = tf.placeholder(tf.bool, [], name="robust")
    coeffs = tf.Variable(tf.zeros([FLAGS.degree + 1]), name="coeffs")
    global_step = tf.train.get_or_create_global_step()

    pred = horner(coeffs, x, FLAGS.degree)
    err = pred - y
    loss = tf.cond(robust, lambda: tf.reduce_mean(tf.abs(err)), lambda: tf.reduce_mean(tf.square(err)))
    lr = tf.case([(global_step < 10, lambda: tf.constant(0.5)),
                  (global_step < 30, lambda: tf.constant(0.2))], default=lambda: tf.constant(0.1))
    train_op = tf.train.GradientDescentOptimizer(lr).minimize(loss, global_step=global_step)

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for step in range(FLAGS.steps):
            _, l, r = sess.run([train_op, loss, lr], feed_dict={x: xs, y: ys, robust: step % 4 == 3})
            if step % 5 == 0:
                print("step %d loss %.6f lr %.2f" % (step, l, r))
        print("coefficients", " ".join("%.5f" % c for c in sess.run(coeffs)))
        print("final mse %.6f" % sess.run(loss, feed_dict={x: xs, y: ys, robust: False}))


if __name__ == "__main__":
    tf.app.run()

"""Variational auto-encoder (TensorFlow-Examples): the reparameterization trick draws
epsilon with tf.random_normal(tf.shape(z_std)), a shape known only at run time."""
from __future__ import division, print_function

import numpy as np
import tutorial_data as input_data
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

flags = tf.app.flags
flags.DEFINE_integer("num_steps", 30, "training steps")
flags.DEFINE_float("noise_stddev", 1.0, "stddev of the reparameterization noise")
FLAGS = flags.FLAGS

learning_rate = 0.001
batch_size = 64
image_dim = 784
hidden_dim = 128
latent_dim = 2


def glorot_init(shape):
    return tf.random_normal(shape=shape, stddev=1. / tf.sqrt(shape[0] / 2.))


def main(_):
    mnist = input_data.read_data_sets("/tmp/data/", one_hot=True)
    weights = {
        "encoder_h1": tf.Variable(glorot_init([image_dim, hidden_dim])),
        "z_mean": tf.Variable(glorot_init([hidden_dim, latent_dim])),
        "z_std": tf.Variable(glorot_init([hidden_dim, latent_dim])),
        "decoder_h1": tf.Variable(glorot_init([latent_dim, hidden_dim])),
        "decoder_out": tf.Variable(glorot_init([hidden_dim, image_dim])),
    }
    biases = {
        "encoder_b1": tf.Variable(glorot_init([hidden_dim])),
        "z_mean": tf.Variable(glorot_init([latent_dim])),
        "z_std": tf.Variable(glorot_init([latent_dim])),
        "decoder_b1": tf.Variable(glorot_init([hidden_dim])),
        "decoder_out": tf.Variable(glorot_init([image_dim])),
    }

    input_image = tf.placeholder(tf.float32, shape=[None, image_dim])
    encoder = tf.matmul(input_image, weights["encoder_h1"]) + biases["encoder_b1"]
    encoder = tf.nn.tanh(encoder)
    z_mean = tf.matmul(encoder, weights["z_mean"]) + biases["z_mean"]
    z_std = tf.matmul(encoder, weights["z_std"]) + biases["z_std"]

    eps = tf.random_normal(tf.shape(z_std), dtype=tf.float32, mean=0., stddev=FLAGS.noise_stddev,
                           name="epsilon")
    z = z_mean + tf.exp(z_std / 2) * eps

    decoder = tf.matmul(z, weights["decoder_h1"]) + biases["decoder_b1"]
    decoder = tf.nn.tanh(decoder)
    decoder = tf.matmul(decoder, weights["decoder_out"]) + biases["decoder_out"]
    decoder = tf.nn.sigmoid(decoder)

    def vae_loss(x_reconstructed, x_true):
        encode_decode_loss = x_true * tf.log(1e-10 + x_reconstructed) \
            + (1 - x_true) * tf.log(1e-10 + 1 - x_reconstructed)
        encode_decode_loss = -tf.reduce_sum(encode_decode_loss, 1)
        kl_div_loss = 1 + z_std - tf.square(z_mean) - tf.exp(z_std)
        kl_div_loss = -0.5 * tf.reduce_sum(kl_div_loss, 1)
        return tf.reduce_mean(encode_decode_loss + kl_div_loss)

    loss_op = vae_loss(decoder, input_image)
    optimizer = tf.train.RMSPropOptimizer(learning_rate=learning_rate)
    train_op = optimizer.minimize(loss_op)
    init = tf.global_variables_initializer()

    with tf.Session() as sess:
        sess.run(init)
        for i in range(1, FLAGS.num_steps + 1):
            batch_x, _ = mnist.train.next_batch(batch_size)
            _, l = sess.run([train_op, loss_op], feed_dict={input_image: batch_x})
            if i % 5 == 0 or i == 1:
                print("Step %i, Loss: %f" % (i, l))
        noise_input = tf.placeholder(tf.float32, shape=[None, latent_dim])
        decoder = tf.matmul(noise_input, weights["decoder_h1"]) + biases["decoder_b1"]
        decoder = tf.nn.tanh(decoder)
        decoder = tf.matmul(decoder, weights["decoder_out"]) + biases["decoder_out"]
        decoder = tf.nn.sigmoid(decoder)
        grid = np.linspace(-1, 1, 4, dtype=np.float32)
        z_mu = np.array([[xi, yi] for xi in grid for yi in grid], dtype=np.float32)
        x_mean = sess.run(decoder, feed_dict={noise_input: z_mu})
        print("generated mean %.6f" % x_mean.mean())


if __name__ == "__main__":
    tf.app.run()

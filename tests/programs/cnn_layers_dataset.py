"""A tf.layers CNN fed by tf.data (one-shot iterator over shuffled, batched, repeated slices),
flattened with tf.contrib.layers.flatten, dropout switched by an is_training placeholder, and
scored with tf.metrics.accuracy over local variables."""
from __future__ import print_function

import numpy as np
import tutorial_data as input_data
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

flags = tf.app.flags
flags.DEFINE_integer("steps", 8, "training steps")
flags.DEFINE_float("dropout_rate", 0.25, "dropout rate while training")
FLAGS = flags.FLAGS


def conv_net(x, is_training):
    x = tf.reshape(x, shape=[-1, 28, 28, 1])
    conv1 = tf.layers.conv2d(x, 8, 5, activation=tf.nn.relu)
    conv1 = tf.layers.max_pooling2d(conv1, 2, 2)
    conv2 = tf.layers.conv2d(conv1, 16, 3, activation=tf.nn.relu)
    conv2 = tf.layers.max_pooling2d(conv2, 2, 2)
    fc1 = tf.contrib.layers.flatten(conv2)
    fc1 = tf.layers.dense(fc1, 64)
    fc1 = tf.layers.dropout(fc1, rate=FLAGS.dropout_rate, training=is_training)
    return tf.layers.dense(fc1, 10)


def main(_):
    mnist = input_data.read_data_sets("/tmp/data/", one_hot=False)
    images = mnist.train.images[:512]
    labels = mnist.train.labels[:512].astype(np.int32)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(buffer_size=1, seed=3).batch(64).repeat()
    iterator = dataset.make_one_shot_iterator()
    x, y = iterator.get_next()
    is_training = tf.placeholder_with_default(False, shape=[], name="is_training")

    logits = conv_net(x, is_training)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    train_op = tf.train.AdamOptimizer(0.002).minimize(loss, global_step=tf.train.get_or_create_global_step())
    accuracy, update_acc = tf.metrics.accuracy(labels=y, predictions=tf.argmax(logits, 1))
    top1 = tf.reduce_mean(tf.cast(tf.nn.in_top_k(logits, y, 1), tf.float32))

    with tf.Session() as sess:
        sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
        for step in range(1, FLAGS.steps + 1):
            _, l = sess.run([train_op, loss], feed_dict={is_training: True})
            print("step %d loss %.5f" % (step, l))
        for _ in range(3):
            sess.run(update_acc)
        print("streaming accuracy %.5f" % sess.run(accuracy))
        print("top-1 of a batch %.5f" % sess.run(top1))


if __name__ == "__main__":
    tf.app.run()

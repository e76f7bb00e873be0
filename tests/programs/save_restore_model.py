"""Save and restore a model (TensorFlow-Examples): train, tf.train.Saver.save, a second
session restores the weights and training continues from them."""
from __future__ import print_function

import tutorial_data as input_data
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

mnist = input_data.read_data_sets("/tmp/data/", one_hot=True)

learning_rate = 0.001
batch_size = 100
display_step = 1
model_path = "model_ckpt/model.ckpt"

n_hidden_1 = 64
n_hidden_2 = 64
n_input = 784
n_classes = 10

x = tf.placeholder("float", [None, n_input])
y = tf.placeholder("float", [None, n_classes])


def multilayer_perceptron(x, weights, biases):
    layer_1 = tf.nn.relu(tf.add(tf.matmul(x, weights["h1"]), biases["b1"]))
    layer_2 = tf.nn.relu(tf.add(tf.matmul(layer_1, weights["h2"]), biases["b2"]))
    return tf.matmul(layer_2, weights["out"]) + biases["out"]


weights = {
    "h1": tf.Variable(tf.random_normal([n_input, n_hidden_1])),
    "h2": tf.Variable(tf.random_normal([n_hidden_1, n_hidden_2])),
    "out": tf.Variable(tf.random_normal([n_hidden_2, n_classes])),
}
biases = {
    "b1": tf.Variable(tf.random_normal([n_hidden_1])),
    "b2": tf.Variable(tf.random_normal([n_hidden_2])),
    "out": tf.Variable(tf.random_normal([n_classes])),
}

pred = multilayer_perceptron(x, weights, biases)
cost = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(logits=pred, labels=y))
optimizer = tf.train.AdamOptimizer(learning_rate=learning_rate).minimize(cost)
init = tf.global_variables_initializer()
saver = tf.train.Saver()
correct_prediction = tf.equal(tf.argmax(pred, 1), tf.argmax(y, 1))
accuracy = tf.reduce_mean(tf.cast(correct_prediction, "float"))


def train(sess, epochs):
    for epoch in range(epochs):
        avg_cost = 0.
        total_batch = 10
        for i in range(total_batch):
            batch_x, batch_y = mnist.train.next_batch(batch_size)
            _, c = sess.run([optimizer, cost], feed_dict={x: batch_x, y: batch_y})
            avg_cost += c / total_batch
        if epoch % display_step == 0:
            print("Epoch:", "%04d" % (epoch + 1), "cost=", "{:.9f}".format(avg_cost))


print("Starting 1st session...")
with tf.Session() as sess:
    sess.run(init)
    train(sess, 3)
    print("First Optimization Finished!")
    print("Accuracy: %.4f" % accuracy.eval({x: mnist.test.images, y: mnist.test.labels}))
    save_path = saver.save(sess, model_path)
    print("Model saved")

print("Starting 2nd session...")
with tf.Session() as sess:
    sess.run(init)
    print("Accuracy before restore: %.4f" % accuracy.eval({x: mnist.test.images, y: mnist.test.labels}))
    saver.restore(sess, model_path)
    print("Model restored")
    print("Accuracy after restore: %.4f" % accuracy.eval({x: mnist.test.images, y: mnist.test.labels}))
    train(sess, 2)
    print("Second Optimization Finished!")
    print("Accuracy: %.4f" % accuracy.eval({x: mnist.test.images, y: mnist.test.labels}))

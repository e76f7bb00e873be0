"""Keras-style layers (tf.layers / tf.keras.layers) and seed 000's Model base class."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import tf
from compiler.frontend.model import Model

RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _init_session():
    sess = tf.Session()
    sess.run(tf.global_variables_initializer())
    return sess


# ----------------------------------------------------------------------------- numpy oracles
def np_conv2d(x, w, stride, padding):
    """NHWC x HWIO convolution with TF's SAME/VALID geometry."""
    pads = _np_pads(x.shape[1:3], w.shape[:2], stride, padding)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw = w.shape[:2]
    oh, ow = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def np_pool(x, k, stride, padding, reduce):
    """Max/avg pooling where padded cells never take part (TF's rule)."""
    pads = _np_pads(x.shape[1:3], (k, k), stride, padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)), constant_values=np.nan)
    oh, ow = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j, :] = reduce(xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :], axis=(1, 2))
    return out


def _np_pads(in_hw, k_hw, stride, padding):
    if padding == "valid":
        return ((0, 0), (0, 0))
    pads = []
    for n, k in zip(in_hw, k_hw):
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


# ----------------------------------------------------------------------------- Dense
def test_dense_matches_numpy_at_two_batch_sizes():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5])
        layer = tf.layers.Dense(3, activation=tf.nn.relu)
        y = layer(x)
        assert y.shape.as_list() == [None, 3]
        sess = _init_session()
        kernel, bias = sess.run([layer.kernel, layer.bias])
        assert kernel.shape == (5, 3) and np.all(bias == 0)
        limit = np.sqrt(6.0 / (5 + 3))  # glorot uniform
        assert np.all(np.abs(kernel) <= limit) and np.std(kernel) > 0
        for batch in (2, 7):
            xv = _rand(batch, 5)
            np.testing.assert_allclose(sess.run(y, {x: xv}), np.maximum(xv @ kernel + bias, 0), rtol=1e-5, atol=1e-6)


def test_dense_variable_names_and_second_call_reuses():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 4])
        first, second = tf.layers.Dense(6), tf.keras.layers.Dense(2, use_bias=False)
        h = first(x)
        first(x)  # second call: same variables
        second(h)
        names = [v.name for v in tf.global_variables()]
        assert names == ["dense/kernel:0", "dense/bias:0", "dense_1/kernel:0"]
        assert first.trainable_variables == first.weights == [first.kernel, first.bias]
        assert second.bias is None and first.name == "dense" and second.name == "dense_1"
        assert first.count_params() == 4 * 6 + 6
        with tf.variable_scope("model"):
            tf.layers.Dense(1, name="head")(x)
        assert tf.global_variables()[-1].name == "model/head/bias:0"


def test_functional_dense_name_and_reuse():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3])
        y1 = tf.layers.dense(x, 4, name="fc")
        y2 = tf.layers.dense(x, 4, name="fc", reuse=True)
        assert len(tf.global_variables()) == 2
        with pytest.raises(ValueError, match="fc/kernel already exists"):
            tf.layers.dense(x, 4, name="fc")
        with tf.variable_scope("shared", reuse=tf.AUTO_REUSE):
            tf.layers.dense(x, 2, name="out")
            tf.layers.dense(x, 2, name="out")
        assert [v.name for v in tf.trainable_variables()][2:] == ["shared/out/kernel:0", "shared/out/bias:0"]
        sess = _init_session()
        xv = _rand(2, 3)
        a, b = sess.run([y1, y2], {x: xv})
        np.testing.assert_array_equal(a, b)


def test_dense_rank3_input_and_regularizer():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 4, 5])
        layer = tf.layers.Dense(3, kernel_regularizer=lambda w: tf.reduce_sum(w * w),
                                kernel_initializer=tf.constant_initializer(0.5), bias_initializer="ones")
        y = layer(x)
        assert y.shape.as_list() == [None, 4, 3]
        assert len(layer.losses) == 1
        assert tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES) == layer.losses
        sess = _init_session()
        xv = _rand(2, 4, 5)
        np.testing.assert_allclose(sess.run(y, {x: xv}), xv @ np.full((5, 3), 0.5) + 1, rtol=1e-5)
        assert np.isclose(sess.run(layer.losses[0]), 15 * 0.25)


def test_dense_gradients_match_analytic():
    """d sum(w * tanh(x K + b)) / d{x, K, b} against the hand-derived numpy formulas."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float64, [2, 4])
        layer = tf.layers.Dense(3, activation=tf.tanh, bias_initializer=tf.constant_initializer(0.3))
        y = layer(x)
        assert layer.kernel.dtype == tf.float64  # the layer takes its dtype from the inputs
        w = RNG.standard_normal((2, 3))
        grads = tf.gradients(tf.reduce_sum(y * w), [x, layer.kernel, layer.bias])
        sess = _init_session()
        xv = RNG.standard_normal((2, 4))
        kernel, yv, gx, gk, gb = sess.run([layer.kernel, y] + grads, {x: xv})
        dz = w * (1 - yv ** 2)
        np.testing.assert_allclose(gx, dz @ kernel.T, rtol=1e-10)
        np.testing.assert_allclose(gk, xv.T @ dz, rtol=1e-10)
        np.testing.assert_allclose(gb, dz.sum(0), rtol=1e-10)


def test_dense_errors():
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match="Keyword argument not understood"):
            tf.layers.Dense(3, bogus=1)
        with pytest.raises(ValueError, match="units must be a positive integer"):
            tf.layers.Dense(0)
        with pytest.raises(ValueError, match="last dimension of the inputs to `Dense` should be defined"):
            tf.layers.dense(tf.placeholder(tf.float32, [None]), 2)
        with pytest.raises(ValueError, match="Unknown activation"):
            tf.layers.Dense(2, activation="swishy")
        layer = tf.layers.Dense(2)
        layer(tf.placeholder(tf.float32, [None, 3]))
        with pytest.raises(ValueError, match="matmul"):
            layer(tf.placeholder(tf.float32, [None, 4]))


# ----------------------------------------------------------------------------- Conv2D and pooling
@pytest.mark.parametrize("stride,padding", [(1, "valid"), (2, "same")])
def test_conv2d_matches_numpy(stride, padding):
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 7, 7, 2])
        layer = tf.layers.Conv2D(3, (3, 3), strides=stride, padding=padding.upper() if stride == 2 else padding,
                                 activation="relu", bias_initializer=tf.constant_initializer(0.1))
        y = layer(x)
        assert [v.name for v in layer.weights] == ["conv2d/kernel:0", "conv2d/bias:0"]
        sess = _init_session()
        kernel, bias = sess.run([layer.kernel, layer.bias])
        assert kernel.shape == (3, 3, 2, 3)
        assert np.all(np.abs(kernel) <= np.sqrt(6.0 / (9 * 2 + 9 * 3)))  # glorot over the receptive field
        for batch in (1, 3):
            xv = _rand(batch, 7, 7, 2)
            want = np.maximum(np_conv2d(xv, kernel, stride, padding) + bias, 0)
            got = sess.run(y, {x: xv})
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv2d_seed_vector_through_functional_form():
    """SEEDS.md: the 5x5 image with the 3x3 cross filter, stride 2, VALID -> [[4,4],[2,4]]."""
    image = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0], np.float32)
    kernel = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1], np.float32).reshape(3, 3, 1, 1)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5, 5, 1])
        y = tf.layers.conv2d(x, 1, 3, strides=2, use_bias=False, kernel_initializer=tf.constant_initializer(kernel))
        sess = _init_session()
        np.testing.assert_array_equal(sess.run(y, {x: image.reshape(1, 5, 5, 1)})[0, :, :, 0], [[4, 4], [2, 4]])


@pytest.mark.parametrize("cls,reduce,k,stride,padding", [
    ("MaxPool2D", np.nanmax, 2, None, "valid"),
    ("MaxPooling2D", np.nanmax, 3, 2, "same"),
    ("AveragePooling2D", np.nanmean, 2, 2, "valid"),
    ("AvgPool2D", np.nanmean, 3, 2, "same"),
])
def test_pooling_layers_match_numpy(cls, reduce, k, stride, padding):
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 5, 6, 2])
        layer = getattr(tf.keras.layers, cls)(pool_size=k, strides=stride, padding=padding)
        y = layer(x)
        assert layer.weights == []
        sess = tf.Session()
        for batch in (1, 2):
            xv = _rand(batch, 5, 6, 2)
            np.testing.assert_allclose(sess.run(y, {x: xv}), np_pool(xv, k, stride or k, padding, reduce), rtol=1e-5)


def test_functional_pooling_and_seed_max_pool_vector():
    """SEEDS.md: max_pool 2x2 stride 2 of the 4x4 example -> [[9,2],[6,3]]."""
    image = np.array([1, 3, 2, 1, 2, 9, 1, 1, 1, 3, 2, 3, 5, 6, 1, 2], np.float32).reshape(1, 4, 4, 1)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 4, 4, 1])
        m = tf.layers.max_pooling2d(x, 2, 2)
        a = tf.layers.average_pooling2d(x, (2, 2), (2, 2), padding="same")
        got_m, got_a = tf.Session().run([m, a], {x: image})
        np.testing.assert_array_equal(got_m[0, :, :, 0], [[9, 2], [6, 3]])
        np.testing.assert_allclose(got_a[0, :, :, 0], [[15 / 4, 5 / 4], [15 / 4, 2]])


def test_conv_and_pool_errors():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="`kernel_size` argument must be a tuple of 2"):
            tf.layers.Conv2D(4, (3, 3, 3))
        with pytest.raises(ValueError, match="`padding` argument must be one of"):
            tf.layers.MaxPooling2D(2, 2, padding="full")
        with pytest.raises(ValueError, match="channels_last"):
            tf.layers.Conv2D(4, 3, data_format="channels_first")
        with pytest.raises(ValueError, match="expected ndim=4"):
            tf.layers.Conv2D(4, 3)(tf.placeholder(tf.float32, [None, 8, 8]))
        with pytest.raises(ValueError, match="conv2d"):
            tf.layers.conv2d(tf.placeholder(tf.float32, [None, 2, 2, 1]), 4, 3)


# ----------------------------------------------------------------------------- Flatten, Dropout, Activation
def test_flatten_keeps_symbolic_batch():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 7, 7, 64])
        y = tf.layers.Flatten()(x)
        assert y.shape.as_list() == [None, 3136]
        z = tf.layers.flatten(tf.placeholder(tf.float32, [None, 2, 3]))
        assert z.shape.as_list() == [None, 6]
        xv = _rand(2, 7, 7, 64)
        np.testing.assert_array_equal(tf.Session().run(y, {x: xv}), xv.reshape(2, -1))


def test_dropout_python_training_flag():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 50])
        layer = tf.layers.Dropout(0.4, seed=1)
        off, on = layer(x), layer(x, training=True)
        default_off = tf.layers.dropout(x, rate=0.4)
        sess = tf.Session()
        xv = np.abs(_rand(4, 50)) + 0.5
        np.testing.assert_array_equal(sess.run(off, {x: xv}), xv)
        np.testing.assert_array_equal(sess.run(default_off, {x: xv}), xv)
        got = sess.run(on, {x: xv})
        kept = got != 0
        np.testing.assert_allclose(got[kept], xv[kept] / 0.6, rtol=1e-6)
        assert 0.3 < kept.mean() < 0.9
        with pytest.raises(ValueError, match="rate must be a scalar in"):
            tf.layers.Dropout(1.0)


def test_dropout_with_bool_placeholder():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 40])
        training = tf.placeholder(tf.bool, [])
        y = tf.layers.dropout(x, rate=0.5, training=training)
        sess = tf.Session()
        xv = np.ones((3, 40), np.float32)
        np.testing.assert_array_equal(sess.run(y, {x: xv, training: False}), xv)
        got = sess.run(y, {x: xv, training: True})
        assert set(np.unique(got)) <= {0.0, 2.0} and 0 < (got == 0).mean() < 1
        with pytest.raises(ValueError, match="scalar bool tensor"):
            tf.layers.dropout(x, training=tf.placeholder(tf.float32, []))


def test_activation_layer_and_sequential():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3])
        model = tf.keras.Sequential([tf.keras.layers.Dense(4, input_shape=(3,)),
                                     tf.keras.layers.Activation("softmax"),
                                     tf.keras.layers.Dropout(0.5)])
        y = model(x)
        assert [v.name for v in model.variables] == ["sequential/dense/kernel:0", "sequential/dense/bias:0"]
        sess = _init_session()
        np.testing.assert_allclose(sess.run(y, {x: _rand(2, 3)}).sum(axis=1), 1.0, rtol=1e-5)
        with pytest.raises(NotImplementedError, match="optimizer.minimize"):
            model.compile(optimizer="adam")


# ----------------------------------------------------------------------------- Model (seed 000)
class LeNet5(Model):
    """Seed 000's LeNet-5 on 28x28 inputs: conv6 5x5 -> avgpool -> conv16 5x5 -> avgpool -> 120 -> 84 -> 10."""

    def __init__(self, x, labels, **kwargs):
        super().__init__(**kwargs)
        self.inputs, self.placeholders = x, {"features": x, "labels": labels}
        self.optimizer = tf.train.AdamOptimizer(1e-3)
        self.build()

    def _build(self):
        L = tf.keras.layers
        self.layers += [L.Conv2D(6, 5, padding="same", activation=tf.nn.relu), L.AveragePooling2D(2, 2),
                        L.Conv2D(16, 5, activation=tf.nn.relu), L.AveragePooling2D(2, 2), L.Flatten(),
                        L.Dense(120, activation=tf.nn.relu), L.Dense(84, activation=tf.nn.relu), L.Dense(10)]

    def _loss(self):
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.placeholders["labels"], logits=self.outputs))

    def _accuracy(self):
        correct = tf.equal(tf.argmax(self.outputs, 1, output_type=tf.int32), self.placeholders["labels"])
        self.accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))

    def predict(self):
        return tf.nn.softmax(self.outputs)


def _lenet(name=None):
    x = tf.placeholder(tf.float32, [None, 28, 28, 1])
    y = tf.placeholder(tf.int32, [None])
    return LeNet5(x, y, **({"name": name} if name else {})), x, y


def test_model_builds_lenet_and_trains():
    with tf.Graph().as_default():
        model, x, y = _lenet()
        assert model.name == "lenet5" and len(model.activations) == len(model.layers) + 1
        assert [a.shape.as_list() for a in model.activations[1:6]] == [
            [None, 28, 28, 6], [None, 14, 14, 6], [None, 10, 10, 16], [None, 5, 5, 16], [None, 400]]
        assert model.predict().shape.as_list() == [None, 10]
        assert sorted(model.vars) == sorted(
            f"lenet5/{layer}/{w}:0" for layer in ("conv2d", "conv2d_1", "dense", "dense_1", "dense_2")
            for w in ("kernel", "bias"))
        sess = _init_session()
        feed = {x: _rand(8, 28, 28, 1), y: RNG.integers(0, 10, 8).astype(np.int32)}
        losses = [sess.run([model.loss, model.opt_op], feed)[0] for _ in range(6)]
        assert losses[-1] < losses[0]
        assert 0.0 <= sess.run(model.accuracy, feed) <= 1.0
        assert sess.run(model.predict(), {x: _rand(3, 28, 28, 1)}).shape == (3, 10)


def test_model_save_load_round_trip(tmp_path, capsys):
    with tf.Graph().as_default():
        model, x, y = _lenet(name="lenet")
        sess = _init_session()
        before = sess.run(model.vars)
        path = model.save(sess, path=str(tmp_path / "lenet.ckpt"))
        assert f"Model saved in file: {path}" in capsys.readouterr().out
        sess.run(model.opt_op, {x: _rand(4, 28, 28, 1), y: np.arange(4, dtype=np.int32)})
        assert not np.allclose(sess.run(model.vars)["lenet/dense/kernel:0"], before["lenet/dense/kernel:0"])
        model.load(sess, save_dir=tmp_path)
        assert f"Model restored from file: {tmp_path / 'lenet.ckpt'}" in capsys.readouterr().out
        after = sess.run(model.vars)
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value)


def test_model_contract_errors():
    with pytest.raises(TypeError, match="Invalid keyword argument: dropout"):
        Model(name="m", dropout=0.5)
    with pytest.raises(AssertionError, match="Invalid keyword argument"):
        Model(learning_rate=0.1)
    model = Model(logging=True)
    assert (model.name, model.logging, model.vars, model.layers, model.loss, model.opt_op) == ("model", True, {}, [], 0, None)
    assert model.checkpoint_path() == "tmp/model.ckpt"
    assert tf.kiln.Model is Model
    with tf.Graph().as_default():
        model.inputs = tf.placeholder(tf.float32, [None, 2])
        with pytest.raises(NotImplementedError):
            model.build()
    with pytest.raises(AttributeError, match="TensorFlow session not provided."):
        model.save()
    with pytest.raises(AttributeError, match="TensorFlow session not provided."):
        model.load(None)

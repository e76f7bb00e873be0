"""Peer implementations of the benchmarked training steps: numpy by hand, PyTorch, TensorFlow
(with or without XLA).

Each ``make_*`` returns a zero-argument callable that runs one training step (forward,
backward, Adam update) on fixed data, or raises ImportError when the framework is absent.
All use float32 and Adam(1e-3) (1e-4 for the CNN), the same shapes as Kiln's models.
"""
from __future__ import annotations

import numpy as np

MLP_SIZES = (784, 256, 128, 10)


def data(batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch).astype(np.int64)


# ----------------------------------------------------------------------------- numpy
class _NumpyAdam:
    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.params, self.lr, self.b1, self.b2, self.eps, self.t = params, lr, b1, b2, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads):
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= lr_t * m / (np.sqrt(v) + self.eps)


def make_numpy_mlp(batch):
    """A hand-written MLP step in numpy (BLAS matmuls, everything else vectorized)."""
    x, y = data(batch)
    rng = np.random.default_rng(1)
    ws = [rng.standard_normal((a, b)).astype(np.float32) * 0.05 for a, b in zip(MLP_SIZES, MLP_SIZES[1:])]
    bs = [np.zeros(b, np.float32) for b in MLP_SIZES[1:]]
    opt = _NumpyAdam(ws + bs)

    def step():
        h1 = np.maximum(x @ ws[0] + bs[0], 0)
        h2 = np.maximum(h1 @ ws[1] + bs[1], 0)
        logits = h2 @ ws[2] + bs[2]
        e = np.exp(logits - logits.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(batch), y]).mean()
        d = p
        d[np.arange(batch), y] -= 1
        d /= batch
        g_w2, g_b2 = h2.T @ d, d.sum(0)
        d2 = (d @ ws[2].T) * (h2 > 0)
        g_w1, g_b1 = h1.T @ d2, d2.sum(0)
        d1 = (d2 @ ws[1].T) * (h1 > 0)
        g_w0, g_b0 = x.T @ d1, d1.sum(0)
        opt.step([g_w0, g_w1, g_w2, g_b0, g_b1, g_b2])
        return loss

    return step


# ----------------------------------------------------------------------------- PyTorch
def _torch_models():
    import torch
    from torch import nn

    mlp = lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))  # noqa: E731

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 32, 5, padding=2), nn.Conv2d(32, 64, 5, padding=2)
            self.f1, self.f2, self.drop = nn.Linear(3136, 1024), nn.Linear(1024, 10), nn.Dropout(0.5)

        def forward(self, x):
            x = x.view(-1, 1, 28, 28)
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.f2(self.drop(torch.relu(self.f1(x.flatten(1)))))

    return torch, mlp, CNN


def torch_train_step(model, batch, device="cpu", capturable=False):
    """(torch, step): one forward/backward/Adam step of the model on fixed data on ``device``;
    the step returns the loss tensor (``capturable``: Adam that a CUDA graph can capture)."""
    torch, mlp, CNN = _torch_models()
    net = (mlp() if model == "mlp" else CNN()).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3 if model == "mlp" else 1e-4, capturable=capturable)
    x, y = (torch.from_numpy(a).to(device) for a in data(batch))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return torch, step


def make_torch(model, batch, threads=2):
    import torch

    torch.set_num_threads(threads)
    return torch_train_step(model, batch)[1]


# ----------------------------------------------------------------------------- TensorFlow
def make_tensorflow(model, batch, threads=2, xla=False):
    """The Keras model's step as a ``tf.function`` (``xla``: compiled by XLA, jit_compile=True)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    layers = tf.keras.layers
    if model == "mlp":
        net = tf.keras.Sequential([layers.Input((784,)), layers.Dense(256, "relu"), layers.Dense(128, "relu"), layers.Dense(10)])
    else:
        net = tf.keras.Sequential([
            layers.Input((784,)), layers.Reshape((28, 28, 1)),
            layers.Conv2D(32, 5, padding="same", activation="relu"), layers.MaxPool2D(2),
            layers.Conv2D(64, 5, padding="same", activation="relu"), layers.MaxPool2D(2),
            layers.Flatten(), layers.Dense(1024, "relu"), layers.Dropout(0.5), layers.Dense(10)])
    opt = tf.keras.optimizers.Adam(1e-3 if model == "mlp" else 1e-4)
    x, y = data(batch)
    x, y = tf.constant(x), tf.constant(y)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=xla)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, net(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))
        return loss

    return lambda: step().numpy()

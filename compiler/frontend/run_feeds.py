"""What one ``Session.run`` feeds: fed values converted and checked against their tensors'
static shapes (TF's feed errors), the part of the fed shapes that selects a compiled
signature, the run's batch size, and the values host feeders (``host_ops.py``: tf.data's
``get_next``) add to the feeds.
"""
from __future__ import annotations

import numpy as np

from ..ir.types import Sym
from .graph import Tensor
from .tensor_shape import TensorShape


def feed_array(tensor, value) -> np.ndarray:
    """Convert a fed value to the tensor's dtype and check it against the static shape."""
    if isinstance(value, Tensor):
        raise TypeError(f"The value of a feed cannot be a tf.Tensor object ({value.name}). "
                        "Acceptable feed values include Python scalars, strings, lists, numpy ndarrays.")
    arr = np.asarray(value)
    want = tensor.dtype
    if arr.dtype == object:
        raise ValueError(f"Cannot feed {tensor.name}: value is ragged or not numeric")
    if want.is_integer and np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"Cannot feed value of dtype {arr.dtype} to tensor '{tensor.name}' of dtype {want.name}")
    if want.is_bool and arr.dtype != np.bool_:
        raise ValueError(f"Cannot feed value of dtype {arr.dtype} to tensor '{tensor.name}' of dtype bool")
    arr = np.asarray(arr, dtype=want.np, order="C")
    shape = tensor.type.shape
    ok = shape is None or len(arr.shape) == len(shape) and all(
        d is None or (isinstance(d, Sym) and s % d.coef == 0) or d == s for d, s in zip(shape, arr.shape))
    if not ok:
        raise ValueError(f"Cannot feed value of shape {arr.shape} for Tensor '{tensor.name}', "
                         f"which has shape '{TensorShape(shape)}'")
    return arr


def shape_key(tensor, fed_shape) -> tuple:
    """The part of a fed shape that selects a compiled signature: every dim except the
    graph's batch dims (``'N'``), which one artifact serves at any size."""
    shape = tensor.type.shape
    if shape is None:
        return tuple(fed_shape)
    return tuple("N" if isinstance(d, Sym) else s for d, s in zip(shape, fed_shape))


def batch_size(feeds):
    """The batch size N of a run: the first fed batch dim's size (None without one)."""
    for t, arr in feeds.items():
        for d, s in zip(t.type.shape or (), arr.shape):
            if isinstance(d, Sym):
                return s // d.coef
    return None


class HostPull:
    """The feeders of one run (tf.data ``get_next``, initializers): calling it runs them
    once and adds what they feed (the iterator's next element) to ``feeds``."""

    def __init__(self, session, handlers, feeds):
        self.session, self.handlers, self.feeds = session, handlers, feeds
        self.tensors = [t for h in handlers for t in h.feeds if t not in feeds]
        self.done = not handlers

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        pulled = {}
        for handler in self.handlers:
            for tensor, value in handler.run(self.session, self.feeds).items():
                if tensor not in self.feeds:
                    pulled[tensor] = feed_array(tensor, value)
        self.feeds.update(pulled)

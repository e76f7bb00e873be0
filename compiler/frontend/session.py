"""tf.Session: runs fetches by lowering the needed subgraph to IR and executing it.

For now execution goes through the numpy reference interpreter; each distinct
(fetches, feeds) signature is lowered once and cached.  Variable values live in the
session (``self._state``), keyed by variable name, and are updated from the step's
state outputs.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..ir.from_graph import RNG_STATE, LoweringError, lower_graph
from ..ir.interpreter import run_function
from ..ir.types import Sym, shape_str
from .fetches import FetchMapper
from .graph import Operation, Tensor, get_default_graph

_local = threading.local()


def get_default_session():
    stack = getattr(_local, "stack", [])
    return stack[-1] if stack else None


class Session:
    """A TF1 session over one graph (``target`` and ``config`` are accepted for compatibility)."""

    def __init__(self, target="", graph=None, config=None):
        self.graph = graph or get_default_graph()
        self.config = config
        self._state: dict[str, np.ndarray] = {}
        self._cache: dict = {}
        self._closed = False
        self._default_ctx = None

    # --- context management -------------------------------------------------------------
    def as_default(self):
        return _session_context(self)

    def __enter__(self):
        self._graph_ctx = self.graph.as_default()
        self._graph_ctx.__enter__()
        self._default_ctx = self.as_default()
        self._default_ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._default_ctx.__exit__(*exc)
        self._graph_ctx.__exit__(*exc)
        self.close()

    def close(self):
        self._closed = True

    # --- variable storage (used by Saver and tests) -----------------------------------------
    def variable_value(self, name):
        if name not in self._state:
            raise ValueError(f"Attempting to use uninitialized value {name}")
        return self._state[name]

    def set_variable_value(self, name, value):
        self._state[name] = np.asarray(value)

    # --- run ------------------------------------------------------------------------------
    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        """Evaluate ``fetches`` (a tensor, op, name, or nested list/tuple/dict of them)."""
        if self._closed:
            raise RuntimeError("Attempted to use a closed Session.")
        mapper = FetchMapper(self.graph, fetches)
        feeds = self._convert_feeds(feed_dict or {})
        tensors = mapper.unique_tensors()
        targets = mapper.unique_ops()
        fed = sorted(feeds, key=lambda t: (t.op.id, t.name))
        key = (tuple(tensors), tuple(targets), tuple(fed))
        fn = self._cache.get(key)
        if fn is None:
            fn = lower_graph(tensors, targets, fed, name="session_run")
            self._cache[key] = fn
        state_in = {}
        for p in fn.state_in():
            if p.key == RNG_STATE and p.key not in self._state:
                self._state[p.key] = np.zeros((), np.int64)
            state_in[p.key] = self.variable_value(p.key)
        new_state, results = run_function(fn, state_in, {t.name: v for t, v in feeds.items()})
        self._state.update(new_state)
        return mapper.build([results[t.name] for t in tensors])

    def _convert_feeds(self, feed_dict):
        feeds = {}
        for key, value in feed_dict.items():
            tensor = self.graph.as_graph_element(key) if not isinstance(key, Tensor) else key
            if isinstance(tensor, Operation):
                raise TypeError(f"Cannot feed an Operation ({tensor.name}); feed its output tensor")
            if tensor.graph is not self.graph:
                raise ValueError(f"Cannot feed {tensor.name}: it is not an element of this session's graph")
            feeds[tensor] = _feed_array(tensor, value)
        return feeds


def _feed_array(tensor, value) -> np.ndarray:
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
    ok = len(arr.shape) == len(shape) and all(
        (isinstance(d, Sym) and s % d.coef == 0) or d == s for d, s in zip(shape, arr.shape))
    if not ok:
        dims = ",".join("?" if isinstance(d, Sym) else str(d) for d in shape)
        raise ValueError(f"Cannot feed value of shape {arr.shape} for Tensor '{tensor.name}', "
                         f"which has shape '({dims})'")
    return arr


class InteractiveSession(Session):
    """A session that installs itself as the default on construction."""

    def __init__(self, target="", graph=None, config=None):
        super().__init__(target, graph, config)
        self._ctx = self.as_default()
        self._ctx.__enter__()

    def close(self):
        super().close()
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


@contextlib.contextmanager
def _session_context(sess):
    if not hasattr(_local, "stack"):
        _local.stack = []
    _local.stack.append(sess)
    try:
        yield sess
    finally:
        _local.stack.pop()


__all__ = ["Session", "InteractiveSession", "get_default_session", "LoweringError", "shape_str"]

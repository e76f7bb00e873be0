"""Flattening nested ``Session.run`` fetches and rebuilding the results in the same structure."""
from __future__ import annotations

from .graph import Operation, Tensor


class FetchMapper:
    """Walks a fetch structure (tensor/op/name or nested list/tuple/namedtuple/dict)."""

    def __init__(self, graph, fetches):
        self.graph = graph
        self.structure = self._parse(fetches)
        self._tensors: list = []
        self._ops: list = []
        self._collect(self.structure)

    def _parse(self, f):
        if f is None:
            raise TypeError("Fetch argument None has invalid type <class 'NoneType'>")
        if isinstance(f, (Tensor, Operation)):
            if f.graph is not self.graph:
                raise ValueError(f"Fetch argument {f!r} is not an element of this graph.")
            return f
        if isinstance(f, str):
            try:
                return self.graph.as_graph_element(f)
            except KeyError as err:
                raise ValueError(f"Fetch argument {f!r} cannot be interpreted as a Tensor. ({err})") from None
        if isinstance(f, dict):
            return {k: self._parse(v) for k, v in f.items()}
        if isinstance(f, tuple) and hasattr(f, "_fields"):
            return type(f)(*[self._parse(v) for v in f])
        if isinstance(f, (list, tuple)):
            return type(f)(self._parse(v) for v in f)
        if hasattr(f, "op") and isinstance(getattr(f, "op"), Operation) and hasattr(f, "_as_tensor"):
            return f._as_tensor()
        raise TypeError(f"Fetch argument {f!r} has invalid type {type(f)}, must be a string or Tensor.")

    def _collect(self, s):
        if isinstance(s, Tensor):
            if s not in self._tensors:
                self._tensors.append(s)
        elif isinstance(s, Operation):
            if s not in self._ops:
                self._ops.append(s)
        elif isinstance(s, dict):
            for v in s.values():
                self._collect(v)
        else:
            for v in s:
                self._collect(v)

    def unique_tensors(self):
        return list(self._tensors)

    def unique_ops(self):
        return list(self._ops)

    def build(self, values):
        by_tensor = dict(zip(self._tensors, values))
        return self._rebuild(self.structure, by_tensor)

    def _rebuild(self, s, by_tensor):
        if isinstance(s, Tensor):
            value = by_tensor[s]
            if isinstance(value, bytes):  # a host op's value (a serialized Summary)
                return value
            return value[()] if value.ndim == 0 else value.copy()
        if isinstance(s, Operation):
            return None
        if isinstance(s, dict):
            return {k: self._rebuild(v, by_tensor) for k, v in s.items()}
        if isinstance(s, tuple) and hasattr(s, "_fields"):
            return type(s)(*[self._rebuild(v, by_tensor) for v in s])
        return type(s)(self._rebuild(v, by_tensor) for v in s)

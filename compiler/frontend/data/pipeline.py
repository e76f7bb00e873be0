"""The host pipeline's building blocks: a node of a dataset's graph and the context of one pass.

A node has an element ``structure`` (nested :class:`TensorSpec`) and yields elements as
tuples of numpy arrays (the flattened components) from ``elements(ctx)``.  ``ctx`` is one
iterator initialization: the values of the graph tensors the pipeline captured, computed
by the Session when the iterator starts, and per-node state that lives as long as that
pass (a cache's contents, a shuffle's epoch count and seed entropy).
"""
from __future__ import annotations


from .structure import flatten


class Context:
    """One iterator initialization: captured tensor values and per-node pass state."""

    def __init__(self, values=None):
        self.values = dict(values or {})  # captured graph Tensor -> numpy value
        self.state: dict = {}  # node -> its state for this pass

    def value(self, tensor):
        return self.values[tensor]

    def entropy(self, node) -> int:
        """Fresh random bits for an unseeded node, drawn once per initialization."""
        import secrets  # here: importing it costs every frontend import ~5 ms

        return self.state.setdefault(("entropy", node), secrets.randbits(63))


class Node:
    """A stage of the host pipeline; subclasses define ``elements(ctx)``."""

    def __init__(self, structure, inputs=()):
        self.structure = structure
        self.inputs = tuple(inputs)

    @property
    def specs(self) -> list:
        """The flattened TensorSpecs of an element."""
        return flatten(self.structure)

    def own_captured(self) -> list:
        """Graph tensors this node reads (evaluated when an iterator starts)."""
        return []

    def captured(self) -> list:
        """Graph tensors this node and its inputs read, each once."""
        found = []
        for node in self.inputs:
            found += [t for t in node.captured() if t not in found]
        return found + [t for t in self.own_captured() if t not in found]

    def elements(self, ctx):
        raise NotImplementedError(f"{type(self).__name__} does not define elements()")

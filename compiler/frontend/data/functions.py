"""``map`` and ``filter`` functions: traced once into graph ops, run by Kiln's interpreter.

The function is called once on placeholders shaped like a dataset element, in a graph of
its own (as TF traces it into a function), so its ops are Kiln's ops with Kiln's
semantics; each element (or batch, when the map follows ``batch``) is then a feed to a
private interpreter Session over that graph.  A tuple element is unpacked into positional
arguments (``lambda x, y: ...``), any other structure is passed as one argument, as in TF.
Random ops draw new values on every call (the private session's step counter advances).
"""
from __future__ import annotations

import numpy as np

from ..convert import convert_to_tensor
from ..graph import Graph, Tensor
from ..session import Session
from .structure import TensorSpec, flatten, ir_dims, pack, to_tuple


class TracedFunction:
    """A Python function over dataset elements, traced into its own graph."""

    def __init__(self, fn, structure, what: str):
        self.what = what
        self.graph = Graph()
        with self.graph.as_default():
            self.inputs = [self._placeholder(spec, i) for i, spec in enumerate(flatten(structure))]
            args = pack(structure, self.inputs)
            result = self._call(fn, args)
            outputs = to_tuple(result)
            self.outputs = [self._as_tensor(v) for v in flatten(outputs)]
        self.structure = pack(outputs, [TensorSpec.from_tensor(t) for t in self.outputs])
        self._session = None

    def _placeholder(self, spec, index) -> Tensor:
        dims = ir_dims(spec.dims, f"{self.what}: argument component {index}")
        op = self.graph.create_op("placeholder", (), {"dtype": spec.dtype, "shape": dims}, f"args_{index}")
        return op.outputs[0]

    def _call(self, fn, args):
        """Call ``fn`` as tf.data does; a tensor of the outer graph gets a clear message."""
        try:
            return fn(*args) if type(args) is tuple else fn(args)
        except ValueError as err:
            if "must be from the same graph" not in str(err):
                raise
            raise ValueError(f"{self.what}: the function uses a tensor of the enclosing graph ({err}). "
                             "Kiln traces dataset functions into a graph of their own: use Python or "
                             "numpy values, or tensors the function itself creates") from None

    def _as_tensor(self, value) -> Tensor:
        tensor = value if isinstance(value, Tensor) else convert_to_tensor(value)
        if tensor.graph is not self.graph:
            raise ValueError(f"{self.what}: the function returned {tensor.name}, a tensor of the "
                             "enclosing graph; Kiln traces dataset functions into a graph of their own")
        return tensor

    def __call__(self, components) -> list:
        """Run the traced ops on one element's components; the outputs' flat values."""
        if self._session is None:
            self._session = Session(graph=self.graph, config={"backend": "interpreter"})
        values = self._session.run(self.outputs, feed_dict=dict(zip(self.inputs, components)))
        return [np.asarray(v) for v in values]

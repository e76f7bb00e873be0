"""``map``, ``filter``, ``flat_map`` and ``interleave`` functions: traced once into graph ops,
run by Kiln's interpreter.

The function is called once on placeholders shaped like a dataset element, in a graph of
its own (as TF traces it into a function), so its ops are Kiln's ops with Kiln's
semantics; each element (or batch, when the map follows ``batch``) is then a feed to a
private interpreter Session over that graph.  A tuple element is unpacked into positional
arguments (``lambda x, y: ...``), any other structure is passed as one argument, as in TF.
Random ops draw new values on every call (the private session's step counter advances);
the graph takes the enclosing graph's seed (``tf.set_random_seed``), so they repeat from
run to run when it is set.
"""
from __future__ import annotations

import numpy as np

from ..convert import convert_to_tensor
from ..graph import Graph, Tensor, get_default_graph
from ..session import Session
from .structure import TensorSpec, flatten, ir_dims, pack, to_tuple


class TracedFunction:
    """A Python function over dataset elements, traced into its own graph."""

    def __init__(self, fn, structure, what: str):
        self.what = what
        self.graph = Graph()
        self.graph.seed = get_default_graph().seed
        self._session = None
        with self.graph.as_default():
            self.inputs = [self._placeholder(spec, i) for i, spec in enumerate(flatten(structure))]
            self._take_result(self._call(fn, pack(structure, self.inputs)))

    def _take_result(self, result):
        """Keep the function's outputs (lists become tuples) and their specs."""
        outputs = to_tuple(result)
        self.outputs = [self._as_tensor(v) for v in flatten(outputs)]
        self.structure = pack(outputs, [TensorSpec.from_tensor(t) for t in self.outputs])

    def _placeholder(self, spec, index) -> Tensor:
        """The input standing for component ``index`` of an element."""
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
        """An output as a tensor of this graph (Python values become constants)."""
        tensor = value if isinstance(value, Tensor) else convert_to_tensor(value)
        if tensor.graph is not self.graph:
            raise ValueError(f"{self.what}: the function returned {tensor.name}, a tensor of the "
                             "enclosing graph; Kiln traces dataset functions into a graph of their own")
        return tensor

    def _run(self, tensors, components) -> list:
        """The values of ``tensors`` with the element's ``components`` fed to the inputs."""
        if self._session is None:
            self._session = Session(graph=self.graph, config={"backend": "interpreter"})
        values = self._session.run(list(tensors), feed_dict=dict(zip(self.inputs, components)))
        return [np.asarray(v) for v in values]

    def __call__(self, components) -> list:
        """Run the traced ops on one element's components; the outputs' flat values."""
        return self._run(self.outputs, components)


class TracedDatasetFunction(TracedFunction):
    """A ``flat_map``/``interleave`` function: it returns a Dataset built from the element's
    tensors; calling it gives the values that dataset captured, for one element."""

    def _take_result(self, result):
        """Keep the returned dataset; it may capture only tensors of this graph."""
        node = getattr(result, "_node", None)
        if node is None:
            raise TypeError(f"{self.what}: `map_func` must return a `Dataset` object. Got {type(result)}")
        for t in node.captured():
            if t.graph is not self.graph:
                raise ValueError(f"{self.what}: the returned dataset uses {t.name}, a tensor of the enclosing "
                                 "graph; Kiln traces dataset functions into a graph of their own")
        self.node = node
        self.structure = node.structure

    def __call__(self, components) -> dict:
        """{captured tensor: value} of the returned dataset for one element."""
        captured = self.node.captured()
        return dict(zip(captured, self._run(captured, components))) if captured else {}

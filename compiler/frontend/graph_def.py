"""A Kiln graph as a ``GraphDef`` protobuf (TensorBoard's proto definitions), for the graph
event of ``tf.summary.FileWriter`` and ``Graph.as_graph_def()``.

One ``NodeDef`` per op, in creation order: ``name``, ``op`` (Kiln's op kind, e.g. ``matmul``,
``scalar_summary``), ``input`` (producer op names; ``^name`` for control inputs), ``device``
and ``attr``: the op's attributes that have a protobuf form (dtypes, numbers, strings, lists
of them, shapes; small numpy constants as tensors, larger ones as dtype and shape only),
plus ``dtype`` (when the op has none) and ``_output_shapes`` of its output (TensorBoard labels
edges with them; the batch dim is -1).  Attributes without one (regions of control flow,
callables) are left out.
"""
from __future__ import annotations

import numpy as np

from runtime.events import proto

from ..ir.types import DType, Sym, as_dtype, is_static

_ENUM = {"float16": "DT_HALF", "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int8": "DT_INT8",
         "uint8": "DT_UINT8", "int32": "DT_INT32", "int64": "DT_INT64", "bool": "DT_BOOL",
         "string": "DT_STRING"}
_MAX_CONTENT = 4096  # bytes of a numpy attribute copied into the GraphDef


def graph_def(graph):
    """The ``GraphDef`` of every op in ``graph`` (module doc)."""
    graph_pb2, node_pb2 = proto("graph"), proto("node_def")
    nodes = []
    for op in graph.get_operations():
        node = node_pb2.NodeDef(name=op.name, op=op.type, device=op.device or "",
                                input=[t.op.name for t in op.inputs] + [f"^{c.name}" for c in op.control_inputs])
        for key, value in op.attrs.items():
            attr = attr_value(value, key)
            if attr is not None:
                node.attr[key].CopyFrom(attr)
        if op.outputs:
            out = op.outputs[0]
            if "dtype" not in op.attrs:
                node.attr["dtype"].CopyFrom(attr_value(out.dtype))
            shapes = proto("attr_value").AttrValue.ListValue(shape=[_shape(out.type.shape)])
            node.attr["_output_shapes"].list.CopyFrom(shapes)
        nodes.append(node)
    return graph_pb2.GraphDef(node=nodes)


def attr_value(value, key=""):
    """``value`` as an ``AttrValue``, or None when it has no protobuf form."""
    AttrValue = proto("attr_value").AttrValue
    if isinstance(value, DType):
        return AttrValue(type=_dtype_enum(value))
    if isinstance(value, (bool, np.bool_)):
        return AttrValue(b=bool(value))
    if isinstance(value, (int, np.integer)):
        return AttrValue(i=int(value))
    if isinstance(value, (float, np.floating)):
        return AttrValue(f=float(value))
    if isinstance(value, (str, bytes)):
        return AttrValue(s=value.encode() if isinstance(value, str) else value)
    if isinstance(value, np.ndarray):
        tensor = _tensor(value)
        return None if tensor is None else AttrValue(tensor=tensor)
    if isinstance(value, (tuple, list)):
        return _list_value(list(value), key)
    return None


def _list_value(items, key):
    AttrValue = proto("attr_value").AttrValue
    if key == "shape" or (items and any(isinstance(d, Sym) for d in items)):
        if all(isinstance(d, (int, np.integer, Sym)) for d in items):
            return AttrValue(shape=_shape(items))
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        return AttrValue(list=AttrValue.ListValue(i=[int(v) for v in items]))
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in items):
        return AttrValue(list=AttrValue.ListValue(f=[float(v) for v in items]))
    if all(isinstance(v, str) for v in items):
        return AttrValue(list=AttrValue.ListValue(s=[v.encode() for v in items]))
    return None


def _shape(dims):
    """A TensorShapeProto: unknown rank (dims None), unknown and batch dims as -1."""
    shape_pb2 = proto("tensor_shape")
    if dims is None:
        return shape_pb2.TensorShapeProto(unknown_rank=True)
    return shape_pb2.TensorShapeProto(dim=[shape_pb2.TensorShapeProto.Dim(size=int(d) if is_static(d) else -1)
                                           for d in dims])


def _dtype_enum(dtype: DType) -> int:
    return proto("types").DataType.Value(_ENUM[dtype.name])


def _tensor(array: np.ndarray):
    """A ``TensorProto`` of ``array``: content included when it is small."""
    try:
        dtype = as_dtype(array.dtype)
    except TypeError:
        return None
    content = np.ascontiguousarray(array).tobytes() if array.nbytes <= _MAX_CONTENT else b""
    return proto("tensor").TensorProto(dtype=_dtype_enum(dtype), tensor_shape=_shape(array.shape),
                                       tensor_content=content)

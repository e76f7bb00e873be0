"""Graph-level API: graphs, sessions, placeholders, constants, scopes, grouping, dtypes."""
from __future__ import annotations

import contextlib

from ..ir import types as T
from ..ir.types import N, as_dtype
from .convert import constant, convert_to_tensor
from .gradients import gradients
from .graph import (Graph, GraphKeys, Operation, Tensor, TensorShape, get_default_graph,
                    make_op, reset_default_graph)
from .session import InteractiveSession, Session, get_default_session
from .tensor_shape import dimension_value


def static_shape(shape, what="placeholder", allow_batch=True, allow_unknown=False):
    """Convert a user shape to graph dims: a leading None becomes the batch dim N.

    With ``allow_unknown`` (placeholders) other None dims stay None (known at the feed) and
    a shape of None is an unknown rank; otherwise they are refused.
    """
    if shape is None or isinstance(shape, TensorShape) and shape.dims is None:
        if allow_unknown:
            return None
        raise ValueError(f"{what}: Kiln needs a known rank; give a shape such as [None, 784]")
    if isinstance(shape, TensorShape):
        shape = shape.as_list()
    if isinstance(shape, int):
        shape = [shape]
    dims = []
    for i, d in enumerate(shape):
        if d is None or (hasattr(d, "value") and d.value is None):
            if i == 0 and allow_batch:
                dims.append(N)
            elif allow_unknown:
                dims.append(None)
            else:
                raise ValueError(f"{what}: only the leading dimension may be None (the batch dim); got shape {list(shape)}")
        elif isinstance(d, T.Sym):
            dims.append(d)
        else:
            if int(d) < 0:
                raise ValueError(f"{what}: dimensions must be >= 0, got {list(shape)}")
            dims.append(int(d))
    return tuple(dims)


def placeholder(dtype, shape=None, name=None):
    """tf.placeholder: a feed.  A leading None dim is the symbolic batch size N; other None
    dims, or no shape at all (unknown rank), are known when it is fed (see docs/graph.md)."""
    dtype = as_dtype(dtype)
    dims = static_shape(shape, f"placeholder '{name or 'Placeholder'}'", allow_unknown=True)
    graph = get_default_graph()
    op = graph.create_op("placeholder", (), {"dtype": dtype, "shape": dims}, name or "Placeholder",
                         ttype=T.TensorType(dtype, dims))
    return op.outputs[0]


def broadcast_static_shape(shape_x, shape_y):
    """tf.broadcast_static_shape: the broadcast of two TensorShapes (unknown dims as in TF)."""
    from ..ir.types import ShapeError
    from .shape_inference import broadcast_partial
    from .tensor_shape import as_shape, graph_dims

    try:
        return TensorShape(broadcast_partial(graph_dims(as_shape(shape_x)), graph_dims(as_shape(shape_y))))
    except ShapeError:
        raise ValueError(f"Incompatible shapes for broadcasting: {as_shape(shape_x)} and {as_shape(shape_y)}") from None


def identity(input, name=None):
    return make_op("identity", [convert_to_tensor(input)], name=name or "Identity")


def stop_gradient(input, name=None):
    return make_op("stop_gradient", [convert_to_tensor(input)], name=name or "StopGradient")


def no_op(name=None):
    return get_default_graph().create_op("no_op", (), {}, name or "NoOp", has_output=False)


def group(*inputs, name=None):
    """tf.group: an op that runs all inputs (nested lists allowed) and outputs nothing."""
    flat = []

    def walk(x):
        if isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif x is not None:
            flat.append(x.op if isinstance(x, Tensor) else x)

    walk(inputs)
    graph = flat[0].graph if flat else get_default_graph()
    with graph.control_dependencies(flat):
        return graph.create_op("no_op", (), {}, name or "group_deps", has_output=False)


def tuple_(tensors, name=None, control_inputs=None):
    """tf.tuple: each output waits for all tensors (and control_inputs)."""
    deps = [t for t in tensors if t is not None] + list(control_inputs or [])
    graph = get_default_graph()
    with graph.control_dependencies(deps):
        return [None if t is None else identity(t) for t in tensors]


def name_scope(name, default_name=None, values=None):
    return get_default_graph().name_scope(name if name is not None else default_name)


def control_dependencies(control_inputs):
    return get_default_graph().control_dependencies(control_inputs)


def device(name):
    return get_default_graph().device(name)


def set_random_seed(seed):
    get_default_graph().seed = None if seed is None else int(seed)


def get_collection(key, scope=None):
    return get_default_graph().get_collection(key, scope)


def get_collection_ref(key):
    return get_default_graph().get_collection_ref(key)


def add_to_collection(name, value):
    get_default_graph().add_to_collection(name, value)


def add_to_collections(names, value):
    get_default_graph().add_to_collections(names, value)


@contextlib.contextmanager
def _nullcontext(*_a, **_k):
    yield


TF_API = {
    "tf": {
        "Graph": Graph, "Operation": Operation, "Tensor": Tensor, "TensorShape": TensorShape,
        "broadcast_static_shape": broadcast_static_shape, "dimension_value": dimension_value,
        "GraphKeys": GraphKeys, "Session": Session, "InteractiveSession": InteractiveSession,
        "get_default_graph": get_default_graph, "reset_default_graph": reset_default_graph,
        "get_default_session": get_default_session,
        "placeholder": placeholder, "constant": constant, "convert_to_tensor": convert_to_tensor,
        "identity": identity, "stop_gradient": stop_gradient, "no_op": no_op, "group": group,
        "tuple": tuple_, "name_scope": name_scope, "control_dependencies": control_dependencies,
        "device": device, "set_random_seed": set_random_seed, "gradients": gradients,
        "get_collection": get_collection, "get_collection_ref": get_collection_ref,
        "add_to_collection": add_to_collection, "add_to_collections": add_to_collections,
        "as_dtype": as_dtype, "DType": T.DType,
        "float16": T.float16, "half": T.float16, "float32": T.float32, "float64": T.float64,
        "double": T.float64, "int8": T.int8, "uint8": T.uint8, "int16": T.int16, "uint16": T.uint16,
        "int32": T.int32, "int64": T.int64, "bool": T.bool_,
    },
    "tf.dtypes": {"as_dtype": as_dtype, "float16": T.float16, "float32": T.float32, "float64": T.float64,
                  "int8": T.int8, "uint8": T.uint8, "int16": T.int16, "uint16": T.uint16,
                  "int32": T.int32, "int64": T.int64, "bool": T.bool_},
}

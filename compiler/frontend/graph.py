"""Graph, Operation and Tensor: the TF1 dataflow graph a user builds.

Every op is created through ``Graph.create_op``, which runs the op kind's type rule from
the registry (``compiler/ir/opdef.py``) so a shape or dtype mismatch fails at construction
with the op's type and name in the message.  Most ops have exactly one output tensor (or
none for control-only ops such as ``no_op``); the control-flow ops (``cond``, ``while``,
see control_flow.py) declare several (``ttypes=``), named ``op:0``, ``op:1``, ...  Ops built
while a body graph (``body_graph.BodyGraph``) is the default graph go into that graph.
"""
from __future__ import annotations

import contextlib
import re
import threading


from ..ir.types import DType, ShapeError, Sym, TensorType, shape_str
from .op_source import caller_location
from .shape_inference import graph_infer, merge_shapes
from .tensor_shape import TensorShape, graph_dims


class Tensor:
    """The single output of an Operation.  Supports TF1's operator overloads."""

    def __init__(self, op: "Operation", ttype: TensorType, index: int = 0):
        self.op = op
        self.type = ttype
        self._index = index

    # --- TF1 attributes -------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.op.name}:{self.value_index}"

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> TensorShape:
        return TensorShape(self.type.shape)

    def get_shape(self) -> TensorShape:
        return self.shape

    def set_shape(self, shape):
        """TF1 ``set_shape``: merge ``shape`` into this tensor's static shape (TF's merge
        rules; a conflicting shape is a ValueError).  Lowering checks the fed shapes against
        the graph's, so a wrong claim fails there, not silently."""
        new = graph_dims(shape)
        try:
            merged = merge_shapes(self.type.shape, new)
        except ShapeError:
            raise ValueError(f"Tensor {self.name}: shape {TensorShape(self.type.shape)} is not compatible "
                             f"with the shape {TensorShape(new)} given to set_shape") from None
        if merged is not None and self.type.shape is not None:  # keep the batch dim where TF has '?'
            merged = tuple(old if isinstance(old, Sym) and m is None else m for old, m in zip(self.type.shape, merged))
        self.type = TensorType(self.type.dtype, merged)

    @property
    def graph(self) -> "Graph":
        return self.op.graph

    @property
    def value_index(self) -> int:
        return self._index

    def consumers(self):
        return [op for op in self.graph.get_operations() if self in op.inputs]

    def eval(self, feed_dict=None, session=None):
        from .session import get_default_session

        sess = session or get_default_session()
        if sess is None:
            raise ValueError("Cannot evaluate tensor using `eval()`: No default session is registered. "
                             "Use `with sess.as_default()` or pass an explicit session to `eval(session=sess)`")
        return sess.run(self, feed_dict=feed_dict)

    def __repr__(self):
        return f"<tf.Tensor '{self.name}' shape={self.shape} dtype={self.dtype.name}>"

    def __hash__(self):
        return id(self)

    def __bool__(self):
        raise TypeError("Using a `tf.Tensor` as a Python `bool` is not allowed. "
                        "Use `if t is not None:` instead of `if t:` to test if a tensor is defined.")

    def __iter__(self):
        dims = self.type.shape
        if not dims or not isinstance(dims[0], int):
            raise TypeError(f"Tensor {self.name} of shape {shape_str(dims)} is not iterable (first dim must be static).")
        return iter([self[i] for i in range(dims[0])])

    def __len__(self):
        raise TypeError(f"len is not well defined for symbolic Tensors ({self.name}). Please call `x.shape` rather than `len(x)`.")

    __array_priority__ = 100


class Operation:
    """A node of the graph: kind (IR op name), inputs, attrs, control inputs, its outputs.

    ``ttype`` is the one output's type, None (no output) or a list of types (one output each).
    """

    host_handler = None  # set by host_ops.register_feeder for ops the Session runs on the host (tf.data)

    def __init__(self, graph, kind, name, inputs, attrs, control_inputs, ttype, device):
        self.graph = graph
        self.type = kind
        self.name = name
        self.inputs = list(inputs)
        self.attrs = dict(attrs)
        self.control_inputs = list(control_inputs)
        self.device = device
        self.id = graph._next_id()
        self.source = caller_location()  # (file, line) of the user's code that made it (op_source.py)
        types = [] if ttype is None else ttype if isinstance(ttype, list) else [ttype]
        self.outputs = [Tensor(self, t, i) for i, t in enumerate(types)]

    @property
    def node_def(self):
        return {"name": self.name, "op": self.type, "attr": self.attrs}

    def get_attr(self, name):
        return self.attrs[name]

    def run(self, feed_dict=None, session=None):
        from .session import get_default_session

        sess = session or get_default_session()
        if sess is None:
            raise ValueError("Cannot execute operation using `run()`: No default session is registered.")
        sess.run(self, feed_dict=feed_dict)

    def __repr__(self):
        return f"<tf.Operation '{self.name}' type={self.type}>"


class GraphKeys:
    GLOBAL_VARIABLES = "variables"
    LOCAL_VARIABLES = "local_variables"
    TRAINABLE_VARIABLES = "trainable_variables"
    MOVING_AVERAGE_VARIABLES = "moving_average_variables"
    REGULARIZATION_LOSSES = "regularization_losses"
    LOSSES = "losses"
    SUMMARIES = "summaries"
    TRAIN_OP = "train_op"
    UPDATE_OPS = "update_ops"
    METRIC_VARIABLES = "metric_variables"
    GLOBAL_STEP = "global_step"
    MODEL_VARIABLES = "model_variables"
    SAVERS = "savers"


_VALID_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/>]*$")


class Graph:
    """A TF1 graph: ops in creation order, name/variable scopes, collections, control deps."""

    def __init__(self):
        self._ops: list[Operation] = []
        self._ops_by_name: dict[str, Operation] = {}
        self._names_in_use: dict[str, int] = {}
        self._id_counter = 0
        self._name_stack = ""
        self._control_stack: list[list[Operation]] = []
        self._device_stack: list[str] = []
        self._collections: dict[str, list] = {}
        self.seed = None
        self._var_scope_stack = []  # managed by variables.variable_scope
        self._variables_by_name: dict = {}  # get_variable store
        self._finalized = False
        self._lock = threading.RLock()

    # --- identity ------------------------------------------------------------------
    def _next_id(self) -> int:
        self._id_counter += 1
        return self._id_counter

    def as_default(self):
        return _default_graph_stack.context(self)

    def finalize(self):
        self._finalized = True

    @property
    def finalized(self):
        return self._finalized

    def get_operations(self):
        return list(self._ops)

    def as_graph_def(self, from_version=None, add_shapes=False):
        """The graph as a ``GraphDef`` protobuf (TensorBoard's; see graph_def.py)."""
        from .graph_def import graph_def

        return graph_def(self)

    def get_operation_by_name(self, name):
        try:
            return self._ops_by_name[name]
        except KeyError:
            raise KeyError(f"The name '{name}' refers to an Operation not in the graph.") from None

    def get_tensor_by_name(self, name):
        op_name, _, index = name.partition(":")
        if not index:
            raise ValueError(f"The name '{name}' looks like an (invalid) Operation name, not a Tensor. Tensor names must be of the form \"<op_name>:<output_index>\".")
        op = self.get_operation_by_name(op_name)
        if int(index) >= len(op.outputs):
            raise KeyError(f"The name '{name}' refers to a Tensor which does not exist. The operation, '{op_name}', exists but only has {len(op.outputs)} outputs.")
        return op.outputs[int(index)]

    def as_graph_element(self, obj):
        if isinstance(obj, (Tensor, Operation)):
            return obj
        if isinstance(obj, str):
            return self.get_tensor_by_name(obj) if ":" in obj else self.get_operation_by_name(obj)
        raise TypeError(f"Can not convert a {type(obj).__name__} into a Tensor or Operation.")

    # --- names -------------------------------------------------------------------
    def unique_name(self, name: str, mark_as_used: bool = True) -> str:
        full = f"{self._name_stack}/{name}" if self._name_stack else name
        key = full.lower()
        count = self._names_in_use.get(key, 0)
        if mark_as_used:
            self._names_in_use[key] = count + 1
        if count:
            base = full
            while True:
                full = f"{base}_{count}"
                if full.lower() not in self._names_in_use:
                    break
                count += 1
            if mark_as_used:
                self._names_in_use[full.lower()] = 1
        return full

    def get_name_scope(self) -> str:
        return self._name_stack

    @contextlib.contextmanager
    def name_scope(self, name):
        """Open a name scope.  A name ending in '/' re-enters an existing scope as is."""
        old = self._name_stack
        if name is None or name == "":
            new = ""
        elif name.endswith("/"):
            new = name[:-1]
        else:
            if not _VALID_NAME.match(name):
                raise ValueError(f"'{name}' is not a valid scope name")
            new = self.unique_name(name)
        self._name_stack = new
        try:
            yield (new + "/") if new else ""
        finally:
            self._name_stack = old

    # --- control dependencies and devices --------------------------------------------
    @contextlib.contextmanager
    def control_dependencies(self, control_inputs):
        if control_inputs is None:
            saved, self._control_stack = self._control_stack, []
            try:
                yield
            finally:
                self._control_stack = saved
            return
        ops = []
        for c in control_inputs:
            if isinstance(c, Tensor):
                c = c.op
            if not isinstance(c, Operation):
                raise TypeError(f"Control input must be an Operation or a Tensor: {c!r}")
            ops.append(c)
        self._control_stack.append(ops)
        try:
            yield
        finally:
            self._control_stack.pop()

    @contextlib.contextmanager
    def device(self, name):
        self._device_stack.append(name or "")
        try:
            yield
        finally:
            self._device_stack.pop()

    # --- collections ------------------------------------------------------------------
    def add_to_collection(self, name, value):
        self._collections.setdefault(name, []).append(value)

    def add_to_collections(self, names, value):
        for name in ([names] if isinstance(names, str) else names):
            self.add_to_collection(name, value)

    def get_collection(self, name, scope=None):
        items = self._collections.get(name, [])
        if scope is None:
            return list(items)
        pattern = re.compile(scope)
        return [i for i in items if pattern.match(getattr(i, "name", "") or "")]

    def get_collection_ref(self, name):
        return self._collections.setdefault(name, [])

    def get_all_collection_keys(self):
        return list(self._collections)

    def clear_collection(self, name):
        self._collections.pop(name, None)

    # --- op creation --------------------------------------------------------------------
    def create_op(self, kind: str, inputs=(), attrs=None, name=None, *, has_output=True, ttype=None,
                  exact_name=False) -> Operation:
        """Create an op; its type comes from the registry rule (or ``ttype`` for graph-only ops;
        a list of types for an op with several outputs).

        ``exact_name`` takes ``name`` as the full op name (variables: their scope-given name).
        """
        if self._finalized:
            raise RuntimeError("Graph is finalized and cannot be modified.")
        attrs = dict(attrs or {})
        for t in inputs:
            if not isinstance(t, Tensor):
                raise TypeError(f"{kind}: input {t!r} is not a Tensor")
            if t.graph is not self:
                raise ValueError(f"{kind}: Tensor {t.name} must be from the same graph as the op being created.")
        if exact_name:
            if name in self._ops_by_name:
                raise ValueError(f"an op named '{name}' already exists in the graph")
            op_name = name
            self._names_in_use.setdefault(name.lower(), 1)
        else:
            op_name = self.unique_name(name or _default_name(kind))
        if has_output and ttype is None:
            try:
                ttype = graph_infer(kind, [t.type for t in inputs], attrs)
            except ShapeError as err:
                shapes = ", ".join(f"{t.name}: {t.type}" for t in inputs)
                raise ValueError(f"{kind} '{op_name}': {err} (inputs: {shapes})") from None
        control = [c for group in self._control_stack for c in group]
        device = self._device_stack[-1] if self._device_stack else ""
        op = Operation(self, kind, op_name, inputs, attrs, control, ttype if has_output else None, device)
        with self._lock:
            self._ops.append(op)
            self._ops_by_name[op_name] = op
        return op


def _default_name(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


class _DefaultGraphStack(threading.local):
    def __init__(self):
        super().__init__()
        self.stack = []
        self.global_default = None

    def get(self) -> Graph:
        if self.stack:
            return self.stack[-1]
        if self.global_default is None:
            self.global_default = Graph()
        return self.global_default

    @contextlib.contextmanager
    def context(self, graph):
        self.stack.append(graph)
        try:
            yield graph
        finally:
            self.stack.pop()

    def reset(self):
        if self.stack:
            raise AssertionError("Do not use tf.reset_default_graph() to clear nested graphs.")
        self.global_default = Graph()


_default_graph_stack = _DefaultGraphStack()


def get_default_graph() -> Graph:
    return _default_graph_stack.get()


def reset_default_graph():
    _default_graph_stack.reset()


def make_op(kind, inputs=(), attrs=None, name=None) -> Tensor:
    """Create an op in the inputs' graph (or the default graph) and return its output tensor."""
    return graph_for(inputs).create_op(kind, inputs, attrs, name).outputs[0]


def graph_for(inputs) -> Graph:
    """The graph a new op over ``inputs`` goes into: the inputs' graph, or the default graph
    when that is a body graph nested in it (the op then captures the outer inputs)."""
    default = get_default_graph()
    if not inputs:
        return default
    graph = inputs[0].graph
    return default if graph in getattr(default, "outer_graphs", ()) else graph


def describe(t: Tensor) -> str:
    return f"{t.name} {t.type}"

"""Body graphs: the graphs a ``tf.cond`` branch or a ``tf.while_loop`` cond/body is traced into.

A ``BodyGraph`` is a ``Graph`` nested in an outer graph (like TF2's FuncGraph).  While it is
the default graph, every op the user's function builds goes into it; an op that reads a
tensor of an enclosing graph *captures* it: the body gets a placeholder standing for that
tensor (``captures``: outer tensor -> placeholder), and the control-flow op lists the outer
tensor among its inputs, so dependencies, lowering and gradients see ordinary data edges.
A variable read inside a body is such a capture; ``var_name`` follows a capture back to the
variable, which is how lowering knows an ``assign`` in a branch writes that variable.

Names are shared with the outer graph (ops in a branch are named ``cond/...`` as in TF),
and so are collections and the variable store.  ``tf.get_variable``/``tf.Variable`` called
inside a body make the variable in the outermost graph (``root``; variables.py), so a
variable op reaching ``create_op`` here is a bug and is refused.  Control dependencies on
ops of an enclosing graph are hoisted onto the control-flow op (``outer_control``).

A while loop's cond and body (``loop=True``) may have one more input, ``iteration``: an
int64 placeholder for the number of the current iteration (0 for the first), made on first
use (``iteration_input``) and kept out of ``inputs``: no loop variable carries it in the
graph; lowering counts the iterations, and the loop's gradient binds it to the forward
iteration it replays.  Random ops key their draws by it (ops/random_ops.py ``rng_step``).
"""
from __future__ import annotations

from ..ir.types import TensorType, int64
from .graph import Graph, Operation, Tensor

LOOP_VAR = "loop_var"  # the ``role`` of a placeholder standing for a loop variable


class BodyGraph(Graph):
    """A graph traced from one function of a control-flow op; see the module doc."""

    def __init__(self, outer: Graph, name: str, loop: bool = False):
        super().__init__()
        self.outer = outer
        self.outer_graphs = (outer,) + tuple(getattr(outer, "outer_graphs", ()))
        self.root = self.outer_graphs[-1]
        self.body_name = name
        self._names_in_use = outer._names_in_use
        self._name_stack = outer._name_stack
        self._collections = self.root._collections
        self._variables_by_name = self.root._variables_by_name
        self._var_scope_stack = outer._var_scope_stack
        self._device_stack = list(outer._device_stack)
        self.seed = self.root.seed
        self._id_counter = self.root._id_counter  # ids are the root's (``_next_id``)
        self.captures: dict = {}  # outer Tensor -> placeholder Tensor in this graph
        self.capture_source: dict = {}  # placeholder -> outer Tensor
        self.inputs: list = []  # placeholders in order: loop variables first, then captures
        self.outer_control: list = []  # control inputs on ops of enclosing graphs
        self.loop = loop  # a while loop's cond or body: runs once per iteration
        self.iteration = None  # the iteration number's placeholder, once used (module doc)
        self.rng_key = None  # the step random ops here are keyed by (ops/random_ops.py)

    def _next_id(self) -> int:
        """Op ids come from the outermost graph's counter, as if the body's ops were in it (as
        in TF1): an op seed derived from it (``tf.set_random_seed`` without an op seed) then
        differs between the random ops of two loops, and from the ones outside."""
        self._id_counter = self.root._next_id()
        return self._id_counter

    # --- inputs ----------------------------------------------------------------------
    def _placeholder(self, ttype, name) -> Tensor:
        op = Graph.create_op(self, "placeholder", (), {"dtype": ttype.dtype, "shape": ttype.shape},
                             name, ttype=ttype)
        self.inputs.append(op.outputs[0])
        return op.outputs[0]

    def iteration_input(self) -> Tensor:
        """The placeholder for the current iteration's number (int64[]; a loop's graphs only)."""
        if not self.loop:
            raise ValueError(f"{self.body_name} is not the cond or body of a while loop: it has no iteration")
        if self.iteration is None:
            with self.name_scope(self.body_name.rstrip("/") + "/"), self.control_dependencies(None):
                op = Graph.create_op(self, "placeholder", (), {"dtype": int64, "shape": ()}, "iteration",
                                     ttype=TensorType(int64, ()))
            self.iteration = op.outputs[0]
        return self.iteration

    def add_loop_var(self, ttype, name="loop_var") -> Tensor:
        """A placeholder standing for one loop variable (the body's argument)."""
        t = self._placeholder(ttype, name)
        t.op.attrs["role"] = LOOP_VAR
        return t

    def capture(self, outer: Tensor) -> Tensor:
        """The placeholder standing for ``outer`` (a tensor of an enclosing graph), made once."""
        if outer not in self.captures:
            if outer.graph not in self.outer_graphs:
                raise ValueError(f"{self.body_name}: tensor {outer.name} belongs to a graph that does not "
                                 "enclose this control-flow body (a tensor of another branch or body?)")
            t = self._placeholder(outer.type, "capture")
            self.captures[outer] = t
            self.capture_source[t] = outer
        return self.captures[outer]

    def var_name(self, t: Tensor):
        """The variable ``t`` stands for (a variable op's output or a capture of one), or None."""
        while isinstance(getattr(t.graph, "capture_source", None), dict) and t in t.graph.capture_source:
            t = t.graph.capture_source[t]
        return t.op.name if t.op.type == "variable" else None

    # --- op creation -----------------------------------------------------------------
    def create_op(self, kind: str, inputs=(), attrs=None, name=None, **kwargs) -> Operation:
        """Create the op here, capturing inputs that belong to an enclosing graph."""
        if kind == "variable" and kwargs.get("exact_name") and name != "kiln/rng_step":
            raise ValueError(f"Variable {name} reached the body graph of {self.body_name}: variables are made "
                             "in the outermost graph (tf.get_variable / tf.Variable do so)")
        if kind == "variable":  # the hidden rng counter lives in the root graph, outside any scope
            with self.root.name_scope(None), self.root.control_dependencies(None):
                return self.root.create_op(kind, inputs, attrs, name, **kwargs)
        inputs = [self.capture(t) if isinstance(t, Tensor) and t.graph is not self else t for t in inputs]
        saved = self._control_stack
        self._control_stack = [[c for c in group if self._own(c)] for group in saved]
        try:
            return super().create_op(kind, inputs, attrs, name, **kwargs)
        finally:
            self._control_stack = saved

    def _own(self, op: Operation) -> bool:
        """True for an op of this graph; an enclosing graph's op is hoisted to ``outer_control``."""
        if op.graph is self:
            return True
        if op not in self.outer_control:
            self.outer_control.append(op)
        return False

    def get_operation_by_name(self, name):
        """Ops of this body first, then the enclosing graphs (e.g. the hidden rng counter)."""
        try:
            return super().get_operation_by_name(name)
        except KeyError:
            return self.outer.get_operation_by_name(name)

"""TF1 iterators over host pipelines: one-shot, initializable and reinitializable.

``get_next()`` returns placeholders (one per component, nested like the element, a
leading unknown dim as Kiln's symbolic batch dim N) registered as host ops: a
``Session.run`` that needs them pulls the next element from the iterator's pass in that
session and feeds it, so every fetch of one run sees the same element and a run that
does not need them does not advance the iterator.  The end of the data is
``tf.errors.OutOfRangeError``.  An initializer is a ``no_op`` registered as a host op:
running it evaluates the graph tensors the dataset captured (placeholders fed in the same
run) and starts a fresh pass.  Iterator state lives in the session (``Session.host_state``).

Unlike TF, repeated ``get_next()`` calls return the same tensors (one pull per run).
"""
from __future__ import annotations

import numpy as np

from ...ir.from_graph import needed_ops
from .. import errors
from ..graph import get_default_graph
from ..host_ops import register_feeder
from .pipeline import Context
from .structure import (check_same_structure, flatten, ir_dims, output_classes, output_shapes, output_types,
                        pack, specs_from)


class _Pass:
    """One started pass of an iterator in one session: the element generator."""

    def __init__(self, node, values):
        self.elements = iter(node.elements(Context(values)))


class _Initialize:
    """Host op of an initializer: start a pass of ``node`` with this run's feeds."""

    order = 0
    feeds = ()

    def __init__(self, iterator, node):
        self.iterator, self.node = iterator, node

    def run(self, session, feeds):
        self.iterator._start(session, self.node, feeds)
        return {}


class _GetNext:
    """Host op of ``get_next``: the next element, as feeds of the get_next placeholders."""

    order = 1

    def __init__(self, iterator):
        self.iterator = iterator

    @property
    def feeds(self):
        return self.iterator._outputs

    def run(self, session, feeds):
        return self.iterator._pull(session)


class Iterator:
    """tf.data.Iterator (TF1): ``get_next()``, ``initializer`` / ``make_initializer``."""

    def __init__(self, structure, graph, node=None, one_shot=False):
        self._structure = structure
        self._graph = graph
        self._node = node
        self._one_shot = one_shot
        self._initializer = None
        self._outputs = None
        self._get_next = _GetNext(self)

    @classmethod
    def one_shot(cls, node, graph):
        """An iterator over ``node`` that starts on its first ``get_next`` in a session."""
        for op in needed_ops([t.op for t in node.captured()], set()):
            if op.type == "placeholder":
                raise ValueError(f"Cannot capture a placeholder (name:{op.name}, type:Placeholder) by value.")
        return cls(node.structure, graph, node, one_shot=True)

    @classmethod
    def initializable(cls, node, graph):
        """An iterator over ``node`` started by running ``initializer``."""
        iterator = cls(node.structure, graph, node)
        iterator._initializer = iterator._initializer_op(node, "MakeIterator")
        return iterator

    @staticmethod
    def from_structure(output_types, output_shapes=None, shared_name=None, output_classes=None):
        """A reinitializable iterator: ``make_initializer(dataset)`` for each compatible dataset."""
        return Iterator(specs_from(output_types, output_shapes), get_default_graph())

    # --- TF1 attributes -------------------------------------------------------------------
    @property
    def element_spec(self):
        return self._structure

    @property
    def output_types(self):
        return output_types(self._structure)

    @property
    def output_shapes(self):
        return output_shapes(self._structure)

    @property
    def output_classes(self):
        return output_classes(self._structure)

    @property
    def initializer(self):
        if self._initializer is None:
            raise ValueError("The iterator does not have an initializer. This means it was likely created using "
                             "`tf.data.Dataset.make_one_shot_iterator()`. For an initializable iterator, use "
                             "`tf.data.Dataset.make_initializable_iterator()` instead.")
        return self._initializer

    def make_initializer(self, dataset, name=None):
        """An op that (re)starts this iterator on ``dataset`` (same structure, dtypes, and
        compatible shapes)."""
        node = dataset._node
        check_same_structure(self._structure, node.structure)
        if output_types(self._structure) != output_types(node.structure):
            raise TypeError(f"Expected output types {self.output_types} but got dataset with output "
                            f"types {output_types(node.structure)}.")
        for mine, theirs in zip(flatten(self._structure), flatten(node.structure)):
            if not mine.is_compatible_with(theirs):
                raise TypeError(f"Expected output shapes compatible with {self.output_shapes} but got "
                                f"dataset with output shapes {output_shapes(node.structure)}.")
        return self._initializer_op(node, name or "make_initializer")

    def get_next(self, name=None):
        """The next element's tensors (nested like the element); see the module doc."""
        if self._outputs is None:
            self._outputs = [self._placeholder(spec, i, name) for i, spec in enumerate(flatten(self._structure))]
            for t in self._outputs:
                register_feeder(t.op, self._get_next)
        return pack(self._structure, self._outputs)

    def _placeholder(self, spec, index, name):
        """The get_next tensor of component ``index`` (a leading None: the batch dim N)."""
        dims = ir_dims(spec.dims, f"Iterator.get_next: component {index}")
        op = self._graph.create_op("placeholder", (), {"dtype": spec.dtype, "shape": dims}, name or "IteratorGetNext")
        return op.outputs[0]

    def _initializer_op(self, node, name):
        """A no_op that starts a pass over ``node`` when a run needs it."""
        op = self._graph.create_op("no_op", (), {}, name, has_output=False)
        register_feeder(op, _Initialize(self, node))
        return op

    # --- host side (called by Session.run through host_ops) -------------------------------
    def _start(self, session, node, feeds):
        """Start a fresh pass of ``node`` in ``session``: a captured tensor fed in this run
        (the placeholder of from_tensor_slices) takes the fed value, the others are
        evaluated with the run's feeds."""
        captured = node.captured()
        values = {t: np.array(feeds[t]) for t in captured if t in feeds}  # a copy, as TF's init
        rest = [t for t in captured if t not in feeds]
        if rest:
            values.update(zip(rest, session.run(rest, feed_dict=feeds)))
        session.host_state[self] = _Pass(node, values)

    def _pull(self, session) -> dict:
        """The next element of this session's pass, as {get_next placeholder: value}."""
        current = session.host_state.get(self)
        if current is None:
            if not self._one_shot:
                raise errors.FailedPreconditionError(
                    None, self._outputs[0].op, "GetNext() failed because the iterator has not been initialized. "
                    "Ensure that you have run the initializer operation for this iterator before getting the "
                    "next element.")
            self._start(session, self._node, {})
            current = session.host_state[self]
        try:
            element = next(current.elements)
        except StopIteration:
            raise errors.OutOfRangeError(None, self._outputs[0].op, "End of sequence") from None
        self._check_batch(element)
        return dict(zip(self._outputs, element))

    def _check_batch(self, element):
        """Kiln gives all unknown leading dims one symbolic size: they must agree."""
        sizes = {len(v) for t, v in zip(self._outputs, element) if t.type.shape and t.shape.dims[0] is None}
        if len(sizes) > 1:
            raise errors.InvalidArgumentError(
                None, self._outputs[0].op, f"get_next: the components' leading dims are {sorted(sizes)}; Kiln "
                "gives every unknown leading dim of an element one symbolic batch size, so they must be equal")


def make_one_shot_iterator(dataset):
    """tf.data.make_one_shot_iterator(dataset)."""
    return dataset.make_one_shot_iterator()


def make_initializable_iterator(dataset, shared_name=None):
    """tf.data.make_initializable_iterator(dataset)."""
    return dataset.make_initializable_iterator(shared_name)


def get_output_types(dataset_or_iterator):
    """The nested dtypes of a dataset's or iterator's elements."""
    return dataset_or_iterator.output_types


def get_output_shapes(dataset_or_iterator):
    """The nested TensorShapes of a dataset's or iterator's elements."""
    return dataset_or_iterator.output_shapes


def get_output_classes(dataset_or_iterator):
    """The nested classes (tf.Tensor) of a dataset's or iterator's elements."""
    return dataset_or_iterator.output_classes

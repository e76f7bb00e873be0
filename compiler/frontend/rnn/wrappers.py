"""Cells built from cells: MultiRNNCell (stacked layers) and DropoutWrapper.

``MultiRNNCell`` runs its cells in ``cell_<i>`` sub-scopes of its own scope
(``rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel``); ``DropoutWrapper`` calls the
wrapped cell directly, so the weights keep the unwrapped names (as in TF).
"""
from __future__ import annotations

import hashlib
import numbers

from ..convert import convert_to_tensor
from ..ops import array_ops, math_ops, nn_ops
from ..ops.array_ops import static_value
from ..ops.random_ops import random_uniform
from .. import variables as vs
from . import nest
from .cells import LSTMStateTuple, RNNCell


class MultiRNNCell(RNNCell):
    """Stack ``cells``: each one's output is the next one's input; the state is a tuple of theirs."""

    def __init__(self, cells, state_is_tuple=True):
        super().__init__()
        if not cells:
            raise ValueError("Must specify at least one cell for MultiRNNCell.")
        if not nest.is_nested(cells):
            raise TypeError(f"cells must be a list or tuple, but saw: {cells}.")
        self._cells, self._state_is_tuple = list(cells), state_is_tuple
        if not state_is_tuple and any(nest.is_nested(c.state_size) for c in self._cells):
            raise ValueError("Some cells return tuples of states, but the flag state_is_tuple is not set.  "
                             f"State sizes are: {[c.state_size for c in self._cells]}")

    @property
    def state_size(self):
        sizes = tuple(cell.state_size for cell in self._cells)
        return sizes if self._state_is_tuple else sum(sizes)

    @property
    def output_size(self):
        return self._cells[-1].output_size

    def zero_state(self, batch_size, dtype):
        if not self._state_is_tuple:
            return super().zero_state(batch_size, dtype)
        return tuple(cell.zero_state(batch_size, dtype) for cell in self._cells)

    @property
    def variables(self):
        return [v for cell in self._cells for v in cell.variables]

    weights = variables

    @property
    def trainable_variables(self):
        return [v for v in self.variables if v.trainable] if self.trainable else []

    trainable_weights = trainable_variables

    def call(self, inputs, state):
        position, cur, new_states = 0, inputs, []
        for i, cell in enumerate(self._cells):
            with vs.variable_scope(f"cell_{i}"):
                if self._state_is_tuple:
                    if not nest.is_nested(state):
                        raise ValueError(f"Expected state to be a tuple of length {len(self.state_size)}, "
                                         f"but received: {state}")
                    cur_state = state[i]
                else:
                    cur_state = array_ops.slice(state, [0, position], [-1, cell.state_size])
                    position += cell.state_size
                cur, new_state = cell(cur, cur_state)
                new_states.append(new_state)
        return cur, (tuple(new_states) if self._state_is_tuple else array_ops.concat(new_states, 1))


def _default_state_filter(substate):
    """Which parts of a state get state dropout: never an LSTM's memory c (TF's default)."""
    if isinstance(substate, LSTMStateTuple):
        return LSTMStateTuple(c=False, h=True)
    return True


def _filter_leaves(filter_fn, structure):
    """One bool per leaf of ``structure``: TF's get_traverse_shallow_structure, flattened.

    The filter returns a bool (True on a nested state: ask again for each part) or a
    structure of bools shaped like the state (e.g. ``LSTMStateTuple(c=False, h=True)``).
    """
    decision = filter_fn(structure)
    if not isinstance(decision, bool):
        nest.assert_same_structure(decision, structure, "dropout_state_filter_visitor result and state")
        return [bool(d) for d in nest.flatten(decision)]
    if decision and nest.is_nested(structure):
        return [b for item in structure for b in _filter_leaves(filter_fn, item)]
    return [decision] * len(nest.flatten(structure))


class DropoutWrapper(RNNCell):
    """Dropout on a cell's inputs, outputs and (filtered) state; keep probs are floats or scalar tensors."""

    def __init__(self, cell, input_keep_prob=1.0, output_keep_prob=1.0, state_keep_prob=1.0,
                 variational_recurrent=False, input_size=None, dtype=None, seed=None,
                 dropout_state_filter_visitor=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        if not (hasattr(cell, "state_size") and hasattr(cell, "output_size") and callable(cell)):
            raise TypeError(f"The argument 'cell' ({cell}) is not an RNNCell: it must have state_size, "
                            "output_size and be callable.")
        if dropout_state_filter_visitor is not None and not callable(dropout_state_filter_visitor):
            raise TypeError("dropout_state_filter_visitor must be callable")
        self.cell, self._seed = cell, seed
        self._state_filter = dropout_state_filter_visitor or _default_state_filter
        for attr, prob in (("input_keep_prob", input_keep_prob), ("state_keep_prob", state_keep_prob),
                           ("output_keep_prob", output_keep_prob)):
            setattr(self, f"_{attr}", _keep_prob(prob, attr))
        self._variational_recurrent = variational_recurrent
        self._noise = {}
        if variational_recurrent:
            self._make_recurrent_noise(input_size, dtype)

    def _make_recurrent_noise(self, input_size, dtype):
        """Variational dropout: one [1, size] uniform noise per leaf, fixed across time steps."""
        if dtype is None:
            raise ValueError("When variational_recurrent=True, dtype must be provided")

        def noise(salt, sizes):
            return [random_uniform([1, int(s)], seed=self._gen_seed(salt, i), dtype=dtype)
                    for i, s in enumerate(nest.flatten(sizes))]

        if _should_dropout(self._input_keep_prob):
            if input_size is None:
                raise ValueError("When variational_recurrent=True and input_keep_prob < 1.0 or is unknown, "
                                 "input_size must be provided")
            self._noise["input"] = noise("input", input_size)
        self._noise["state"] = noise("state", self.cell.state_size)
        self._noise["output"] = noise("output", self.cell.output_size)

    def _gen_seed(self, salt_prefix, index):
        """TF's per-(salt, index) seed derived from ``seed`` (None stays None)."""
        if self._seed is None:
            return None
        digest = hashlib.md5((str(self._seed) + f"{salt_prefix}_{index}").encode("utf-8")).hexdigest()
        return int(digest[:8], 16) & 0x7FFFFFFF

    @property
    def wrapped_cell(self):
        return self.cell

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self.cell.output_size

    @property
    def variables(self):
        return self.cell.variables

    weights = variables

    @property
    def trainable_variables(self):
        return self.cell.trainable_variables

    trainable_weights = trainable_variables

    def zero_state(self, batch_size, dtype):
        return self.cell.zero_state(batch_size, dtype)

    def _dropout(self, values, salt, keep_prob, mask=None):
        """Dropout on the leaves of ``values`` whose ``mask`` entry is True (all by default)."""
        leaves = nest.flatten(values)
        mask = [True] * len(leaves) if mask is None else mask
        out = []
        for i, (leaf, drop) in enumerate(zip(leaves, mask)):
            if not drop:
                out.append(leaf)
            elif self._variational_recurrent:
                kept = math_ops.floor(keep_prob + self._noise[salt][i])
                out.append(math_ops.divide(leaf, keep_prob) * kept)
            else:
                out.append(nn_ops.dropout(leaf, keep_prob=keep_prob, seed=self._gen_seed(salt, i)))
        return nest.pack_sequence_as(values, out)

    def __call__(self, inputs, state, scope=None):
        """Dropout on inputs, run the wrapped cell (its scope, its weight names), dropout after."""
        if _should_dropout(self._input_keep_prob):
            inputs = self._dropout(inputs, "input", self._input_keep_prob)
        output, new_state = self.cell(inputs, state, scope=scope)
        if _should_dropout(self._state_keep_prob):
            mask = _filter_leaves(self._state_filter, new_state)
            new_state = self._dropout(new_state, "state", self._state_keep_prob, mask)
        if _should_dropout(self._output_keep_prob):
            output = self._dropout(output, "output", self._output_keep_prob)
        return output, new_state


def _keep_prob(prob, attr):
    """A python float in [0, 1] for a constant keep probability, else the scalar tensor."""
    if not isinstance(prob, numbers.Real):
        prob = convert_to_tensor(prob)
        if static_value(prob) is None:
            return prob
        prob = static_value(prob)
    value = float(prob)
    if value < 0 or value > 1:
        raise ValueError(f"Parameter {attr} must be between 0 and 1: {value}")
    return value


def _should_dropout(prob):
    return not isinstance(prob, float) or prob < 1

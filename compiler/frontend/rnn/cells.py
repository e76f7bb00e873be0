"""TF1 RNN cells (``tf.nn.rnn_cell`` / ``tf.contrib.rnn``): one time step of a recurrence.

A cell is a ``tf.layers`` Layer (compiler/frontend/layers.py) called as
``cell(inputs, state, scope=None) -> (output, new_state)``.  As in TF 1.x the first call
builds the weights in the cell's own variable scope, opened with
``variable_scope(None, default_name=<snake case class name>)`` inside the caller's scope,
so ``static_rnn`` gives ``rnn/basic_lstm_cell/kernel``; a ``scope`` argument on the first
call becomes the cell's scope itself (``scope/kernel``).  Later calls reuse the built
weights, which is what makes one cell share its variables across time steps.

The gate layouts follow TF exactly (so TF checkpoints load): LSTM kernels are
``[input_depth + h_depth, 4 * num_units]`` over the gates ``i, j, f, o`` of
``concat([inputs, h], 1)``; GRU has ``gates/{kernel,bias}`` (r, u) and
``candidate/{kernel,bias}``.
"""
from __future__ import annotations

import collections

from ..convert import convert_to_tensor
from ..graph import get_default_graph
from ..layers import Layer, get_activation
from ..ops import array_ops, math_ops, nn_ops
from ..ops.clip_ops import clip_by_value
from .. import initializers as inits
from .. import variables as vs
from . import nest


def _check_float(tensors, cell):
    """TF's _check_rnn_cell_input_dtypes: cells compute in floating point only."""
    for t in nest.flatten(tensors):
        if not t.dtype.is_floating:
            raise ValueError(f"RNN cell only supports floating point inputs, but saw dtype: {t.dtype.name} "
                             f"(cell {cell.name}, tensor {t.name})")


def zero_state_tensors(state_size, batch_size, dtype):
    """Zeros shaped ``[batch_size, s]`` for each ``s`` in the (nested) ``state_size``."""
    def zeros(size):
        return array_ops.zeros([batch_size, int(size)], dtype=dtype)

    return nest.map_structure(zeros, state_size)


class RNNCell(Layer):
    """tf.nn.rnn_cell.RNNCell: subclasses give state_size, output_size and ``call``."""

    @property
    def state_size(self):
        raise NotImplementedError(f"{type(self).__name__} must define state_size")

    @property
    def output_size(self):
        raise NotImplementedError(f"{type(self).__name__} must define output_size")

    def __call__(self, inputs, state, scope=None):
        """One step; a ``scope`` (name or VariableScope) given on the first call names the weights."""
        if scope is None:
            return self._call_tracking_variables(inputs, state)
        with vs.variable_scope(scope) as captured:
            if self._scope is None:
                self._scope = captured
            return self._call_tracking_variables(inputs, state)

    def _call_tracking_variables(self, inputs, state):
        """Layer.__call__, keeping the variables a TF1-style ``call`` made with tf.get_variable."""
        store = get_default_graph()._variables_by_name
        before = set(store)
        result = Layer.__call__(self, inputs, state)
        for name in [n for n in store if n not in before]:
            if store[name] not in self._variables:
                self._variables.append(store[name])
        return result

    def zero_state(self, batch_size, dtype):
        """Zero-filled state(s) ``[batch_size, s]`` for each ``s`` in ``state_size``."""
        with get_default_graph().name_scope(type(self).__name__ + "ZeroState"):
            return zero_state_tensors(self.state_size, batch_size, dtype)

    def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
        """The zero state for ``inputs``' batch and dtype (or the given ones)."""
        if inputs is not None:
            batch_size, dtype = inputs.type.shape[0], inputs.dtype
        if batch_size is None or dtype is None:
            raise ValueError("batch_size and dtype cannot be None while constructing initial state: "
                             f"batch_size={batch_size}, dtype={dtype}")
        return self.zero_state(batch_size, dtype)


class LayerRNNCell(RNNCell):
    """A cell whose weights come from ``build`` (TF's LayerRNNCell); checks 2-D float inputs."""

    def __call__(self, inputs, state, scope=None):
        inputs = convert_to_tensor(inputs)
        if inputs.shape.ndims != 2:
            raise ValueError(f"Input 0 of layer {self.name} is incompatible with the layer: expected ndim=2, "
                             f"found ndim={inputs.shape.ndims}. Full shape received: {inputs.shape}")
        state = nest.map_structure(convert_to_tensor, state)
        _check_float([inputs, state], self)
        return super().__call__(inputs, state, scope=scope)

    def input_depth(self, inputs_shape) -> int:
        """The static last dim of the inputs (TF requires it to build the kernel)."""
        depth = inputs_shape.as_list()[-1]
        if depth is None:
            raise ValueError(f"Expected inputs.shape[-1] to be known, saw shape: {inputs_shape}")
        return int(depth)

    def dense_on(self, tensors, kernel, bias):
        """``bias_add(matmul(concat(tensors, 1), kernel), bias)``: the affine map every cell uses."""
        return nn_ops.bias_add(math_ops.matmul(array_ops.concat(list(tensors), 1), kernel), bias)


class BasicRNNCell(LayerRNNCell):
    """output = new_state = activation(W [x, h] + b)."""

    def __init__(self, num_units, activation=None, reuse=None, name=None, dtype=None, **kwargs):
        super().__init__(_reuse=reuse, name=name, dtype=dtype, **kwargs)
        self._num_units = int(num_units)
        self._activation = get_activation(activation) or math_ops.tanh

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    def build(self, inputs_shape):
        depth = self.input_depth(inputs_shape)
        self._kernel = self.add_weight("kernel", [depth + self._num_units, self._num_units])
        self._bias = self.add_weight("bias", [self._num_units], initializer=inits.Zeros())
        self.built = True

    def call(self, inputs, state):
        output = self._activation(self.dense_on([inputs, state], self._kernel, self._bias))
        return output, output


class GRUCell(LayerRNNCell):
    """Gated recurrent unit: r, u = sigmoid(gates); c = act(candidate([x, r*h])); h' = u*h + (1-u)*c."""

    def __init__(self, num_units, activation=None, reuse=None, kernel_initializer=None,
                 bias_initializer=None, name=None, dtype=None, **kwargs):
        super().__init__(_reuse=reuse, name=name, dtype=dtype, **kwargs)
        self._num_units = int(num_units)
        self._activation = get_activation(activation) or math_ops.tanh
        self._kernel_initializer, self._bias_initializer = kernel_initializer, bias_initializer

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    def build(self, inputs_shape):
        depth, n = self.input_depth(inputs_shape), self._num_units
        bias_init = self._bias_initializer
        self._gate_kernel = self.add_weight("gates/kernel", [depth + n, 2 * n], initializer=self._kernel_initializer)
        self._gate_bias = self.add_weight("gates/bias", [2 * n],
                                          initializer=bias_init if bias_init is not None else inits.Constant(1.0))
        self._candidate_kernel = self.add_weight("candidate/kernel", [depth + n, n],
                                                 initializer=self._kernel_initializer)
        self._candidate_bias = self.add_weight("candidate/bias", [n],
                                               initializer=bias_init if bias_init is not None else inits.Zeros())
        self.built = True

    def call(self, inputs, state):
        value = math_ops.sigmoid(self.dense_on([inputs, state], self._gate_kernel, self._gate_bias))
        r, u = array_ops.split(value, 2, axis=1)
        c = self._activation(self.dense_on([inputs, r * state], self._candidate_kernel, self._candidate_bias))
        new_h = u * state + (1 - u) * c
        return new_h, new_h


_LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ("c", "h"))


class LSTMStateTuple(_LSTMStateTuple):
    """(c, h): an LSTM's cell state and output, the state of LSTM cells with state_is_tuple."""

    __slots__ = ()

    @property
    def dtype(self):
        c, h = self
        if c.dtype != h.dtype:
            raise TypeError(f"Inconsistent internal state: {c.dtype.name} vs {h.dtype.name}")
        return c.dtype


class _LSTMBase(LayerRNNCell):
    """What BasicLSTMCell and LSTMCell share: the state layout (tuple or concatenated)."""

    def split_state(self, state, c_size, h_size):
        """(c, h) from a state tuple or from a concatenated ``[batch, c_size + h_size]`` state."""
        if self._state_is_tuple:
            if not nest.is_nested(state) or len(state) != 2:
                raise ValueError(f"{self.name}: expected an LSTMStateTuple (c, h) state "
                                 f"(state_is_tuple=True), got {state!r}")
            return state
        return (array_ops.slice(state, [0, 0], [-1, c_size]),
                array_ops.slice(state, [0, c_size], [-1, h_size]))

    def join_state(self, c, h):
        return LSTMStateTuple(c, h) if self._state_is_tuple else array_ops.concat([c, h], 1)


class BasicLSTMCell(_LSTMBase):
    """LSTM without peepholes or projection: c' = c*sig(f + forget_bias) + sig(i)*act(j), h' = act(c')*sig(o)."""

    def __init__(self, num_units, forget_bias=1.0, state_is_tuple=True, activation=None, reuse=None,
                 name=None, dtype=None, **kwargs):
        super().__init__(_reuse=reuse, name=name, dtype=dtype, **kwargs)
        self._num_units, self._forget_bias = int(num_units), float(forget_bias)
        self._state_is_tuple = state_is_tuple
        self._activation = get_activation(activation) or math_ops.tanh

    @property
    def state_size(self):
        n = self._num_units
        return LSTMStateTuple(n, n) if self._state_is_tuple else 2 * n

    @property
    def output_size(self):
        return self._num_units

    def build(self, inputs_shape):
        depth, n = self.input_depth(inputs_shape), self._num_units
        self._kernel = self.add_weight("kernel", [depth + n, 4 * n])
        self._bias = self.add_weight("bias", [4 * n], initializer=inits.Zeros())
        self.built = True

    def call(self, inputs, state):
        c, h = self.split_state(state, self._num_units, self._num_units)
        i, j, f, o = array_ops.split(self.dense_on([inputs, h], self._kernel, self._bias), 4, axis=1)
        sigmoid, act = math_ops.sigmoid, self._activation
        new_c = c * sigmoid(f + self._forget_bias) + sigmoid(i) * act(j)
        new_h = act(new_c) * sigmoid(o)
        return new_h, self.join_state(new_c, new_h)


class LSTMCell(_LSTMBase):
    """LSTM with optional peepholes (w_f_diag, w_i_diag, w_o_diag), cell clipping and a projection."""

    def __init__(self, num_units, use_peepholes=False, cell_clip=None, initializer=None, num_proj=None,
                 proj_clip=None, num_unit_shards=None, num_proj_shards=None, forget_bias=1.0,
                 state_is_tuple=True, activation=None, reuse=None, name=None, dtype=None, **kwargs):
        super().__init__(_reuse=reuse, name=name, dtype=dtype, **kwargs)
        if num_unit_shards is not None or num_proj_shards is not None:
            raise NotImplementedError("LSTMCell: num_unit_shards/num_proj_shards (partitioned variables) "
                                      "are not supported by Kiln")
        self._num_units, self._use_peepholes = int(num_units), use_peepholes
        self._cell_clip, self._proj_clip = cell_clip, proj_clip
        self._initializer, self._num_proj = initializer, num_proj
        self._forget_bias, self._state_is_tuple = float(forget_bias), state_is_tuple
        self._activation = get_activation(activation) or math_ops.tanh
        h = num_proj if num_proj else num_units
        self._state_size = LSTMStateTuple(num_units, h) if state_is_tuple else num_units + h
        self._output_size = h

    @property
    def state_size(self):
        return self._state_size

    @property
    def output_size(self):
        return self._output_size

    def build(self, inputs_shape):
        depth, n, init = self.input_depth(inputs_shape), self._num_units, self._initializer
        self._kernel = self.add_weight("kernel", [depth + self._output_size, 4 * n], initializer=init)
        self._bias = self.add_weight("bias", [4 * n], initializer=inits.Zeros())
        if self._use_peepholes:
            self._w_f_diag = self.add_weight("w_f_diag", [n], initializer=init)
            self._w_i_diag = self.add_weight("w_i_diag", [n], initializer=init)
            self._w_o_diag = self.add_weight("w_o_diag", [n], initializer=init)
        if self._num_proj is not None:
            self._proj_kernel = self.add_weight("projection/kernel", [n, self._num_proj], initializer=init)
        self.built = True

    def call(self, inputs, state):
        c_prev, m_prev = self.split_state(state, self._num_units, self._output_size)
        i, j, f, o = array_ops.split(self.dense_on([inputs, m_prev], self._kernel, self._bias), 4, axis=1)
        sigmoid, act = math_ops.sigmoid, self._activation
        if self._use_peepholes:
            c = (sigmoid(f + self._forget_bias + self._w_f_diag * c_prev) * c_prev
                 + sigmoid(i + self._w_i_diag * c_prev) * act(j))
        else:
            c = sigmoid(f + self._forget_bias) * c_prev + sigmoid(i) * act(j)
        if self._cell_clip is not None:
            c = clip_by_value(c, -self._cell_clip, self._cell_clip)
        gate_o = o + self._w_o_diag * c if self._use_peepholes else o
        m = sigmoid(gate_o) * act(c)
        if self._num_proj is not None:
            m = math_ops.matmul(m, self._proj_kernel)
            if self._proj_clip is not None:
                m = clip_by_value(m, -self._proj_clip, self._proj_clip)
        return m, self.join_state(c, m)

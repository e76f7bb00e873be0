"""Recurrent networks: TF1's ``tf.nn.rnn_cell`` cells and the ``tf.nn`` RNN functions.

``cells.py`` (RNNCell, BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell, LSTMStateTuple),
``wrappers.py`` (MultiRNNCell, DropoutWrapper), ``rnn.py`` (static_rnn, dynamic_rnn,
bidirectional forms).  The same names are offered as ``tf.contrib.rnn`` (TF 1.x code used
both spellings); tf.reverse_sequence is an array op (``ops/array_slicing.py``).  See docs/rnn.md.
"""
from __future__ import annotations

from .cells import BasicLSTMCell, BasicRNNCell, GRUCell, LayerRNNCell, LSTMCell, LSTMStateTuple, RNNCell
from .rnn import bidirectional_dynamic_rnn, dynamic_rnn, static_bidirectional_rnn, static_rnn
from .wrappers import DropoutWrapper, MultiRNNCell

_CELLS = {
    "RNNCell": RNNCell, "LayerRNNCell": LayerRNNCell, "BasicRNNCell": BasicRNNCell, "GRUCell": GRUCell,
    "BasicLSTMCell": BasicLSTMCell, "LSTMCell": LSTMCell, "LSTMStateTuple": LSTMStateTuple,
    "MultiRNNCell": MultiRNNCell, "DropoutWrapper": DropoutWrapper,
}
_PUBLIC_CELLS = {k: v for k, v in _CELLS.items() if k != "LayerRNNCell"}  # TF1 did not export it
_FUNCTIONS = {
    "static_rnn": static_rnn, "static_bidirectional_rnn": static_bidirectional_rnn,
    "dynamic_rnn": dynamic_rnn, "bidirectional_dynamic_rnn": bidirectional_dynamic_rnn,
}

TF_API = {
    "tf.nn": dict(_FUNCTIONS),
    "tf.nn.rnn_cell": _PUBLIC_CELLS,
    "tf.contrib.rnn": {**_PUBLIC_CELLS, "static_rnn": static_rnn,
                       "static_bidirectional_rnn": static_bidirectional_rnn},
}

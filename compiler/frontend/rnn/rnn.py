"""Recurrences over time: static_rnn, dynamic_rnn and their bidirectional forms (TF1 semantics).

``static_rnn`` takes a python list of per-step inputs; ``dynamic_rnn`` a ``[batch, time,
...]`` tensor (``[time, batch, ...]`` with ``time_major``).  Both run the cell once per
step inside ``variable_scope(scope or "rnn")``, reusing the cell's weights from step 1 on
(``varscope.reuse_variables()``, as TF does), so the weights are ``rnn/<cell>/kernel``.

With ``sequence_length`` a row whose sequence has ended (step ``t >= length``) outputs
zeros and keeps its state (TF's copy-through), so the returned state is each row's state
at its last valid step.

:func:`rnn_loop` is the one place that decides how ``dynamic_rnn`` runs: unrolled at
graph-build time when the time dimension is static (the numbers match TF's ``dynamic_rnn``
exactly: it evaluates the same cell per step); a ``tf.while_loop`` over time, as TF builds
it, when the time dimension is unknown until the feed.  The loop carries the time counter,
the state and one ``[T, batch, ...]`` output buffer per (flat) output, written row by row
with ``update_row`` (Kiln has no TensorArray); ``T = tf.shape(inputs)[time_axis]`` is a
shape value known when a run signature is lowered, so it bounds the loop
(``maximum_iterations``), sizes the buffers and the gradient's stacks.
"""
from __future__ import annotations

import numpy as np

from ...ir.types import int32
from ..control_flow import while_loop
from ..convert import convert_to_tensor
from ..core_api import identity
from ..graph import make_op
from ..ops import array_ops, math_ops
from ..ops.array_slicing import gather, reverse, reverse_sequence, unstack
from .. import variables as vs
from . import nest


def assert_like_rnncell(name, cell):
    """TF's check that ``cell`` can drive an RNN (state_size, output_size, zero_state, callable)."""
    problems = [msg for ok, msg in (
        (hasattr(cell, "output_size"), "'output_size' property is missing"),
        (hasattr(cell, "state_size"), "'state_size' property is missing"),
        (hasattr(cell, "zero_state") or hasattr(cell, "get_initial_state"),
         "either 'zero_state' or 'get_initial_state' method is required"),
        (callable(cell), "is not callable")) if not ok]
    if problems:
        raise TypeError(f"The argument {name!r} ({cell}) is not an RNNCell: {', '.join(problems)}.")


def _sequence_length(sequence_length, batch_size, what):
    """``sequence_length`` as an int32 vector over the batch (TF names it ``sequence_length``), or None."""
    if sequence_length is None:
        return None
    lengths = math_ops.cast(convert_to_tensor(sequence_length), int32)
    if lengths.shape.ndims != 1:
        raise ValueError(f"sequence_length must be a vector of length batch_size, but saw shape: {lengths.shape}")
    if batch_size is not None and lengths.type.shape[0] != batch_size:  # None: unknown until the feed
        symbolic = not isinstance(batch_size, (int, np.integer))
        hint = (" (a placeholder's None batch stays symbolic in Kiln: give sequence_length a None batch too, "
                "e.g. tf.placeholder(tf.int32, [None]))") if symbolic else ""
        raise ValueError(f"{what}: sequence_length of shape {lengths.shape} does not match the inputs' batch "
                         f"dimension {'?' if symbolic else batch_size}{hint}")
    return identity(lengths, name="sequence_length")


def _initial_state(cell, initial_state, dtype, batch_size, message):
    """The caller's initial state, else the cell's zero state (which needs ``dtype``)."""
    if initial_state is not None:
        return initial_state
    if dtype is None:
        raise ValueError(message)
    return cell.zero_state(batch_size, dtype)


def _step(cell, inputs, state, time, lengths):
    """One cell call; rows with ``time >= length`` give zeros and keep their state.

    ``time`` is the step: a Python int (unrolled) or the loop's int32 counter (while loop)."""
    output, new_state = cell(inputs, state)
    if lengths is None:
        return output, new_state
    done = math_ops.greater_equal(np.int32(time) if isinstance(time, int) else time, lengths)
    output = nest.map_structure(lambda o: math_ops.where(done, array_ops.zeros_like(o), o), output)
    nest.assert_same_structure(new_state, state, "cell states")
    new_state = nest.map_structure(lambda new, old: math_ops.where(done, old, new), new_state, state)
    return output, new_state


def _unroll(cell, step_inputs, state, lengths, varscope):
    """Run ``cell`` over the per-step inputs, reusing its variables after the first step."""
    outputs = []
    for time, inputs in enumerate(step_inputs):
        if time > 0:
            varscope.reuse_variables()
        output, state = _step(cell, inputs, state, time, lengths)
        outputs.append(output)
    return outputs, state


def static_rnn(cell, inputs, initial_state=None, dtype=None, sequence_length=None, scope=None):
    """tf.nn.static_rnn: a list of ``T`` inputs ``[batch, depth]`` -> (list of ``T`` outputs, final state)."""
    assert_like_rnncell("cell", cell)
    if not nest.is_nested(inputs):
        raise TypeError("inputs must be a sequence")
    if not inputs:
        raise ValueError("inputs must not be empty")
    with vs.variable_scope(scope or "rnn") as varscope:
        steps = [nest.map_structure(convert_to_tensor, x) for x in inputs]
        first = nest.flatten(steps[0])[0]
        if first.shape.ndims is None or first.shape.ndims < 2:
            raise ValueError(f"static_rnn: each input must have rank at least 2 ([batch, depth]), "
                             f"got {first.name} of shape {first.shape}")
        batch = first.type.shape[0]
        state = _initial_state(cell, initial_state, dtype, batch,
                               "If no initial_state is provided, dtype must be specified")
        return _unroll(cell, steps, state, _sequence_length(sequence_length, batch, "static_rnn"), varscope)


def _static_time_steps(flat_inputs, time_axis, what):
    """The number of steps when it is static and equal over all inputs (for unrolling); None
    when some input's time dimension is unknown until the feed (a while loop runs it)."""
    counts = set()
    for x in flat_inputs:
        steps = x.type.shape[time_axis]
        if not isinstance(steps, (int, np.integer)):
            return None
        counts.add(int(steps))
    if len(counts) != 1:
        raise ValueError(f"{what}: all inputs must have the same number of time steps, got {sorted(counts)}")
    steps = counts.pop()
    if steps == 0:
        raise ValueError(f"{what}: the inputs have 0 time steps ({flat_inputs[0].name})")
    return steps


def rnn_loop(cell, inputs, state, lengths, time_axis, varscope, what="dynamic_rnn"):
    """Run ``cell`` along ``time_axis`` of (nested) ``inputs``: (outputs stacked on that axis, state).

    The one place that decides how a dynamic recurrence runs: unrolled at graph-build
    time when the number of steps is static, else a ``tf.while_loop`` over time.
    """
    flat = nest.flatten(inputs)
    steps = _static_time_steps(flat, time_axis, what)
    if steps is None:
        return _while_rnn(cell, inputs, state, lengths, time_axis)
    per_input = [unstack(x, num=steps, axis=time_axis) for x in flat]
    step_inputs = [nest.pack_sequence_as(inputs, [slices[t] for slices in per_input]) for t in range(steps)]
    outputs, state = _unroll(cell, step_inputs, state, lengths, varscope)
    flat_outputs = [nest.flatten(o) for o in outputs]
    stacked = [array_ops.stack([o[k] for o in flat_outputs], axis=time_axis) for k in range(len(flat_outputs[0]))]
    return nest.pack_sequence_as(outputs[0], stacked), state


def _output_dims(size) -> list:
    """The dims of one output of ``cell.output_size`` (an int or a shape) after batch."""
    if isinstance(size, (int, np.integer)):
        return [int(size)]
    dims = list(getattr(size, "as_list", lambda: size)())
    if any(d is None for d in dims):
        raise ValueError(f"dynamic_rnn: the cell's output_size {size} must be static to allocate the outputs")
    return [int(d) for d in dims]


def _while_rnn(cell, inputs, state, lengths, time_axis):
    """The recurrence as TF's ``tf.while_loop`` over time (module doc): (outputs on ``time_axis``,
    state), with ``_step``'s ``sequence_length`` semantics.  The cell is traced once, in the
    loop body, so its variables are the unrolled path's (``rnn/<cell>/kernel``)."""
    flat = nest.flatten(inputs)
    first = flat[0]
    batch_axis = 1 - time_axis
    steps = array_ops.shape(first)[time_axis]
    known = nest.flatten(state)[0].type.shape  # the batch the outputs get (maybe static from sequence_length)
    batch = known[0] if known and known[0] is not None else array_ops.shape(first)[batch_axis]
    sizes = nest.flatten(cell.output_size)
    buffers = [array_ops.zeros([steps, batch] + _output_dims(size), dtype=first.dtype) for size in sizes]

    def body(time, state, buffers):
        step_inputs = nest.pack_sequence_as(inputs, [gather(x, time, axis=time_axis) for x in flat])
        output, new_state = _step(cell, step_inputs, state, time, lengths)
        written = [make_op("update_row", [b, o, time], name="write_output")
                   for b, o in zip(buffers, nest.flatten(output))]
        return time + 1, new_state, written

    time = convert_to_tensor(0, dtype=int32, name="time")
    _, state, buffers = while_loop(lambda time, *_: math_ops.less(time, steps), body, [time, state, buffers],
                                   maximum_iterations=steps, name="while")
    if time_axis == 1:
        buffers = [array_ops.transpose(b, [1, 0] + list(range(2, b.type.rank))) for b in buffers]
    return nest.pack_sequence_as(cell.output_size, buffers), state


def dynamic_rnn(cell, inputs, sequence_length=None, initial_state=None, dtype=None, parallel_iterations=None,
                swap_memory=False, time_major=False, scope=None):
    """tf.nn.dynamic_rnn: ``[batch, time, depth]`` (or time-major) inputs -> (outputs, final state).

    ``parallel_iterations`` and ``swap_memory`` tune TF's while loop; they are accepted (hints).
    """
    assert_like_rnncell("cell", cell)
    with vs.variable_scope(scope or "rnn") as varscope:
        inputs = nest.map_structure(convert_to_tensor, inputs)
        flat = nest.flatten(inputs)
        for x in flat:
            if x.shape.ndims is None or x.shape.ndims < 3:
                raise ValueError(f"dynamic_rnn: inputs must have rank at least 3 ([batch, time, depth] or "
                                 f"[time, batch, depth] with time_major), got {x.name} of shape {x.shape}")
        time_axis, batch_axis = (0, 1) if time_major else (1, 0)
        batch = flat[0].type.shape[batch_axis]
        lengths = _sequence_length(sequence_length, batch, "dynamic_rnn")
        if batch is None and lengths is not None and isinstance(lengths.type.shape[0], int):
            batch = lengths.type.shape[0]  # the state's batch must be the one the loop body gives it
        if batch is None:  # unknown until the feed (e.g. time-major [None, None, depth]): TF's tf.shape
            batch = array_ops.shape(flat[0])[batch_axis]
        state = _initial_state(cell, initial_state, dtype, batch,
                               "If there is no initial_state, you must give a dtype.")
        return rnn_loop(cell, inputs, state, lengths, time_axis, varscope)


def _reverse_time(x, lengths, time_axis, batch_axis):
    """Reverse along time: the whole axis, or each row's first ``lengths[b]`` steps."""
    if lengths is None:
        return reverse(x, [time_axis])
    return reverse_sequence(x, lengths, seq_axis=time_axis, batch_axis=batch_axis)


def bidirectional_dynamic_rnn(cell_fw, cell_bw, inputs, sequence_length=None, initial_state_fw=None,
                              initial_state_bw=None, dtype=None, parallel_iterations=None, swap_memory=False,
                              time_major=False, scope=None):
    """tf.nn.bidirectional_dynamic_rnn -> ((output_fw, output_bw), (state_fw, state_bw)).

    The backward cell reads each row reversed over its valid steps; its outputs are
    reversed back, so both outputs line up with the inputs' time steps.
    """
    assert_like_rnncell("cell_fw", cell_fw)
    assert_like_rnncell("cell_bw", cell_bw)
    time_axis, batch_axis = (0, 1) if time_major else (1, 0)
    with vs.variable_scope(scope or "bidirectional_rnn"):
        with vs.variable_scope("fw") as fw_scope:
            output_fw, state_fw = dynamic_rnn(cell_fw, inputs, sequence_length, initial_state_fw, dtype,
                                              time_major=time_major, scope=fw_scope)
        with vs.variable_scope("bw") as bw_scope:
            batch = nest.flatten(output_fw)[0].type.shape[batch_axis]
            lengths = _sequence_length(sequence_length, batch, "bidirectional_dynamic_rnn")
            reversed_inputs = nest.map_structure(
                lambda x: _reverse_time(convert_to_tensor(x), lengths, time_axis, batch_axis), inputs)
            tmp, state_bw = dynamic_rnn(cell_bw, reversed_inputs, lengths, initial_state_bw, dtype,
                                        time_major=time_major, scope=bw_scope)
        output_bw = nest.map_structure(lambda y: _reverse_time(y, lengths, time_axis, batch_axis), tmp)
    return (output_fw, output_bw), (state_fw, state_bw)


def _reverse_steps(steps, lengths):
    """A list of per-step (nested) tensors reversed in time, per row up to ``lengths``."""
    if lengths is None:
        return list(reversed(steps))
    flat = [nest.flatten(s) for s in steps]
    count = len(steps)
    columns = [unstack(reverse_sequence(array_ops.stack([f[k] for f in flat]), lengths, seq_axis=0, batch_axis=1),
                       num=count) for k in range(len(flat[0]))]
    return [nest.pack_sequence_as(steps[t], [col[t] for col in columns]) for t in range(count)]


def static_bidirectional_rnn(cell_fw, cell_bw, inputs, initial_state_fw=None, initial_state_bw=None, dtype=None,
                             sequence_length=None, scope=None):
    """tf.nn.static_bidirectional_rnn -> (outputs concat([fw, bw], 1) per step, state_fw, state_bw)."""
    assert_like_rnncell("cell_fw", cell_fw)
    assert_like_rnncell("cell_bw", cell_bw)
    if not nest.is_nested(inputs):
        raise TypeError("inputs must be a sequence")
    if not inputs:
        raise ValueError("inputs must not be empty")
    with vs.variable_scope(scope or "bidirectional_rnn"):
        with vs.variable_scope("fw") as fw_scope:
            output_fw, state_fw = static_rnn(cell_fw, inputs, initial_state_fw, dtype, sequence_length,
                                             scope=fw_scope)
        with vs.variable_scope("bw") as bw_scope:
            batch = nest.flatten(output_fw[0])[0].type.shape[0]
            lengths = _sequence_length(sequence_length, batch, "static_bidirectional_rnn")
            tmp, state_bw = static_rnn(cell_bw, _reverse_steps(inputs, lengths), initial_state_bw, dtype,
                                       lengths, scope=bw_scope)
    output_bw = _reverse_steps(tmp, lengths)
    outputs = [nest.pack_sequence_as(fw, [array_ops.concat([a, b], 1) for a, b in
                                          zip(nest.flatten(fw), nest.flatten(bw))])
               for fw, bw in zip(output_fw, output_bw)]
    return outputs, state_fw, state_bw

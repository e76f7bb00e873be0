"""Values of shape tensors while a run signature is lowered.

When lowering knows every type, a small integer tensor computed from shapes (``tf.shape``,
``tf.size``, slices, stacks and arithmetic of them) has a value known before the step runs:
a vector of ints, where a dim of the symbolic batch N shows as a ``Sym`` (``k*N``).
``known_value`` computes it by running the op's reference semantics at a few batch sizes
(``PROBES``; one, the fed batch size, when the signature is specialized on it) and reading
each element back as an int (the same at every probe), as ``Sym(k)`` (``k*N`` at every
probe), or as ``NONLINEAR`` (e.g. ``N - 1``: only a static batch size can hold it).

Lowering folds a value without ``Sym`` into a constant, and resolves the shape attrs that
name it (``deferred.ValueOf``) from it; a value holding ``Sym`` stays a run-time op (it reads
the batch size) while attrs get its ``Sym`` dims.
"""
from __future__ import annotations

import numpy as np

from .opdef import EvalContext, evaluate_op, get_opdef
from .types import Sym, num_elements

PROBES = (2, 3, 7, 1009)  # batch sizes the symbolic values are evaluated at
MAX_ELEMENTS = 64  # larger int tensors are not treated as shape values


class _NonLinear:
    """An element that depends on N in a way no ``k*N`` dim can hold."""

    def __repr__(self):
        return "nonlinear(N)"


NONLINEAR = _NonLinear()


def is_shape_like(ttype) -> bool:
    """An integer tensor small enough, and of static size, to be followed as a shape value."""
    if not ttype.dtype.is_integer or len(ttype.shape) > 1:
        return False
    count = num_elements(ttype.shape)
    return isinstance(count, int) and count <= MAX_ELEMENTS


def _at(value, n: int, dtype):
    """A known value (object array of ints/Sym) at batch size ``n`` as a numpy array."""
    flat = [d.coef * n if isinstance(d, Sym) else d for d in value.reshape(-1)]
    return np.array(flat, dtype=np.int64).astype(dtype).reshape(value.shape)


def _combine(results, probes):
    """Per element: an int when the same at every probe, ``Sym(k)`` when ``k*n``, else NONLINEAR."""
    stacked = np.stack([np.asarray(r, dtype=np.int64).reshape(-1) for r in results])
    out = []
    for col in stacked.T:
        if all(v == col[0] for v in col):
            out.append(int(col[0]))
            continue
        k = col[0] // probes[0]
        out.append(Sym(int(k)) if k and all(v == k * p for v, p in zip(col, probes)) else NONLINEAR)
    return np.array(out, dtype=object).reshape(np.asarray(results[0]).shape)


def known_value(kind, attrs, operand_types, operand_values, result_type, batch=None):
    """The value of one op's result (object array of ints/Sym/NONLINEAR), or None when unknown.

    ``operand_values`` holds the known values of the operands (None where unknown);
    ``batch`` is the static batch size of a specialized signature (None: symbolic).
    """
    if not is_shape_like(result_type):
        return None
    if kind == "constant":
        return np.array(attrs["value"], dtype=object)
    if kind == "shape":
        return np.array(list(operand_types[0].shape), dtype=object)
    opdef = get_opdef(kind)
    if opdef.stateful or opdef.evaluate is None or any(v is None for v in operand_values):
        return None
    if any(e is NONLINEAR for v in operand_values for e in v.reshape(-1)):
        return np.full(result_type.shape, NONLINEAR, dtype=object)
    probes = (batch,) if batch is not None else PROBES
    try:
        results = [evaluate_op(kind, EvalContext(batch=p),
                               [_at(v, p, t.dtype.np) for v, t in zip(operand_values, operand_types)], attrs)
                   for p in probes]
    except Exception:  # noqa: BLE001  (the step itself reports the op's error when it runs)
        return None
    return _combine(results, probes)


def as_dims(value):
    """A known value as a python dim (scalar) or tuple of dims; NONLINEAR entries kept."""
    if value.ndim == 0:
        return value.item()
    return tuple(value.tolist())


def holds_sym(value) -> bool:
    return any(isinstance(e, Sym) or e is NONLINEAR for e in value.reshape(-1))

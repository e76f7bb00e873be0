"""Reference interpreter: runs an IR Function with numpy, op by op.

This is the oracle: constant folding uses it and every backend is tested against it.
It checks feeds against the declared types (binding the batch size N) and checks each
result against its declared type, so a wrong shape rule cannot go unnoticed.
"""
from __future__ import annotations

import numpy as np

from . import ops as _ops  # noqa: F401  (fills the registry)
from .function import Function
from .opdef import EvalContext, evaluate_op
from .types import Sym, shape_str


class InterpreterError(ValueError):
    pass


def _bind_batch(fn: Function, feeds: dict, state: dict) -> int | None:
    """Find N from the parameters whose declared shape holds the batch dim."""
    batch = None
    for p in fn.params:
        arr = feeds.get(p.key) if p.kind == "feed" else state.get(p.key)
        if arr is None:
            continue
        for dim, size in zip(p.value.type.shape, np.shape(arr)):
            if isinstance(dim, Sym):
                if size % dim.coef:
                    raise InterpreterError(f"{p.kind} '{p.key}': dim {size} is not a multiple of {dim.coef}")
                n = size // dim.coef
                if batch is not None and n != batch:
                    raise InterpreterError(f"{p.kind} '{p.key}' has batch size {n}, but another input has {batch}")
                batch = n
    return batch


def _check(p, arr, ctx) -> np.ndarray:
    want = p.value.type
    arr = np.asarray(arr)
    if arr.dtype != want.dtype.np:
        raise InterpreterError(f"{p.kind} '{p.key}': expected dtype {want.dtype.name}, got {arr.dtype}")
    if arr.shape != ctx.shape(want.shape):
        raise InterpreterError(f"{p.kind} '{p.key}': expected shape {shape_str(want.shape)}, got {list(arr.shape)}")
    return arr


def run_function(fn: Function, state: dict, feeds: dict):
    """Execute ``fn``: returns ``(new_state, fetches)`` as dicts keyed like the function's outputs.

    ``state`` maps variable names to arrays (only those the function reads are needed);
    ``feeds`` maps feed keys to arrays already converted to the declared dtype.
    """
    ctx = EvalContext(batch=_bind_batch(fn, feeds, state))
    env = {}
    for p in fn.params:
        source = feeds if p.kind == "feed" else state
        if p.key not in source:
            raise InterpreterError(f"missing {p.kind} '{p.key}'")
        env[p.value] = _check(p, source[p.key], ctx)
    for ins in fn.body:
        args = [env[v] for v in ins.operands]
        try:
            out = evaluate_op(ins.kind, ctx, args, ins.attrs)
        except InterpreterError:
            raise
        except Exception as err:  # name the op; numpy's own message follows
            raise InterpreterError(f"{ins.kind} ({ins.loc or '%' + ins.result.name}) failed: {err}") from err
        out = np.asarray(out)
        want = ins.result.type
        if out.dtype != want.dtype.np:
            out = out.astype(want.dtype.np)
        expected_shape = ctx.shape(want.shape)
        if out.shape != expected_shape:
            raise InterpreterError(f"{ins.kind} ({ins.loc}) produced shape {list(out.shape)}, type rule says {list(expected_shape)}")
        env[ins.result] = out
    new_state = {key: env[v] for key, v in fn.state_out}
    fetches = {key: env[v] for key, v in fn.fetches}
    return new_state, fetches

"""Reference interpreter: runs an IR Function with numpy, op by op.

This is the oracle: constant folding uses it and every backend is tested against it.
It checks feeds against the declared types (binding the batch size N) and checks each
result against its declared type, so a wrong shape rule cannot go unnoticed.  A fused
instr runs its region op by op.  Planned buffers are ignored unless ``check_memory_plan``
asks for them to be simulated (``ArenaSimulator``): that is how memory plans are tested.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import ops as _ops  # noqa: F401  (fills the registry)
from .function import Function
from .opdef import VIEW_KINDS, EvalContext, evaluate_op
from .printer import value_names
from .types import Sym, shape_str
from .verifier import buffer_span



class InterpreterError(ValueError):
    pass


class MemoryPlanError(InterpreterError):
    """``check_memory_plan``: a planned buffer overwrites a live value or lies outside its arena."""


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


def _eval_plain(ins, ctx, args) -> np.ndarray:
    """Run one registry op and check its result against the declared type (cast to its dtype)."""
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
    return out


def run_instr(ins, ctx: EvalContext, args: list) -> list:
    """The result arrays of one instr: a registry op, or a fused instr's region run on ``args``.

    A region is run like a small function: its block params are bound to the operand arrays,
    its body is evaluated in order, and its yields are the results.  ``if`` runs the region
    its predicate picks on the other operands; ``while`` runs its body region while its
    cond region yields true (a loop whose condition never turns false runs forever, as in TF).
    """
    if ins.kind == "if":
        return run_region(ins.regions[0 if args[0] else 1], ctx, args[1:])
    if ins.kind == "while":
        cond, body = ins.regions
        while run_region(cond, ctx, args)[0]:
            args = run_region(body, ctx, args)
        return list(args)
    if ins.region is None:
        return [_eval_plain(ins, ctx, args)]
    return run_region(ins.region, ctx, args)


def run_region(region, ctx: EvalContext, args: list) -> list:
    """The yields of ``region`` run on ``args`` (one array per block param)."""
    local = dict(zip(region.params, args))
    for sub in region.body:
        local.update(zip(sub.results, run_instr(sub, ctx, [local[v] for v in sub.operands])))
    return [local[v] for v in region.yields]


def run_function(fn: Function, state: dict, feeds: dict, *, check_memory_plan: bool = False):
    """Execute ``fn``: returns ``(new_state, fetches)`` as dicts keyed like the function's outputs.

    ``state`` maps variable names to arrays (only those the function reads are needed);
    ``feeds`` maps feed keys to arrays already converted to the declared dtype.  Buffers and
    ``fn.memory`` are ignored, unless ``check_memory_plan``: then every value with a buffer
    goes through a simulated arena (``ArenaSimulator``), and a plan in which a write lands
    on a value that is still needed raises ``MemoryPlanError``.
    """
    ctx = EvalContext(batch=_bind_batch(fn, feeds, state))
    env = {}
    for p in fn.params:
        source = feeds if p.kind == "feed" else state
        if p.key not in source:
            raise InterpreterError(f"missing {p.kind} '{p.key}'")
        env[p.value] = _check(p, source[p.key], ctx)
    arena = ArenaSimulator(fn, ctx, env) if check_memory_plan else None
    read = arena.read if arena else env.__getitem__
    for pos, ins in enumerate(fn.body):
        outs = run_instr(ins, ctx, [read(v) for v in ins.operands])
        env.update(zip(ins.results, outs))
        if arena:
            arena.write(pos, ins, outs)
    new_state = {key: read(v) for key, v in fn.state_out}
    fetches = {key: read(v) for key, v in fn.fetches}
    return new_state, fetches


# ----------------------------------------------------------------------------- memory plan check
class _Place(NamedTuple):
    """Bytes ``[start, end)`` of one memory: ``("static", "")``, ``("batch", "")`` or ``("state", key)``."""

    space: str
    key: str
    start: int
    end: int

    def overlaps(self, other: _Place) -> bool:
        return (self.space, self.key) == (other.space, other.key) and self.start < other.end and other.start < self.end

    def __str__(self):
        where = f'state "{self.key}"' if self.space == "state" else self.space
        return f"{where} bytes [{self.start}, {self.end})"


class ArenaSimulator:
    """Runs a memory plan for real: values with buffers live as bytes in numpy arenas.

    State params start in their variable's buffer; each instr with ``buffers`` writes its
    results at the planned bytes and later instrs read their operands back from there, so a
    bad plan gives wrong numbers.  Before each write the simulator also checks that the
    bytes hold no value that is still needed (one read later, or an output), and raises
    ``MemoryPlanError`` naming both values if they do.  Two writes may legally share bytes:
    a view (``VIEW_KINDS``) placed exactly on its operand (no copy: it *is* those bytes),
    and an in-place update placed exactly on an operand this instr reads for the last time.
    Batch offsets are scaled by N; arenas are ``fn.memory``'s sizes when given.
    """

    def __init__(self, fn: Function, ctx: EvalContext, env: dict):
        self.ctx, self.env = ctx, env
        self.n = ctx.batch if ctx.batch is not None else 1
        self.names = value_names(fn)
        self.last_use = _last_uses(fn)
        self.body_len = len(fn.body)
        self.place: dict = {}  # value -> _Place, for every value that lives in planned memory
        self.owner: dict = {}  # value -> the value whose write filled its bytes (views share it)
        self.memories = self._arenas(fn)
        for p in fn.state_in():
            arr = env[p.value]
            self.memories[("state", p.key)] = np.full(arr.nbytes, 0xCD, np.uint8)
            self._store(p.value, _Place("state", p.key, 0, arr.nbytes), arr, None)

    def _arenas(self, fn: Function) -> dict:
        """The static and batch arenas, sized by ``fn.memory`` or else by the largest planned end."""
        ends = {"static": 0, "batch": 0}
        for ins in fn.body:
            for v, buf in zip(ins.results, ins.buffers or ()):
                if buf.space in ends:
                    ends[buf.space] = max(ends[buf.space], buffer_span(buf, v.type, self.n)[1])
        sizes = {"static": fn.memory.get("static_bytes"), "batch": fn.memory.get("batch_bytes")}
        sizes = {s: ends[s] if size is None else size * (self.n if s == "batch" else 1) for s, size in sizes.items()}
        return {(s, ""): np.full(size, 0xCD, np.uint8) for s, size in sizes.items()}

    def _name(self, v) -> str:
        return "%" + self.names.get(v, getattr(v, "name", "?"))

    def read(self, v) -> np.ndarray:
        """``v``'s array: from its planned bytes when it has a place, else as computed."""
        place = self.place.get(v)
        if place is None:
            return self.env[v]
        raw = self.memories[(place.space, place.key)][place.start:place.end]
        return raw.view(v.type.dtype.np).reshape(self.ctx.shape(v.type.shape)).copy()

    def write(self, pos: int, ins, arrays: list):
        """Put the results of instr ``pos`` at their planned bytes, after checking nothing live is there."""
        if ins.buffers is None:
            return
        for v, buf, arr in zip(ins.results, ins.buffers, arrays):
            start, end = buffer_span(buf, v.type, self.n)
            place = _Place(buf.space, buf.key, start, end)
            alias = self._view_operand(ins, place)
            self._check_free(pos, ins, v, place, alias)
            self._store(v, place, arr, alias)

    def _store(self, v, place: _Place, arr: np.ndarray, alias):
        memory = self.memories.setdefault((place.space, place.key), np.full(place.end, 0xCD, np.uint8))
        if place.end > memory.size:
            raise MemoryPlanError(f"memory plan: {self._name(v)} at {place} lies outside its memory of "
                                  f"{memory.size} bytes")
        if alias is None:
            memory[place.start:place.end] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        self.place[v] = place
        self.owner[v] = v if alias is None else self.owner[alias]

    def _view_operand(self, ins, place: _Place):
        """The operand a view result aliases (same bytes), or None when this write is a copy."""
        if ins.kind in VIEW_KINDS and ins.region is None and len(ins.operands) == 1:
            operand = ins.operands[0]
            if self.place.get(operand) == place:
                return operand
        return None

    def _check_free(self, pos: int, ins, v, place: _Place, alias):
        """Raise MemoryPlanError if writing ``v`` at ``place`` would clobber a value still needed."""
        for u, other in self.place.items():
            if not other.overlaps(place):
                continue
            if u in ins.results:
                reason = "another result of the same instr"
            elif self.last_use[u] < pos:
                continue  # dead: its bytes are free
            elif alias is not None and self.owner[u] is self.owner[alias]:
                continue  # the view is those very bytes
            elif self.last_use[u] == pos and other == place and u in ins.operands:
                continue  # in-place update of an operand read here for the last time
            elif self.last_use[u] >= self.body_len:
                reason = "an output of the function, still live"
            else:
                reason = f"still live (read by instr #{self.last_use[u]})"
            raise MemoryPlanError(f"memory plan: instr #{pos} {ins.kind} writes {self._name(v)} to {place}, "
                                  f"over {self._name(u)} at {other}: {reason}")


def _last_uses(fn: Function) -> dict:
    """Value -> position of the last instr that reads it (``len(body)`` for outputs; its own position if unused)."""
    last = {p.value: -1 for p in fn.params}
    for pos, ins in enumerate(fn.body):
        last.update((v, pos) for v in ins.results)
    for pos, ins in enumerate(fn.body):
        last.update((v, pos) for v in ins.operands)
    last.update((v, len(fn.body)) for v in fn.outputs())
    return last

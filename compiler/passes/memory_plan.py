"""Memory planning: give every kernel result a place in memory (the last pass).

The body is the schedule (one instr = one kernel).  Every result gets a ``Buffer``:

* ``static`` arena — values whose size has no batch dim; offsets in bytes.
* ``batch`` arena — values of ``k*N`` elements; offsets in bytes *per batch element* (the
  real offset is ``offset * N``).  Both arenas are planned with the same algorithm from
  sizes that are exact multiples (1 or N) of the planned ones, so a plan that is free of
  overlaps for N = 1 is free of overlaps for every N.
* ``state`` — a state output written in place over the variable's own buffer (see
  ``_inplace_safe``); the backend copies the other state outputs into state after the step.

Constants are baked into the static arena as buffers that live the whole step (filled once,
never shared).  Feeds and state params live in caller / state memory and get no buffer.
Views (``reshape``, ``identity``, ``stop_gradient``) get their operand's buffer; liveness
keeps the operand alive as long as the view (``liveness.py``).

Reuse is "greedy by size" (as TFLite's arena planner): blocks are placed largest first, each
in the smallest gap between already placed blocks whose lifetimes intersect its own (best
fit), else above them.  Big blocks placed first leave gaps that smaller ones fill.

``fn.memory`` = {static_bytes, batch_bytes, naive_static_bytes, naive_batch_bytes,
inplace_state}; "naive" is every non-view result in its own buffer, with no in-place writes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.function import Buffer, Function, Instr, Value
from ..ir.ops.math import ARITH, COMPARE, LOGICAL, UNARY
from ..ir.types import Sym
from ..ir.verifier import value_bytes
from .base import PassResult
from .liveness import Interval, end_position, live_intervals, root_of, view_roots

NAME = "memory-plan"
ALIGN = 64
ELEMENTWISE = frozenset(UNARY) | frozenset(ARITH) | frozenset(COMPARE) | frozenset(LOGICAL) | {
    "select", "cast", "add_n"}
# kinds that map element i to element i when operand and result shapes agree (inside a region)
_IN_PLACE_KINDS = ELEMENTWISE | {"identity", "stop_gradient", "broadcast_to"}
# fused patterns whose kernel visits each element of a K-shaped elementwise value exactly once,
# reading its inputs before writing its result: a loop nest, and a contraction's epilogue (each
# output element is finished once the anchor's sum is done).  A "reduce" kernel may run its
# prologue again in a second pass over the input, so it never writes over what it reads.
IN_PLACE_PATTERNS = frozenset({"loop", "contraction"})


def align(nbytes: int) -> int:
    """Round up to ``ALIGN`` bytes; an empty value still gets one line, so addresses stay distinct."""
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


def value_space_size(value: Value) -> tuple:
    """(arena, aligned bytes) of a value: ("batch", bytes per batch element) or ("static", bytes)."""
    nbytes = value_bytes(value.type)
    if isinstance(nbytes, Sym):
        return "batch", align(nbytes.coef)
    return "static", align(nbytes)


# ----------------------------------------------------------------------------- in-place state
def _region_elementwise(region, params, shape) -> bool:
    """True when every op of ``region`` that depends on ``params`` is elementwise at ``shape``.

    Then element i of every such value depends only on element i of the params (never a
    contraction or reduction of them), so a kernel that reads element i before writing
    element i may write over the params.
    """
    if any(p.type.shape != shape for p in params):
        return False
    tainted = set(params)
    for ins in region.body:
        if any(v in tainted for v in ins.operands):
            if ins.kind not in _IN_PLACE_KINDS or any(r.type.shape != shape for r in ins.results):
                return False
            tainted.update(ins.results)
    return True


def _inplace_safe(ins: Instr, pos: int, old, roots: dict, intervals: dict) -> bool:
    """May the result of kernel ``ins`` (at ``pos``) be written over the state buffer ``old``?

    ``old`` is the state param holding the variable's value from before the step (None when
    the step does not read it).  Safe when nothing reads ``old`` after this kernel, and the
    kernel either does not read ``old`` or reads it elementwise at the result's shape (and not
    through a view, whose indexing could differ); for a fused kernel, of a pattern in
    ``IN_PLACE_PATTERNS`` whose region uses the old value only elementwise.
    """
    if old is None:
        return True
    if intervals[old].end > pos:
        return False
    reads = [j for j, v in enumerate(ins.operands) if root_of(v, roots) is old]
    if not reads:
        return True
    if any(ins.operands[j] is not old for j in reads):
        return False
    if ins.region is None:
        return ins.kind in ELEMENTWISE and ins.result.type.shape == old.type.shape
    if ins.attrs.get("pattern") not in IN_PLACE_PATTERNS:
        return False
    return _region_elementwise(ins.region, [ins.region.params[j] for j in reads], old.type.shape)


def inplace_targets(fn: Function, roots: dict, intervals: dict) -> dict:
    """State output value -> variable name, for the outputs written in place over their variable."""
    old_values = {p.key: p.value for p in fn.state_in()}
    position = {id(ins): pos for pos, ins in enumerate(fn.body)}
    chosen: dict = {}
    for key, value in fn.state_out:
        ins = value.producer
        if value in chosen or value in roots or not isinstance(ins, Instr) or ins.kind == "constant":
            continue
        if id(ins) in position and _inplace_safe(ins, position[id(ins)], old_values.get(key), roots, intervals):
            chosen[value] = key
    return chosen


# ----------------------------------------------------------------------------- arena allocation
@dataclass
class Block:
    """One buffer to place in an arena: ``size`` bytes for the lifetime ``interval``."""

    value: Value
    size: int
    interval: Interval
    order: int  # position in the body, for a deterministic plan
    offset: int = -1


def assign_offsets(blocks: list) -> int:
    """Place blocks (greedy by size, best-fit gap); returns the arena size in bytes.

    Each block goes into the smallest gap, lowest first, between the blocks already placed
    whose lifetimes overlap its own (in offset order), else above them all.  The placed
    blocks are kept in arrays so that finding the overlapping ones and their gaps is a few
    vector operations per block, not a Python loop over every placed block."""
    ordered = sorted(blocks, key=lambda b: (-b.size, b.interval.start, b.order))
    starts, ends, offsets, sizes = (np.zeros(len(ordered), np.int64) for _ in range(4))
    for count, block in enumerate(ordered):
        live = np.flatnonzero((starts[:count] <= block.interval.end) & (ends[:count] >= block.interval.start))
        block.offset = _best_fit(offsets[live], sizes[live], block.size)
        starts[count], ends[count] = block.interval.start, block.interval.end
        offsets[count], sizes[count] = block.offset, block.size
    return max((b.offset + b.size for b in blocks), default=0)


def _best_fit(offsets, sizes, size: int) -> int:
    """The offset for ``size`` bytes among blocks at ``offsets`` (placement order): the start
    of the smallest gap that fits (the lowest of equal ones), else the top of them all."""
    if not len(offsets):
        return 0
    by_offset = np.argsort(offsets, kind="stable")
    lo, tops = offsets[by_offset], np.maximum.accumulate(offsets[by_offset] + sizes[by_offset])
    below = np.concatenate(([0], np.maximum(tops[:-1], 0)))
    gaps = lo - below
    fits = np.flatnonzero(gaps >= size)
    if not len(fits):
        return int(max(tops[-1], 0))
    return int(below[fits[np.argmin(gaps[fits])]])


def _arena_blocks(fn: Function, roots: dict, intervals: dict, inplace: dict) -> dict:
    """Arena name -> Blocks for every body result that owns bytes in an arena."""
    arenas: dict = {"static": [], "batch": []}
    whole_step = Interval(-1, end_position(fn))
    order = 0
    for ins in fn.body:
        for value in ins.results:
            if value in roots or value in inplace:
                continue
            space, size = value_space_size(value)
            life = whole_step if ins.kind == "constant" else intervals[value]
            arenas[space].append(Block(value, size, life, order))
            order += 1
    return arenas


def _naive_bytes(fn: Function, roots: dict) -> dict:
    """Bytes per arena when every non-view result has its own buffer."""
    total = {"static": 0, "batch": 0}
    for ins in fn.body:
        for value in ins.results:
            if value not in roots:
                space, size = value_space_size(value)
                total[space] += size
    return total


def _assign_buffers(fn: Function, roots: dict, inplace: dict, arenas: dict) -> None:
    """Fill ``ins.buffers``: arena blocks, in-place state writes, then views (their root's buffer)."""
    where: dict = {p.value: Buffer("state", 0, p.key) for p in fn.state_in()}
    where.update({value: Buffer("state", 0, key) for value, key in inplace.items()})
    for space, blocks in arenas.items():
        where.update({b.value: Buffer(space, b.offset) for b in blocks})
    for ins in fn.body:
        ins.buffers = [where[root_of(v, roots)] for v in ins.results]


# ----------------------------------------------------------------------------- entry points
def format_bytes(nbytes: int) -> str:
    """Human-readable size: "512 B", "410 KiB", "1.2 MiB"."""
    size, unit = float(nbytes), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    if unit == "B":
        return f"{nbytes} B"
    return f"{size:.1f} {unit}" if size < 100 else f"{size:.0f} {unit}"


def summarize(memory: dict) -> str:
    """One line: arena vs naive bytes and the number of in-place state updates."""
    def both(static, batch):
        return f"{format_bytes(static)} + {format_bytes(batch)}*N"

    count = memory["inplace_state"]
    return (f"arena {both(memory['static_bytes'], memory['batch_bytes'])} vs naive "
            f"{both(memory['naive_static_bytes'], memory['naive_batch_bytes'])}; "
            f"{count} state update{'' if count == 1 else 's'} in place")


def run(fn: Function) -> PassResult:
    """Plan buffers for every kernel result of ``fn`` (mutated) and fill ``fn.memory``."""
    roots = view_roots(fn)
    intervals = live_intervals(fn, roots)
    inplace = inplace_targets(fn, roots, intervals)
    arenas = _arena_blocks(fn, roots, intervals, inplace)
    sizes = {space: assign_offsets(blocks) for space, blocks in arenas.items()}
    _assign_buffers(fn, roots, inplace, arenas)
    naive = _naive_bytes(fn, roots)
    fn.memory = {
        "static_bytes": sizes["static"], "batch_bytes": sizes["batch"],
        "naive_static_bytes": naive["static"], "naive_batch_bytes": naive["batch"],
        "inplace_state": len(inplace),
    }
    stats = dict(fn.memory, buffers=sum(len(b) for b in arenas.values()), views=len(roots))
    return PassResult(fn, summarize(fn.memory), stats)


def arena_bytes(fn: Function, batch: int) -> int:
    """Bytes of workspace one step of ``fn`` needs at batch size ``batch`` (after planning)."""
    if not fn.memory:
        raise ValueError(f"func @{fn.name} has no memory plan; run the {NAME} pass first")
    return fn.memory["static_bytes"] + fn.memory["batch_bytes"] * batch

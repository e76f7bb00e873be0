"""Liveness over a scheduled function body, for memory planning.

The body is the schedule: instruction ``i`` is the ``i``-th kernel.  A value is live on
the closed interval ``[start, end]`` of kernel positions: from the kernel that writes it to
the last kernel that reads it.  Two values whose intervals intersect may not share bytes
(a kernel's operands and results are live at the same position, so a kernel never writes
over what it reads — in-place state updates are decided separately, see ``memory_plan``).

Views (``reshape``, ``identity``, ``stop_gradient``) are the same bytes as their operand: a
view's uses count as uses of its *root* (the value that owns the bytes), so the root stays
alive as long as any of its views.  A view of a feed is not a view here: feeds live in the
caller's memory, which the plan does not own, so such a view is copied into the arena.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.function import Function, Param, Value
from ..ir.opdef import VIEW_KINDS


@dataclass
class Interval:
    """A value's lifetime: kernel positions ``start..end`` (both inclusive)."""

    start: int
    end: int

    def overlaps(self, other: "Interval") -> bool:
        return self.start <= other.end and other.start <= self.end


def is_feed(value: Value) -> bool:
    return isinstance(value.producer, Param) and value.producer.kind == "feed"


def view_roots(fn: Function) -> dict:
    """Map every view result to the value that owns its bytes (follows chains of views).

    Only plain (single-result) view instrs of the body count; a view whose root would be a
    feed owns its bytes (it is a copy, see the module doc).
    """
    roots: dict = {}
    for ins in fn.body:
        if ins.kind in VIEW_KINDS and len(ins.results) == 1 and len(ins.operands) == 1:
            root = roots.get(ins.operands[0], ins.operands[0])
            if not is_feed(root):
                roots[ins.result] = root
    return roots


def root_of(value: Value, roots: dict) -> Value:
    return roots.get(value, value)


def end_position(fn: Function) -> int:
    """The position just after the last kernel: where outputs are read (copied out)."""
    return len(fn.body)


def live_intervals(fn: Function, roots: dict) -> dict:
    """Root value -> Interval, for params (start -1) and every body result that owns bytes.

    Uses are operands of body instrs (a fused instr's operands are its uses; its region only
    reads its own block params) and the function outputs (fetches, state outputs), which are
    read at ``end_position``.  A value with no use ends where it starts.
    """
    intervals: dict = {p.value: Interval(-1, -1) for p in fn.params}
    for pos, ins in enumerate(fn.body):
        for v in ins.results:
            if v not in roots:
                intervals[v] = Interval(pos, pos)
    for pos, ins in enumerate(fn.body):
        for v in ins.operands:
            _extend(intervals, root_of(v, roots), pos)
    last = end_position(fn)
    for v in fn.outputs():
        _extend(intervals, root_of(v, roots), last)
    return intervals


def _extend(intervals: dict, root: Value, pos: int) -> None:
    """Make ``root`` live at least until ``pos`` (values defined outside the body are ignored)."""
    interval = intervals.get(root)
    if interval is not None and interval.end < pos:
        interval.end = pos

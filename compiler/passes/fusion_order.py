"""A topological order of fusion units kept valid while units merge, and the cycle check
(rule F4) it makes cheap.

Fusion asks, before every merge of units ``a`` and ``b``, whether a path leads from one to
the other through a third unit (merging them would then close a cycle).  A search over the
whole graph per question made the pass quadratic: an unrolled RNN reads its weights, bias
and constants at every step, and every pair of those readers was a whole-graph search.

``UnitOrder`` keeps ``pos``, a topological numbering of the units (initially the body
order).  A path ``x -> ... -> y`` needs ``pos[x] < pos[y]``, and every unit on it lies
strictly between them, so the search runs one way only and never leaves that window.
After a merge the merged unit must come after every unit that reaches either part and
before every unit either part reaches: the units between the two parts are reordered as
Pearce and Kelly do for a new edge (those reaching the later part first, in their old
order, then the merged unit, then those the earlier part reaches), reusing their
positions; everything else keeps its number.  ``work`` counts the units visited (tests
check it stays proportional to the graph).
"""
from __future__ import annotations


class UnitOrder:
    """Topological positions of the units of a fusion graph (see the module doc).

    ``succ(unit)`` and ``pred(unit)`` give the units reading / read by a unit; they are
    the fusion graph's own (kept up to date by it across merges).  ``known_path(lo, hi)``
    may certify cheaply that a path through a third unit exists (landmarks)."""

    def __init__(self, units, succ, pred, known_path=None):
        self.pos = {g: i for i, g in enumerate(units)}
        self.succ = succ
        self.pred = pred
        self.known_path = known_path or (lambda lo, hi: False)
        self.work = 0

    def merge_plan(self, a, b):
        """None when a path leads between units ``a`` and ``b`` (either way) through another
        unit (a direct read of one by the other is no such path); else the plan that
        ``merged`` needs to renumber once the two are one unit.

        The units between the two that reach the later one (``behind``) are found first: a
        path from the earlier one through another unit must enter one of them, so it exists
        exactly when the earlier one reads one of them.  When there are none (a consumer
        that reads only the producer and older values), the merged unit can take the
        earlier one's place and nothing else is searched."""
        lo, hi = (a, b) if self.pos[a] < self.pos[b] else (b, a)
        if self.known_path(lo, hi):
            return None
        behind = self._backward(hi, lo)
        if behind is None:
            return None
        ahead = self._forward(lo, hi) if behind else []
        if ahead is None:
            return None
        return lo, hi, ahead, behind

    def merged(self, plan, keep, gone) -> None:
        """Renumber after ``gone`` was merged into ``keep`` (``plan`` from ``merge_plan``,
        taken before the merge): the units between the two parts that reach the later one
        move to the lowest of their positions, in their old order, then ``keep``, then the
        units the earlier part reaches, to the highest positions."""
        lo, hi, ahead, behind = plan
        slots = sorted([self.pos[lo], self.pos[hi]] + [self.pos[g] for g in ahead + behind])
        behind.sort(key=self.pos.__getitem__)
        ahead.sort(key=self.pos.__getitem__)
        del self.pos[gone]
        for g, p in zip(behind + [keep], slots):
            self.pos[g] = p
        for g, p in zip(ahead, slots[len(slots) - len(ahead):]):
            self.pos[g] = p

    def _forward(self, src, dst):
        """The units reachable from ``src`` that come before ``dst``, not entering ``dst``
        (None when a path through another unit reaches ``dst``)."""
        limit = self.pos[dst]
        seen, out, stack = set(), [], [src]
        while stack:
            g = stack.pop()
            for h in self.succ(g):
                self.work += 1
                if h is dst:
                    if g is not src:
                        return None
                    continue
                if h not in seen and self.pos[h] < limit:
                    seen.add(h)
                    out.append(h)
                    stack.append(h)
        return out

    def _backward(self, src, dst):
        """The units reaching ``src`` that come after ``dst`` (``dst`` itself excluded), or
        None when ``dst`` reaches ``src`` through another unit."""
        limit = self.pos[dst]
        seen, out, stack = set(), [], [src]
        while stack:
            g = stack.pop()
            for h in self.pred(g):
                self.work += 1
                if h is dst:
                    if g is not src:
                        return None
                    continue
                if h in seen or self.pos[h] <= limit:
                    continue
                seen.add(h)
                out.append(h)
                stack.append(h)
        return out

    def related(self, sources) -> dict:
        """For the units among ``sources`` (a list; a unit may appear more than once): unit ->
        bit mask of the positions in ``sources`` holding that unit or a unit that a path
        through another unit joins to it, either way (what ``merge_plan`` refuses), for
        all pairs from two sweeps.

        The forward sweep visits the units reachable from the sources up to the last
        source in topological order, carrying the sources that reach each; the backward
        sweep does the same the other way.  Valid until the next merge."""
        bit = {}
        for i, g in enumerate(sources):
            bit[g] = bit.get(g, 0) | (1 << i)
        lo, hi = min(self.pos[g] for g in bit), max(self.pos[g] for g in bit)
        ahead = self._sweep(bit, self.succ, self.pred, lambda g: self.pos[g] <= hi, False)
        behind = self._sweep(bit, self.pred, self.succ, lambda g: self.pos[g] >= lo, True)
        return {g: ahead[g] | behind[g] | bit[g] for g in bit}

    def _sweep(self, bit, out, into, inside, reverse) -> dict:
        """Unit -> sources reaching it through another unit along ``out`` edges (``into``
        the reverse ones), over the units ``inside`` the window reachable from the sources."""
        seen, stack = set(bit), list(bit)
        while stack:
            for h in out(stack.pop()):
                self.work += 1
                if h not in seen and inside(h):
                    seen.add(h)
                    stack.append(h)
        reach, via = {}, {}
        for g in sorted(seen, key=self.pos.__getitem__, reverse=reverse):
            mask = thru = 0
            for p in into(g):
                self.work += 1
                r = reach.get(p, 0)
                thru |= r
                mask |= r | bit.get(p, 0)
            reach[g], via[g] = mask, thru
        return via

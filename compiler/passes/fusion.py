"""Fusion: decide the kernels.  Every elementwise, reduction and contraction instr ends up in
exactly one ``fused`` instr (a group of one op is a group too); every backend renders each
fused instr as one kernel and the remaining plain instrs (transpose, slice, concat, pad,
gather, pools and their grads, argmax, shape, check_range, random_shuffle, ...) one by one.
Constants and views (reshape, identity, stop_gradient) are no kernels.

Representation
--------------
``Instr("fused", operands, {"pattern": P}, results, loc, region=Region(params, body, yields))``

F1  ``params[i]`` has the type of ``operands[i]``; no value appears twice among the operands.
F2  The region body is flat and in dependency order; each instr reads only region params and
    values defined before it in the body.  Constants with at most 16 elements that the group
    reads are copied into the body (first, in order of first use); they are never operands.
F3  ``results`` are exactly the values computed by the group that are used outside it (by an
    outer instr or a function output), in body order; ``yields[j]`` is the inner value of
    ``results[j]`` (same type).  The fused instr keeps the original Values as its results.
F4  No cycle: no path leads from a group through an outside instr back into the group.
    The fused instr's loc is its anchor's, else its first reduction's, else its first member's.
F5  "Elementwise" below means the kinds of ``fusion_rules.ELEMENTWISE`` (unary/binary math,
    select, cast, add_n, broadcast_to) and the random draws (``fusion_rules.RANDOM``, switch
    ``RANDOM_IN_REGIONS``).  An elementwise member's result shape equals the iteration space
    of its part (below), element for element; its operands broadcast to that shape numpy-style
    (fewer dims, or size-1 dims).  A random draw's element index is the row-major flat index of
    its result in that space.

Patterns
--------
"loop"          (iteration space S)
  L1  Every body instr except copied constants is elementwise with result shape S; dtypes may
      differ (bool masks, casts).  One loop nest over S computes all results.

"reduce"        (S_in, axes, keepdims; S_out = the reductions' result shape)
  D1  One or more reductions (``fusion_rules.REDUCTION``), each with operand shape S_in and the
      same normalized axes and keepdims, so each result has shape S_out; S_in != S_out (a
      reduction over size-1 axes or no axes stays a group of its own).
  D2  The other members are elementwise.  Those with result shape S_in are the prologue: they
      read only params, constants and prologue values.  Those with result shape S_out are the
      epilogue: they read params, constants, reduction results and epilogue values, never a
      prologue value.  Reductions read a param, a constant or a prologue value.
  D3  Results may be prologue values (shape S_in), reduction results or epilogue values (S_out).

"contraction"   (anchor result shape S_c)
  C1  Exactly one member is a contraction (``fusion_rules.CONTRACTION``): the anchor.  Each of
      its operands is a param, a copied constant or (C2) the value of a prologue.
  C2  Prologue (anchor kind ``matmul`` only): the members the anchor depends on.  They form at
      most one elementwise prologue per operand; prologue i has result shape equal to the
      anchor's operand i, reads only params, constants and its own values, and its only value
      read outside prologue i is operand i itself, read once (by the anchor) and not a result.
  C3  Epilogue: every other member, elementwise with result shape S_c; it reads params,
      constants, the anchor result and epilogue values, never a prologue value.
  C4  Results may be the anchor result and epilogue values.

``fusion_rules.region_parts(fused_instr)`` reads these parts back off a region (and raises
``FusionRuleError`` where a region breaks a rule): backends split groups with it.

Grouping is greedy and deterministic: producer→consumer merges in body order, then sibling
merges (two loop groups, or two reduce groups, with the same space that read one outer value
or one constant), repeated until nothing merges.  Each merge is checked against F4 first.
Already-fused instrs are left alone, so the pass is idempotent.

Stats: ``ops_before`` (body instrs), ``kernels_before`` / ``kernels`` (body instrs that are
not constants or views), ``fused_ops`` (instrs moved into groups), ``groups`` and its split
``loop`` / ``reduce`` / ``contraction``, ``copied_constants``.
"""
from __future__ import annotations

import heapq

from ..ir.function import Function, Instr, Region, Value
from .base import PassResult, uses
from .fusion_order import UnitOrder
from .fusion_rules import PATTERNS, VIEWS, combine, is_small_constant, new_group

NAME = "fusion"


class _Graph:
    """The body as units (groups) with the use information the rules need."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.index = {ins: i for i, ins in enumerate(fn.body)}
        self.producer = {}
        self.value_users = {}
        for ins in fn.body:
            for r in ins.results:
                self.producer[r] = ins
            for v in ins.operands:
                users = self.value_users.setdefault(v, [])
                if not users or users[-1] is not ins:
                    users.append(ins)
        self.outputs = set(fn.outputs())
        self.counts = uses(fn)
        self.unit = {ins: new_group(ins, i) for i, ins in enumerate(fn.body)}
        # unit -> the instrs outside it that read its values (kept up to date by absorb)
        self.out_users = {self.unit[ins]: list(dict.fromkeys(
            u for r in ins.results for u in self.value_users.get(r, ()) if u is not ins)) for ins in fn.body}
        # unit -> the instrs outside it whose values it reads
        self.in_producers = {self.unit[ins]: list(dict.fromkeys(
            p for p in map(self.producer.get, ins.operands) if p is not None and p is not ins)) for ins in fn.body}
        self.order = UnitOrder([self.unit[ins] for ins in fn.body], self.succ, self.pred, self.known_path)
        self._landmark_masks(fn.body)

    def _landmark_masks(self, body) -> None:
        """Reachability of a few landmark instrs (evenly spread over the body), as bit masks
        per unit: ``down`` the landmarks a member reaches, ``up`` those reaching a member."""
        self.landmarks = body[::max(1, len(body) // _LANDMARKS)][:_LANDMARKS]
        bit = {ins: 1 << k for k, ins in enumerate(self.landmarks)}
        down, up = {}, {}
        for ins in reversed(body):
            mask = 0
            for u in {u for r in ins.results for u in self.value_users.get(r, ())}:
                mask |= down[u] | bit.get(u, 0)
            down[ins] = mask
        for ins in body:
            mask = 0
            for p in {self.producer[v] for v in ins.operands if v in self.producer}:
                mask |= up[p] | bit.get(p, 0)
            up[ins] = mask
        self.down = {self.unit[ins]: down[ins] for ins in body}
        self.up = {self.unit[ins]: up[ins] for ins in body}

    def known_path(self, lo, hi) -> bool:
        """A path lo -> landmark -> hi in the original body, the landmark in a third unit:
        merged units keep every path of their members, so lo reaches hi through it."""
        mask = self.down[lo] & self.up[hi]
        while mask:
            low = mask & -mask
            g = self.unit[self.landmarks[low.bit_length() - 1]]
            if g is not lo and g is not hi:
                return True
            mask ^= low
        return False

    def use_count(self, v: Value) -> int:
        return self.counts.get(v, 0)

    def escapes(self, group) -> list:
        """Member values used outside the group (they become its results), in body order."""
        return [r for m in group.members for r in m.results
                if r in self.outputs or any(u not in group.member_set for u in self.value_users.get(r, ()))]

    def succ(self, group) -> list:
        """Units that read a value of the group."""
        return list(dict.fromkeys(map(self.unit.__getitem__, self.out_users[group])))

    def pred(self, group) -> list:
        """Units whose values the group reads."""
        return list(dict.fromkeys(map(self.unit.__getitem__, self.in_producers[group])))

    def absorb(self, keep, gone, combined) -> None:
        """Make ``gone``'s members part of ``keep`` with the combined pattern and roles."""
        keep.pattern, keep.role = combined
        keep.members = sorted(keep.members + gone.members, key=self.index.__getitem__)
        keep.member_set |= gone.member_set
        for m in gone.members:
            self.unit[m] = keep
        self.down[keep] |= self.down.pop(gone)
        self.up[keep] |= self.up.pop(gone)
        for edges in (self.out_users, self.in_producers):
            both = edges[keep] + edges.pop(gone)
            edges[keep] = [u for u in dict.fromkeys(both) if u not in keep.member_set]


def _try_merge(graph: _Graph, a, b) -> bool:
    """Merge units ``a`` and ``b`` when a pattern allows it and no cycle (F4) would appear
    (no path between them through another unit: ``UnitOrder.merge_plan``)."""
    if a is b:
        return False
    combined = combine(a, b, graph)
    if combined is None:
        return False
    plan = graph.order.merge_plan(a, b)
    if plan is None:
        return False
    keep, gone = (a, b) if a.first <= b.first else (b, a)
    graph.absorb(keep, gone, combined)
    graph.order.merged(plan, keep, gone)
    return True


def _producer_consumer(graph: _Graph) -> bool:
    """Visit instrs in body order; merge each into the groups producing its operands."""
    changed = False
    for ins in graph.fn.body:
        for v in ins.operands:
            p = graph.producer.get(v)
            if p is not None and _try_merge(graph, graph.unit[p], graph.unit[ins]):
                changed = True
    return changed


def _siblings(graph: _Graph) -> bool:
    """Merge loop (or reduce) groups with the same space that read one outer value.

    A value read by many groups (a weight or a constant read at every step of an unrolled
    RNN) gets its cycle checks for all pairs from one sweep (``UnitOrder.related``), taken
    again after each merge, and visits only the pairs the sweep leaves open; a merge the
    sweep allows is still checked by ``_try_merge``."""
    changed = False
    values = [p.value for p in graph.fn.params] + [r for ins in graph.fn.body for r in ins.results]
    for v in values:
        p = graph.producer.get(v)
        readers = [u for u in graph.value_users.get(v, ()) if graph.unit[u].pattern in ("loop", "reduce")]
        swept = len(readers) > _SWEEP_READERS
        near = None
        for i, x in enumerate(readers):
            j = i + 1
            while j < len(readers):
                if swept:
                    near = near or graph.order.related([graph.unit[u] for u in readers])
                    open_ = (~near[graph.unit[x]] >> j) << j & ((1 << len(readers)) - 1)
                    if not open_:
                        break
                    j = (open_ & -open_).bit_length() - 1
                gx, gy = graph.unit[x], graph.unit[readers[j]]
                j += 1
                if gx.pattern != gy.pattern or gx.pattern not in ("loop", "reduce") \
                        or graph.unit.get(p) in (gx, gy) or gx is gy:
                    continue
                if _try_merge(graph, gx, gy):
                    changed, near = True, None
    return changed


# landmark instrs whose reachability short-cuts the cycle checks (fusion_order.UnitOrder)
_LANDMARKS = 64
# readers of one value above which the sibling cycle checks come from one sweep
_SWEEP_READERS = 8


def _grow(graph: _Graph) -> None:
    """Merge until a fixpoint (a merge can make an earlier refused one acyclic)."""
    while _producer_consumer(graph) | _siblings(graph):
        pass


class _Namer:
    """Fresh names for region values (the printer renumbers; these only need to be unique)."""

    def __init__(self):
        self.count = 0

    def __call__(self, ttype) -> Value:
        self.count += 1
        return Value(f"fz{self.count}", ttype)


def _clone(ins: Instr, operands, namer: _Namer) -> Instr:
    return Instr(ins.kind, operands, ins.attrs, [namer(r.type) for r in ins.results], ins.loc)


def _region_instr(group, graph: _Graph, namer: _Namer) -> tuple:
    """The fused instr of a group, and the outer constants it copied."""
    inner, operands, params, consts = {}, [], [], []
    for m in group.members:  # F1/F2: outer operands and small constants, in order of first use
        for v in m.operands:
            p = graph.producer.get(v)
            if v in inner or p in group.member_set:
                continue
            if p is not None and is_small_constant(p):
                consts.append(_clone(p, [], namer))
                inner[v] = consts[-1].result
            else:
                operands.append(v)
                params.append(namer(v.type))
                inner[v] = params[-1]
    body = list(consts)
    for m in group.members:
        body.append(_clone(m, [inner[v] for v in m.operands], namer))
        inner.update(zip(m.results, body[-1].results))
    results = graph.escapes(group)
    region = Region(params, body, [inner[r] for r in results])
    loc = next((m.loc for m in group.members if group.role[m] in ("anchor", "red")), group.members[0].loc)
    copied = [graph.producer[v] for v in inner if graph.producer.get(v) is not None
              and graph.producer[v] not in group.member_set and is_small_constant(graph.producer[v])]
    return Instr("fused", operands, {"pattern": group.pattern}, results, loc, region=region), copied


def _schedule(graph: _Graph) -> list:
    """Units in a dependency order; ties go to the unit whose first member came first."""
    units = list(dict.fromkeys(graph.unit[ins] for ins in graph.fn.body))
    succ = {id(g): graph.succ(g) for g in units}
    indeg = {id(g): 0 for g in units}
    for g in units:
        for h in succ[id(g)]:
            indeg[id(h)] += 1
    ready = [(g.first, id(g), g) for g in units if indeg[id(g)] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, g = heapq.heappop(ready)
        order.append(g)
        for h in succ[id(g)]:
            indeg[id(h)] -= 1
            if indeg[id(h)] == 0:
                heapq.heappush(ready, (h.first, id(h), h))
    assert len(order) == len(units), "fusion produced a cycle"
    return order


def _rebuild(fn: Function, graph: _Graph) -> dict:
    """Replace the body by fused instrs and the instrs that stay alone; return the counts."""
    namer = _Namer()
    stats = {"ops_before": len(fn.body), "kernels_before": _kernels(fn.body), "fused_ops": 0,
             "groups": 0, **{p: 0 for p in PATTERNS}, "copied_constants": 0}
    body, copied = [], set()
    for g in _schedule(graph):
        if g.pattern is None:
            body.append(g.members[0])
            continue
        fused, consts = _region_instr(g, graph, namer)
        body.append(fused)
        copied.update(consts)
        stats["fused_ops"] += len(g.members)
        stats["groups"] += 1
        stats[g.pattern] += 1
        stats["copied_constants"] += len(fused.region.body) - len(g.members)
    read = {v for ins in body for v in ins.operands} | set(fn.outputs())
    fn.body = [ins for ins in body if not (ins in copied and ins.result not in read)]
    stats["kernels"] = _kernels(fn.body)
    return stats


def _kernels(body) -> int:
    """Body instrs that run as kernels: everything but constants and views."""
    return sum(1 for ins in body if ins.kind != "constant" and ins.kind not in VIEWS)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run(fn: Function) -> PassResult:
    """Group the body into fused kernels (see the module docstring for the rules)."""
    graph = _Graph(fn)
    _grow(graph)
    stats = _rebuild(fn, graph)
    summary = (f"fused {_plural(stats['fused_ops'], 'op')} into {_plural(stats['groups'], 'kernel')} "
               f"(loop {stats['loop']}, reduce {stats['reduce']}, contraction {stats['contraction']})")
    return PassResult(fn, summary, stats)


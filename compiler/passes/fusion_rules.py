"""Fusion rules: which kinds fuse, and when two groups may become one kernel.

The fusion pass (``fusion.py``) builds groups greedily; this module answers the two
questions it asks: *what is this instr* (``classify``) and *may these two groups be one
kernel, and with which part does each member play* (``combine``).  The legality rules
are written out at the top of ``fusion.py``; the functions here implement them.
"""
from __future__ import annotations

import numpy as np

from ..ir.ops import math as _math

# ----------------------------------------------------------------------------- kinds
ELEMENTWISE = frozenset(_math.UNARY) | frozenset(_math.ARITH) | frozenset(_math.COMPARE) \
    | frozenset(_math.LOGICAL) | frozenset({"select", "cast", "add_n", "broadcast_to", "rng_fold"})
# pure functions of (seed, step operand, element index): may be generated inside a loop
RANDOM = frozenset({"random_uniform", "random_normal", "truncated_normal"})
# functions of the element index alone (tf.range of a batch-dependent length)
INDEXED = frozenset({"range"})
# the one switch: set False to keep random draws outside fused regions
RANDOM_IN_REGIONS = True
REDUCTION = frozenset(_math.REDUCE)
CONTRACTION = frozenset({
    "matmul", "conv2d", "conv2d_backprop_input", "conv2d_backprop_filter",
    "depthwise_conv2d", "depthwise_conv2d_backprop_input", "depthwise_conv2d_backprop_filter",
})
# free views: no kernel, the result aliases the operand's buffer
from ..ir.opdef import VIEW_KINDS as VIEWS  # noqa: E402
# constants with at most this many elements are copied into the regions that use them
SMALL_CONSTANT = 16

PATTERNS = ("loop", "reduce", "contraction")


def classify(ins) -> str:
    """"elementwise" | "reduction" | "contraction" | "constant" | "view" | "other"."""
    kind = ins.kind
    if ins.region is not None or kind == "fused":
        return "other"  # already fused: opaque (the pass is idempotent)
    if kind in ELEMENTWISE or kind in INDEXED or (RANDOM_IN_REGIONS and kind in RANDOM):
        return "elementwise"
    if kind in REDUCTION:
        return "reduction"
    if kind in CONTRACTION:
        return "contraction"
    if kind == "constant":
        return "constant"
    if kind in VIEWS:
        return "view"
    return "other"


def is_small_constant(ins) -> bool:
    """A constant cheap enough to copy into every region that reads it."""
    return ins.kind == "constant" and np.asarray(ins.attrs["value"]).size <= SMALL_CONSTANT


def reduce_key(ins) -> tuple:
    """(S_in, normalized axes, keepdims) of a reduction: reductions with one key share a loop."""
    shape = ins.operands[0].type.shape
    axes = _math.reduction_axes(len(shape), ins.attrs["axes"])
    return (tuple(shape), axes, bool(ins.attrs["keepdims"]))


# ----------------------------------------------------------------------------- groups
class Group:
    """A unit of the schedule: a plain instr that stays alone (pattern None) or a fusion group.

    ``role`` gives each member its part: "loop" (loop pattern); "pro" / "red" / "epi"
    (reduce); "anchor" / "pro0" / "pro1" / "epi" (contraction).
    """

    __slots__ = ("first", "member_set", "members", "pattern", "role")

    def __init__(self, ins, index: int, pattern, role):
        self.members = [ins]
        self.member_set = {ins}
        self.pattern = pattern
        self.role = {ins: role}
        self.first = index

    def space(self):
        """The iteration space: S (loop), (S_in, axes, keepdims) (reduce), S_c (contraction)."""
        if self.pattern == "loop":
            return tuple(self.members[0].results[0].type.shape)
        if self.pattern == "reduce":
            red = next(m for m in self.members if self.role[m] == "red")
            return reduce_key(red)
        anchor = next(m for m in self.members if self.role[m] == "anchor")
        return tuple(anchor.result.type.shape)

    def out_shape(self):
        """S_out of a reduce group (the reductions' result shape)."""
        red = next(m for m in self.members if self.role[m] == "red")
        return tuple(red.result.type.shape)


def new_group(ins, index: int):
    """The starting group of one instr: fusible kinds get a pattern, the rest stay alone."""
    cls = classify(ins)
    if cls == "elementwise":
        return Group(ins, index, "loop", "loop")
    if cls == "reduction":
        return Group(ins, index, "reduce", "red")
    if cls == "contraction":
        return Group(ins, index, "contraction", "anchor")
    return Group(ins, index, None, None)


def reads(a: Group, b: Group, a_roles=None, b_roles=None) -> bool:
    """Does a member of ``a`` (with a role in ``a_roles``) read a value of a member of ``b``
    (with a role in ``b_roles``)?  ``None`` means any role."""
    for m in a.members:
        if a_roles is not None and a.role[m] not in a_roles:
            continue
        for v in m.operands:
            p = v.producer
            if p in b.member_set and (b_roles is None or b.role[p] in b_roles):
                return True
    return False


# ----------------------------------------------------------------------------- combine
def combine(a: Group, b: Group, graph):
    """The role map of ``a`` and ``b`` as one group, or None where no pattern allows it.

    ``graph`` answers ``escapes(group)``: the member values used outside the group, and
    ``use_count(value)``.  Cycles through outside instrs are checked by the caller.
    """
    if a.pattern is None or b.pattern is None:
        return None
    order = PATTERNS.index
    if order(a.pattern) > order(b.pattern):
        a, b = b, a
    if a.pattern == "loop" and b.pattern == "loop":
        return _merged(a, b, "loop") if a.space() == b.space() else None
    if a.pattern == "loop" and b.pattern == "reduce":
        return _loop_into_reduce(a, b)
    if a.pattern == "loop" and b.pattern == "contraction":
        return _loop_into_contraction(a, b, graph)
    if a.pattern == "reduce" and b.pattern == "reduce":
        return _reduce_siblings(a, b)
    return None  # contraction with reduce or contraction: never


def _merged(a: Group, b: Group, pattern, a_role=None):
    """(pattern, roles) with ``a``'s members given ``a_role`` (or their own) and ``b``'s kept."""
    role = dict(b.role)
    for m in a.members:
        role[m] = a_role or a.role[m]
    return pattern, role


def _loop_into_reduce(loop: Group, red: Group):
    """A loop group joins a reduce group as its prologue (over S_in) or epilogue (over S_out)."""
    s_in, _, _ = red.space()
    s_out = red.out_shape()
    if s_in == s_out:
        return None  # a trivial reduction (size-1 axes): parts could not be told apart by shape
    if (loop.space() == s_in and not reads(loop, red, None, {"red", "epi"})
            and not reads(red, loop, {"epi"})):
        return _merged(loop, red, "reduce", "pro")
    if (loop.space() == s_out and not reads(loop, red, None, {"pro"})
            and not reads(red, loop, {"pro", "red"})):
        return _merged(loop, red, "reduce", "epi")
    return None


def _loop_into_contraction(loop: Group, con: Group, graph):
    """A loop group joins a contraction as its epilogue, or (matmul only) an operand's prologue."""
    anchor = next(m for m in con.members if con.role[m] == "anchor")
    if reads(con, loop, {"anchor", "pro0", "pro1"}):
        return _prologue(loop, con, anchor, graph)
    if loop.space() == tuple(anchor.result.type.shape) and not reads(loop, con, None, {"pro0", "pro1"}):
        return _merged(loop, con, "contraction", "epi")
    return None


def _prologue(loop: Group, con: Group, anchor, graph):
    """Matmul only: the loop computes one operand, and that value has no other use."""
    if anchor.kind != "matmul" or reads(loop, con):
        return None
    escaping = graph.escapes(loop)
    if len(escaping) != 1 or graph.use_count(escaping[0]) != 1:
        return None
    (v,) = escaping
    if v not in anchor.operands or loop.space() != tuple(v.type.shape):
        return None
    slot = anchor.operands.index(v)
    if any(con.role[m] == f"pro{slot}" for m in con.members):
        return None
    return _merged(loop, con, "contraction", f"pro{slot}")


def _reduce_siblings(a: Group, b: Group):
    """Two reduce groups over one (S_in, axes, keepdims).

    No prologue/reduction may read the other's reductions or epilogue (the softmax case:
    its sum needs its max first), and no epilogue may read the other's prologue.
    """
    if a.space() != b.space() or a.space()[0] == a.out_shape():
        return None  # different loops, or trivial reductions (D1)
    for x, y in ((a, b), (b, a)):
        if reads(x, y, {"pro", "red"}, {"red", "epi"}) or reads(x, y, {"epi"}, {"pro"}):
            return None
    return _merged(a, b, "reduce")


# ----------------------------------------------------------------------------- checking
class FusionRuleError(ValueError):
    """A fused instr breaks the legality rules written at the top of ``fusion.py``."""


def region_parts(ins) -> dict:
    """Each region body instr of a fused ``ins`` -> its part, read off the region alone.

    Parts: "const" (copied constant), "loop"; "pro" / "red" / "epi" (reduce); "anchor" /
    "pro0" / "pro1" / "epi" (contraction).  Raises ``FusionRuleError`` where the region breaks
    rules F2, L1, D1-D3 or C1-C4, so a backend can call it to both check and split a group.
    """
    pattern = ins.attrs.get("pattern")
    region = ins.region
    parts = {}
    members = [sub for sub in region.body if sub.kind != "constant"]
    for pos, sub in enumerate(region.body):
        if sub.kind == "constant":
            if not is_small_constant(sub) or pos >= len(parts) + 1:
                _fail(ins, f"constant {sub.loc!r} is large or not at the start of the region (F2)")
            parts[sub] = "const"
    if not members:
        _fail(ins, "the region computes nothing")
    split = {"loop": _loop_parts, "reduce": _reduce_parts, "contraction": _contraction_parts}.get(pattern)
    if split is None:
        _fail(ins, f"unknown pattern {pattern!r}")
    parts.update(split(ins, members))
    return parts


def _fail(ins, message):
    raise FusionRuleError(f"fused {ins.attrs.get('pattern')!r} ({ins.loc}): {message}")


def _elementwise_over(ins, sub, shape, rule):
    if classify(sub) != "elementwise" or tuple(sub.result.type.shape) != tuple(shape):
        _fail(ins, f"{sub.kind} ({sub.loc}) is not elementwise over {list(shape)} ({rule})")


def _loop_parts(ins, members) -> dict:
    space = members[0].result.type.shape
    for sub in members:
        _elementwise_over(ins, sub, space, "L1")
    return {sub: "loop" for sub in members}


def _read_parts(sub, parts, producer) -> set:
    """The parts of the region values ``sub`` reads ("param" for block params)."""
    return {parts.get(producer[v], "pending") if v in producer else "param" for v in sub.operands}


def _reduce_parts(ins, members) -> dict:
    reds = [sub for sub in members if sub.kind in REDUCTION]
    if not reds or len({reduce_key(r) for r in reds}) != 1:
        _fail(ins, "needs one or more reductions over one (S_in, axes, keepdims) (D1)")
    s_in, s_out = reduce_key(reds[0])[0], tuple(reds[0].result.type.shape)
    if len(members) > 1 and s_in == s_out:
        _fail(ins, "a reduction over size-1 axes or no axes stays alone (D1)")
    producer = {v: sub for sub in ins.region.body for v in sub.results}
    parts = {sub: "const" for sub in ins.region.body if sub.kind == "constant"}
    allowed = {"pro": {"param", "const", "pro"}, "red": {"param", "const", "pro"},
               "epi": {"param", "const", "red", "epi"}}
    for sub in members:
        part = "red" if sub in reds else ("pro" if tuple(sub.result.type.shape) == s_in else "epi")
        if part != "red":
            _elementwise_over(ins, sub, s_in if part == "pro" else s_out, "D2")
        if not _read_parts(sub, parts, producer) <= allowed[part]:
            _fail(ins, f"{sub.kind} ({sub.loc}) in the {part} part reads a value it may not (D2)")
        parts[sub] = part
    return {sub: parts[sub] for sub in members}


def _contraction_parts(ins, members) -> dict:
    anchors = [sub for sub in members if sub.kind in CONTRACTION]
    if len(anchors) != 1:
        _fail(ins, f"needs exactly one contraction, has {len(anchors)} (C1)")
    (anchor,) = anchors
    producer = {v: sub for sub in ins.region.body for v in sub.results}
    parts = {sub: "const" for sub in ins.region.body if sub.kind == "constant"}
    parts[anchor] = "anchor"
    for slot, operand in enumerate(anchor.operands):
        if producer.get(operand) is None or parts.get(producer[operand]) == "const":
            continue
        if anchor.kind != "matmul" or operand in anchor.operands[slot + 1:] or operand in ins.region.yields:
            _fail(ins, "a prologue feeds one matmul operand, once, and is not a result (C2)")
        stack = [producer[operand]]
        while stack:
            sub = stack.pop()
            if sub not in parts:
                _elementwise_over(ins, sub, operand.type.shape, "C2")
                parts[sub] = f"pro{slot}"
                stack.extend(producer[v] for v in sub.operands if v in producer)
    for sub in members:
        if sub not in parts:
            _elementwise_over(ins, sub, anchor.result.type.shape, "C3")
            parts[sub] = "epi"
    _check_prologue_reads(ins, members, parts, producer, anchor)
    return {sub: parts[sub] for sub in members}


def _check_prologue_reads(ins, members, parts, producer, anchor):
    """C2/C3: a prologue value is read only inside its prologue or, for the operand, by the anchor."""
    for sub in members:
        for v in sub.operands:
            part = parts.get(producer.get(v))
            if part in ("pro0", "pro1") and parts[sub] != part and not (
                    sub is anchor and anchor.operands.index(v) == int(part[-1])):
                _fail(ins, f"{sub.kind} ({sub.loc}) reads a value of {part} (C2)")
    if any(parts.get(producer.get(v)) in ("pro0", "pro1") for v in ins.region.yields):
        _fail(ins, "a prologue value is a result (C4)")

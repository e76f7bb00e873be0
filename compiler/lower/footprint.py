"""Which loops of a statement tree touch disjoint memory (for the scheduling pass, schedule.py).

A set P of loops may run on different threads when no element written by one
P-iteration is read or written by another.  ``separating(tree, written, P)`` proves
that for every written buffer: all its accesses in the tree use one index expression ``E``
and ``E`` *determines* the values of the P loop variables.  ``E`` is split into digits
``E = sum(c_j * d_j) + const`` (``d_j`` a loop variable or any other integer term, bounded by
interval analysis); if the digits form a mixed radix (each coefficient larger than the span
of all smaller ones) every digit is recoverable from ``E``.  A P variable must be a digit
itself, or sit inside a term that is strictly monotone in it (e.g. the clamped window row
``imin(imax(2*i + pos//2, 0), 13)`` of a max-pool gradient: the term's ranges for
consecutive ``i`` do not overlap).  Intervals come from loop bounds, ``imin``/``imax``/
``idiv``/``imod``, ``select``, let definitions, min/max accumulators and the conditions of
enclosing ``If`` statements.  Anything unproven is "not separating": the caller keeps the
loop sequential.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import kernel_ir as K
from .kernel_walk import iter_exprs as sub_exprs
from .kernel_walk import stmt_exprs

INF = math.inf
UNKNOWN = (-INF, INF)
SEPARABLE_MAX_TRIP = 4096  # a variable inside a clamp is checked value by value up to this trip


# ----------------------------------------------------------------------------- walking
def stmt_list(s) -> list:
    """The statements of a body (a Block's list, or the one statement)."""
    while isinstance(s, K.Block) and len(s.body) == 1 and isinstance(s.body[0], K.Block):
        s = s.body[0]
    return list(s.body) if isinstance(s, K.Block) else [s]


def walk(stmts, conds=()):
    """Every statement under ``stmts`` with the conditions of the ``If``s around it."""
    for s in stmts if isinstance(stmts, (list, tuple)) else [stmts]:
        yield s, conds
        if isinstance(s, K.Block):
            yield from walk(s.body, conds)
        elif isinstance(s, K.For):
            yield from walk(s.body, conds)
        elif isinstance(s, K.If):
            yield from walk(s.then, conds + (s.cond,))


@dataclass(frozen=True)
class Access:
    buffer: str
    index: K.Expr
    store: bool
    conds: tuple


def accesses(tree) -> list:
    """Every load and store under ``tree`` (loads inside If conditions count outside the If)."""
    out = []
    for s, conds in walk(tree):
        if isinstance(s, K.Store):
            out.append(Access(s.buffer, s.index, True, conds))
        for e in stmt_exprs(s):
            out += [Access(x.buffer, x.index, False, conds) for x in sub_exprs(e) if isinstance(x, K.Load)]
    return out


def var_names(e) -> set:
    return {x.name for x in sub_exprs(e) if isinstance(x, K.Var)}


# ----------------------------------------------------------------------------- intervals
def _hull(*ivs):
    return (min(i[0] for i in ivs), max(i[1] for i in ivs))


def _mul(a, b):
    vals = [x * y if not ((x == 0 and abs(y) == INF) or (y == 0 and abs(x) == INF)) else 0
            for x in a for y in b]
    return (min(vals), max(vals))


class Ranges:
    """Integer intervals of expressions inside one statement tree."""

    def __init__(self, tree):
        self.env, self.lets, self.accs, self._busy = {}, {}, {}, set()
        counts, self.unstable = {}, set()  # unstable: names a condition must not narrow
        for s, conds in walk(tree):
            if isinstance(s, (K.Let, K.DeclareAcc, K.For)):
                counts[s.var.name] = counts.get(s.var.name, 0) + 1
            if isinstance(s, K.Let):
                self.lets.setdefault(s.var.name, []).append(s.value)
            elif isinstance(s, K.DeclareAcc):
                self.accs.setdefault(s.var.name, [None, [s.init]])
            elif isinstance(s, K.Accumulate) and s.var.name in self.accs:
                acc = self.accs[s.var.name]
                acc[0] = s.combine if acc[0] in (None, s.combine) else "mixed"
                acc[1].append(s.value)
                if conds:
                    self.unstable.add(s.var.name)  # may change after the If tested it
        self.unstable |= {name for name, n in counts.items() if n > 1}  # shadowed names
        for s, _ in walk(tree):  # outer loops first: a loop's bounds may use outer variables
            if isinstance(s, K.For):
                span = (self.of(s.start)[0], self.of(s.stop)[1] - 1)
                old = self.env.get(s.var.name)
                self.env[s.var.name] = _hull(old, span) if old else span

    def of(self, e, env=None) -> tuple:
        env = env if env is not None else self.env
        if isinstance(e, K.Const):
            return (e.value, e.value) if isinstance(e.value, int) and not isinstance(e.value, bool) else UNKNOWN
        if isinstance(e, K.Batch):
            return (0, INF)
        if isinstance(e, K.Var):
            return self._var(e.name, env)
        if isinstance(e, K.Cast) and not e.value.dtype.is_floating and not e.dtype.is_floating:
            return self.of(e.value, env)
        if isinstance(e, K.Op):
            return self._op(e, env)
        return UNKNOWN

    def _var(self, name, env):
        if name in env:
            return env[name]
        if name in self._busy:
            return UNKNOWN
        self._busy.add(name)
        try:
            if name in self.lets:
                return _hull(*(self.of(v, env) for v in self.lets[name]))
            if name in self.accs and self.accs[name][0] in (None, "min", "max"):
                return _hull(*(self.of(v, env) for v in self.accs[name][1]))
            return UNKNOWN
        finally:
            self._busy.discard(name)

    def _op(self, e, env):
        k, args = e.kind, e.args
        if k == "select":
            return _hull(self.of(args[1], env), self.of(args[2], env))
        iv = [self.of(a, env) for a in args]
        if k == "add":
            return (iv[0][0] + iv[1][0], iv[0][1] + iv[1][1])
        if k == "sub":
            return (iv[0][0] - iv[1][1], iv[0][1] - iv[1][0])
        if k == "neg":
            return (-iv[0][1], -iv[0][0])
        if k == "mul":
            return _mul(iv[0], iv[1])
        if k in ("imin", "minimum"):
            return (min(iv[0][0], iv[1][0]), min(iv[0][1], iv[1][1]))
        if k in ("imax", "maximum"):
            return (max(iv[0][0], iv[1][0]), max(iv[0][1], iv[1][1]))
        if k in ("idiv", "imod") and iv[0][0] >= 0 and iv[1][0] > 0 and iv[1] == (iv[1][0], iv[1][0]):
            d = iv[1][0]
            if k == "imod":
                return (0, d - 1)
            return (iv[0][0] // d, iv[0][1] // d if iv[0][1] != INF else INF)
        return UNKNOWN

    def refined(self, conds) -> dict:
        """The variable intervals inside ``If``s with ``conds`` (comparisons of a variable with
        an expression, and ``logical_and`` of them)."""
        env = dict(self.env)
        todo = list(conds)
        while todo:
            c = todo.pop()
            if not isinstance(c, K.Op):
                continue
            if c.kind == "logical_and":
                todo += list(c.args)
                continue
            flip = {"less": "greater", "less_equal": "greater_equal", "greater": "less", "greater_equal": "less_equal"}
            if c.kind not in flip:
                continue
            (a, b), kind = c.args, c.kind
            if not isinstance(a, K.Var):
                a, b, kind = b, a, flip[kind]
            if not isinstance(a, K.Var) or a.name in self.unstable:
                continue
            lo, hi = self._var(a.name, env)
            blo, bhi = self.of(b, env)
            if kind == "less":
                hi = min(hi, bhi - 1)
            elif kind == "less_equal":
                hi = min(hi, bhi)
            elif kind == "greater":
                lo = max(lo, blo + 1)
            else:
                lo = max(lo, blo)
            env[a.name] = (lo, hi)
        return env


# ----------------------------------------------------------------------------- digits
def linear(e) -> tuple:
    """``e`` as ({term: coefficient}, constant); terms are variables or opaque expressions."""
    if isinstance(e, K.Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return {}, e.value
    if isinstance(e, K.Op) and e.kind in ("add", "sub"):
        (ta, ca), (tb, cb) = linear(e.args[0]), linear(e.args[1])
        sign = 1 if e.kind == "add" else -1
        terms = dict(ta)
        for t, c in tb.items():
            terms[t] = terms.get(t, 0) + sign * c
        return {t: c for t, c in terms.items() if c}, ca + sign * cb
    if isinstance(e, K.Op) and e.kind == "neg":
        t, c = linear(e.args[0])
        return {x: -y for x, y in t.items()}, -c
    if isinstance(e, K.Op) and e.kind == "mul":
        (ta, ca), (tb, cb) = linear(e.args[0]), linear(e.args[1])
        if not ta or not tb:
            terms, k = (tb, ca) if not ta else (ta, cb)
            return {t: c * k for t, c in terms.items() if c * k}, ca * cb
    return {e: 1}, 0


def _digit(term, coef, par, ranges, env):
    """(span of the digit, the P variable it determines or None), or None when a P variable
    inside the term cannot be recovered from it."""
    inside = var_names(term) & par
    if isinstance(term, K.Var) and term.name in par:
        lo, hi = env[term.name]
        return abs(coef) * (hi - lo), term.name
    if not inside:
        lo, hi = ranges.of(term, env)
        return abs(coef) * (hi - lo) if hi != INF and lo != -INF else INF, None
    if len(inside) > 1:
        return None
    (v,) = inside
    lo, hi = env[v]
    if hi == INF or hi - lo + 1 > SEPARABLE_MAX_TRIP:
        return None
    spans = [ranges.of(term, {**env, v: (x, x)}) for x in range(int(lo), int(hi) + 1)]
    if any(s[0] == -INF or s[1] == INF for s in spans):
        return None
    rising = all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
    falling = all(a[0] > b[1] for a, b in zip(spans, spans[1:]))
    if not (rising or falling):
        return None
    whole = _hull(*spans)
    return abs(coef) * (whole[1] - whole[0]), v


def determined(index, env, par, ranges) -> set:
    """The P variables (names in ``par``) that ``index`` provably determines with the
    variable intervals ``env``; the empty set when its digits do not form a mixed radix."""
    terms, _ = linear(index)
    digits, found = [], set()
    for term, coef in terms.items():
        d = _digit(term, coef, par, ranges, env)
        if d is None:
            return set()
        digits.append((abs(coef), d[0]))
        if d[1] is not None:
            if d[1] in found:
                return set()
            found.add(d[1])
    span = 0
    for coef, width in sorted(digits):
        if coef <= span:
            return set()
        span += width
    return found


def separating(tree, written, par) -> set:
    """The subset of loop variables ``par`` whose iterations touch disjoint elements of every
    buffer in ``written`` (all accesses of one buffer must share one index expression):
    iteratively drops variables some index does not determine.  Returns the final set."""
    ranges = Ranges(tree)
    by_buffer = {}
    for a in accesses(tree):
        if a.buffer in written:
            by_buffer.setdefault(a.buffer, []).append(a)
    if any(len({a.index for a in acc}) != 1 for acc in by_buffer.values()):
        return set()
    envs = {}  # per buffer: the hull of the intervals at each of its accesses (one digit system)
    for name, acc in by_buffer.items():
        refined = [ranges.refined(a.conds) for a in acc]
        envs[name] = {v: _hull(*(r[v] for r in refined)) for v in set.intersection(*(set(r) for r in refined))}
    par = set(par) - ranges.unstable  # a loop variable bound twice in the tree: not a digit
    while par:
        kept = set(par)
        for name, acc in by_buffer.items():
            kept &= determined(acc[0].index, envs[name], par, ranges)
        if kept == par:
            return par
        par = kept
    return par

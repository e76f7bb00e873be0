"""Index analysis for the vectorizer: how an i64 index expression moves with one loop variable.

An index is turned into a polynomial with integer coefficients over *atoms*: loop and
let-bound variables, ``Batch()``, and any sub-expression that is not ``add``/``sub``/``mul``
of integers (a ``Load``, ``idiv``, ``imod``, a ``Cast``...), which stays opaque.  Let-bound
variables of the vectorized body are substituted by their definitions, so
``Let(j, i*3 + 1); Load(x, j)`` is seen through.

``lane_stride(index, lane, ...)`` is then

* ``0``    the index does not depend on the lane variable (one scalar load + broadcast),
* ``1``    it is ``base + lane`` with a lane-invariant base (one contiguous vector load),
* ``None`` anything else (a gather / scatter).

``same_index(a, b)`` compares two indices as polynomials (used to find the epilogue store
that writes a GEMM's own C element); ``constant_step(index, var)`` is the index's constant
step along a variable (a GEMM epilogue's operand rows, which it prefetches).
"""
from __future__ import annotations

from ...lower import kernel_ir as K

_ARITH = {"add", "sub", "mul"}


class _Poly:
    """A polynomial: {monomial (sorted tuple of atom keys): int coefficient}, no zero terms."""

    def __init__(self, terms=None):
        self.terms = {m: c for m, c in (terms or {}).items() if c}

    @staticmethod
    def const(c: int) -> _Poly:
        return _Poly({(): int(c)})

    @staticmethod
    def atom(key) -> _Poly:
        return _Poly({(key,): 1})

    def __add__(self, other):
        out = dict(self.terms)
        for m, c in other.terms.items():
            out[m] = out.get(m, 0) + c
        return _Poly(out)

    def scale(self, k: int) -> _Poly:
        return _Poly({m: c * k for m, c in self.terms.items()})

    def __mul__(self, other):
        out = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = tuple(sorted(m1 + m2, key=repr))
                out[m] = out.get(m, 0) + c1 * c2
        return _Poly(out)


def _poly(e, lets) -> _Poly:
    """The polynomial of an integer index expression (lets substituted)."""
    if isinstance(e, K.Const) and not isinstance(e.value, bool) and isinstance(e.value, int):
        return _Poly.const(e.value)
    if isinstance(e, K.Var):
        if e.name in lets:
            return _poly(lets[e.name], lets)
        return _Poly.atom(("var", e.name))
    if isinstance(e, K.Batch):
        return _Poly.atom(("batch",))
    if isinstance(e, K.Op) and e.kind in _ARITH and e.dtype.is_integer:
        a, b = (_poly(x, lets) for x in e.args)
        if e.kind == "add":
            return a + b
        if e.kind == "sub":
            return a + b.scale(-1)
        return a * b
    return _Poly.atom(("expr", e))


def depends_on(e, names, lets) -> bool:
    """True when expression ``e`` reads any variable in ``names`` (through lets)."""
    if isinstance(e, K.Var):
        if e.name in names:
            return True
        return e.name in lets and depends_on(lets[e.name], names, lets)
    if isinstance(e, (K.Load,)):
        return depends_on(e.index, names, lets)
    if isinstance(e, K.Op):
        return any(depends_on(a, names, lets) for a in e.args)
    if isinstance(e, K.Cast):
        return depends_on(e.value, names, lets)
    if isinstance(e, K.Random):
        return depends_on(e.index, names, lets) or depends_on(e.step, names, lets)
    return False


def _key_varies(key, varying, lets) -> bool:
    if key[0] == "var":
        return key[1] in varying
    if key[0] == "expr":
        return depends_on(key[1], varying, lets)
    return False


def lane_stride(index, lane: str, lets=None, varying=()):
    """0, 1 or None (see the module doc) for ``index`` as ``lane`` advances by one.

    ``varying`` names other variables that differ between lanes (per-lane accumulators);
    an index reading them is a gather.
    """
    lets = lets or {}
    varying = set(varying) | {lane}
    lane_key = ("var", lane)
    stride = _Poly()
    for mono, coef in _poly(index, lets).terms.items():
        n_lane = mono.count(lane_key)
        rest = tuple(k for k in mono if k != lane_key)
        if n_lane > 1 or any(_key_varies(k, varying, lets) for k in rest):
            return None
        if n_lane == 1:
            stride = stride + _Poly({rest: coef})
    if not stride.terms:
        return 0
    if stride.terms == {(): 1}:
        return 1
    return None


def constant_step(index, var: str, lets=None):
    """How much ``index`` grows when ``var`` grows by one, when that is an integer constant
    (``index`` is ``c*var`` plus terms free of ``var``); None otherwise."""
    lets = lets or {}
    key, step = ("var", var), 0
    for mono, coef in _poly(index, lets).terms.items():
        if key not in mono:
            if any(_key_varies(k, {var}, lets) for k in mono):
                return None
        elif mono != (key,):
            return None
        else:
            step += coef
    return step


def same_index(a, b, lets=None) -> bool:
    """Whether two integer index expressions are equal as polynomials."""
    lets = lets or {}
    return (_poly(a, lets) + _poly(b, lets).scale(-1)).terms == {}

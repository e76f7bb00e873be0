"""A content hash of an IR function, the key material of the compile cache
(``compiler/cache.py``): two functions with the same fingerprint compile to the same code.

It covers params (kind, key, type), every instr (kind, operands, attrs, result types,
location, buffers, regions, recursively), state outputs, fetches and the memory plan.
Value identities are numbered in first-seen order, so the hash does not depend on Python
object ids.  Large constants are hashed by their bytes, not printed.
"""
from __future__ import annotations

import hashlib

import numpy as np


def _attr_token(value, h) -> None:
    """Feed one attr value into hash ``h``: arrays by dtype, shape and the SHA-256 of their
    bytes (printing a large constant as text would cost far more than compiling it)."""
    if isinstance(value, np.ndarray):
        h.update(f"<{value.dtype}{value.shape}>".encode())
        h.update(hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}(".encode())
        for v in value:
            _attr_token(v, h)
        h.update(b")")
    elif isinstance(value, dict):
        h.update(f"dict{len(value)}{{".encode())
        for k in sorted(value, key=str):
            h.update(repr(k).encode())
            _attr_token(value[k], h)
        h.update(b"}")
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


def fingerprint(fn, any_seeds=frozenset()) -> str:
    """The SHA-256 (hex) of a function: params, instrs (kinds, operands, attrs, types, locs,
    regions, buffers), outputs and memory plan.  An instr whose ``(seed, seed2)`` attrs are
    in ``any_seeds`` counts as if it had other seeds (seeds drawn at random, which any
    other draw could have given)."""
    h = hashlib.sha256()
    ids: dict = {}

    def vid(v) -> str:
        return str(ids.setdefault(id(v), len(ids)))

    def instrs(body):
        for ins in body:
            h.update(f"{ins.kind}({','.join(vid(v) for v in ins.operands)})@{ins.loc}".encode())
            attrs = ins.attrs
            if any_seeds and (attrs.get("seed"), attrs.get("seed2")) in any_seeds:
                attrs = {**attrs, "seed": "any", "seed2": "any"}
            _attr_token(attrs, h)
            h.update(";".join(f"{vid(v)}:{v.type}" for v in ins.results).encode())
            h.update(repr(ins.buffers).encode())
            for region in ins.regions:  # a fused instr's one, or an if/while's two
                h.update(("^" + ",".join(f"{vid(v)}:{v.type}" for v in region.params)).encode())
                instrs(region.body)
                h.update(("yield" + ",".join(vid(v) for v in region.yields)).encode())
    for p in fn.params:
        h.update(f"{p.kind} {p.key!r} {vid(p.value)}:{p.value.type};".encode())
    instrs(fn.body)
    for kind, outs in (("state", fn.state_out), ("fetch", fn.fetches)):
        h.update("".join(f"{kind} {k!r}={vid(v)};" for k, v in outs).encode())
    _attr_token(dict(fn.memory), h)
    return h.hexdigest()

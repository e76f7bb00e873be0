"""tf.Session's compile cache: the artifact of one ``Session.run`` signature, keyed by a
content hash of its optimized IR, the target, the versions and the code generator's
sources, so it is built once and reused across sessions and processes
(``$KILN_CACHE_DIR``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from runtime import manifest as mf

from ..artifact import KILN_VERSION, new_staging_dir
from ..codegen.registry import Target
from ..compile import build_artifact, state_keys
from .compile_graph import variable_infos
from .op_source import graph_sources


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


def fingerprint(fn) -> str:
    """A content hash of an optimized function: params, instrs (kinds, operands, attrs,
    types, locs, regions, buffers), outputs and memory plan."""
    h = hashlib.sha256()
    ids: dict = {}

    def vid(v) -> str:
        return str(ids.setdefault(id(v), len(ids)))

    def instrs(body):
        for ins in body:
            h.update(f"{ins.kind}({','.join(vid(v) for v in ins.operands)})@{ins.loc}".encode())
            _attr_token(ins.attrs, h)
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


@functools.cache
def code_digest() -> str:
    """SHA-256 of the code generator's sources (lowering, every backend, the templates, the
    driver), so a cached artifact is never reused by a compiler that would generate other
    code."""
    here = Path(__file__).resolve().parents[1]
    files = sorted([*(here / "lower").rglob("*.py"), *(here / "codegen").rglob("*.py"),
                    *(p for p in (here.parent / "templates").rglob("*") if p.is_file()),
                    here / "compile.py", here / "artifact.py"])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _cache_key(opt, target: dict) -> str:
    """Content hash of an entry point: the optimized function, the target, the versions and
    the code generator's sources."""
    h = hashlib.sha256()
    h.update(json.dumps([KILN_VERSION, mf.ABI_VERSION, target, code_digest()], sort_keys=True).encode())
    h.update(fingerprint(opt).encode())
    return h.hexdigest()[:32]


def session_artifact(graph, lowered, root, target: Target = Target()) -> Path:
    """The artifact of one ``Session.run`` signature (entry ``lowered.name``) under ``root``.

    The directory is ``root/<content hash>``: an artifact already there is reused (after
    ``runtime.load_artifact``'s hash checks, done by the caller); otherwise it is built in a
    temp directory beside it and renamed into place, so concurrent builders never see a
    half-written one.  Initial values are zeros: the session binds its own arrays.
    """
    root = Path(root)
    final = root / _cache_key(lowered.fn, target.record())
    if (final / mf.MANIFEST_NAME).is_file():
        return final
    tmp = new_staging_dir(final)
    try:
        variables = variable_infos(graph, state_keys([lowered.fn]))
        zeros = {v.name: np.zeros(v.shape, v.dtype) for v in variables}
        build_artifact([lowered], variables, zeros, tmp,
                       {k: round(v, 4) for k, v in lowered.timings.items()}, target,
                       sources=lambda: graph_sources(graph))
        try:
            os.rename(tmp, final)
        except OSError:  # another builder won the race: use theirs
            if not (final / mf.MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final

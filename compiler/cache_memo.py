"""Facts the compile cache's key needs that are slow to find and rarely change, remembered
in the cache folder between processes (docs/compile-cache.md, "What a hit costs").

A cache hit should cost little more than running the model file; two parts of its key did
not: hashing every source file of Kiln (~25 ms) and asking LLVM for the host CPU (loading
llvmlite's native library, ~25 ms).  Each is remembered under a *probe*, a cheap fingerprint
of what it depends on: the sources' sizes and modification times; the CPU's model and flags
as ``/proc/cpuinfo`` states them with the llvmlite version.  A changed probe recomputes the
fact.  A file edited without changing its size or modification time is not noticed (the
rule the cache already uses for its entries' files, ``cache.verify_entry``).

The memo is a small JSON file beside the entries (not an entry: eviction ignores it),
written atomically; a missing, unreadable or corrupt memo only costs the recomputation.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from runtime.files import atomic_write

MEMO_NAME = ".kiln-key-memo.json"
MAX_FACTS = 32  # facts kept per memo, the latest computed (several Kilns or hosts may share a folder)


def remembered(root: Path | None, fact: str, probe: str, compute):
    """``compute()``'s value (JSON) for ``fact`` under ``probe``, from the memo in ``root``
    when it holds one, else computed and noted there (``root`` None or ``probe`` "": always
    computed)."""
    if root is None or not probe:
        return compute()
    path = Path(root) / MEMO_NAME
    try:
        memo = json.loads(path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    slot = f"{fact}:{probe}"
    if slot in memo:
        return memo[slot]
    value = compute()
    memo = dict(list(memo.items())[-(MAX_FACTS - 1):])
    memo[slot] = value
    try:
        atomic_write(path, json.dumps(memo), durable=False)  # (in the order computed)
    except OSError:
        pass  # a read-only cache folder: the value is still right
    return value


def files_probe(files) -> str:
    """Fingerprint of ``(relative name, path)`` files by name, size and modification time."""
    h = hashlib.sha256()
    for rel, path in files:
        st = os.stat(path)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


_CPU_FIELDS = (b"vendor_id", b"cpu family", b"model", b"model name", b"stepping", b"flags")


def cpu_probe() -> str:
    """Fingerprint of this machine's CPU as the OS states it (vendor, family, model, stepping
    and flags of the first processor in ``/proc/cpuinfo``; not its clock, which varies), ""
    where there is no such file (then the fact is not remembered)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            first = f.read(1 << 16).split(b"\n\n", 1)[0]
    except OSError:
        return ""
    lines = [ln for ln in first.split(b"\n") if ln.split(b":", 1)[0].strip() in _CPU_FIELDS]
    return hashlib.sha256(b"\n".join(lines)).hexdigest() if lines else ""

"""Kiln's persistent, content-addressed compile cache (docs/compile-cache.md).

Compiled artifacts are kept under one folder, ``$KILN_CACHE_DIR`` or else
``$XDG_CACHE_HOME/kiln`` or ``~/.cache/kiln``, one sub-folder per key (the SHA-256 of what
the compile depends on: the IR of the entries, the target and its options, the versions and
the compiler's own sources, see :func:`cache_key`).  ``kiln compile`` copies a hit into its
output folder; ``tf.Session`` loads it in place.  ``KILN_CACHE=0`` turns the cache off.

* Atomic entries: an entry is built in a hidden staging folder beside it and renamed into
  place; when two processes build the same key, the first rename wins and the other uses it.
* Corrupt entries (a missing or short file, a bad manifest, a hash mismatch) are moved
  aside, deleted and rebuilt.
* Size cap: ``KILN_CACHE_MAX_BYTES`` (default 2 GiB).  After each store the least recently
  used entries (the entry folder's mtime, touched on every hit) are deleted until the cache
  fits.  Readers hold a shared ``flock`` on ``<root>/.lock`` while they load or copy an
  entry; eviction takes it exclusively without waiting, and is skipped (left to a later
  store) while anyone reads.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from runtime import manifest as mf
from runtime.files import atomic_write

from . import cache_memo
from .artifact import KILN_VERSION, new_staging_dir

ENV_DIR, ENV_ENABLE, ENV_MAX = "KILN_CACHE_DIR", "KILN_CACHE", "KILN_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 << 30
LOCK_NAME = ".lock"
STAT_NAME = ".kiln-cache-stat.json"  # in an entry: what verify_entry last saw (not copied out)
_KEY = re.compile(r"^[0-9a-f]{32}$")
# What this process did (tests and benches read it): hit, miss, corrupt, evicted, raced.
stats: Counter = Counter()


class CacheConfigError(ValueError):
    """A cache setting in the environment is malformed."""


def enabled() -> bool:
    """False when ``KILN_CACHE`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(ENV_ENABLE, "1").strip().lower() not in ("0", "false", "no", "off")


def default_root() -> Path:
    """``$KILN_CACHE_DIR``, else ``$XDG_CACHE_HOME/kiln``, else ``~/.cache/kiln``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kiln"


def max_bytes() -> int:
    """The size cap from ``KILN_CACHE_MAX_BYTES`` (plain bytes, or with a K/M/G suffix)."""
    text = os.environ.get(ENV_MAX, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"(\d+)\s*([kKmMgG]?)i?[bB]?", text)
    if not m:
        raise CacheConfigError(f"{ENV_MAX}={text!r}: expected a byte count such as 500000000 or 2G")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def _memo_root() -> Path | None:
    """Where :mod:`cache_memo` remembers key facts: the default cache folder (None with the
    cache off)."""
    return default_root() if enabled() else None


@functools.cache
def code_digest() -> str:
    """SHA-256 of Kiln's compiler and runtime sources and templates: a cached artifact is
    never reused by a Kiln that could compile the same input differently (remembered by the
    files' sizes and modification times, ``cache_memo.py``)."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = []
    for root in ("compiler", "runtime", "templates"):
        for folder, dirs, names in os.walk(os.path.join(top, root)):  # (os.walk: pathlib's rglob is 3x slower)
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            rel = os.path.relpath(folder, top)
            files += [(os.path.join(rel, n), os.path.join(folder, n)) for n in names if not n.endswith(".pyc")]
    files.sort()

    def digest():
        h = hashlib.sha256()
        for rel, f in files:
            with open(f, "rb") as fh:
                h.update(rel.encode() + hashlib.sha256(fh.read()).digest())
        return h.hexdigest()
    return cache_memo.remembered(_memo_root(), "code", cache_memo.files_probe(files), digest)


def cache_key(*parts) -> str:
    """The key of a compile: SHA-256 over the JSON of ``parts`` (IR fingerprints, target
    record, options: anything JSON can write, others by ``repr``) with the Kiln, manifest
    format and ABI versions and :func:`code_digest`."""
    payload = [KILN_VERSION, mf.FORMAT_VERSION, mf.ABI_VERSION, code_digest(), *parts]
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# Environment settings that change what a backend's build makes (compilers, emulation).
BUILD_ENV = ("CC", "CXX", "KILN_NVCC", "KILN_CNCC", "KILN_CUDA_EMULATE", "KILN_MLU_EMULATE")


def target_key(target) -> list:
    """Everything about a ``codegen.registry.Target`` a build depends on: the backend (and
    which functions render and build for it: a backend replaced at run time, e.g. by a test,
    is another), all its options (whatever they are: a new option changes the key without
    code here), its manifest record (host CPU and features) and the build environment."""
    from .codegen.registry import get_backend

    backend = get_backend(target.backend)
    code = [f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', repr(f))}"
            for f in (backend.render, backend.build)]
    probe = backend.record_probe(target)  # the record, remembered: asking LLVM costs ~25 ms
    record = cache_memo.remembered(_memo_root(), f"record:{target.backend}:{target.options}", probe,
                                   target.record)
    return [target.backend, code, [list(o) for o in target.options], record,
            {k: os.environ.get(k) for k in BUILD_ENV}]


def _file_stats(path: Path, rels) -> dict:
    """``{relpath: [size, mtime_ns, inode]}`` of files of an entry (OSError when one is gone)."""
    out = {}
    for rel in rels:
        st = os.stat(path / rel)
        out[rel] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def record_stats(path: Path) -> None:
    """Note the size, mtime and inode of an entry's manifest and files (``STAT_NAME``), which
    lets :func:`verify_entry` skip hashing them while nothing touched them."""
    m = mf.read_manifest(path)
    stats_now = _file_stats(path, [mf.MANIFEST_NAME, *m["files"]])
    atomic_write(path / STAT_NAME, json.dumps(stats_now), durable=False)


def verify_entry(path: Path) -> None:
    """Raise ``ArtifactError`` unless ``path`` holds a whole artifact: a valid manifest and
    every file it lists with its recorded SHA-256.  Files whose size, mtime and inode are
    those noted when they were last verified are not hashed again (a 40 MB init file costs
    ~0.1 s to hash)."""
    m = mf.read_manifest(path)
    try:
        noted = json.loads((path / STAT_NAME).read_text())
        if noted == _file_stats(path, [mf.MANIFEST_NAME, *m["files"]]):
            return
    except (OSError, ValueError):
        pass
    for rel, digest in m["files"].items():
        f = path / rel
        if not f.is_file() or mf.file_digest(f) != digest:
            raise mf.ArtifactError(f"{f}: missing or does not match its manifest hash")
    record_stats(path)


_warned: set = set()


def default_cache():
    """The cache at :func:`default_root`, or None when ``KILN_CACHE=0`` or the folder
    cannot be created or written (then a ``RuntimeWarning`` says so, once per folder, and
    compiles go without a cache)."""
    if not enabled():
        return None
    root = default_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        usable = os.access(root, os.W_OK | os.X_OK)
    except OSError:
        usable = False
    if not usable:
        if root not in _warned:
            import warnings

            _warned.add(root)
            warnings.warn(f"Kiln: the compile cache folder {root} cannot be written; compiling without "
                          f"a cache (set {ENV_DIR} to another folder, or {ENV_ENABLE}=0)", RuntimeWarning,
                          stacklevel=3)
        return None
    return CompileCache(root)


def _tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it vanished meanwhile)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


class CompileCache:
    """One cache folder (see the module doc)."""

    def __init__(self, root=None, cap: int | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.cap = max_bytes() if cap is None else int(cap)

    def entry(self, key: str) -> Path:
        return self.root / key

    @contextmanager
    def _lock(self, exclusive: bool):
        """``flock`` on ``<root>/.lock``; yields False when an exclusive lock is busy."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if exclusive:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
            else:
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield True
        finally:
            os.close(fd)  # releases the lock

    def discard(self, path: Path) -> None:
        """Remove an entry: renamed aside first (atomic for other readers), then deleted."""
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.trash-{os.getpid()}-", dir=self.root))
        try:
            os.rename(path, aside / path.name)
        except OSError:
            pass  # already gone
        shutil.rmtree(aside, ignore_errors=True)

    def lookup(self, key: str, check=verify_entry) -> Path | None:
        """The entry of ``key`` when present and whole (``check`` raises otherwise: the entry
        is discarded), its use time refreshed; None on a miss."""
        path = self.entry(key)
        if not path.is_dir():
            return None
        try:
            if check is not None:
                check(path)
        except (mf.ArtifactError, OSError, ValueError):
            stats["corrupt"] += 1
            self.discard(path)
            return None
        try:
            os.utime(path)
        except OSError:
            return None
        stats["hit"] += 1
        return path

    def store(self, key: str, build) -> Path:
        """Run ``build(folder)`` in a staging folder and rename it into place as ``key``'s
        entry; when another process got there first, theirs is kept."""
        final = self.entry(key)
        staged = new_staging_dir(final)
        try:
            build(staged)
            if (staged / mf.MANIFEST_NAME).is_file():
                record_stats(staged)
            try:
                os.rename(staged, final)
            except OSError:  # another builder won the race (or a corrupt entry is in the way)
                if (final / mf.MANIFEST_NAME).is_file():
                    stats["raced"] += 1
                else:
                    self.discard(final)
                    os.rename(staged, final)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        stats["miss"] += 1
        return final

    @contextmanager
    def open(self, key: str, build, check=verify_entry):
        """Yield ``(entry folder, hit)`` for ``key``, building it with ``build(folder)`` on a
        miss; the entry cannot be evicted while the ``with`` block runs.  Eviction runs after."""
        with self._lock(exclusive=False):
            path = self.lookup(key, check)
            hit = path is not None
            if not hit:
                path = self.store(key, build)
            yield path, hit
        if not hit:
            self.evict(keep={key})

    def entries(self) -> list:
        """``(last use time, bytes, folder)`` of every entry, least recently used first."""
        out = []
        for p in self.root.iterdir() if self.root.is_dir() else ():
            if _KEY.match(p.name):
                try:
                    out.append((p.stat().st_mtime, _tree_bytes(p), p))
                except OSError:
                    pass
        return sorted(out, key=lambda e: e[0])

    def evict(self, keep=()) -> int:
        """Delete least recently used entries (never those in ``keep``) until the cache fits
        its cap; skipped while another process reads.  Returns how many went."""
        with self._lock(exclusive=True) as got:
            if not got:
                return 0
            self._remove_stale_staging()
            entries = self.entries()
            total, gone = sum(e[1] for e in entries), 0
            for _mtime, size, path in entries:
                if total <= self.cap:
                    break
                if path.name in keep:
                    continue
                self.discard(path)
                total -= size
                gone += 1
            stats["evicted"] += gone
            return gone

    def _remove_stale_staging(self) -> None:
        """Delete staging/trash folders left by processes that were killed."""
        from .artifact import pid_alive

        for p in self.root.glob(".*-*-*"):
            m = re.match(r"^\.[0-9a-f]{32}\.(new|trash)-(\d+)-", p.name)
            if m and int(m.group(2)) != os.getpid() and not pid_alive(int(m.group(2))):
                shutil.rmtree(p, ignore_errors=True)

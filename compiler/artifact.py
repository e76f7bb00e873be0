"""The artifact directory writer (layout: DESIGN.md "Artifact", contract: docs/ABI.md).

```
manifest.json     written last, validated by runtime.manifest (hashes of every file below)
ir/               the pipeline dumps of each entry point (ir/<entry>/NN-<stage>.kir, kernels.txt)
src/model.*       the generated source (its name is the backend's: model.ll for the CPU, model.cu for CUDA)
lib/model.so      the shared library built from it
include/kiln_abi.h the C header of the ABI the library exports (runtime/abi_spec.py)
init.safetensors  the initial value of every variable
```

A whole artifact is written into a hidden sibling directory (:func:`new_staging_dir`) and
swapped into place when complete (:func:`replace_artifact_dir`), so an interrupted
(re)compile leaves the old artifact as it was; entries of the old directory that are not
part of an artifact (e.g. a ``ckpt/`` folder of checkpoints) move into the new one.
Inside, every file is written atomically and the manifest last.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime import manifest as mf
from runtime.abi_spec import entry_symbol
from runtime.files import apply_umask, atomic_write, fsync_dir

KILN_VERSION = "0.1.0"
LIBRARY = "lib/model.so"
ABI_HEADER = "include/kiln_abi.h"
# Top-level entries an artifact directory consists of; anything else in it is the user's.
ARTIFACT_ENTRIES = (mf.MANIFEST_NAME, mf.INIT_NAME, "ir", "src", "lib", "include")


class ArtifactDirError(ValueError):
    """The output path cannot take an artifact (a file, or a folder that is not an artifact)."""


@dataclass
class VariableInfo:
    """One variable of the artifact's state, in ABI index order."""

    name: str
    dtype: str
    shape: tuple
    trainable: bool = False


@dataclass
class EntryInfo:
    """One entry point for the manifest: feeds/fetches as ``(name, dtype, dims)`` with dims
    ints, ``"N"`` or ``"N*k"``; ``state_in``/``state_out`` variable names."""

    feeds: list
    fetches: list
    state_in: list = field(default_factory=list)
    state_out: list = field(default_factory=list)


def manifest_dim(dim):
    """A manifest dim from an IR dim (``int`` or ``Sym``): ``3``, ``"N"``, ``"N*4"``."""
    if isinstance(dim, (int, np.integer)):
        return int(dim)
    if isinstance(dim, str):
        return dim
    return "N" if dim.coef == 1 else f"N*{dim.coef}"


def _tensor(name, dtype, shape) -> dict:
    return {"name": name, "dtype": str(np.dtype(getattr(dtype, "np_name", dtype))),
            "shape": [manifest_dim(d) for d in shape]}


def build_manifest(variables, entries: dict, target: dict, files: dict, build=None) -> dict:
    """The manifest dict of docs/ABI.md (validated when written)."""
    m = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "abi_version": mf.ABI_VERSION,
        "kiln_version": KILN_VERSION, "target": dict(target), "library": LIBRARY,
        "variables": [dict(_tensor(v.name, v.dtype, v.shape), trainable=bool(v.trainable))
                      for v in variables],
        "entry_points": {
            name: {"symbol": entry_symbol(name),
                   "feeds": [_tensor(*t) for t in e.feeds],
                   "fetches": [_tensor(*t) for t in e.fetches],
                   "state_in": list(e.state_in), "state_out": list(e.state_out)}
            for name, e in entries.items()},
        "files": dict(files),
    }
    if build is not None:
        m["build"] = build
    return m


def write_init_values(path: Path, variables, values: dict) -> list:
    """``init.safetensors`` holding every variable (checked against its dtype and shape)
    whose initial value is not all zero bits; returns the names of those left out, which
    the manifest marks ``"init": "zeros"`` (an optimizer's slots are most of a model's
    state and start as zeros: writing, hashing and copying them cost a compile ~0.1 s)."""
    from safetensors.numpy import save

    tensors, zeros = {}, []
    for v in variables:
        if v.name not in values:
            raise ValueError(f"no initial value for variable {v.name!r}")
        arr = np.asarray(values[v.name], dtype=np.dtype(v.dtype), order="C")
        if arr.shape != tuple(v.shape):
            raise ValueError(f"initial value of {v.name!r} has shape {list(arr.shape)}, "
                             f"variable is {list(v.shape)}")
        if arr.reshape(-1).view(np.uint8).any():
            tensors[v.name] = arr
        else:
            zeros.append(v.name)
    atomic_write(path, save(tensors))
    return zeros


def mark_zero_init(manifest: dict, zeros) -> None:
    """Say in ``manifest``'s variable records which start as zeros (not in the init file)."""
    zeros = set(zeros)
    for v in manifest["variables"]:
        v.pop("init", None)
        if v["name"] in zeros:
            v["init"] = "zeros"


def write_artifact(out_dir, source, variables, init_values: dict, entries: dict,
                   target, build: dict | None = None) -> Path:
    """Write a complete artifact at ``out_dir`` from generated code (source text, or an
    object whose ``str`` is) for ``target`` (a ``codegen.registry.Target``: its backend
    names the source file, builds the library and writes the manifest's ``target``);
    returns the directory.  ``build`` (timings etc.) goes into the manifest.
    ``init_values`` (a dict, a callable returning one, or an ``init_ahead.InitAhead``
    writing ``init.safetensors`` in a child process: collected after the build) gives the
    variables' initial values; ``None`` writes no
    ``init.safetensors``: the manifest says ``"init": "zeros"`` (a tf.Session's artifacts:
    the session binds its own arrays).  The backend's ``build`` gets ``source`` as rendered
    (e.g. with a compile it started meanwhile); its ``close()``, where it has one, is called
    when the artifact is written or failed.

    The ``ir/`` dumps are written by the caller (the compile driver) before this runs.
    """
    from .codegen.registry import get_backend

    backend = get_backend(target.backend)
    try:
        return _write_artifact(backend, Path(out_dir), source, variables, init_values, entries, target, build)
    finally:  # the backend's work started at render time (e.g. a forked compile) is over
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _write_artifact(backend, out: Path, rendered, variables, init_values, entries: dict, target, build) -> Path:
    """The body of :func:`write_artifact`: source, library, initial values, header, manifest."""
    from .codegen.c.environment import abi_header

    source_name = backend.source_name
    for sub in ("src", "lib", "ir", "include"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    build = dict(build or {})
    t0 = time.perf_counter()
    atomic_write(out / source_name, str(rendered))
    files = [source_name, LIBRARY, ABI_HEADER]

    zeros = []
    ahead = hasattr(init_values, "result")  # drawn by a forked child (init_ahead.InitAhead)

    def write_init():
        values = init_values
        if ahead:
            done, seconds = values.result()
            zeros.extend(done)
            build["initial_values_ahead_s"] = round(seconds, 4)
            return
        if callable(values):
            t = time.perf_counter()
            values = values()
            build["initial_values_s"] = round(time.perf_counter() - t, 4)
        zeros.extend(write_init_values(out / mf.INIT_NAME, variables, values))
    has_init = bool(variables) and init_values is not None
    files += [mf.INIT_NAME] * has_init
    if has_init and not ahead:
        write_init()
    t1 = time.perf_counter()
    timings = backend.build(rendered, str(out / LIBRARY), target)
    building = time.perf_counter() - t1  # (stage timings may add up past it: forked children)
    if has_init and ahead:
        write_init()
    build.update(timings)
    atomic_write(out / ABI_HEADER, abi_header())
    build["write_s"] = round(time.perf_counter() - t0 - building, 4)
    manifest = build_manifest(variables, entries, target.record(), mf.file_hashes(out, files), build)
    if init_values is None:
        manifest["init"] = "zeros"
    mark_zero_init(manifest, zeros)
    mf.write_manifest(out, manifest)
    return out


# ----------------------------------------------------------------------------- staging
def check_output_dir(out_dir) -> None:
    """Refuse an output path that is a file, or a non-empty folder that holds no artifact
    (replacing it would throw away the user's files)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ArtifactDirError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / mf.MANIFEST_NAME).is_file():
        raise ArtifactDirError(f"{out} is a non-empty folder without a Kiln artifact "
                               "(no manifest.json); choose another output folder or empty it")


def foreign_entries(out_dir) -> list:
    """Names in an artifact folder that are not the artifact's own (e.g. ``ckpt``): a
    recompile keeps them."""
    out = Path(out_dir)
    return sorted(e.name for e in out.iterdir() if e.name not in ARTIFACT_ENTRIES) if out.is_dir() else []


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (staging folders of dead ones are stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _stale_siblings(final: Path, kind: str) -> list:
    """The ``.NAME.<kind>-<pid>-*`` folders beside ``final`` of processes no longer running."""
    stale = []
    for path in final.parent.glob(f".{final.name}.{kind}-*-*"):
        pid = path.name[len(f".{final.name}.{kind}-"):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            stale.append(path)
    return stale


def _recover_stale_siblings(final: Path) -> None:
    """Clean up after a compile killed (SIGKILL, power loss) during its swap, losing nothing:
    an old artifact moved aside while ``final`` is missing goes back, and the user's
    entries already moved into the new artifact's folder go back into ``final``; then the
    stale folders are deleted (one still holding user entries is left as it is)."""
    for path in _stale_siblings(final, "old"):
        if (path / final.name).is_dir() and not final.exists():
            os.rename(path / final.name, final)
        shutil.rmtree(path, ignore_errors=True)
    for path in _stale_siblings(final, "new"):
        for name in foreign_entries(path):
            if final.is_dir() and not (final / name).exists():
                os.rename(path / name, final / name)
        if not foreign_entries(path):
            shutil.rmtree(path, ignore_errors=True)


def new_staging_dir(final) -> Path:
    """A new hidden folder beside ``final`` (same file system, so it can be renamed into
    place), with the mode a plain ``mkdir`` would give; stale ones of killed compiles go."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _recover_stale_siblings(final)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-{os.getpid()}-", dir=final.parent))
    apply_umask(staged, is_dir=True)
    return staged


@contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM during a few renames and deliver them afterwards (main thread
    only: elsewhere Python cannot install handlers, and signals go to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught, saved = [], {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        saved[sig] = signal.signal(sig, lambda num, _frame: caught.append(num))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for num in caught:
            signal.raise_signal(num)


def replace_artifact_dir(staged, final) -> list:
    """Put the complete artifact ``staged`` at ``final``; returns the names of the old
    folder's own entries carried over (e.g. ``ckpt``).

    The old artifact stays whole until the swap: its foreign entries are moved into
    ``staged``, then two renames (old aside, new in) run with signals held, then the old
    artifact is deleted."""
    staged, final = Path(staged), Path(final)
    if not final.exists():
        os.rename(staged, final)
        fsync_dir(final.parent)
        return []
    check_output_dir(final)
    kept = foreign_entries(final)
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
    moved = []
    with _signals_deferred():
        try:
            for name in kept:
                os.rename(final / name, staged / name)
                moved.append(name)
            os.rename(final, old / final.name)
            os.rename(staged, final)
        except OSError:  # put back what moved, so the old artifact is as it was
            if not final.exists() and (old / final.name).exists():
                os.rename(old / final.name, final)
            for name in moved:
                os.rename(staged / name, final / name)
            os.rmdir(old)
            raise
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return kept

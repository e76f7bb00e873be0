"""ctypes binding of the Kiln C ABI (docs/ABI.md).

:class:`NativeLibrary` loads a compiled artifact library and gives typed access to the ABI
functions.  Calls go through ``ctypes.CDLL``, which releases the GIL for the duration of
each native call, so steps on separate states can run in parallel threads.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import tempfile
import threading
from pathlib import Path

from . import abi_spec as spec
from .abi_spec import (  # noqa: F401  (the ABI's facts, re-exported for the runtime's users)
    ABI_VERSION,
    BIND_ALIGNMENT,
    ERROR_NAMES,
    KILN_EBACKEND,
    KILN_ECHECK,
    KILN_EINVAL,
    KILN_ENOMEM,
    KILN_OK,
)
from .manifest import ArtifactError

_CTYPES = {"void": None, "int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64, "const char *": ctypes.c_char_p}


def _ctype(ctype: str):
    """The ctypes type of a C type of abi_spec (pointer arrays as ``void**``, other pointers
    as ``void*``)."""
    if ctype in _CTYPES:
        return _CTYPES[ctype]
    if ctype.endswith("*const *"):
        return ctypes.POINTER(ctypes.c_void_p)
    if ctype.endswith("*"):
        return ctypes.c_void_p
    raise ValueError(f"no ctypes type for C type {ctype!r}")


def _signature(fn: spec.Function) -> tuple:
    """``(restype, argtypes)`` of an ABI function for ctypes."""
    return _ctype(fn.restype), [_ctype(t) for t, _ in fn.params]


class KilnRuntimeError(RuntimeError):
    """A native call returned a non-zero error code.

    ``code`` is the ABI error code, ``code_name`` its name (``"KILN_EINVAL"``, ...),
    ``message`` the library's ``kiln_last_error`` text and ``entry`` the name of the entry
    point that failed (``"train"``), or of the ABI function for variable reads/writes.
    """

    def __init__(self, code: int, message: str, entry: str):
        self.code = int(code)
        self.code_name = ERROR_NAMES.get(self.code, "unknown error")
        self.message = message
        self.entry = entry
        super().__init__(f"{entry} failed with {self.code_name} ({self.code}): "
                         f"{message or '(no message)'}")


class AbiVersionError(ArtifactError):
    """The artifact (manifest or library) speaks another ABI version than this runtime."""


# ---------------------------------------------------------------- loading (dlopen cache)

_loaded: dict = {}          # absolute path -> digest of the file dlopen'ed there
_load_lock = threading.Lock()
_copies_dir = None


def _default_thread_waiting() -> None:
    """Shorten libgomp's busy-wait between parallel regions unless the user chose a policy.

    libgomp reads its settings when it is first loaded (with the first artifact).  Its
    default spin suits a machine of its own; on a shared one the spinning worker steals the
    core the next kernel needs.  Measured on 2 cores (MLP step, batch 128): 1.02 → 0.91 ms
    on an idle machine and 4.9 → 2.6 ms next to a busy process with GOMP_SPINCOUNT=10000.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "10000"


def _load_cdll(path: Path, digest: str) -> ctypes.CDLL:
    """``ctypes.CDLL(path)``, guarding against dlopen's per-path cache.

    dlopen returns the already-loaded library for a path it has seen, even when the file was
    rebuilt since.  When ``path`` was loaded earlier in this process with other contents,
    the verified file is copied to a private temp file named by its digest and loaded from
    there, so the code that runs is always the code whose hash was checked.  The copies'
    folder goes when the process exits.
    """
    global _copies_dir
    _default_thread_waiting()
    path = Path(path).resolve()
    with _load_lock:
        if _loaded.setdefault(str(path), digest) == digest:
            return ctypes.CDLL(str(path))
        if _copies_dir is None:
            _copies_dir = tempfile.mkdtemp(prefix="kiln-lib-")
            atexit.register(shutil.rmtree, _copies_dir, True)  # (a loaded library stays mapped)
        copy = Path(_copies_dir) / f"{digest.split(':')[-1]}{path.suffix}"
        if not copy.exists():
            tmp = copy.with_suffix(".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, copy)
        return ctypes.CDLL(str(copy))


def _bind_optional(lib, fn: spec.Function):
    """Like :func:`_bind`, but ``None`` when the library does not export ``fn``."""
    bound = getattr(lib, fn.name, None)
    if bound is not None:
        bound.restype, bound.argtypes = _signature(fn)
    return bound


def _bind(lib, fn: spec.Function, path, symbol=None):
    """Look up ``symbol`` (default: ``fn``'s name) in ``lib`` and give it ``fn``'s signature;
    a missing symbol is an ArtifactError."""
    symbol = symbol or fn.name
    try:
        bound = getattr(lib, symbol)
    except AttributeError:
        raise ArtifactError(f"{path}: does not export {symbol!r} (not a Kiln ABI library?)") from None
    bound.restype, bound.argtypes = _signature(fn)
    return bound


class NativeLibrary:
    """A loaded artifact library with every ABI function bound.

    ``entries`` maps entry point names to bound ``kiln_entry_<name>`` functions;
    ``bind_variable`` is ``None`` for a library without ``kiln_bind_variable``.  Raises
    :class:`AbiVersionError` if ``kiln_abi_version()`` differs from :data:`ABI_VERSION`.
    """

    def __init__(self, path, digest: str, entry_names=()):
        self.path = Path(path)
        self.lib = _load_cdll(self.path, digest)
        self.abi_version = self._bind("kiln_abi_version")
        got = int(self.abi_version())
        if got != ABI_VERSION:
            raise AbiVersionError(f"{self.path}: artifact ABI version {got}, "
                                  f"runtime supports {ABI_VERSION}")
        self.num_variables = self._bind("kiln_num_variables")
        self.create = self._bind("kiln_create")
        self.destroy = self._bind("kiln_destroy")
        self.read_variable = self._bind("kiln_read_variable")
        self.write_variable = self._bind("kiln_write_variable")
        self.last_error = self._bind("kiln_last_error")
        # Optional (hand-written libraries may lack it): None when absent.
        self.bind_variable = self._bind("kiln_bind_variable")
        # Optional: why the last kiln_create returned NULL (device libraries: no GPU, ...).
        self.create_error = self._bind("kiln_create_error")
        self.entries = {name: _bind(self.lib, spec.ENTRY, self.path, spec.entry_symbol(name))
                        for name in entry_names}

    def _bind(self, name: str):
        """ABI function ``name`` with its signature from abi_spec (``None`` when an optional
        one is missing)."""
        fn = spec.function(name)
        return _bind_optional(self.lib, fn) if fn.optional else _bind(self.lib, fn, self.path)

    def create_error_message(self) -> str:
        """Why the last ``kiln_create`` on this thread failed ("" when the library cannot say)."""
        raw = self.create_error() if self.create_error is not None else None
        return raw.decode("utf-8", "replace") if raw else ""

    def error_message(self, handle) -> str:
        """The state's ``kiln_last_error`` text ("" when the library gives none)."""
        raw = self.last_error(handle)
        return raw.decode("utf-8", "replace") if raw else ""

    def check(self, code: int, handle, what: str) -> None:
        """Raise :class:`KilnRuntimeError` for a non-zero ``code`` returned by ``what``."""
        if code != KILN_OK:
            raise KilnRuntimeError(code, self.error_message(handle), what)


def pointer_array(arrays):
    """A ``void*[]`` holding the data pointers of ``arrays`` (kept alive by the caller);
    ``None`` (a NULL pointer) when there are none."""
    if not arrays:
        return None
    return (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


def aligned_empty(shape, dtype, alignment: int = BIND_ALIGNMENT):
    """An uninitialized C-contiguous array whose data starts on an ``alignment`` boundary
    (suitable for :meth:`runtime.State.bind_variable`)."""
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def is_aligned(arr, alignment: int = BIND_ALIGNMENT) -> bool:
    """Whether ``arr``'s data pointer is a multiple of ``alignment``."""
    return arr.ctypes.data % alignment == 0

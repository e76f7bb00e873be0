"""Running entry points: feed checking, batch resolution, and the native :class:`State`.

Everything a caller passes is checked against the manifest **before** any native call:
feed names, dtypes (converted only where the conversion is safe) and shapes, with the
symbolic batch dim ``N`` bound to one size across all feeds of a call.
"""
from __future__ import annotations

import threading

import numpy as np

from .abi import KILN_EBACKEND, KILN_ENOMEM, KilnRuntimeError, is_aligned, pointer_array
from .closing import Closing
from .manifest import batch_multiplier, format_shape, resolve_shape

# ----------------------------------------------------------------------------- checks

def convert_array(value, dtype: str, what: str) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``; unsafe conversions are refused.

    Follows ``Session.run``: floats are not fed to integer tensors, only bools to bool
    tensors, and otherwise numpy's ``same_kind`` casting applies (float64 -> float32 and
    int -> float are fine; narrowing ints must fit).  Raises ``ValueError`` naming ``what``.
    """
    arr = np.asarray(value)
    want = np.dtype(dtype)
    if arr.dtype == object:
        raise ValueError(f"Cannot feed {what}: value is ragged or not numeric")
    if (want.kind == "b" and arr.dtype.kind != "b") or \
            not np.can_cast(arr.dtype, want, casting="same_kind"):
        raise ValueError(f"Cannot feed value of dtype {arr.dtype} to {what} of dtype {dtype}")
    if want.kind in "iu" and arr.dtype.kind in "iu" and arr.size and \
            not np.can_cast(arr.dtype, want, casting="safe"):
        info = np.iinfo(want)
        if arr.min() < info.min or arr.max() > info.max:
            raise ValueError(f"Cannot feed {what} of dtype {dtype}: values out of range")
    return np.asarray(arr, dtype=want, order="C")


def bind_batch(specs, arrays, what="feed"):
    """The batch size implied by ``arrays`` for ``specs`` (``TensorSpec``s); also checks ranks
    and static dims.  Returns 1 when no spec has a batch dim."""
    batch, bound_by = None, None
    for spec, arr in zip(specs, arrays):
        if arr.ndim != len(spec.shape):
            _shape_error(spec, arr, what, f"rank {len(spec.shape)} expected")
        for dim, got in zip(spec.shape, arr.shape):
            k = batch_multiplier(dim)
            if k is None:
                if dim != got:
                    _shape_error(spec, arr, what)
                continue
            if got % k:
                _shape_error(spec, arr, what, f"dim {dim} must be a multiple of {k}")
            if batch is None:
                batch, bound_by = got // k, spec.name
            elif got // k != batch:
                _shape_error(spec, arr, what, f"batch size {got // k} does not match batch "
                                              f"size {batch} of {bound_by!r}")
    return 1 if batch is None else batch


def _shape_error(spec, arr, what, why=None):
    """Raise the ValueError for a mis-shaped feed (names the feed, expected and got)."""
    msg = (f"Cannot feed value of shape {format_shape(arr.shape)} for {what} {spec.name!r}, "
           f"which has shape {format_shape(spec.shape)}")
    raise ValueError(msg + (f": {why}" if why else ""))


def match_feeds(entry, feeds) -> list:
    """Order ``feeds`` (``name -> value``) as the entry's feeds; a name may omit a ``:0``
    suffix.  Missing or unknown names raise ``ValueError`` listing the expected feeds."""
    expected = [s.name for s in entry.feeds]
    given = {}
    for key, value in dict(feeds or {}).items():
        name = key if key in expected or f"{key}:0" not in expected else f"{key}:0"
        if name in given:
            raise ValueError(f"feed {name!r} given twice (as {key!r})")
        given[name] = value
    unknown = sorted(set(given) - set(expected))
    missing = [n for n in expected if n not in given]
    if unknown or missing:
        parts = ([f"missing feed(s) {missing}"] if missing else []) + \
                ([f"unknown feed(s) {unknown}"] if unknown else [])
        raise ValueError(f"entry point {entry.name!r}: {'; '.join(parts)}; "
                         f"expected feeds: {expected}")
    return [given[n] for n in expected]


def prepare_feeds(entry, feeds):
    """Check and convert ``feeds`` for ``entry``: returns ``(arrays in ABI order, batch)``."""
    values = match_feeds(entry, feeds)
    arrays = [convert_array(v, s.dtype, f"feed {s.name!r}") for s, v in zip(entry.feeds, values)]
    return arrays, bind_batch(entry.feeds, arrays)


# ----------------------------------------------------------------------------- state

class State(Closing):
    """A native state (all variables + workspace) of one loaded artifact.

    Created by :meth:`runtime.Artifact.new_state`.  Calls on one state are serialized by a
    lock (the ABI allows one call at a time per state); separate states run in parallel.
    Free it with :meth:`close` or a ``with`` block; ``__del__`` frees it as a last resort.
    """

    def __init__(self, artifact):
        self.artifact = artifact
        self._lib = artifact.library
        self._lock = threading.Lock()
        self._bound = {}  # variable name -> caller array used as its storage (kept alive)
        self._handle = self._lib.create()
        if not self._handle:
            why = self._lib.create_error_message()
            raise KilnRuntimeError(KILN_EBACKEND if why else KILN_ENOMEM,
                                   why or "kiln_create returned NULL (out of memory)", "kiln_create")

    # -- lifetime
    def close(self) -> None:
        """Destroy the native state (idempotent)."""
        with self._lock:
            handle, self._handle = getattr(self, "_handle", None), None
            if handle:
                self._lib.destroy(handle)
            self._bound = {}

    @property
    def closed(self) -> bool:
        return not self._handle


    def _live(self):
        if not self._handle:
            raise RuntimeError("this Kiln State is closed")
        return self._handle

    # -- entry points
    def run(self, entry: str, feeds=None) -> dict:
        """Run entry point ``entry`` with ``feeds`` (``name -> array``); returns
        ``fetch name -> array``.  The batch size is bound from the feeds' ``N`` dims (1 when
        no feed has one).  A non-zero native code raises :class:`KilnRuntimeError`."""
        spec = self.artifact.entry(entry)
        arrays, batch = prepare_feeds(spec, feeds)
        fetches = [np.empty(resolve_shape(f.shape, batch), dtype=f.dtype) for f in spec.fetches]
        fn = self._lib.entries[spec.name]
        with self._lock:
            handle = self._live()
            code = fn(handle, batch, pointer_array(arrays), pointer_array(fetches))
            self._lib.check(code, handle, spec.name)
        return {f.name: a for f, a in zip(spec.fetches, fetches)}

    # -- variables
    def variable_names(self) -> list:
        """Variable names in manifest (ABI index) order."""
        return [v.name for v in self.artifact.variables]

    def read_variable(self, name: str) -> np.ndarray:
        """A copy of variable ``name``'s current value."""
        v = self.artifact.variable(name)
        out = np.empty(v.shape, dtype=v.dtype)
        with self._lock:
            handle = self._live()
            code = self._lib.read_variable(handle, v.index, out.ctypes.data, out.nbytes)
            self._lib.check(code, handle, f"kiln_read_variable ({name!r})")
        return out

    def write_variable(self, name: str, value) -> None:
        """Set variable ``name``; dtype (safe conversions only) and exact shape are checked."""
        v = self.artifact.variable(name)
        arr = convert_array(value, v.dtype, f"variable {name!r}")
        if arr.shape != v.shape:
            raise ValueError(f"Cannot assign value of shape {format_shape(arr.shape)} to "
                             f"variable {name!r}, which has shape {format_shape(v.shape)}")
        with self._lock:
            handle = self._live()
            code = self._lib.write_variable(handle, v.index, arr.ctypes.data, arr.nbytes)
            self._lib.check(code, handle, f"kiln_write_variable ({name!r})")

    def bind_variable(self, name: str, array: np.ndarray) -> None:
        """Use ``array``'s memory as variable ``name``'s storage from now on (zero-copy).

        ``array`` must be a writeable, C-contiguous, 64-byte aligned ndarray (see
        :func:`runtime.abi.aligned_empty`) of exactly the variable's dtype and shape; its
        current contents become the variable's value, and steps update it in place.  The
        state keeps a reference until :meth:`unbind_variable` or :meth:`close`.
        Raises ``ValueError`` for a mismatched array, ``NotImplementedError`` when the
        library has no ``kiln_bind_variable``.
        """
        v = self.artifact.variable(name)
        if self._lib.bind_variable is None:
            raise NotImplementedError(f"{self.artifact.path}: library has no kiln_bind_variable")
        if not isinstance(array, np.ndarray) or array.dtype != np.dtype(v.dtype) \
                or array.shape != v.shape:
            got = (f"{array.dtype} {format_shape(array.shape)}" if isinstance(array, np.ndarray)
                   else type(array).__name__)
            raise ValueError(f"Cannot bind {got} to variable {name!r}, which is "
                             f"{v.dtype} {format_shape(v.shape)}")
        if not (array.flags.c_contiguous and array.flags.writeable and is_aligned(array)):
            raise ValueError(f"Cannot bind variable {name!r}: the array must be writeable, "
                             "C-contiguous and 64-byte aligned (use runtime.abi.aligned_empty)")
        with self._lock:
            handle = self._live()
            code = self._lib.bind_variable(handle, v.index, array.ctypes.data, array.nbytes)
            self._lib.check(code, handle, f"kiln_bind_variable ({name!r})")
            self._bound[name] = array

    def unbind_variable(self, name: str) -> None:
        """Go back to state-owned storage for ``name``, keeping its current value (a copy)."""
        v = self.artifact.variable(name)
        if self._lib.bind_variable is None:
            raise NotImplementedError(f"{self.artifact.path}: library has no kiln_bind_variable")
        nbytes = int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype).itemsize
        with self._lock:
            handle = self._live()
            code = self._lib.bind_variable(handle, v.index, None, nbytes)
            self._lib.check(code, handle, f"kiln_bind_variable ({name!r})")
            self._bound.pop(name, None)

    @property
    def can_bind(self) -> bool:
        """Whether the library supports :meth:`bind_variable` (device libraries do not)."""
        return self._lib.bind_variable is not None

    def bound_array(self, name: str):
        """The caller array bound to ``name`` (or ``None`` when the state owns its storage)."""
        return self._bound.get(name)

    def variables(self) -> dict:
        """``name -> value copy`` of every variable, in manifest order."""
        return {n: self.read_variable(n) for n in self.variable_names()}

    def load_variables(self, values: dict, strict: bool = True) -> None:
        """Write several variables; with ``strict`` every variable must be present."""
        if strict:
            missing = [n for n in self.variable_names() if n not in values]
            if missing:
                raise ValueError(f"values lack variable(s) {missing}")
        for name, value in values.items():
            self.write_variable(name, value)

    def __repr__(self):
        status = "closed" if self.closed else "open"
        return f"<kiln State of {self.artifact.path} ({status})>"

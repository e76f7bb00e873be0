"""Where buffers live when an entry point runs: the target-independent half of a module.

Every backend's entry point hands its kernels one pointer per buffer of the ``Program``
(in ``program.buffers`` order).  Where each points is decided here, once, from the
kernel IR (``compiler/lower/kernel_ir.py``) and the ABI (docs/ABI.md); a backend only
turns a ``Place`` into an address in its own language:

* feeds and fetches: the caller's arrays, by position;
* state: the variable's storage, by its index in the module's variables;
* constants: one entry of the module's ``ConstantPool`` (equal bytes are stored once,
  across all entry points);
* arena and scratch: ``base + per_n * N`` bytes into the workspace, laid out as
  ``Program`` documents (static arena, batch arena, static scratch, batch scratch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..lower import kernel_ir as K

MAX_WORKSPACE = 1 << 62  # bytes; a batch needing more is refused (KILN_ENOMEM), never overflowed


def round_up(n: int, m: int) -> int:
    """``n`` rounded up to a multiple of ``m``."""
    return -(-n // m) * m


def np_dtype(dtype) -> np.dtype:
    """A numpy dtype from a kernel-IR DType, a numpy dtype or a name."""
    return np.dtype(getattr(dtype, "np_name", dtype))


# ----------------------------------------------------------------------------- variables
@dataclass(frozen=True)
class Variables:
    """The module's variables in ABI index order: ``names``, ``nbytes`` and ``index``."""

    names: tuple
    nbytes: tuple
    index: dict

    @classmethod
    def of(cls, variables) -> "Variables":
        """From ``[(name, dtype, shape)]``; duplicate names are an error."""
        names = tuple(name for name, _, _ in variables)
        index = {name: i for i, name in enumerate(names)}
        if len(index) != len(names):
            raise ValueError("duplicate variable names in the module's variables")
        nbytes = tuple(int(np.prod([int(d) for d in shape], dtype=np.int64)) * np_dtype(dt).itemsize
                       for _, dt, shape in variables)
        return cls(names, nbytes, index)


# ----------------------------------------------------------------------------- constants
class ConstantPool:
    """The distinct constant buffers of a module, deduplicated by their bytes (equal bytes
    are equal data, whatever the dtype), each at an ``align``-byte aligned offset of one
    blob (``offsets[id]``) in the order first added."""

    def __init__(self, align: int):
        self.align = align
        self.raw: list = []  # bytes per id
        self.offsets: list = []  # blob offset per id
        self._ids: dict = {}

    def add(self, data, dtype) -> int:
        """The id of the constant holding ``data`` as ``dtype`` (C order)."""
        raw = np.asarray(data, dtype=np_dtype(dtype), order="C").tobytes()
        if raw not in self._ids:
            end = self.offsets[-1] + len(self.raw[-1]) if self.raw else 0
            self._ids[raw] = len(self.raw)
            self.offsets.append(round_up(end, self.align))
            self.raw.append(raw)
        return self._ids[raw]

    def blob(self) -> bytes:
        """Every constant at its offset, zero padding between them."""
        out = bytearray()
        for offset, raw in zip(self.offsets, self.raw):
            out += b"\0" * (offset - len(out)) + raw
        return bytes(out)


# ----------------------------------------------------------------------------- buffers
@dataclass(frozen=True)
class Place:
    """Where one buffer lives.  ``kind``: "feed" / "fetch" (``index``: position in the
    caller's array), "state" (``index``: variable index), "const" (``index``: constant id),
    "workspace" (``base + per_n * N`` bytes from the workspace's start)."""

    kind: str
    index: int = 0
    base: int = 0
    per_n: int = 0


def workspace_bytes(program: K.Program) -> tuple:
    """``(fixed, per_n)``: the workspace holds ``fixed + per_n * N`` bytes (arena and scratch)."""
    return (program.static_bytes + program.scratch_static_bytes,
            program.batch_bytes + program.scratch_batch_bytes)


def max_batch(fixed: int, per_n: int) -> int:
    """The largest N with ``fixed + per_n * N <= MAX_WORKSPACE``."""
    return (MAX_WORKSPACE - fixed) // max(per_n, 1)


def _workspace_place(decl: K.BufferDecl, program: K.Program) -> Place:
    """An arena or scratch buffer's address (see ``Program``'s workspace layout)."""
    if decl.role not in ("arena", "scratch") or decl.space not in ("static", "batch"):
        raise ValueError(f"buffer {decl.name!r}: unknown role/space {decl.role!r}/{decl.space!r}")
    batch = decl.space == "batch"
    if decl.role == "arena":  # the batch arena follows the static arena
        start = (program.static_bytes, 0) if batch else (0, 0)
    else:  # the scratch region follows the whole arena; its batch part follows its static part
        start = (program.static_bytes + (program.scratch_static_bytes if batch else 0), program.batch_bytes)
    own = (0, decl.offset) if batch else (decl.offset, 0)  # batch offsets are per batch element
    return Place("workspace", base=start[0] + own[0], per_n=start[1] + own[1])


def place(decl: K.BufferDecl, program: K.Program, variables: Variables, consts: ConstantPool) -> Place:
    """Where ``decl`` lives when ``program`` runs (constants are added to ``consts``)."""
    if decl.role in ("feed", "fetch"):
        return Place(decl.role, decl.index)
    if decl.role == "state":
        if decl.key not in variables.index:
            raise ValueError(f"program {program.name!r} uses state {decl.key!r}, not in the variables")
        return Place("state", variables.index[decl.key])
    if decl.role == "const":
        return Place("const", consts.add(decl.data, decl.dtype))
    return _workspace_place(decl, program)


def places(program: K.Program, variables: Variables, consts: ConstantPool) -> list:
    """The ``Place`` of every buffer, in ``program.buffers`` order (the kernels' slots)."""
    return [place(d, program, variables, consts) for d in program.buffers.values()]

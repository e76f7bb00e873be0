"""The Kiln C ABI, defined once (docs/ABI.md): version, error codes, limits, functions.

Everything that speaks the ABI takes its facts from here: the runtime's ctypes binding
(``runtime/abi.py``) and manifest checks, the LLVM backend (numbers and function types of
``compiler/codegen/llvm/module.py``), and the C header ``kiln_abi.h`` that the compiler
generates from this module (``compiler/codegen/abi_header.py``), embeds in every CUDA
source and puts into every artifact (``include/kiln_abi.h``).  Standard library only: the
runtime never needs the compiler to know the ABI.

C types are written as in the header; every pointer type ends with ``*``.
"""
from __future__ import annotations

from dataclasses import dataclass

ABI_VERSION = 1


@dataclass(frozen=True)
class ErrorCode:
    """A return code of the ABI's functions (``KILN_OK`` is success)."""

    name: str
    value: int
    meaning: str


ERROR_CODES = (
    ErrorCode("KILN_OK", 0, "success"),
    ErrorCode("KILN_EINVAL", 1, "bad argument: batch size, variable index, byte count"),
    ErrorCode("KILN_ENOMEM", 2, "allocation failed"),
    ErrorCode("KILN_ECHECK", 3, "a runtime check in the step failed (e.g. label out of range)"),
    ErrorCode("KILN_EBACKEND", 4, "the device/runtime below failed (CUDA error, ...)"),
)
KILN_OK, KILN_EINVAL, KILN_ENOMEM, KILN_ECHECK, KILN_EBACKEND = (c.value for c in ERROR_CODES)
ERROR_NAMES = {c.value: c.name for c in ERROR_CODES}

#: Alignment ``kiln_bind_variable`` requires of caller memory; a state's own variables and
#: workspace have it too, so kernels may assume it of every buffer but feeds and fetches.
BIND_ALIGNMENT = 64
#: Size of a state's error message buffer, NUL included (``kiln_last_error`` texts are shorter).
ERROR_BYTES = 256
#: Entry point ``NAME`` is exported as ``kiln_entry_NAME``.
ENTRY_PREFIX = "kiln_entry_"


@dataclass(frozen=True)
class Function:
    """One exported C function: ``restype name(params)``; ``params`` are ``(ctype, name)``."""

    name: str
    restype: str
    params: tuple
    doc: str
    optional: bool = False  # a library may omit it (the runtime binds it when present)


_STATE = ("kiln_state *", "state")
_VARIABLE_IO = (_STATE, ("int32_t", "index"))

FUNCTIONS = (
    Function("kiln_abi_version", "int32_t", (), "Returns KILN_ABI_VERSION."),
    Function("kiln_num_variables", "int32_t", (), "The number of variables (the manifest's order is their index order)."),
    Function("kiln_create", "kiln_state *", (),
             "Allocate a state: every variable's storage (zero-filled) and an empty workspace.\n"
             "Returns NULL when memory is exhausted or no usable device exists."),
    Function("kiln_destroy", "void", (_STATE,), "Free a state and everything it owns (NULL is allowed)."),
    Function("kiln_read_variable", "int32_t", _VARIABLE_IO + (("void *", "dst"), ("int64_t", "nbytes")),
             "Copy variable `index` out of the state; `nbytes` must equal its size exactly."),
    Function("kiln_write_variable", "int32_t", _VARIABLE_IO + (("const void *", "src"), ("int64_t", "nbytes")),
             "Copy variable `index` into the state; `nbytes` must equal its size exactly."),
    Function("kiln_bind_variable", "int32_t", _VARIABLE_IO + (("void *", "ptr"), ("int64_t", "nbytes")),
             "Use caller memory (KILN_BIND_ALIGNMENT-aligned, valid until unbound) as variable\n"
             "`index`'s storage; its contents become the value.  `ptr == NULL` goes back to\n"
             "state-owned storage holding a copy of the current value.", optional=True),
    Function("kiln_last_error", "const char *", (_STATE,),
             "The message of the last error on this state (\"\" if none); valid until the next call."),
    Function("kiln_create_error", "const char *", (),
             "Why the last kiln_create on this thread returned NULL (\"\" if it did not).", optional=True),
)

#: Exported only by a profiling build (``kiln compile --profile``, CPU; docs/performance.md):
#: not part of the header every target includes.
PROFILE_FUNCTIONS = (
    Function("kiln_profile_attach", "void", (("void *", "events"), ("int64_t", "capacity")),
             "Record events into caller memory of `capacity` 24-byte records (NULL: stop);\n"
             "resets the count.  Per library, not per state."),
    Function("kiln_profile_count", "int64_t", (),
             "Events recorded since the attach (more than `capacity` when some were dropped)."),
)

#: The signature every ``kiln_entry_<name>`` has (``name`` is a placeholder).
ENTRY = Function(ENTRY_PREFIX + "NAME", "int32_t",
                 (_STATE, ("int64_t", "batch"), ("const void *const *", "feeds"), ("void *const *", "fetches")),
                 "One function per entry point.  `feeds[i]` points at feed i, `fetches[j]` at\n"
                 "caller memory for fetch j (manifest order), the batch dim resolved to `batch`.\n"
                 "Updates the state's variables in place.")

_BY_NAME = {f.name: f for f in FUNCTIONS}


def function(name: str) -> Function:
    """The ABI function ``name`` (a ``KeyError`` for a name the ABI does not have)."""
    return _BY_NAME[name]


def entry_symbol(entry: str) -> str:
    """The exported symbol of entry point ``entry`` (``kiln_entry_train``)."""
    return ENTRY_PREFIX + entry

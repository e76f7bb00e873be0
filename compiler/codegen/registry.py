"""The backend registry: every code generation target Kiln can compile for, by name.

A backend is one folder under ``compiler/codegen/`` whose ``backend.py`` defines
``BACKEND = Backend(...)``, plus one line in :data:`BUILTIN`; the driver
(``compiler/compile.py``), the CLI, the artifact writer and ``tf.Session`` look backends
up here and never branch on a target's name.  A backend declares:

* ``name`` (``--target NAME``), ``description``, the TF device types it serves
  (``devices``: ``("CPU",)``, ``("GPU",)``), and its ``options`` (:class:`Option`: e.g.
  CUDA's ``arch``, ``emulate``, ``tf32``; the CLI spells them ``--<name>-<option>``, a
  session config ``kiln_<name>_<option>``);
* ``source_name`` (the generated source in the artifact) and ``runtime_library`` (how
  ``runtime/`` checks the machine can run the library: ``"host"``, ``"cuda"``);
* functions: ``make_options`` (validate options, fail early when a toolchain is missing),
  ``target_record`` (the manifest's ``target``), ``capabilities`` (what the scheduling
  passes may plan for), ``render`` (kernel-IR programs -> source), ``build`` (source ->
  library), ``unavailable`` (why it cannot run here, "" when it can);
* ``record_probe``: a cheap fingerprint of what ``target_record`` reads from the machine
  (the compile cache remembers records by it, ``compiler/cache_memo.py``);
* ``control_flow``: whether ``render`` follows a program's control steps (``Program.steps``:
  if/while between kernels, docs/lowering.md).  The driver refuses a program with control
  flow for a backend without it (``NotImplementedError``: ``tf.Session`` then interprets).

See docs/backends.md.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

# name -> module defining BACKEND.  Adding a backend: a folder + one line here.
BUILTIN = {
    "cpu": "compiler.codegen.llvm.backend",
    "cuda": "compiler.codegen.cuda.backend",
    "mlu": "compiler.codegen.mlu.backend",
}

_registered: dict = {}


class BuildError(RuntimeError):
    """Compiling or linking generated code failed (any backend's toolchain); the message
    carries the tool's output."""


class UnknownBackendError(ValueError):
    """No backend has that name (the message lists the registered ones)."""


@dataclass(frozen=True)
class Option:
    """One option of a backend: ``kind`` is ``"str"`` or ``"flag"``; ``default`` None means
    the backend decides (``make_options`` fills it in)."""

    name: str
    kind: str = "str"
    default: Any = None
    help: str = ""
    metavar: str = ""


@dataclass(frozen=True)
class Target:
    """A backend name with its validated options (``Backend.make_target`` builds one)."""

    backend: str = "cpu"
    options: tuple = ()  # sorted (name, value) pairs: hashable, comparable

    def get(self, name, default=None):
        """The value of option ``name``."""
        return dict(self.options).get(name, default)

    def record(self) -> dict:
        """The manifest's ``target`` record: the backend's, with ``runtime`` (the library
        kind ``runtime/devices.py`` checks) defaulting to its ``runtime_library``."""
        backend = get_backend(self.backend)
        return {"runtime": backend.runtime_library, **backend.target_record(self)}


@dataclass(frozen=True)
class Backend:
    """What a code generation target declares (see the module doc)."""

    name: str
    description: str
    devices: tuple
    source_name: str
    runtime_library: str
    # (programs: {entry: Program}, variables: [(name, dtype, shape)], Target) -> source text (a str;
    # it may carry work started while rendering, which build uses and its close() stops)
    render: Callable
    build: Callable             # (source text, library path, Target) -> {stage: seconds}
    target_record: Callable     # (Target) -> dict with at least "kind"
    options: tuple = ()         # Option, ...
    make_options: Callable = field(default=lambda options: options)   # (dict) -> dict, may raise
    capabilities: Callable = field(default=lambda target: None)       # (Target) -> capabilities object
    unavailable: Callable = field(default=lambda target: "")          # (Target) -> reason or ""
    control_flow: bool = False  # render follows Program.steps (if/while between kernels)
    # (Target) -> a cheap fingerprint of what target_record depends on beyond the target
    # (e.g. the host CPU), letting the compile cache reuse a record it saw; "" = never reuse
    record_probe: Callable = field(default=lambda target: "")

    def make_target(self, **options) -> Target:
        """A :class:`Target` of this backend; unknown options are refused."""
        known = {o.name for o in self.options}
        unknown = sorted(k for k, v in options.items() if k not in known and v not in (None, False))
        if unknown:
            raise UnknownBackendError(f"backend {self.name!r} has no option {', '.join(unknown)} "
                                      f"(options: {', '.join(sorted(known)) or 'none'})")
        given = {k: v for k, v in options.items() if v is not None}  # None: not given
        values = {o.name: given.get(o.name, o.default) for o in self.options}
        values = self.make_options(values)
        return Target(self.name, tuple(sorted(values.items())))


def register(backend: Backend) -> Backend:
    """Add (or replace) a backend under its name; returns it."""
    _registered[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    """Remove a registered backend (tests that register toys clean up with this)."""
    _registered.pop(name, None)


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (built-ins are imported on first use)."""
    if name not in _registered and name in BUILTIN:
        register(importlib.import_module(BUILTIN[name]).BACKEND)
    if name not in _registered:
        raise UnknownBackendError(f"unknown target {name!r} (targets: {', '.join(backend_names())})")
    return _registered[name]


def backend_names() -> list:
    """Every backend name: the built-ins, then the registered ones."""
    return list(dict.fromkeys([*BUILTIN, *_registered]))


def backends() -> list:
    """Every backend (imports the built-ins)."""
    return [get_backend(n) for n in backend_names()]


def backend_for_device(device_type: str):
    """The backend serving a TF device type (``"GPU"``), or None."""
    device_type = device_type.upper()
    return next((b for b in backends() if device_type in b.devices), None)


def make_target(name: str = "cpu", **options) -> Target:
    """``get_backend(name).make_target(**options)``."""
    return get_backend(name).make_target(**options)

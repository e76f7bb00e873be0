"""Loading an artifact directory: manifest, hash and ABI checks, then the native library.

Loading an artifact runs native code from it (its shared library): only load artifacts you
trust.  The hashes guard against corruption and accidental edits, not against an attacker
who can rewrite the manifest too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .abi import AbiVersionError, NativeLibrary
from .devices import missing_device
from .executor import State
from .manifest import (
    ABI_VERSION,
    INIT_NAME,
    ArtifactError,
    entry_specs,
    file_digest,
    format_shape,
    read_manifest,
    variable_specs,
)


class IntegrityError(ArtifactError):
    """A file of the artifact is missing or its SHA-256 differs from the manifest's."""


class NoDeviceError(ArtifactError):
    """The artifact was built for a device this machine does not have (a CUDA GPU)."""


def verify_files(directory: Path, files: dict) -> None:
    """Check every ``files`` entry's SHA-256; the message names the file and both digests."""
    for rel, want in files.items():
        path = directory / rel
        if not path.is_file():
            raise IntegrityError(f"{path}: listed in the manifest but missing")
        got = file_digest(path)
        if got != want:
            raise IntegrityError(f"{path}: hash mismatch: manifest has {want}, file has {got} "
                                 "(the artifact was modified after it was written)")


class Artifact:
    """A verified, loaded artifact.  Build states with :meth:`new_state`.

    Attributes: ``path`` (the directory), ``manifest`` (the validated dict), ``variables``
    (``VariableSpec`` tuple in ABI order), ``entry_points`` (``name -> EntrySpec``),
    ``target`` (the manifest's target record) and ``library`` (the bound
    :class:`~runtime.abi.NativeLibrary`).
    """

    def __init__(self, path, manifest: dict, library: NativeLibrary):
        self.path = Path(path)
        self.manifest = manifest
        self.target = manifest["target"]
        self.variables = variable_specs(manifest)
        self.entry_points = entry_specs(manifest)
        self.library = library
        self._by_name = {v.name: v for v in self.variables}
        self._init_values = None

    def __repr__(self):
        return (f"<kiln Artifact {self.path} target={self.target.get('kind')} "
                f"entries={sorted(self.entry_points)}>")

    def entry(self, name: str):
        """The ``EntrySpec`` named ``name`` (a clear ``KeyError`` lists the entry points)."""
        try:
            return self.entry_points[name]
        except KeyError:
            raise KeyError(f"artifact {self.path} has no entry point {name!r}; "
                           f"available: {sorted(self.entry_points)}") from None

    def variable(self, name: str):
        """The ``VariableSpec`` named ``name`` (a clear ``KeyError`` lists the variables)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"artifact {self.path} has no variable {name!r}; "
                           f"variables: {[v.name for v in self.variables]}") from None

    def check_device(self) -> None:
        """Raise :class:`NoDeviceError`, with what to do instead, when the library needs a
        device this machine lacks (``runtime.devices``)."""
        reason = missing_device(self.target)
        if reason:
            kind, arch = self.target.get("kind", "?"), self.target.get("arch")
            raise NoDeviceError(
                f"{self.path} is a {kind.upper()} artifact{f' ({arch})' if arch else ''} and {reason}. "
                f"Run it on a machine that has one, or recompile it for this one with kiln compile "
                f"--target cpu (or --target {kind} --{kind}-emulate where the backend has an emulator)")

    def init_values(self) -> dict:
        """``name -> array`` from ``init.safetensors`` for every variable, checked against
        the manifest (read once, then cached; callers get the cached arrays); zeros for an
        artifact whose manifest says ``"init": "zeros"``."""
        if self._init_values is None and self.manifest.get("init") == "zeros":
            self._init_values = {v.name: np.zeros(v.shape, v.dtype) for v in self.variables}
        if self._init_values is None:
            self._init_values = load_init_values(self.path / INIT_NAME, self.variables)
        return self._init_values

    def new_state(self, initialize: bool = True) -> State:
        """A fresh native state, its variables written from ``init.safetensors`` (or left
        zero-filled with ``initialize=False``).  A CUDA artifact needs a usable GPU
        (:class:`NoDeviceError` otherwise, before any native code runs)."""
        self.check_device()
        state = State(self)
        try:
            if initialize and self.variables:
                for v in self.variables:
                    state.write_variable(v.name, self.init_values()[v.name])
        except BaseException:
            state.close()
            raise
        return state


def load_init_values(path: Path, variables) -> dict:
    """Read ``path`` (safetensors) and check that it holds every variable with the
    manifest's dtype and shape, except those the manifest says start as zeros
    (``zero_init``: zero arrays here); extra tensors are ignored."""
    from safetensors.numpy import load_file  # imported lazily: only states need it
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ArtifactError(f"{path}: cannot read initial values: {e}") from None
    out = {}
    for v in variables:
        if v.zero_init:
            out[v.name] = np.zeros(v.shape, v.dtype)
            continue
        if v.name not in tensors:
            raise ArtifactError(f"{path}: has no initial value for variable {v.name!r}")
        arr = tensors[v.name]
        if arr.dtype != np.dtype(v.dtype) or tuple(arr.shape) != v.shape:
            raise ArtifactError(
                f"{path}: variable {v.name!r} is {arr.dtype} {format_shape(arr.shape)}, "
                f"manifest says {v.dtype} {format_shape(v.shape)}")
        out[v.name] = np.asarray(arr, order="C")
    return out


def load_artifact(path) -> Artifact:
    """Load the artifact directory ``path``.

    Order of checks (all before any native code runs, except the last): manifest present,
    valid JSON, schema, ``format``/``format_version``; ``abi_version`` of the manifest; every
    file's SHA-256; then the library is loaded, ``kiln_abi_version()`` compared, and the
    variable count and every ``kiln_entry_<name>`` symbol bound.  Raises
    :class:`~runtime.manifest.ArtifactError` subclasses with messages naming the file.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if manifest["abi_version"] != ABI_VERSION:
        raise AbiVersionError(f"{path / 'manifest.json'}: artifact ABI version "
                              f"{manifest['abi_version']}, runtime supports {ABI_VERSION}")
    verify_files(path, manifest["files"])
    lib_rel = manifest["library"]
    library = NativeLibrary(path / lib_rel, manifest["files"][lib_rel],
                            entry_names=list(manifest["entry_points"]))
    n = int(library.num_variables())
    if n != len(manifest["variables"]):
        raise ArtifactError(f"{path / lib_rel}: library has {n} variables, manifest lists "
                            f"{len(manifest['variables'])}")
    return Artifact(path, manifest, library)

"""Kiln runtime: load a compiled artifact and run its entry points.

Depends on numpy (and safetensors for initial values) only; it never imports ``compiler``,
llvmlite or jinja2, so an artifact runs anywhere the runtime is installed.  See
docs/runtime.md for the API and docs/ABI.md for the artifact contract.

Loading an artifact runs native code from its shared library: only load artifacts you trust.
"""
from .abi import ABI_VERSION, AbiVersionError, KilnRuntimeError
from .artifact import Artifact, IntegrityError, load_artifact
from .executor import State
from .manifest import (
    FORMAT,
    FORMAT_VERSION,
    ArtifactError,
    ManifestError,
    file_digest,
    file_hashes,
    read_manifest,
    validate_manifest,
    write_manifest,
)

__all__ = [
    "ABI_VERSION",
    "FORMAT",
    "FORMAT_VERSION",
    "AbiVersionError",
    "Artifact",
    "ArtifactError",
    "IntegrityError",
    "KilnRuntimeError",
    "ManifestError",
    "State",
    "file_digest",
    "file_hashes",
    "load_artifact",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
]

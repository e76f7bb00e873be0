"""Kiln runtime: load a compiled artifact and run its entry points.

Depends on numpy (and safetensors for initial values) only; it never imports ``compiler``,
llvmlite or jinja2, so an artifact runs anywhere the runtime is installed.  See
docs/runtime.md for the API and docs/ABI.md for the artifact contract.

Submodules: ``runtime.data`` (data pipeline, docs/data.md), ``runtime.checkpoint``
(checkpoints, docs/checkpoints.md), ``runtime.trainer`` (train) and ``runtime.scoring``
(evaluate/predict; docs/trainer.md), ``runtime.files`` (atomic writes); ``train``,
``evaluate`` and ``predict`` are re-exported here.

Loading an artifact runs native code from its shared library: only load artifacts you trust.
"""
import importlib

# Each exported name and the submodule it lives in.  They are imported on first use
# (PEP 562): ``from runtime.abi import ...`` (e.g. by the compiler) then loads only what it
# needs, not the trainer, data pipeline and checkpoints.
_HOMES = {
    **{name: "abi" for name in ("ABI_VERSION", "AbiVersionError", "KilnRuntimeError")},
    **{name: "artifact" for name in ("Artifact", "IntegrityError", "NoDeviceError", "load_artifact")},
    **{name: "checkpoint" for name in ("latest_checkpoint", "restore_state", "save_state")},
    "State": "executor",
    **{name: "manifest" for name in ("FORMAT", "FORMAT_VERSION", "ArtifactError", "ManifestError",
                                     "file_digest", "file_hashes", "read_manifest", "validate_manifest",
                                     "write_manifest")},
    **{name: "trainer" for name in ("TrainerError", "TrainingInterrupted", "evaluate", "predict", "train")},
}
_SUBMODULES = ("checkpoint", "data", "trainer")

__all__ = sorted([*_HOMES, *_SUBMODULES])


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

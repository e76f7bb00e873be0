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
from . import checkpoint, data, trainer
from .abi import ABI_VERSION, AbiVersionError, KilnRuntimeError
from .artifact import Artifact, IntegrityError, NoDeviceError, load_artifact
from .checkpoint import latest_checkpoint, restore_state, save_state
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
from .trainer import TrainerError, TrainingInterrupted, evaluate, predict, train

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
    "NoDeviceError",
    "State",
    "TrainerError",
    "TrainingInterrupted",
    "checkpoint",
    "data",
    "evaluate",
    "file_digest",
    "file_hashes",
    "latest_checkpoint",
    "load_artifact",
    "predict",
    "read_manifest",
    "restore_state",
    "save_state",
    "train",
    "trainer",
    "validate_manifest",
    "write_manifest",
]

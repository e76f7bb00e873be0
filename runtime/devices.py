"""Which kinds of native library this machine can run, by the ``runtime`` field of an
artifact's ``target`` record (written by the backend that built it, docs/backends.md):

* ``"host"`` — a plain shared library for this CPU (the CPU backend, and CUDA code built
  for the host emulator): always runnable;
* ``"cuda"`` — CUDA device code: needs an NVIDIA GPU the driver can use (``runtime.cuda``);
* ``"mlu"`` — BANG C built by cncc for a Cambricon MLU: needs CNRT and a device
  (``runtime.mlu``; MLU code built for the emulator is ``"host"``).

A new backend whose library needs a device adds one entry to :data:`LIBRARY_KINDS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class LibraryKind:
    """How to tell whether this machine runs a library kind: ``missing()`` says why not
    ("" when it can); ``device`` names what it needs, for messages."""

    device: str
    missing: Callable[[], str]


def _device_missing(module: str) -> Callable[[], str]:
    """``missing()`` for a device kind whose ``runtime.<module>`` has ``device_count()`` and
    ``why_no_device()`` (imported on first use: the probe loads a vendor library)."""
    def missing() -> str:
        import importlib

        probe = importlib.import_module(f"{__package__}.{module}")
        return "" if probe.device_count() > 0 else probe.why_no_device()

    return missing


LIBRARY_KINDS = {
    "host": LibraryKind("this CPU", lambda: ""),
    "cuda": LibraryKind("a usable CUDA GPU", _device_missing("cuda")),
    "mlu": LibraryKind("a usable Cambricon MLU", _device_missing("mlu")),
}


def library_kind(target: dict) -> str:
    """The library kind of a manifest ``target`` record (records written before the field
    existed: CUDA device code unless built for the emulator)."""
    if "runtime" in target:
        return target["runtime"]
    return "cuda" if target.get("kind") == "cuda" and not target.get("emulated") else "host"


def unavailable(kind: str) -> str:
    """``"no <device> (<reason>)"`` when this machine cannot run ``kind`` libraries, "" when
    it can (a backend's ``unavailable``, for a target that is not emulated)."""
    info = LIBRARY_KINDS[kind]
    reason = info.missing()
    return f"no {info.device.removeprefix('a ')} ({reason})" if reason else ""


def missing_device(target: dict) -> str:
    """Why this machine cannot run an artifact built for ``target`` ("" when it can)."""
    kind = library_kind(target)
    info = LIBRARY_KINDS.get(kind)
    if info is None:
        return f"this runtime does not know how to run {kind!r} libraries"
    reason = info.missing()
    return f"this machine has no {info.device.removeprefix('a ')}: {reason}" if reason else ""

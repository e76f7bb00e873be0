"""Build BANG C (``.mlu``) into a shared library: ``cncc`` for an MLU, or ``g++`` against the
host emulator (``templates/mlu/kiln_mlu_emulate.h``) to run the same code on the CPU.

``find_cncc()`` takes ``$KILN_CNCC`` if set, else PATH, then ``$NEUWARE_HOME/bin`` and
``/usr/local/neuware/bin``; no cncc exists on Kiln's test machines, so ``emulate`` is the
default and a non-emulated build fails early saying cncc is missing.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..c.build import build_library, emulator_command as c_emulator_command
from ..llvm.build import BuildResult
from ..registry import BuildError

ARCH = "mtp_372"  # MLU370
STANDARD_ROOTS = ("/usr/local/neuware",)
EMULATOR_HEADER = Path(__file__).resolve().parents[3] / "templates" / "mlu" / "kiln_mlu_emulate.h"


class MluToolchainError(BuildError):
    """cncc (or the host compiler for emulation) is missing or unusable."""


def find_cncc() -> str:
    """The cncc executable: $KILN_CNCC, else PATH, then $NEUWARE_HOME/bin and /usr/local/neuware/bin."""
    forced = os.environ.get("KILN_CNCC")
    if forced:
        if not (Path(forced).is_file() and os.access(forced, os.X_OK)):
            raise MluToolchainError(f"KILN_CNCC={forced} is not an executable file")
        return forced
    found = shutil.which("cncc")
    if found:
        return found
    for root in filter(None, [os.environ.get("NEUWARE_HOME"), *STANDARD_ROOTS]):
        candidate = Path(root) / "bin" / "cncc"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise MluToolchainError(
        "cncc not found: a non-emulated MLU target needs Cambricon's BANG C compiler (Neuware). Put cncc on "
        "PATH or set NEUWARE_HOME, or build for Kiln's MLU emulator (looked on PATH, in $NEUWARE_HOME/bin "
        "and /usr/local/neuware/bin)")


def cncc_command(cncc: str, src: str, out: str) -> list:
    """cncc's command line for a shared library of ``src`` (MLU370)."""
    return [cncc, f"--bang-mlu-arch={ARCH}", "-O3", "-fPIC", "-shared", src, "-o", out, "-lcnrt"]


def emulator_command(src: str, out: str) -> list:
    """g++'s command line building ``src`` against the MLU emulator header."""
    return c_emulator_command(src, out, "KILN_MLU_EMULATE", EMULATOR_HEADER, MluToolchainError, "MLU")


def compile_mlu(source: str, out_path, emulate: bool = True) -> BuildResult:
    """Compile ``source`` (BANG C text) into the shared library ``out_path`` (written
    atomically); ``timings`` holds ``cncc_s`` or ``emulator_build_s``."""
    if emulate:
        return build_library(source, out_path, "model.mlu", emulator_command, "the MLU emulator build",
                             "emulator_build_s")
    cncc = find_cncc()
    return build_library(source, out_path, "model.mlu", lambda src, lib: cncc_command(cncc, src, lib), "cncc", "cncc_s")

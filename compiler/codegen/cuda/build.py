"""Build a rendered CUDA module into a shared library: ``nvcc`` for a GPU, or ``g++`` with
the host emulator (``templates/cuda/kiln_cuda_emulate.h``) to run the same code on the CPU.

``find_nvcc()`` takes ``$KILN_NVCC`` if set, else looks on PATH, then under ``$CUDA_HOME``,
``$CUDA_PATH`` and ``/usr/local/cuda``;
``compile_cuda(source, out, arch=..., emulate=...)`` writes the library atomically.
Device code is built for ``arch`` (``sm_90`` by default: H100/H200) and embedded as PTX too,
so newer GPUs can JIT it.  ``KILN_CUDA_EMULATE=1`` makes ``emulate`` the default.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..c.build import build_library, emulator_command as c_emulator_command
from ..llvm.build import BuildResult
from ..registry import BuildError

DEFAULT_ARCH = "sm_90"
STANDARD_ROOTS = ("/usr/local/cuda",)  # searched after $CUDA_HOME and $CUDA_PATH
EMULATOR_HEADER = Path(__file__).resolve().parents[3] / "templates" / "cuda" / "kiln_cuda_emulate.h"


class CudaToolchainError(BuildError):
    """nvcc (or the host compiler for emulation) is missing or unusable."""


def emulate_default() -> bool:
    """Whether CUDA builds target the host emulator unless told otherwise ($KILN_CUDA_EMULATE)."""
    return os.environ.get("KILN_CUDA_EMULATE", "") not in ("", "0")


def _executable(path) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def find_nvcc() -> str:
    """The nvcc executable: $KILN_NVCC, else PATH, then $CUDA_HOME/bin, $CUDA_PATH/bin and
    /usr/local/cuda/bin."""
    forced = os.environ.get("KILN_NVCC")
    if forced:
        if not _executable(forced):
            raise CudaToolchainError(f"KILN_NVCC={forced} is not an executable file")
        return forced
    found = shutil.which("nvcc")
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), *STANDARD_ROOTS]
    for root in filter(None, roots):
        candidate = Path(root) / "bin" / "nvcc"
        if _executable(candidate):
            return str(candidate)
    raise CudaToolchainError(
        "nvcc not found: the CUDA target needs the CUDA toolkit. Put nvcc on PATH or set CUDA_HOME "
        "(looked on PATH, in $CUDA_HOME/bin, $CUDA_PATH/bin and /usr/local/cuda/bin)")


def check_arch(arch: str) -> str:
    """``sm_90`` style architecture names only (they go on a command line)."""
    if not re.fullmatch(r"sm_\d{2,3}[a-z]?", arch or ""):
        raise CudaToolchainError(f"CUDA architecture {arch!r} is not of the form sm_XX (e.g. sm_90)")
    return arch


def nvcc_command(nvcc: str, src: str, out: str, arch: str) -> list:
    compute = "compute_" + arch[3:]
    return [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
            f"-gencode=arch={compute},code=[{arch},{compute}]", "-lineinfo", src, "-o", out]


def emulator_command(src: str, out: str) -> list:
    """g++'s command line building ``src`` against the CUDA emulator header."""
    return c_emulator_command(src, out, "KILN_CUDA_EMULATE", EMULATOR_HEADER, CudaToolchainError, "CUDA")


def compile_cuda(source: str, out_path, arch: str = DEFAULT_ARCH, emulate: bool | None = None) -> BuildResult:
    """Compile ``source`` (CUDA C text) into the shared library ``out_path`` (written
    atomically); ``timings`` holds ``nvcc_s`` (or ``emulator_build_s``)."""
    emulate = emulate_default() if emulate is None else emulate
    if emulate:
        return build_library(source, out_path, "model.cu", emulator_command, "the CUDA emulator build",
                             "emulator_build_s")
    nvcc, arch = find_nvcc(), check_arch(arch)
    return build_library(source, out_path, "model.cu", lambda src, lib: nvcc_command(nvcc, src, lib, arch),
                         "nvcc", "nvcc_s")

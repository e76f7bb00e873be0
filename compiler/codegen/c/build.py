"""Build one C-dialect source (CUDA C, BANG C) into a shared library, the same way for every
text backend: the source in a temp folder, the backend's compiler command (nvcc, cncc, or
g++ with its emulation header), the library copied beside ``out_path``, fsynced and renamed
into place (readers see the old library or the whole new one)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..llvm.build import BuildResult
from ..registry import BuildError


def emulator_command(src: str, out: str, define: str, header, error, what: str) -> list:
    """g++'s (``$CXX``'s) command line building ``src`` as C++ against an emulation
    ``header`` with ``-D<define>``; ``error`` (the backend's toolchain error) when there is
    no such compiler, naming ``what`` emulator."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise error(f"C++ compiler {cxx!r} not found: the {what} emulator builds with it")
    return [cxx, "-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-w", "-x", "c++",
            f"-D{define}", "-include", str(header), src, "-o", out, "-lm"]


def build_library(source: str, out_path, source_name: str, command, tool: str, timing: str) -> BuildResult:
    """Write ``source`` as ``source_name``, run ``command(src, lib)`` (argv) and install the
    library at ``out_path``; a failure is a BuildError naming ``tool`` with its output's
    tail; the timing is recorded under ``timing``."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-build-") as tmp:
        src = os.path.join(tmp, source_name)
        Path(src).write_text(source)
        lib = os.path.join(tmp, "model.so")
        cmd = command(src, lib)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise BuildError(f"{tool} failed ({' '.join(cmd[:3])} ...):\n{(proc.stderr or proc.stdout)[-4000:]}")
        tmp_out = out.with_name(out.name + ".tmp")
        shutil.copyfile(lib, tmp_out)
        with open(tmp_out, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_out, out)
    return BuildResult(str(out), {timing: seconds})

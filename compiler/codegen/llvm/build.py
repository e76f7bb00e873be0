"""Turn LLVM IR into a shared library: parse, verify, optimize (O2), emit an object, link.

The object comes from ``TargetMachine.emit_object`` (host CPU, PIC); the library is
linked by the system C compiler (``cc -shared``) against libgomp, which provides the
``GOMP_parallel`` thread teams the generated kernels use, and libm.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ..registry import BuildError
from .target import HostTarget, host_target, optimize

DEFAULT_LINK_FLAGS = ("-lgomp", "-lm")


@dataclass
class BuildResult:
    """What ``compile_module`` made and how long each stage took (seconds)."""

    path: str
    timings: dict = field(default_factory=dict)


def parse_module(source, target: HostTarget) -> llvm.ModuleRef:
    """Parse IR text (or an ``llvmlite.ir.Module``) and verify it, set for ``target``."""
    if isinstance(source, ir.Module):
        source.triple = target.triple
        source.data_layout = target.data_layout
    text = str(source)
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as exc:
        raise BuildError(f"invalid LLVM IR: {exc}") from exc
    mod.triple = target.triple
    mod.data_layout = target.data_layout
    return mod


def link_shared(obj_path: str, out_path: str, extra_link_flags=()) -> None:
    """Link one object into a shared library with ``cc -shared``; raise BuildError on failure."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise BuildError(f"C compiler {cc!r} not found: it is needed to link {out_path}")
    cmd = [cc, "-shared", "-o", out_path, obj_path, *DEFAULT_LINK_FLAGS, *extra_link_flags]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"linking failed ({' '.join(cmd)}), exit {proc.returncode}:\n{proc.stderr.strip()}")


def compile_module(source, out_so_path: str, extra_link_flags=(),
                   target: HostTarget | None = None, asm_path: str | None = None,
                   opt_ir_path: str | None = None) -> BuildResult:
    """Optimize ``source`` (IR text or module), emit an object, link ``out_so_path``.

    Returns the library path and the timings of parse, optimize, codegen and link.
    ``asm_path``/``opt_ir_path`` optionally keep the assembly and optimized IR (dumps).
    """
    target = target or host_target()
    timings = {}
    t0 = time.perf_counter()
    mod = parse_module(source, target)
    t1 = time.perf_counter()
    optimize(mod, target)
    t2 = time.perf_counter()
    obj = target.machine.emit_object(mod)
    t3 = time.perf_counter()
    timings.update(parse=t1 - t0, optimize=t2 - t1, codegen=t3 - t2)
    if opt_ir_path:
        with open(opt_ir_path, "w") as f:
            f.write(str(mod))
    if asm_path:
        with open(asm_path, "w") as f:
            f.write(target.machine.emit_assembly(mod))
    out_dir = os.path.dirname(os.path.abspath(out_so_path))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        obj_path = os.path.join(tmp, "module.o")
        with open(obj_path, "wb") as f:
            f.write(obj)
        tmp_so = os.path.join(tmp, "module.so")
        link_shared(obj_path, tmp_so, extra_link_flags)
        os.replace(tmp_so, out_so_path)  # atomic: a loaded old library stays valid
    timings["link"] = time.perf_counter() - t3
    return BuildResult(path=out_so_path, timings=timings)

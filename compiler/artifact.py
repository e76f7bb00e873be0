"""The artifact directory writer (layout: DESIGN.md "Artifact", contract: docs/ABI.md).

```
manifest.json     written last, validated by runtime.manifest (hashes of every file below)
ir/               the pipeline dumps of each entry point (ir/<entry>/NN-<stage>.kir, kernels.txt)
src/model.ll      the generated LLVM IR (CPU), or src/model.cu the CUDA C (target "cuda")
lib/model.so      the shared library built from it
init.safetensors  the initial value of every variable
```

Every file is written atomically (temp file + fsync + rename; the library by
``build.compile_module``), and the manifest last, so an interrupted rebuild leaves either
the old artifact or one whose hashes do not match (refused by ``runtime.load_artifact``),
never a silently mixed one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime import manifest as mf

KILN_VERSION = "0.1.0"
SOURCE = "src/model.ll"
CUDA_SOURCE = "src/model.cu"
LIBRARY = "lib/model.so"


@dataclass
class VariableInfo:
    """One variable of the artifact's state, in ABI index order."""

    name: str
    dtype: str
    shape: tuple
    trainable: bool = False


@dataclass
class EntryInfo:
    """One entry point for the manifest: feeds/fetches as ``(name, dtype, dims)`` with dims
    ints, ``"N"`` or ``"N*k"``; ``state_in``/``state_out`` variable names."""

    feeds: list
    fetches: list
    state_in: list = field(default_factory=list)
    state_out: list = field(default_factory=list)


def manifest_dim(dim):
    """A manifest dim from an IR dim (``int`` or ``Sym``): ``3``, ``"N"``, ``"N*4"``."""
    if isinstance(dim, (int, np.integer)):
        return int(dim)
    if isinstance(dim, str):
        return dim
    return "N" if dim.coef == 1 else f"N*{dim.coef}"


def _tensor(name, dtype, shape) -> dict:
    return {"name": name, "dtype": str(np.dtype(getattr(dtype, "np_name", dtype))),
            "shape": [manifest_dim(d) for d in shape]}


def build_manifest(variables, entries: dict, target: dict, files: dict, build=None) -> dict:
    """The manifest dict of docs/ABI.md (validated when written)."""
    m = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "abi_version": mf.ABI_VERSION,
        "kiln_version": KILN_VERSION, "target": dict(target), "library": LIBRARY,
        "variables": [dict(_tensor(v.name, v.dtype, v.shape), trainable=bool(v.trainable))
                      for v in variables],
        "entry_points": {
            name: {"symbol": f"kiln_entry_{name}",
                   "feeds": [_tensor(*t) for t in e.feeds],
                   "fetches": [_tensor(*t) for t in e.fetches],
                   "state_in": list(e.state_in), "state_out": list(e.state_out)}
            for name, e in entries.items()},
        "files": dict(files),
    }
    if build is not None:
        m["build"] = build
    return m


def write_init_values(path: Path, variables, values: dict) -> None:
    """``init.safetensors`` holding every variable (checked against its dtype and shape)."""
    from safetensors.numpy import save

    tensors = {}
    for v in variables:
        if v.name not in values:
            raise ValueError(f"no initial value for variable {v.name!r}")
        arr = np.asarray(values[v.name], dtype=np.dtype(v.dtype), order="C")
        if arr.shape != tuple(v.shape):
            raise ValueError(f"initial value of {v.name!r} has shape {list(arr.shape)}, "
                             f"variable is {list(v.shape)}")
        tensors[v.name] = arr
    mf.atomic_write(path, save(tensors))


def llvm_library(source: str, lib_path: str) -> dict:
    """Build LLVM IR text into ``lib_path``; returns the per-stage seconds (``llvm_*_s``)."""
    from .codegen.llvm.build import compile_module

    result = compile_module(source, lib_path)
    return {f"llvm_{k}_s": round(v, 4) for k, v in result.timings.items()}


def write_artifact(out_dir, module, variables, init_values: dict, entries: dict,
                   target: dict, build: dict | None = None, source_name: str = SOURCE,
                   build_library=llvm_library) -> Path:
    """Write a complete artifact at ``out_dir`` from generated code (an ``llvmlite.ir.Module``
    or source text); returns the directory.  ``build_library(source, lib_path) -> timings``
    makes the library (LLVM by default); ``build`` (timings etc.) goes into the manifest.

    The ``ir/`` dumps are written by the caller (the compile driver) before this runs.
    """
    out = Path(out_dir)
    for sub in ("src", "lib", "ir"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    build = dict(build or {})
    t0 = time.perf_counter()
    source = str(module)
    mf.atomic_write(out / source_name, source)
    timings = build_library(source, str(out / LIBRARY))
    build.update(timings)
    files = [source_name, LIBRARY]
    if variables:
        write_init_values(out / mf.INIT_NAME, variables, init_values)
        files.append(mf.INIT_NAME)
    build["write_s"] = round(time.perf_counter() - t0 - sum(timings.values()), 4)
    manifest = build_manifest(variables, entries, target, mf.file_hashes(out, files), build)
    mf.write_manifest(out, manifest)
    return out


def host_target_record() -> dict:
    """The manifest's ``target`` for the LLVM CPU backend on this host."""
    from .codegen.llvm.target import host_target

    t = host_target()
    return {"kind": "cpu", "triple": t.triple, "cpu": t.cpu, "features": t.features}



def cuda_target_record(arch: str, emulated: bool, tf32: bool = False) -> dict:
    """The manifest's ``target`` for the CUDA backend (``emulated``: built for the host
    emulator; ``tf32``: float32 GEMMs may use TF32 tensor cores)."""
    record = {"kind": "cuda", "arch": arch, "emulated": bool(emulated)}
    if tf32:
        record["tf32"] = True
    return record

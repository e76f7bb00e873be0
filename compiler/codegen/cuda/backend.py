"""The CUDA backend's registration (``compiler/codegen/registry.py``): kernel IR -> CUDA C
(``module.render_module``) -> ``nvcc`` for a GPU, or ``g++`` against the host emulator
(``build.compile_cuda``).  Options: ``arch`` (``sm_90``), ``emulate``, ``tf32``."""
from __future__ import annotations

from ..registry import Backend, Option


def _options(values: dict) -> dict:
    """Resolve defaults and fail early: nvcc must exist unless emulating."""
    from .build import DEFAULT_ARCH, check_arch, emulate_default, find_nvcc

    emulate = emulate_default() if values.get("emulate") is None else bool(values["emulate"])
    if not emulate:
        find_nvcc()
    return {"arch": check_arch(values.get("arch") or DEFAULT_ARCH), "emulate": emulate,
            "tf32": bool(values.get("tf32"))}


def _render(programs, variables, target) -> str:
    from .module import render_module

    label = f"CUDA {target.get('arch')}" + (" (host emulator)" if target.get("emulate") else "")
    return render_module(programs, variables, label, tf32=target.get("tf32"))


def _build(source, lib_path, target) -> dict:
    from .build import compile_cuda

    result = compile_cuda(source, lib_path, target.get("arch"), target.get("emulate"))
    return {k: round(v, 4) for k, v in result.timings.items()}


def _capabilities(target):
    from .capabilities import CAPABILITIES

    return CAPABILITIES


def _record(target) -> dict:
    """The manifest's target; an emulated build is a host library, not CUDA device code."""
    record = {"kind": "cuda", "arch": target.get("arch"), "emulated": target.get("emulate")}
    if target.get("emulate"):
        record["runtime"] = "host"
    if target.get("tf32"):
        record["tf32"] = True
    return record


def _unavailable(target) -> str:
    """Why CUDA code built for ``target`` cannot run here ("" for the emulator).  nvcc is
    not asked about: ``_options`` already refused a GPU target without it."""
    if target.get("emulate"):
        return ""
    from runtime import devices

    return devices.unavailable("cuda")


BACKEND = Backend(
    name="cuda",
    description="CUDA C for NVIDIA GPUs, built by nvcc (or for Kiln's host emulator)",
    devices=("GPU",),
    source_name="src/model.cu",
    runtime_library="cuda",
    render=_render,
    build=_build,
    target_record=_record,
    capabilities=_capabilities,
    options=(Option("arch", metavar="sm_XX", help="GPU architecture (default: sm_90, H100/H200)"),
             Option("tf32", kind="flag", default=False,
                    help="float32 matrix products may use TF32 tensor cores (faster, inputs rounded "
                         "to 10 mantissa bits; default: exact fp32)"),
             Option("emulate", kind="flag",
                    help="build for Kiln's host emulator (runs the CUDA code on the CPU, slowly; for "
                         "testing without a GPU; also KILN_CUDA_EMULATE=1)")),
    make_options=_options,
    unavailable=_unavailable,
    control_flow=True,
)

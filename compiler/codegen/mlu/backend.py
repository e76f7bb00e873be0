"""The MLU backend's registration (``compiler/codegen/registry.py``): kernel IR -> BANG C
(``module.render_module``) -> ``cncc`` for an MLU, or ``g++`` against the host emulator
(``build.compile_mlu``).  Option: ``emulate`` (default on: no cncc exists on Kiln's machines;
off fails early unless cncc is found).  docs/codegen-mlu.md."""
from __future__ import annotations

import os

from ..registry import Backend, Option


def emulate_default() -> bool:
    """MLU builds target the emulator unless told otherwise ($KILN_MLU_EMULATE=0)."""
    return os.environ.get("KILN_MLU_EMULATE", "1") not in ("", "0")


def _options(values: dict) -> dict:
    """Resolve the default and fail early: cncc must exist unless emulating."""
    from .build import find_cncc

    emulate = emulate_default() if values.get("emulate") is None else bool(values["emulate"])
    if not emulate:
        find_cncc()
    return {"emulate": emulate}


def _render(programs, variables, target) -> str:
    from .module import render_module

    return render_module(programs, variables, "MLU370" + (" (host emulator)" if target.get("emulate") else ""))


def _build(source, lib_path, target) -> dict:
    from .build import compile_mlu

    result = compile_mlu(source, lib_path, emulate=target.get("emulate"))
    return {k: round(v, 4) for k, v in result.timings.items()}


def _capabilities(target):
    from .capabilities import PLAN

    return PLAN


def _record(target) -> dict:
    """The manifest's target; an emulated build is a host library, not MLU device code."""
    record = {"kind": "mlu", "arch": "mtp_372", "emulated": target.get("emulate")}
    if target.get("emulate"):
        record["runtime"] = "host"
    return record


def _unavailable(target) -> str:
    """Why MLU code built for ``target`` cannot run here ("" for the emulator): the
    runtime's CNRT device check (``runtime.mlu``)."""
    if target.get("emulate"):
        return ""
    from runtime import devices

    return devices.unavailable("mlu")


BACKEND = Backend(
    name="mlu",
    description="BANG C for Cambricon-style MLUs, built by cncc (or for Kiln's host emulator)",
    devices=("MLU",),
    source_name="src/model.mlu",
    runtime_library="mlu",
    render=_render,
    build=_build,
    target_record=_record,
    capabilities=_capabilities,
    options=(Option("emulate", kind="flag",
                    help="build for Kiln's MLU emulator (runs the BANG C on the CPU; the default while no "
                         "cncc exists, KILN_MLU_EMULATE=0 turns the default off)"),),
    make_options=_options,
    unavailable=_unavailable,
    control_flow=True,
)

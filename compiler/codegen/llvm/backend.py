"""The CPU backend's registration (``compiler/codegen/registry.py``): kernel IR -> LLVM IR
for this host (``module.build_module``) -> a shared library (``build.compile_module``)."""
from __future__ import annotations

from ..registry import Backend, Option


class RenderedModule(str):
    """The rendered module's text, carrying the GEMM engine's compile started while the
    kernels rendered (``early``: a ``build.EarlyUnit``, or None) to ``_build``.  A ``str``,
    as ``render`` promises: a backend may wrap this one's text.  ``close()`` (also when the
    text is dropped unbuilt) stops that compile."""

    def __new__(cls, text: str, early=None):
        self = super().__new__(cls, text)
        self.early = early
        return self

    def close(self) -> None:
        if self.early is not None:
            self.early.close()

    def __del__(self):
        self.close()


def _render(programs, variables, target) -> RenderedModule:
    from .build import EarlyUnit, llvm_jobs
    from .module import build_module

    early = EarlyUnit() if llvm_jobs() > 1 else None
    try:
        module = build_module(programs, variables, profile=bool(target.get("profile")), engine_ready=early)
        return RenderedModule(str(module), early)
    except BaseException:
        if early is not None:
            early.close()
        raise


def _build(source, lib_path, target) -> dict:
    from .build import compile_module

    result = compile_module(str(source), lib_path, early=getattr(source, "early", None))
    return {f"llvm_{k}_s": round(v, 4) for k, v in result.timings.items()}


def _capabilities(target):
    from .capabilities import host_capabilities

    return host_capabilities()


def _record(target) -> dict:
    """The host the library is built for: its CPU and features (the code uses them) and the
    cores the schedule planned threads for (``cores``: a library planned for 2 is correct
    on 16, but slower than one planned for them; the compile cache keys on it)."""
    from ...host import host_cores
    from .target import host_target

    t = host_target()
    record = {"kind": "cpu", "triple": t.triple, "cpu": t.cpu, "features": t.features, "cores": host_cores()}
    if target.get("profile"):  # only then: a plain build's record (and cache key) is unchanged
        record["profile"] = True
    return record


def _record_probe(target) -> str:
    """The host CPU as the OS states it, the LLVM that reads it and the usable cores
    (``_record`` asks LLVM, which costs a compile-cache hit ~25 ms of loading llvmlite's
    native library)."""
    import llvmlite

    from ...cache_memo import cpu_probe
    from ...host import host_cores

    cpu = cpu_probe()
    return f"{cpu}:{llvmlite.__version__}:{host_cores()}" if cpu else ""


BACKEND = Backend(
    name="cpu",
    description="LLVM IR for this CPU (AVX-512/AVX2 kernels, packed GEMM, libgomp threads)",
    devices=("CPU",),
    source_name="src/model.ll",
    runtime_library="host",
    render=_render,
    build=_build,
    target_record=_record,
    capabilities=_capabilities,
    record_probe=_record_probe,
    control_flow=True,
    options=(Option("profile", "flag", False, help="instrument the library: per kernel call and per "
                    "worker thread timings for kiln profile (docs/performance.md)"),),
)

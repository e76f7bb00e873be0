"""The host target of the LLVM CPU backend: triple, CPU, features, TargetMachine, optimizer.

Everything the backend compiles is built for the machine it runs on (the artifact's
library is native code for the host), so the target machine is created from
``llvm.get_host_cpu_name()`` and ``llvm.get_host_cpu_features()``.  Relocation model
is PIC because the object is linked into a shared library; the code generator's level is 3,
the optimization pipeline's ``SPEED_LEVEL`` (1).

Optimization uses LLVM's new pass manager (the legacy one is gone from recent llvmlite):
``create_pipeline_tuning_options`` + ``create_pass_builder`` + the module pass manager,
i.e. the ``default<O1>`` pipeline.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import llvmlite.binding as llvm


@functools.lru_cache(maxsize=None)
def init_llvm() -> None:
    """Initialize LLVM's native target and asm printer, once per process.

    ``llvm.initialize()`` was required by old llvmlite and is deprecated (it raises)
    from 0.45 on, where core initialization is automatic; so it is tried and skipped.
    """
    try:
        llvm.initialize()
    except Exception:  # deprecated/removed in llvmlite >= 0.45: nothing to do
        pass
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@dataclass(frozen=True)
class HostTarget:
    """One LLVM target machine with the facts code generation chooses parameters from."""

    triple: str
    cpu: str
    features: str
    machine: llvm.TargetMachine

    def has(self, feature: str) -> bool:
        """True when the feature string enables ``feature`` (e.g. 'avx512f', 'fma')."""
        return has_feature(self.features, feature)

    @property
    def data_layout(self) -> str:
        """The data layout string a module compiled for this machine must carry."""
        return str(self.machine.target_data)


def has_feature(features: str, feature: str) -> bool:
    """Whether an LLVM feature string (``+avx2,-avx512f,...``) enables ``feature``."""
    return f"+{feature}" in features.split(",")


def host_features() -> str:
    """The host's CPU feature string in LLVM's ``+a,-b`` form."""
    init_llvm()
    return llvm.get_host_cpu_features().flatten()


def without_avx512(features: str) -> str:
    """The feature string with every AVX-512 extension switched off (an AVX2-only host).

    Used to test the AVX2 configuration of the kernels on an AVX-512 machine.
    """
    out = []
    for f in features.split(","):
        if f[1:].startswith(("avx512", "avx10", "amx")):
            f = "-" + f[1:]
        out.append(f)
    return ",".join(out)


def create_target(cpu: str | None = None, features: str | None = None) -> HostTarget:
    """A PIC, O3 target machine for the host (or a given ``cpu``/``features``)."""
    init_llvm()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name() if cpu is None else cpu
    features = host_features() if features is None else features
    target = llvm.Target.from_triple(triple)
    machine = target.create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default")
    return HostTarget(triple=triple, cpu=cpu, features=features, machine=machine)


@functools.lru_cache(maxsize=None)
def host_target() -> HostTarget:
    """The (cached) host target machine."""
    return create_target()


# The module pipeline's level.  O1 (with the vectorizers and loop unrolling): the kernels'
# hot loops are explicit vector code (GEMM micro-kernels, vectorized loop bodies) that the
# extra passes of O2 and O3 do not speed up.  The seed-002 CNN train step compiled in 0.96 s
# of LLVM CPU time at O2 against 1.56 s at O3, and its kernels' unit in 0.70 s at O1
# against 0.80 s at O2, each with the same step time (CNN b50, MLP b32/b128, unrolled LSTM
# 28x128: medians within 3 %, 2 threads; docs/compile-cache.md).
SPEED_LEVEL = 1


# LLVM's loop unrolling: on.  Off, the seed-002 CNN train step's optimize + codegen took
# ~10 % less time, but loops with a few constant iterations (an im2col over one channel,
# pool taps before lowering unrolled them) ran several times slower.
LOOP_UNROLLING = True


def optimize(module: llvm.ModuleRef, target: HostTarget, speed_level: int = SPEED_LEVEL,
             explicit: bool = False) -> None:
    """Run the ``default<O{speed_level}>`` new-pass-manager pipeline on ``module`` in place
    (loop and SLP vectorization on; loop unrolling as ``LOOP_UNROLLING``).  ``explicit``:
    code that is already explicit vector code, unrolled where it pays (the GEMM engine):
    O1 without the vectorizers and unrolling, which compiled the engine in 0.44 s instead of
    0.72 s (at O2 with them) with the same sgemm GFLOP/s (1 thread, 256³ and 1024³,
    bench/sgemm.py)."""
    if explicit:
        speed_level = 1
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pto.loop_vectorization = not explicit
    pto.slp_vectorization = not explicit
    pto.loop_unrolling = LOOP_UNROLLING and not explicit
    pb = llvm.create_pass_builder(target.machine, pto)
    mpm = pb.getModulePassManager()
    mpm.run(module, pb)

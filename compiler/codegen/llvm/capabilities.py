"""The CPU backend's ``Capabilities`` (compiler/lower/capabilities.py), from its host target:
the cores libgomp's team may use, the SIMD lanes of a float32 vector (16 with AVX-512, 8
with AVX2, else 4), the GEMM engine's register tile, and the work from which a parallel loop
is worth a ``GOMP_parallel`` call, and the parts a reduction over leading axes is split into
(a constant, not the core count: results do not depend on the machine).  No grid launches: the scheduling pass threads loops in
place (``For.parallel``, rendered by parallel.py)."""
from __future__ import annotations

from ...host import host_cores
from ...lower.capabilities import Capabilities
from .gemm import config_for
from .target import HostTarget, host_target

PARALLEL_MIN_WORK = 32768  # trip count x For.work from which a parallel loop uses threads
REDUCTION_PARTS = 8  # parts (partial results) of a reduction over leading axes (split_reduce.py)


def host_capabilities(target: HostTarget | None = None) -> Capabilities:
    """What the host (or ``target``) offers the scheduling pass."""
    target = target or host_target()
    lanes = 16 if target.has("avx512f") else 8 if target.has("avx2") else 4
    cfg = config_for(target)
    return Capabilities(name="cpu", threads=host_cores(), vector_width=lanes,
                        gemm_shapes=((cfg.mr, cfg.nr, cfg.kc),), min_parallel_work=PARALLEL_MIN_WORK,
                        nested_gemm=True, reduction_parts=REDUCTION_PARTS)

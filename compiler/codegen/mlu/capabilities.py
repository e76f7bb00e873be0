"""The MLU part Kiln's BANG C is written for (MLU370-class), in one place: the emulator header
(templates/mlu/kiln_mlu_emulate.h) enforces the same numbers, and docs/codegen-mlu.md says
where each comes from.

* 4 MLU cores per cluster: a Union1 kernel's task dimension is a multiple of it;
* NRAM: 768 KiB per core, of which cncc keeps 128 KiB for the stack (Cambricon's
  mlu-ops ``REM_FOR_STACK``), so kernels may place 640 KiB of ``__nram__`` tiles;
* vector intrinsics (``__bang_*``) take NRAM operands aligned to 64 bytes whose length is a
  multiple of 128 bytes (``NFU_ALIGN_SIZE``);
* WRAM: 1024 KiB per core, all of it for ``__wram__`` tiles (mlu-ops ``MAX_WRAM_SIZE``);
  SRAM: 4096 KiB per cluster, less 128 KiB cncc keeps (mlu-ops ``MAX_SRAM_SIZE``);
* the matrix intrinsic ``__bang_matmul(dst, src, filter, M, K, N)``: K a multiple of 64 bytes
  of elements, N a multiple of 64 (mlu-ops pads ``align_K``/``align_N`` to exactly these).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MluPart:
    """One MLU part's on-chip limits (see the module doc)."""

    name: str = "mlu370"
    cores_per_cluster: int = 4
    clusters: int = 8
    nram_bytes: int = 768 * 1024
    stack_reserve_bytes: int = 128 * 1024
    align_bytes: int = 64
    vector_align_bytes: int = 128
    wram_bytes: int = 1024 * 1024
    sram_bytes: int = 4096 * 1024
    sram_reserve_bytes: int = 128 * 1024
    matmul_k_align_bytes: int = 64
    matmul_n_align: int = 64

    @property
    def usable_nram_bytes(self) -> int:
        """NRAM a kernel's ``__nram__`` tiles may use (capacity less the stack reserve)."""
        return self.nram_bytes - self.stack_reserve_bytes

    @property
    def usable_sram_bytes(self) -> int:
        """Cluster SRAM a kernel's ``__mlu_shared__`` tiles may use (capacity less cncc's reserve)."""
        return self.sram_bytes - self.sram_reserve_bytes

    @property
    def cores(self) -> int:
        """Cores of the part (clusters x cores per cluster): the task dimension Kiln launches."""
        return self.clusters * self.cores_per_cluster


MLU370 = MluPart()


def _plan():
    """How the scheduling pass plans kernels for the MLU renderer (compiler/codegen/mlu/kernels.py):
    loops threaded in place over the part's cores (no grid launches: only a GEMM's tasks
    cooperate, at cluster barriers inside its kernel), every proven-parallel loop worth splitting."""
    from ...lower.capabilities import Capabilities

    return Capabilities(name="mlu", threads=MLU370.cores, shared_memory_bytes=MLU370.usable_nram_bytes,
                        vector_width=MLU370.vector_align_bytes // 4, min_parallel_work=1)


PLAN = _plan()

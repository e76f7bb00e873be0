"""What a backend's hardware offers the scheduling pass (``schedule.plan_program``).

Each backend declares one ``Capabilities`` (the CPU backend from its host target:
``compiler/codegen/llvm/target.py``; CUDA from its launch constants:
``compiler/codegen/cuda/capabilities.py``) and the caller passes it to the pass, which
decides from it alone, never from the backend's name:

* ``blocks > 0``: the device runs grids of thread blocks, so every kernel is planned as
  launches (``Kernel.launches``: grids, block reductions, ordered check loops, serial);
  ``blocks == 0``: loops are threaded in place (``For.parallel``);
* ``max_threads_per_block > 1`` with ``shared_memory_bytes``: threads of a block cooperate
  (barriers, shared partial values), which block reductions and ordered check loops need;
* ``threads > 1`` and ``min_parallel_work``: threading a loop in place pays from that much
  work (trip count x ``For.work``); less stays on one thread;
* ``nested_gemm``: the renderer runs a ``Gemm`` inside a loop (on the loop's thread), so a
  convolution kernel is planned one batch item at a time on per-thread slots of its im2col
  matrix (``conv_chunks.py``);
* ``reduction_parts > 1`` (threads in place only): a loop that updates a reduction's result
  in every iteration (a sum over leading axes, e.g. a bias gradient) runs as that many
  parts with their own partial results, combined in a fixed order (``split_reduce.py``).
  It is a constant of the target, not its core count, so results do not depend on the
  machine or the threads that run them.

``vector_width`` and ``gemm_shapes`` describe the renderers' SIMD lanes (a GPU warp) and GEMM
tiles; the pass does not choose from them yet.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    """A target's parallel hardware, as far as scheduling cares (see the module docstring)."""

    name: str  # the backend ("cpu", "cuda"): a planned Program records it
    threads: int = 1  # threads that may share one parallel loop (CPU cores; a GPU grid block's threads)
    blocks: int = 0  # most blocks of one grid launch; 0: no grid launches
    max_threads_per_block: int = 1  # threads that cooperate through barriers and shared memory
    vector_width: int = 1  # float32 lanes of one instruction (SIMD lanes, a warp)
    shared_memory_bytes: int = 0  # on-chip memory per block
    gemm_shapes: tuple = ()  # (m, n, k) tiles of the GEMM kernels
    min_parallel_work: int = 0  # trip count x For.work from which an in-place parallel loop pays
    nested_gemm: bool = False  # a Gemm may run inside a (parallel) loop: convolutions go per item
    reduction_parts: int = 0  # parts of a reduction over leading axes, threaded in place (< 2: not split)

    @property
    def grid_launches(self) -> bool:
        """Whether kernels become launches over grids of blocks (else loops thread in place)."""
        return self.blocks > 0

    @property
    def cooperative_blocks(self) -> bool:
        """Whether a block's threads can combine values and keep loop order between them."""
        return self.max_threads_per_block > 1 and self.shared_memory_bytes > 0

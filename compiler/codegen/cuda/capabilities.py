"""The CUDA backend's ``Capabilities`` (compiler/lower/capabilities.py), from the constants
its templates launch with: the scheduling pass plans grid launches of ``KILN_BLOCK`` threads
(at most 65535 blocks, ``kiln_blocks``), block reductions and ordered check loops of up to
1024 threads (``KILN_RED_BLOCK``, ``KILN_ORD_BLOCK``) sharing the 48 KiB of static shared
memory a block may use, warps of 32 lanes, and the 16x16 / 64x64 GEMM tiles."""
from ...lower.capabilities import Capabilities

CAPABILITIES = Capabilities(name="cuda", threads=256, blocks=65535, max_threads_per_block=1024, vector_width=32,
                            shared_memory_bytes=48 * 1024, gemm_shapes=((16, 16, 16), (64, 64, 16)))

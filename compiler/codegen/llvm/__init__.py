"""The LLVM CPU backend: host target, IR generation (GEMM engine, ...), object + shared library.

Modules: ``target`` (TargetMachine, O1 pipeline), ``gemm`` / ``gemm_kernel`` /
``gemm_pack`` (packed, blocked, multithreaded sgemm with a fusable epilogue), ``build``
(object -> ``cc -shared``).
"""

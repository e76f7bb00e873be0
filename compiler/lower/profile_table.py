"""The event table of a profiling build (``--profile``, docs/performance.md): which event id
is which entry step or kernel call, with what ``kiln profile`` reports about it.

A profiling library records events ``(id, thread, start ns, end ns)``; the ids are numbered
here, once, for the code generator (``compiler/codegen/llvm/profile.py``) and for the
manifest's ``"profile"`` record (read by ``runtime/profiling.py``): per entry point, in the
order of the programs, one id for the whole step, then one per kernel of
``Program.kernels``.  Each kernel's record carries its name, the IR op it comes from, that
op's source line in the user's program (``sources``: graph op name -> ``"file:line"``), and
its FLOPs and bytes as polynomials in the batch size (``compiler/lower/cost.py``).
"""
from __future__ import annotations

from .cost import kernel_bytes, kernel_flops

#: Layout of one recorded event (docs/performance.md): i32 id, i32 arg, i64 start, i64 end (ns);
#: ``arg`` is the thread index of a kernel call or chunk event, the batch size of a step event.
EVENT_FIELDS = (("id", "int32"), ("arg", "int32"), ("start", "int64"), ("end", "int64"))
#: Set in the id of a worker thread's chunk of a parallel loop (the rest is the id of the
#: kernel call that launched it): the table counts calls, the trace shows chunks too.
CHUNK_FLAG = 1 << 30
RECORD_VERSION = 1


def id_bases(programs: dict) -> dict:
    """``entry -> id of its step event``; kernel ``i`` of that entry is ``base + 1 + i``."""
    bases, next_id = {}, 0
    for entry, program in programs.items():
        bases[entry] = next_id
        next_id += 1 + len(program.kernels)
    return bases


def origin_op(origin: str) -> str:
    """The graph op name in a kernel origin (``"fused[bias_act] dense/MatMul"`` -> ``dense/MatMul``)."""
    return origin.split(" ", 1)[1] if " " in origin else ""


def profile_record(programs: dict, sources=None, unplanned=None) -> dict:
    """The manifest's ``"profile"`` record for ``programs`` (entry -> kernel-IR Program).
    ``sources`` maps graph op names to ``"file:line"`` (a callable giving that dict is
    called once).  ``unplanned`` (entry -> the Program before scheduling) is where costs
    are counted when given: planning keeps a kernel's name and meaning, but may give its
    loops bounds that are not polynomials in N (a convolution split over threads)."""
    sources = (sources() if callable(sources) else sources) or {}
    events = []
    for entry, program in programs.items():
        events.append({"entry": entry, "kind": "step", "name": entry})
        before = {k.name: k for k in (unplanned or {}).get(entry, program).kernels}
        for kernel in program.kernels:
            counted = before.get(kernel.name, kernel)
            events.append({"entry": entry, "kind": "kernel", "name": kernel.name, "op": kernel.origin,
                           "source": sources.get(origin_op(kernel.origin), ""),
                           "flops": kernel_flops(counted), "bytes": kernel_bytes(counted, program.buffers)})
    return {"version": RECORD_VERSION, "clock": "CLOCK_MONOTONIC", "unit": "ns",
            "event_fields": [list(f) for f in EVENT_FIELDS], "chunk_flag": CHUNK_FLAG, "events": events}

"""Kernel-IR programs -> one CUDA C translation unit exporting the Kiln C ABI (docs/ABI.md).

``render_module(programs, variables)`` renders every entry point's kernels
(``kernels.py``; a program not planned by the scheduling pass is planned for
``capabilities.CAPABILITIES`` first) and the host side (``templates/cuda/host.cu.j2``): state creation on the
device, variable reads and writes, and ``kiln_entry_<name>`` running the step as a CUDA
graph.  This module computes what the templates need: each buffer's device address
(``pointer`` of its ``Place``, compiler/codegen/layout.py, shared with the LLVM backend),
the io region's layout, the constants blob and the failed-check messages.
The same text builds with ``nvcc`` for a GPU or with ``g++`` and the host emulator
(``templates/cuda/kiln_cuda_emulate.h``) for tests on the CPU.
"""
from __future__ import annotations

from ...lower import kernel_ir as K
from ...lower.dedup import kernel_functions
from ...lower.schedule import plan_program
from ..c.environment import environment
from ..c.host import Checks, bytes_expr, c_string, const_lines, entry_symbol, host_steps, io_buffers, pointer
from ..layout import ConstantPool, Variables, max_batch, places, workspace_bytes
from .capabilities import CAPABILITIES
from .kernels import KernelRenderer

ALIGN = 256  # device allocations, io slots and constants (cudaMalloc's alignment)


def _entry(index: int, name: str, program: K.Program, variables: Variables, consts: ConstantPool,
           checks: Checks, tf32: bool) -> dict:
    """Everything the templates need for one entry point (``program`` planned for CUDA first)."""
    program = plan_program(program, CAPABILITIES)
    kernels, per_kernel = render_kernels(program, name, checks.add, tf32)
    kernel_programs = [f.program for f in kernel_functions(program)[0]]
    io_decls = io_buffers(program)
    n_feeds = sum(d.role == "feed" for d in io_decls)
    io_bytes = [bytes_expr(d) for d in io_decls]
    feeds, fetches = io_bytes[:n_feeds], io_bytes[n_feeds:]
    io_slot = {(d.role, d.index): j for j, d in enumerate(io_decls)}  # feeds, then fetches
    slot = {n: i for i, n in enumerate(program.buffers)}
    launches = host_steps(K.program_steps(program), [[block] for block in per_kernel], slot, CUDA_READ_PRED)
    fixed, per = workspace_bytes(program)
    io_per = sum(size for size, syms in (d.byte_size() for d in io_decls) if syms)
    return {
        "index": index, "name": name, "kernels": kernels, "launches": launches,
        "host_control": program.steps is not None,
        "params": max([len(k.buffers) for k in kernel_programs] + [1]),
        "buffers": [f"{d.name}: {d.dtype.short}{list(d.shape)} {d.role}" for d in program.buffers.values()],
        "pointers": [pointer(p, consts, io_slot) for p in places(program, variables, consts)],
        "feeds": feeds, "fetches": fetches, "io": feeds + fetches, "io_slots": len(feeds) + len(fetches) + 1,
        "copies": [{"dst": slot[dst], "src": slot[src], "bytes": bytes_expr(program.buffers[dst])}
                   for dst, src in program.copies],
        "uses_batch": program.uses_batch(), "arena_bytes": f"{fixed}LL + {per}LL * N",
        "per_bytes": per + io_per, "max_batch": max_batch(fixed, per + io_per + ALIGN),
    }


CUDA_READ_PRED = ("if ((e = cudaMemcpyAsync(&{pred}, {src}, 1, cudaMemcpyDeviceToHost, stream)) != cudaSuccess) "
                  "return e;\n  if ((e = cudaStreamSynchronize(stream)) != cudaSuccess) return e;")


def render_kernels(program: K.Program, entry: str, add_check, tf32: bool = False) -> tuple:
    """``(texts, launch lines)`` of a planned program: each distinct kernel
    (``lower.dedup.kernel_functions``) rendered once over its parameters, and per kernel a
    block that fills a buffer table ``a`` with its arguments (``b.p[i]`` plus the call's
    byte offset) and launches the function's ``__global__`` functions with it."""
    functions, calls = kernel_functions(program)
    rendered = []
    for f in functions:
        r = KernelRenderer(f.program, entry, add_check, tf32=tf32)
        rendered.append((r.kernel(f.kernel), r.launches))
    slot = {n: i for i, n in enumerate(program.buffers)}
    launches = []
    for call in calls:
        lines = ["KilnBufs a; memset(&a, 0, sizeof a); a.err = b.err;"]
        for i, arg in enumerate(call.args):
            shift = call.offset(i) * program.buffers[arg].dtype.np.itemsize
            lines.append(f"a.p[{i}] = (char*)b.p[{slot[arg]}] + {shift}LL;" if shift else f"a.p[{i}] = b.p[{slot[arg]}];")
        body = [line.replace("stream, b, N)", "stream, a, N)") for line in rendered[call.function][1]]
        launches.append("{ " + " ".join(lines) + "\n    " + "\n    ".join(body) + " }")
    return [t for t, _ in rendered], launches


def render_module(programs: dict, variables, target: str = "CUDA", tf32: bool = False) -> str:
    """The ``.cu`` text of a module: ``programs`` maps entry names to kernel-IR Programs,
    ``variables`` lists ``(name, dtype, shape)`` in ABI index order; ``tf32`` lets float32
    GEMMs use TF32 tensor cores."""
    variables = Variables.of(variables)
    var_rows = [{"bytes": n, "cname": c_string(name)} for name, n in zip(variables.names, variables.nbytes)]
    consts, checks = ConstantPool(ALIGN), Checks()
    entries = [_entry(i, entry_symbol(n), p, variables, consts, checks, tf32) for i, (n, p) in enumerate(programs.items())]
    ntable = max([len(p.buffers) for p in programs.values()] + [1])
    nbufs = max([e["params"] for e in entries] + [1])
    return environment().get_template("cuda/module.cu.j2").render(
        target=target, entries=entries, nbufs=nbufs, ntable=ntable, variables=var_rows, const_lines=const_lines(consts),
        const_bytes=len(consts.blob()), checks=checks.rows)


def program_variables(programs) -> list:
    """``(key, dtype, shape)`` of every state buffer of ``programs``, first-seen order (for
    modules built straight from kernel programs, e.g. in tests)."""
    seen = {}
    for program in programs:
        for d in program.buffers.values():
            if d.role == "state" and d.key not in seen:
                seen[d.key] = (d.key, d.dtype, tuple(int(x) for x in d.shape))
    return list(seen.values())


def global_functions(program: K.Program, entry: str = "run") -> dict:
    """Kernel name -> the names of the ``__global__`` functions that run it (those of its
    kernel function, shared by the kernels alike up to their buffers)."""
    program = plan_program(program, CAPABILITIES)
    texts, _ = render_kernels(program, entry_symbol(entry), lambda *a: 0)
    _, calls = kernel_functions(program)
    return {k.name: [f.name for f in texts[c.function].functions] + texts[c.function].merged_into
            for k, c in zip(program.kernels, calls)}

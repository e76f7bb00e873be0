"""Kernel-IR programs -> one BANG C translation unit (``.mlu``) exporting the Kiln C ABI
(docs/ABI.md, docs/codegen-mlu.md).

``render_module(programs, variables, label)`` renders every entry point's kernels
(``kernels.MluKernels``) and the host side (``templates/mlu/host.mlu.j2``: CNRT queue,
``cnrtMalloc``'d variables, constants and workspace, ``kiln_entry_<name>`` running the
step's invocations in order).  Buffer addresses, the io region's layout, the constants blob
and the failed-check table are computed as for CUDA (``cuda/module.py``'s helpers, which
only depend on compiler/codegen/layout.py).
"""
from __future__ import annotations

from ...lower import kernel_ir as K
from ..c.environment import environment
from ..c.host import Checks, bytes_expr, c_string, const_lines, entry_symbol, host_steps, io_buffers, pointer
from ..layout import ConstantPool, Variables, max_batch, places, workspace_bytes
from .capabilities import MLU370
from .kernels import MluKernels

ALIGN = 256  # io slots and constants: kiln_round256 in templates/mlu/host.mlu.j2

# a control step's predicate byte, read back after the queued kernels (host_steps)
READ_PRED = ("KILN_CNRT(s, cnrtQueueSync(s->queue));\n"
             "  KILN_CNRT(s, cnrtMemcpy(&{pred}, {src}, 1, cnrtMemcpyDevToHost));")


def _entry(index: int, name: str, program: K.Program, variables: Variables, consts: ConstantPool, checks: Checks) -> dict:
    """Everything the templates need for one entry point."""
    renderer = MluKernels(program, name, checks.add)
    per_kernel = []
    for k in program.kernels:
        first = len(renderer.launches)
        renderer.kernel(k)
        per_kernel.append(renderer.launches[first:])
    io_decls = io_buffers(program)
    n_feeds = sum(d.role == "feed" for d in io_decls)
    io_bytes = [bytes_expr(d) for d in io_decls]
    io_slot = {(d.role, d.index): j for j, d in enumerate(io_decls)}
    slot = {n: i for i, n in enumerate(program.buffers)}
    launches = host_steps(K.program_steps(program), per_kernel, slot, READ_PRED)
    fixed, per = workspace_bytes(program)
    io_per = sum(size for size, syms in (d.byte_size() for d in io_decls) if syms)
    return {
        "index": index, "name": name, "functions": renderer.functions, "launches": launches,
        "buffers": [f"{d.name}: {d.dtype.short}{list(d.shape)} {d.role}" for d in program.buffers.values()],
        "pointers": [pointer(p, consts, io_slot) for p in places(program, variables, consts)],
        "feeds": io_bytes[:n_feeds], "fetches": io_bytes[n_feeds:], "io": io_bytes, "io_slots": len(io_bytes) + 1,
        "copies": [{"dst": slot[dst], "src": slot[src], "bytes": bytes_expr(program.buffers[dst])}
                   for dst, src in program.copies],
        "uses_batch": program.uses_batch(), "arena_bytes": f"{fixed}LL + {per}LL * N",
        "per_bytes": per + io_per, "max_batch": max_batch(fixed, per + io_per + ALIGN),
    }


def render_module(programs: dict, variables, target: str = "MLU") -> str:
    """The ``.mlu`` text of a module: ``programs`` maps entry names to kernel-IR Programs,
    ``variables`` lists ``(name, dtype, shape)`` in ABI index order."""
    variables = Variables.of(variables)
    var_rows = [{"bytes": n, "cname": c_string(name)} for name, n in zip(variables.names, variables.nbytes)]
    consts, checks = ConstantPool(ALIGN), Checks()
    entries = [_entry(i, entry_symbol(n), p, variables, consts, checks) for i, (n, p) in enumerate(programs.items())]
    ntable = max([len(p.buffers) for p in programs.values()] + [1])
    return environment().get_template("mlu/module.mlu.j2").render(
        target=target, entries=entries, ntable=ntable, variables=var_rows, const_lines=const_lines(consts),
        const_bytes=len(consts.blob()), checks=checks.rows, cores=MLU370.cores,
        cluster_cores=MLU370.cores_per_cluster)

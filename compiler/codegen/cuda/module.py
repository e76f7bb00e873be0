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

import re

from ...lower import kernel_ir as K
from ...lower.dedup import kernel_functions
from ...lower.schedule import plan_program
from ..c.environment import environment
from ..layout import ConstantPool, Place, Variables, max_batch, places, workspace_bytes
from .capabilities import CAPABILITIES
from .kernels import KernelRenderer

ALIGN = 256  # device allocations, io slots and constants (cudaMalloc's alignment)


def c_string(text: str) -> str:
    """A C string literal for ``text`` (non-printable characters as octal escapes)."""
    return '"' + "".join(c if (c.isprintable() and c not in '"\\?') else f"\\{ord(c):03o}"
                         for c in text) + '"'


def bytes_expr(decl: K.BufferDecl) -> str:
    """C expression for a buffer's byte size with the batch size ``N``."""
    size, syms = decl.byte_size()
    return " * ".join([f"{size}LL"] + ["N"] * syms)


class Checks:
    """The module's failed-check table: a printf format per check (the kernel's origin,
    then the message with ``{value}`` as positional argument 1) and the value's kind."""

    def __init__(self):
        self.rows: list = []

    def add(self, origin: str, message: str, dtype) -> int:
        kind = "f" if dtype.is_floating else ("b" if dtype.is_bool else "i")
        spec = {"f": "%1$g", "i": "%1$lld", "b": "%1$s"}[kind]
        parts = [p.replace("%", "%%").replace("{{", "{").replace("}}", "}") for p in message.split("{value}")]
        fmt = origin.replace("%", "%%") + ": " + spec.join(parts)
        self.rows.append({"format": c_string(fmt), "kind": kind})
        return len(self.rows) - 1


def const_lines(consts: ConstantPool) -> list:
    """The constants blob as lines of C initializers (32 bytes each)."""
    blob = consts.blob()
    return [", ".join(str(v) for v in blob[i:i + 32]) + "," for i in range(0, len(blob), 32)]


def pointer(place: Place, consts: ConstantPool, io_slot: dict) -> str:
    """The C expression (host side of a step) of the device address of a buffer at ``place``
    (compiler/codegen/layout.py; feeds and fetches live in the io region)."""
    if place.kind in ("feed", "fetch"):
        return f"(void*)(io + off[{io_slot[place.kind, place.index]}])"
    if place.kind == "state":
        return f"s->vars[{place.index}]"
    if place.kind == "const":
        return f"(void*)(s->consts + {consts.offsets[place.index]}LL)"
    return f"(void*)(ws + {place.base}LL + {place.per_n}LL * N)" if place.per_n else f"(void*)(ws + {place.base}LL)"


def _entry(index: int, name: str, program: K.Program, variables: Variables, consts: ConstantPool,
           checks: Checks, tf32: bool) -> dict:
    """Everything the templates need for one entry point (``program`` planned for CUDA first)."""
    program = plan_program(program, CAPABILITIES)
    kernels, per_kernel = render_kernels(program, name, checks.add, tf32)
    kernel_programs = [f.program for f in kernel_functions(program)[0]]
    by_role = {"feed": {}, "fetch": {}}
    for d in program.buffers.values():
        if d.role in by_role:
            by_role[d.role][d.index] = d
    for role, found in by_role.items():
        if sorted(found) != list(range(len(found))):
            raise ValueError(f"program {program.name!r}: {role} indices {sorted(found)} are not 0..{len(found) - 1}")
    n_feeds = len(by_role["feed"])
    io_decls = [by_role["feed"][i] for i in range(n_feeds)] + [by_role["fetch"][i] for i in range(len(by_role["fetch"]))]
    io_bytes = [bytes_expr(d) for d in io_decls]
    feeds, fetches = io_bytes[:n_feeds], io_bytes[n_feeds:]
    io_slot = {(d.role, d.index): j for j, d in enumerate(io_decls)}  # feeds, then fetches
    slot = {n: i for i, n in enumerate(program.buffers)}
    launches = host_steps(K.program_steps(program), [[block] for block in per_kernel], slot)
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


def host_steps(steps, per_kernel: list, slot: dict, counter=None, read_pred: str = CUDA_READ_PRED) -> list:
    """The host lines of ``steps``: each kernel's launch lines, and for control steps (kernel_ir
    ``IfStep``/``WhileStep``) C ``if``/``for`` blocks testing the predicate byte copied back
    from the device (``read_pred``: the target's lines copying ``{src}`` into the host byte
    ``{pred}`` after the queued work; CUDA's by default).  The template follows every line
    with a launch-error check, which is harmless after a brace."""
    counter = counter if counter is not None else [0]
    lines = []
    for step in steps:
        if isinstance(step, (K.IfStep, K.WhileStep)):
            pred = f"kiln_p{counter[0]}"
            counter[0] += 1
            read = (f"unsigned char {pred} = 0;  // {step.origin}\n  "
                    + read_pred.format(pred=pred, src=f"b.p[{slot[step.pred]}]"))
        nested = (lambda sub: host_steps(sub, per_kernel, slot, counter, read_pred))
        if isinstance(step, K.IfStep):
            lines += [read, f"if ({pred}) {{", *nested(step.then), "} else {", *nested(step.orelse), "}"]
        elif isinstance(step, K.WhileStep):
            lines += [f"for (;;) {{  // {step.origin}", *nested(step.cond), read,
                      f"if (!{pred}) break;", *nested(step.body), "}"]
        else:
            lines += per_kernel[step]
    return lines


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


def entry_symbol(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


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

"""Kernel-IR programs -> one CUDA C translation unit exporting the Kiln C ABI (docs/ABI.md).

``render_module(programs, variables)`` renders every entry point's kernels
(``kernels.py``; a program not planned by the scheduling pass is planned for
``capabilities.CAPABILITIES`` first) and the host side (``templates/cuda/host.cu.j2``): state creation on the
device, variable reads and writes, and ``kiln_entry_<name>`` running the step as a CUDA
graph.  This module computes what the templates need: where each buffer lives
(``pointer``), the io region's layout, the constants blob and the failed-check messages.
The same text builds with ``nvcc`` for a GPU or with ``g++`` and the host emulator
(``templates/cuda/kiln_cuda_emulate.h``) for tests on the CPU.
"""
from __future__ import annotations

import hashlib
import re

import jinja2
import numpy as np

from ...lower import kernel_ir as K
from ...lower.schedule import plan_program
from .capabilities import CAPABILITIES
from .kernels import KernelRenderer

ALIGN = 256  # device allocations and io slots (cudaMalloc's alignment)
MAX_WORKSPACE = 1 << 62

_env = None


def environment() -> jinja2.Environment:
    """The jinja2 environment over the ``templates`` package (templates/cuda/*.cu.j2)."""
    global _env
    if _env is None:
        _env = jinja2.Environment(loader=jinja2.PackageLoader("templates", "."), trim_blocks=True,
                                  lstrip_blocks=True, keep_trailing_newline=True,
                                  undefined=jinja2.StrictUndefined)
    return _env


def c_string(text: str) -> str:
    """A C string literal for ``text`` (non-printable characters as octal escapes)."""
    return '"' + "".join(c if (c.isprintable() and c not in '"\\?') else f"\\{ord(c):03o}"
                         for c in text) + '"'


def _round_up(n: int, m: int = ALIGN) -> int:
    return -(-n // m) * m


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


class Constants:
    """Every distinct constant buffer's bytes, each at a 256-byte aligned blob offset."""

    def __init__(self):
        self.offsets: dict = {}
        self.blob = bytearray()

    def offset(self, decl: K.BufferDecl) -> int:
        raw = np.asarray(decl.data, dtype=decl.dtype.np, order="C").tobytes()
        key = hashlib.sha256(raw).hexdigest()
        if key not in self.offsets:
            self.blob += b"\0" * (_round_up(len(self.blob)) - len(self.blob))
            self.offsets[key] = len(self.blob)
            self.blob += raw
        return self.offsets[key]

    def lines(self) -> list:
        return [", ".join(str(v) for v in self.blob[i:i + 32]) + "," for i in range(0, len(self.blob), 32)]


def pointer(decl: K.BufferDecl, program: K.Program, var_index: dict, consts: Constants,
            io_slot: dict) -> str:
    """The C expression (host side of a step) of a buffer's device address."""
    if decl.role in ("feed", "fetch"):
        return f"(void*)(io + off[{io_slot[decl.role, decl.index]}])"
    if decl.role == "state":
        if decl.key not in var_index:
            raise ValueError(f"program {program.name!r} uses state {decl.key!r}, not in the variables")
        return f"s->vars[{var_index[decl.key]}]"
    if decl.role == "const":
        return f"(void*)(s->consts + {consts.offset(decl)}LL)"
    if decl.role not in ("arena", "scratch") or decl.space not in ("static", "batch"):
        raise ValueError(f"buffer {decl.name!r}: unknown role/space {decl.role!r}/{decl.space!r}")
    scaled = f"{decl.offset}LL" if decl.space == "static" else f"{decl.offset}LL * N"
    if decl.role == "arena":
        base = "0LL" if decl.space == "static" else f"{program.static_bytes}LL"
    else:
        base = f"{program.static_bytes}LL + {program.batch_bytes}LL * N"
        if decl.space == "batch":
            base += f" + {program.scratch_static_bytes}LL"
    return f"(void*)(ws + {base} + {scaled})"


def _entry(index: int, name: str, program: K.Program, var_index: dict, consts: Constants,
           checks: Checks, tf32: bool) -> dict:
    """Everything the templates need for one entry point (``program`` planned for CUDA first)."""
    program = plan_program(program, CAPABILITIES)
    renderer = KernelRenderer(program, name, checks.add, tf32=tf32)
    kernels = [renderer.kernel(k) for k in program.kernels]
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
    fixed = program.static_bytes + program.scratch_static_bytes
    per = program.batch_bytes + program.scratch_batch_bytes
    io_per = sum(size for size, syms in (d.byte_size() for d in io_decls) if syms)
    return {
        "index": index, "name": name, "kernels": kernels, "launches": renderer.launches,
        "buffers": [f"{d.name}: {d.dtype.short}{list(d.shape)} {d.role}" for d in program.buffers.values()],
        "pointers": [pointer(d, program, var_index, consts, io_slot) for d in program.buffers.values()],
        "feeds": feeds, "fetches": fetches, "io": feeds + fetches, "io_slots": len(feeds) + len(fetches) + 1,
        "copies": [{"dst": slot[dst], "src": slot[src], "bytes": bytes_expr(program.buffers[dst])}
                   for dst, src in program.copies],
        "uses_batch": program.uses_batch(), "arena_bytes": f"{fixed}LL + {per}LL * N",
        "per_bytes": per + io_per, "max_batch": (MAX_WORKSPACE - fixed) // max(per + io_per + ALIGN, 1),
    }


def entry_symbol(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def render_module(programs: dict, variables, target: str = "CUDA", tf32: bool = False) -> str:
    """The ``.cu`` text of a module: ``programs`` maps entry names to kernel-IR Programs,
    ``variables`` lists ``(name, dtype, shape)`` in ABI index order; ``tf32`` lets float32
    GEMMs use TF32 tensor cores."""
    var_index, var_rows = {}, []
    for i, (vname, dtype, shape) in enumerate(variables):
        nbytes = int(np.prod([int(d) for d in shape], dtype=np.int64)) * np.dtype(getattr(dtype, "np_name", dtype)).itemsize
        var_index[vname] = i
        var_rows.append({"bytes": nbytes, "cname": c_string(vname)})
    consts, checks = Constants(), Checks()
    entries = [_entry(i, entry_symbol(n), p, var_index, consts, checks, tf32) for i, (n, p) in enumerate(programs.items())]
    nbufs = max([len(p.buffers) for p in programs.values()] + [1])
    return environment().get_template("cuda/module.cu.j2").render(
        target=target, entries=entries, nbufs=nbufs, variables=var_rows, const_lines=consts.lines(),
        const_bytes=len(consts.blob), checks=checks.rows)


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
    """Kernel name -> the names of the ``__global__`` functions that run it (a one-thread
    kernel may run inside the function of the one-thread kernel before it)."""
    program = plan_program(program, CAPABILITIES)
    r = KernelRenderer(program, entry_symbol(entry), lambda *a: 0)
    texts = [r.kernel(k) for k in program.kernels]
    return {k.name: [f.name for f in t.functions] + t.merged_into for k, t in zip(program.kernels, texts)}

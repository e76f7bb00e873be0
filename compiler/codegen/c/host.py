"""The host side shared by the C-dialect device backends (CUDA C, BANG C): C string literals,
buffer byte sizes, the failed-check table, the constants blob, each buffer's device address
expression, entry symbols, and the host lines of a program's steps (kernel launches inside
C ``if``/``for`` blocks for control steps).  A backend supplies only what it spells its
own way (the lines reading a predicate byte back from the device).
"""
from __future__ import annotations

import re

from ...lower import kernel_ir as K
from ..layout import ConstantPool, Place


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


def io_buffers(program: K.Program) -> list:
    """The io region's buffers of an entry: its feeds by index, then its fetches by index
    (refused unless each role's indices are 0..n-1)."""
    by_role = {"feed": {}, "fetch": {}}
    for d in program.buffers.values():
        if d.role in by_role:
            by_role[d.role][d.index] = d
    for role, found in by_role.items():
        if sorted(found) != list(range(len(found))):
            raise ValueError(f"program {program.name!r}: {role} indices {sorted(found)} are not 0..{len(found) - 1}")
    return [by_role[r][i] for r in ("feed", "fetch") for i in range(len(by_role[r]))]


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


def host_steps(steps, per_kernel: list, slot: dict, read_pred: str, counter=None) -> list:
    """The host lines of ``steps``: each kernel's launch lines, and for control steps (kernel_ir
    ``IfStep``/``WhileStep``) C ``if``/``for`` blocks testing the predicate byte copied back
    from the device (``read_pred``: the target's lines copying ``{src}`` into the host byte
    ``{pred}`` after the queued work).  The template follows every line
    with a launch-error check, which is harmless after a brace."""
    counter = counter if counter is not None else [0]
    lines = []
    for step in steps:
        if isinstance(step, (K.IfStep, K.WhileStep)):
            pred = f"kiln_p{counter[0]}"
            counter[0] += 1
            read = (f"unsigned char {pred} = 0;  // {step.origin}\n  "
                    + read_pred.format(pred=pred, src=f"b.p[{slot[step.pred]}]"))
        nested = (lambda sub: host_steps(sub, per_kernel, slot, read_pred, counter))
        if isinstance(step, K.IfStep):
            lines += [read, f"if ({pred}) {{", *nested(step.then), "} else {", *nested(step.orelse), "}"]
        elif isinstance(step, K.WhileStep):
            lines += [f"for (;;) {{  // {step.origin}", *nested(step.cond), read,
                      f"if (!{pred}) break;", *nested(step.body), "}"]
        else:
            lines += per_kernel[step]
    return lines


def entry_symbol(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)

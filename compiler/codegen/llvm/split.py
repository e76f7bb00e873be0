"""Split one LLVM module (the text llvmlite.ir prints) into parts that compile independently,
so that ``build.compile_module`` can optimize and code-generate them on several cores.

A module is its top-level lines (type definitions, private constants, ``declare``\\ s) and
its function definitions.  Functions are grouped by owner (the name before the first ``.``:
a kernel with its ``.par`` body and ``.epilogue`` functions, the GEMM engine with its
``.tile``/``.pack_a``/... helpers), and groups are dealt to parts by size, largest first.
Every part gets all top-level lines (unused private constants are dropped by the
optimizer), its own definitions, and a ``declare`` of each function it uses that another
part defines; such a function, when ``internal``, becomes ``hidden`` (linked across the
parts' objects, still not exported by the library).  Text this module does not understand
(other linkages, unusual syntax) is not split: :func:`split_module` returns it whole.
"""
from __future__ import annotations

import re

_DEFINE = re.compile(r'^define (?:(internal) )?(?!private|linkonce|weak|common|available_externally|'
                     r'external|appending|extern_weak)(.*?)@("[^"]+"|[-\w.$]+)\(')
_REF = re.compile(r'@("[^"]+"|[-\w.$]+)')


def _bare(name: str) -> str:
    return name[1:-1] if name.startswith('"') else name


def parse_functions(text: str):
    """``(top-level lines, {name: (define line, body lines, internal)})`` of module text,
    or None when a function definition is not of the form handled here."""
    top, functions, lines = [], {}, text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("define "):
            top.append(line)
            i += 1
            continue
        m = _DEFINE.match(line)
        try:
            end = lines.index("}", i)
        except ValueError:
            return None
        if m is None:
            return None
        functions[_bare(m.group(3))] = (line, lines[i + 1:end + 1], m.group(1) is not None)
        i = end + 1
    return top, functions


def _owner(name: str) -> str:
    return name.split(".", 1)[0]


def _weight(body: list) -> int:
    """A function's estimated compile cost: its instructions, vector ones six times (on the
    seed-002 CNN the GEMM engine's dense vector code costs LLVM 2-4x more a line than the
    loop kernels; the larger factor balanced the parts best)."""
    return sum(6 if " x float>" in line else 1 for line in body)


def _deal(functions: dict, parts: int) -> list:
    """Owner groups dealt to ``parts`` lists of function names, balanced by text size."""
    groups: dict = {}
    for name, (_line, body, _internal) in functions.items():
        groups.setdefault(_owner(name), []).append(name)
    size = {g: sum(_weight(functions[n][1]) for n in names) for g, names in groups.items()}
    bins = [[] for _ in range(parts)]
    loads = [0] * parts
    for g in sorted(groups, key=lambda g: -size[g]):
        k = loads.index(min(loads))
        bins[k] += groups[g]
        loads[k] += size[g]
    return [b for b in bins if b]


def _declaration(define_line: str, hidden: bool) -> str:
    """The ``declare`` of a defined function (its signature without linkage)."""
    m = _DEFINE.match(define_line)
    return "declare " + ("hidden " if hidden else "") + define_line[m.start(2):].rstrip(" {")


def split_module(text: str, parts: int) -> list:
    """``text`` as up to ``parts`` module texts that link into the same program (see the
    module doc); ``[text]`` when it cannot or need not be split."""
    parsed = parse_functions(text) if parts > 1 else None
    if parsed is None:
        return [text]
    top, functions = parsed
    bins = _deal(functions, parts)
    if len(bins) < 2:
        return [text]
    return _assemble(top, functions, bins) or [text]


def split_off(text: str, prefix: str):
    """``(part, rest)``: the functions whose owner name starts with ``prefix`` (e.g. the GEMM
    engine, compiled with another pipeline) as one module text and the others as another,
    linking into the same program; ``(text, None)`` when there are only those, None when
    there are none of them or the text cannot be split."""
    parsed = parse_functions(text)
    if parsed is None:
        return None
    top, functions = parsed
    mine = [n for n in functions if _owner(n).startswith(prefix)]
    others = [n for n in functions if not _owner(n).startswith(prefix)]
    if not mine:
        return None
    if not others:
        return text, None
    parts = _assemble(top, functions, [mine, others])
    return tuple(parts) if parts else None


_GLOBAL = re.compile(r'^(@(?:"[^"]+"|[-\w.$]+)) = (?:internal|private) global (.*) (\S+)$')
_SCALAR_INIT = re.compile(r'^(null|zeroinitializer|undef|poison|true|false|-?\d+(\.\d*)?([eE][-+]?\d+)?|0x[0-9A-Fa-f]+)$')


def _variables(top: list, part: int) -> list | None:
    """The top-level lines for part ``part``: a mutable module variable (``internal global``,
    e.g. the profiler's event buffer and current id) is defined once, hidden, in part 0 and
    declared external in the others (a copy per part would be another variable); None when
    a variable's initializer is not a single token (not handled here)."""
    out = []
    for line in top:
        if " global " not in line or " constant " in line:
            out.append(line)
            continue
        m = _GLOBAL.match(line)
        if m is None or not _SCALAR_INIT.match(m.group(3)):
            return None
        name, typ, init = m.groups()
        out.append(f"{name} = hidden global {typ} {init}" if part == 0 else f"{name} = external hidden global {typ}")
    return out


def _assemble(top: list, functions: dict, bins: list) -> list | None:
    """One module text per bin of function names (declarations of the others they use);
    None when a module variable cannot be shared between the parts."""
    tops = [_variables(top, k) for k in range(len(bins))]
    if tops[0] is None:
        return None
    home = {n: k for k, names in enumerate(bins) for n in names}
    top_refs = {_bare(r) for line in top for r in _REF.findall(line)} & functions.keys()
    uses = {n: {_bare(r) for s in functions[n][1] for r in _REF.findall(s)} & functions.keys()
            for n in functions}
    # functions used from another part (or from the constants every part holds) are linked
    shared = set(top_refs) | {u for n in functions for u in uses[n] if home[u] != home[n]}
    out = []
    for k, names in enumerate(bins):
        needed = set().union(*(uses[n] for n in names)) | top_refs
        declares = [_declaration(functions[n][0], functions[n][2]) for n in sorted(needed) if home[n] != k]
        defines = []
        for n in names:
            line, body, internal = functions[n]
            if internal and n in shared:
                line = "define hidden " + line[len("define internal "):]
            defines += [line, *body]
        out.append("\n".join(tops[k] + declares + [""] + defines) + "\n")
    return out

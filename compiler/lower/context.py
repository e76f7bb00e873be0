"""The state of lowering one Function into a kernel-IR ``Program``.

``LowerContext`` is what every instr lowering (``loops.py``, ``contraction.py``,
``plain_ops.py``) works against: it maps IR Values to buffer names, hands out fresh loop
variables and per-instr scratch buffers, and appends kernels to the program.
``program.py`` fills the buffer table (``add_buffer`` / ``bind``) before any instr is lowered
and calls ``begin_instr`` / ``end_instr`` around each one, so scratch space restarts at 0
for every instr (kernels run one after another) and the program keeps the largest need.
"""
from __future__ import annotations

import re

import numpy as np

from ..ir.types import Sym, int64, num_elements
from .kernel_ir import Block, BufferDecl, Kernel, Load, Program, Store, Var

SCRATCH_ALIGN = 64


def scratch_aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to the alignment of scratch buffers (a cache line)."""
    return -(-nbytes // SCRATCH_ALIGN) * SCRATCH_ALIGN


def sanitize(text: str) -> str:
    """A C/LLVM-friendly identifier piece: letters, digits and underscores only."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", str(text)).strip("_")
    return out or "x"


def unique_name(base: str, taken: set) -> str:
    """``base``, or ``base_2``, ``base_3``, ... — the first not in ``taken`` (which it joins)."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


class LowerContext:
    """Builds ``program``: buffers by name, kernels in order, scratch sizes."""

    def __init__(self, program: Program, fn=None):
        self.program = program
        self.fn = fn
        self._value_buffer = {}  # id(Value) -> buffer name
        self._names = set(program.buffers)
        self._kernel_names = set()
        self._counters = {}
        self._scratch = {"static": 0, "batch": 0}
        self.instr = None  # the IR instr being lowered (origin of its kernels)
        self.steps = None  # where emitted kernels' indices go (Program.steps), when it has control flow

    # ------------------------------------------------------------------ buffers
    def fresh_name(self, hint: str) -> str:
        """A buffer name not used yet, built from ``hint``."""
        return unique_name(sanitize(hint), self._names)

    def add_buffer(self, decl: BufferDecl) -> str:
        """Register a buffer declaration (its name must be fresh, see ``fresh_name``)."""
        self._names.add(decl.name)
        self.program.buffers[decl.name] = decl
        return decl.name

    def bind(self, value, name: str) -> None:
        """Say that IR ``value`` lives in buffer ``name``."""
        self._value_buffer[id(value)] = name

    def has_buffer(self, value) -> bool:
        return id(value) in self._value_buffer

    def buffer(self, value) -> str:
        """The name of the buffer holding IR ``value`` (a view sharing bytes gives its operand's)."""
        try:
            return self._value_buffer[id(value)]
        except KeyError:
            raise KeyError(f"no buffer for value %{value.name} ({value.type})") from None

    def decl(self, name: str) -> BufferDecl:
        return self.program.buffers[name]

    def constant(self, array, dtype, hint="const") -> str:
        """A read-only buffer holding ``array`` (e.g. a small constant copied into a region)."""
        array = np.ascontiguousarray(np.asarray(array, dtype=dtype.np))
        name = self.fresh_name(hint)
        return self.add_buffer(BufferDecl(name, dtype, tuple(array.shape), "const", data=array))

    def scratch(self, dtype, shape, hint="scratch") -> str:
        """A fresh scratch buffer valid for the kernels of the current instr only.

        ``shape`` may hold ``Sym`` dims: such a buffer lives in the batch part of the scratch
        region (offset in bytes per batch element), the others in the static part.
        """
        count = num_elements(tuple(shape))
        space = "batch" if isinstance(count, Sym) else "static"
        per = count.coef if isinstance(count, Sym) else int(count)
        offset = self._scratch[space]
        self._scratch[space] = offset + scratch_aligned(max(1, per * dtype.np.itemsize))
        name = self.fresh_name(hint)
        return self.add_buffer(BufferDecl(name, dtype, tuple(shape), "scratch", space=space, offset=offset))

    # ------------------------------------------------------------------ instrs
    def begin_instr(self, ins) -> None:
        """Start lowering ``ins``: scratch offsets restart at 0."""
        self.instr = ins
        self._scratch = {"static": 0, "batch": 0}

    def end_instr(self) -> None:
        """Fold the scratch the instr needed into the program's scratch sizes."""
        prog = self.program
        prog.scratch_static_bytes = max(prog.scratch_static_bytes, self._scratch["static"])
        prog.scratch_batch_bytes = max(prog.scratch_batch_bytes, self._scratch["batch"])
        self.instr = None

    # ------------------------------------------------------------------ code
    def var(self, prefix: str = "i") -> Var:
        """A fresh i64 variable (loop index), unique within the program."""
        n = self._counters.get(prefix, 0)
        self._counters[prefix] = n + 1
        return Var(f"{prefix}{n}", int64)

    def scalar(self, prefix: str, dtype) -> Var:
        """A fresh scalar variable of ``dtype`` (for Let / DeclareAcc)."""
        v = self.var(prefix)
        return Var(v.name, dtype)

    def origin(self) -> str:
        ins = self.instr
        if ins is None:
            return ""
        pattern = ins.attrs.get("pattern") if ins.kind == "fused" else None
        kind = f"fused[{pattern}]" if pattern else ins.kind
        return f"{kind} {ins.loc}".strip()

    def emit(self, name_hint, reads, writes, body, origin="") -> Kernel:
        """Append a kernel (``body`` a Stmt or a list of Stmts) and return it."""
        name = unique_name(sanitize(name_hint), self._kernel_names)
        if isinstance(body, (list, tuple)):
            body = Block(list(body))
        kernel = Kernel(name, list(dict.fromkeys(reads)), list(dict.fromkeys(writes)), body,
                        origin or self.origin())
        self.program.kernels.append(kernel)
        if self.steps is not None:
            self.steps.append(len(self.program.kernels) - 1)
        return kernel

    # ------------------------------------------------------------------ shortcuts
    def load(self, value, index) -> Load:
        """Element ``index`` (flat, i64 Expr) of IR ``value``."""
        return Load(self.buffer(value), index, value.type.dtype)

    def store(self, value, index, expr) -> Store:
        """Store ``expr`` as element ``index`` of IR ``value``."""
        return Store(self.buffer(value), index, expr)

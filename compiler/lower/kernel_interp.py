"""Reference evaluator of the kernel IR: runs a ``Program`` with numpy scalars.

Slow on purpose (one Python step per scalar op) and simple, so it can be the reference for
every renderer: each buffer is a flat numpy array (arena and scratch buffers are views into
one byte workspace laid out as ``Program`` documents, so memory-plan aliasing and reuse are
real), elementwise ``Op`` kinds are evaluated with the op registry's own ``evaluate`` on 0-d
arrays (the IR interpreter's semantics exactly), ``Gemm`` with numpy matmul plus the
per-element epilogue.  It also checks what a renderer relies on: loads and stores stay inside
their buffer, a kernel touches only the buffers it declares, stored values have the
buffer's dtype.
"""
from __future__ import annotations

import numpy as np

from ..ir.opdef import EvalContext, get_opdef
from ..ir.ops.random import _ERF_SQRT2, bits_to_unit, erfinv, philox_word
from ..ir.types import resolve_shape
from . import kernel_ir as K
from .combine import COMBINES, identity_value


class KernelError(RuntimeError):
    """A kernel broke the kernel-IR contract (out-of-bounds access, undeclared buffer, ...)."""


class KernelCheckError(RuntimeError):
    """A ``Check`` statement failed (KILN_ECHECK in generated code)."""


def run_program(program: K.Program, state: dict, feeds: dict, batch: int):
    """Run ``program`` at batch size ``batch``: returns ``(new_state, fetches)`` like
    ``compiler.ir.interpreter.run_function`` (new_state holds the variables the step writes)."""
    mem = _Memory(program, state, feeds, batch)
    _run_steps(K.program_steps(program), program, mem)
    for dst, src in program.copies:
        mem.buffers[dst][...] = mem.buffers[src]
    written = {mem.decl(dst).key for dst, _ in program.copies if mem.decl(dst).role == "state"}
    written |= {mem.decl(n).key for k in program.kernels for n in k.writes if mem.decl(n).role == "state"}
    new_state = {key: mem.array(name) for name, key in mem.state_names.items() if key in written}
    fetches = {mem.decl(n).key: mem.array(n) for n in program.buffers if mem.decl(n).role == "fetch"}
    return new_state, fetches


def _run_steps(steps: list, program, mem) -> None:
    """Run kernels (indices) and control steps in order (kernel_ir's control-step semantics)."""
    for step in steps:
        if isinstance(step, K.IfStep):
            _run_steps(step.then if mem.buffers[step.pred].reshape(-1)[0] else step.orelse, program, mem)
        elif isinstance(step, K.WhileStep):
            _run_steps(step.cond, program, mem)
            while mem.buffers[step.pred].reshape(-1)[0]:
                _run_steps(step.body, program, mem)
                _run_steps(step.cond, program, mem)
        else:
            _Kernel(program.kernels[step], mem).run()


class _Memory:
    """Flat numpy arrays for every buffer of a program at one batch size."""

    def __init__(self, program, state, feeds, batch):
        self.program, self.batch = program, batch
        static = program.static_bytes + program.batch_bytes * batch
        total = static + program.scratch_static_bytes + program.scratch_batch_bytes * batch
        self.workspace = np.zeros(total, np.uint8)
        self.scratch_base = static
        self.buffers, self.state_names = {}, {}
        for name, decl in program.buffers.items():
            self.buffers[name] = self._make(decl, state, feeds)
            if decl.role == "state":
                self.state_names[name] = decl.key

    def decl(self, name) -> K.BufferDecl:
        return self.program.buffers[name]

    def shape(self, decl) -> tuple:
        return resolve_shape(decl.shape, self.batch)

    def array(self, name) -> np.ndarray:
        decl = self.decl(name)
        return self.buffers[name].reshape(self.shape(decl)).copy()

    def _make(self, decl, state, feeds):
        shape, dtype = self.shape(decl), decl.dtype.np
        size = int(np.prod(shape, dtype=np.int64))
        if decl.role == "feed":
            return _checked(feeds[decl.key], shape, dtype, f"feed {decl.key!r}")
        if decl.role == "state":
            if decl.key in state:
                return _checked(state[decl.key], shape, dtype, f"state {decl.key!r}")
            return np.zeros(size, dtype)
        if decl.role == "const":
            return np.array(decl.data, dtype).reshape(-1)
        if decl.role == "fetch":
            return np.zeros(size, dtype)
        base = self.scratch_base if decl.role == "scratch" else 0
        if decl.space == "batch":
            base += (self.program.scratch_static_bytes if decl.role == "scratch" else self.program.static_bytes)
            start = base + decl.offset * self.batch
        else:
            start = base + decl.offset
        nbytes = size * np.dtype(dtype).itemsize
        if start + nbytes > self.workspace.size:
            raise KernelError(f"buffer {decl.name} [{start}, {start + nbytes}) lies outside the workspace")
        return self.workspace[start:start + nbytes].view(dtype)


def _checked(value, shape, dtype, what) -> np.ndarray:
    arr = np.asarray(value)
    if tuple(arr.shape) != tuple(shape):
        raise KernelError(f"{what} has shape {arr.shape}, expected {shape}")
    return np.array(arr, dtype=dtype).reshape(-1)


class _Kernel:
    """Executes one kernel's statement tree.

    An innermost ``vectorize`` loop (a body of Lets, Stores, accumulations and Checks) runs
    once with its variable bound to the array of all its iterations ("lanes"): the same
    registry ops on arrays, lane by lane.  This is both fast and a check of the flag: lanes
    that store to one element (iterations that are not independent) fail the kernel.
    """

    def __init__(self, kernel: K.Kernel, mem: _Memory):
        self.kernel, self.mem = kernel, mem
        self.ctx = EvalContext(batch=mem.batch)
        self.reads, self.writes = set(kernel.reads), set(kernel.writes)
        self.env = {}
        self.lanes = 0  # > 0 inside a vectorized loop
        self.lane_accs = set()  # accumulators declared inside it (one per lane)

    def run(self):
        self.exec(self.kernel.body)

    def fail(self, message):
        raise KernelError(f"kernel {self.kernel.name} ({self.kernel.origin}): {message}")

    # ------------------------------------------------------------------ statements
    def exec(self, s):
        method = getattr(self, "s_" + type(s).__name__, None)
        if method is None:
            self.fail(f"unknown statement {type(s).__name__}")
        method(s)

    def s_Block(self, s):
        for sub in s.body:
            self.exec(sub)

    def s_For(self, s):
        start, stop = int(self.eval(s.start)), int(self.eval(s.stop))
        if s.vectorize and not self.lanes and _lane_safe(s.body):
            if stop > start:
                self.in_lanes(s.body, {s.var.name: np.arange(start, stop, dtype=np.int64)}, stop - start)
            return
        for i in range(start, stop):
            self.env[s.var.name] = np.int64(i)
            self.exec(s.body)

    def in_lanes(self, body, bindings, lanes):
        """Run ``body`` once over ``lanes`` iterations at a time."""
        self.env.update(bindings)
        self.lanes, self.lane_accs = lanes, set()
        try:
            self.exec(body)
        finally:
            self.lanes = 0

    def s_Let(self, s):
        self.env[s.var.name] = self.typed(self.eval(s.value), s.var.dtype, "let " + s.var.name)

    def s_DeclareAcc(self, s):
        if self.lanes:
            self.lane_accs.add(s.var.name)
        self.env[s.var.name] = self.typed(self.eval(s.init), s.var.dtype, "acc " + s.var.name)

    def s_Accumulate(self, s):
        combine = COMBINES[s.combine]
        value = self.eval(s.value)
        if self.lanes and s.var.name not in self.lane_accs:  # an accumulator outside the lanes
            lanes = np.broadcast_to(value, (self.lanes,))  # folded from the identity, as SIMD lanes are
            value = combine.ufunc.reduce(lanes, dtype=np.asarray(value).dtype,
                                         initial=identity_value(s.combine, s.var.dtype))
        value = self.op(combine.op, (self.env[s.var.name], value))
        self.env[s.var.name] = self.typed(value, s.var.dtype, "acc " + s.var.name)

    def s_Store(self, s):
        if s.buffer not in self.writes:
            self.fail(f"stores to {s.buffer}, not in its writes")
        buf = self.mem.buffers[s.buffer]
        value = self.typed(self.eval(s.value), self.mem.decl(s.buffer).dtype, f"store to {s.buffer}")
        index = self.index(s.buffer, s.index)
        if self.lanes > 1 and (np.unique(index).size != index.size if np.ndim(index) else np.ndim(value)):
            self.fail(f"iterations of a vectorized loop store to the same element of {s.buffer}")
        buf[index] = value

    def s_If(self, s):
        if bool(self.eval(s.cond)):
            self.exec(s.then)

    def s_Check(self, s):
        cond = np.asarray(self.eval(s.cond))
        if cond.any():
            value = np.broadcast_to(self.eval(s.value), cond.shape)[cond] if cond.ndim else self.eval(s.value)
            raise KernelCheckError(s.message.format(value=np.ravel(value)[0]))

    def s_Gemm(self, s):
        _gemm(self, s)

    # ------------------------------------------------------------------ expressions
    def eval(self, e):
        method = getattr(self, "e_" + type(e).__name__, None)
        if method is None:
            self.fail(f"unknown expression {type(e).__name__}")
        return method(e)

    def e_Const(self, e):
        return np.array(e.value, dtype=e.dtype.np)[()]

    def e_Var(self, e):
        try:
            return self.env[e.name]
        except KeyError:
            self.fail(f"variable {e.name} is not bound")

    def e_Batch(self, e):
        return np.int64(self.mem.batch)

    def e_Load(self, e):
        if e.buffer not in self.reads:
            self.fail(f"loads from {e.buffer}, not in its reads")
        return self.mem.buffers[e.buffer][self.index(e.buffer, e.index)]

    def e_Op(self, e):
        args = [self.eval(a) for a in e.args]
        if e.kind in INDEX_OPS:
            return np.asarray(INDEX_OPS[e.kind](*(np.asarray(a, np.int64) for a in args)))[()]
        return self.typed(self.op(e.kind, args), e.dtype, f"op {e.kind}")

    def e_Cast(self, e):
        value = self.eval(e.value)
        return np.asarray(get_opdef("cast").evaluate(self.ctx, np.asarray(value), dtype=e.dtype))[()]

    def e_Random(self, e):
        return random_values(e.dist, e.seed, e.seed2, self.eval(e.index), int(self.eval(e.step)), e.dtype)

    # ------------------------------------------------------------------ helpers
    def op(self, kind, args):
        out = get_opdef(kind).evaluate(self.ctx, *[np.asarray(a) for a in args])
        return np.asarray(out)[()]

    def index(self, name, expr):
        """The element index (an int, or an int64 array in lanes), checked against the buffer."""
        i = np.asarray(self.eval(expr), np.int64)
        size = self.mem.buffers[name].size
        low, high = (int(i.min()), int(i.max())) if i.size else (0, -1)
        if low < 0 or high >= size:
            self.fail(f"index {low if low < 0 else high} out of bounds for {name} ({size} elements)")
        return int(i) if i.ndim == 0 else i

    def typed(self, value, dtype, what):
        if np.asarray(value).dtype != dtype.np:
            self.fail(f"{what}: value of dtype {np.asarray(value).dtype}, expected {dtype.np}")
        return value


INDEX_OPS = {"idiv": np.floor_divide, "imod": np.mod, "imin": np.minimum, "imax": np.maximum}


def _lane_safe(stmt) -> bool:
    """A loop body the lanes can run: no inner loops, branches or gemms."""
    if isinstance(stmt, K.Block):
        return all(_lane_safe(sub) for sub in stmt.body)
    return isinstance(stmt, (K.Let, K.Store, K.Accumulate, K.DeclareAcc, K.Check))


def random_values(dist, seed, seed2, index, step, dtype):
    """Philox draws for element ``index`` (an int or an array) at ``step``, mapped exactly as
    compiler/ir/ops/random.py maps a whole array."""
    bits = philox_word(np.asarray(index, np.int64), seed, seed2, step)
    if dist == "bits":
        return bits.astype(np.int64)[()]
    u = bits_to_unit(bits)
    if dist == "uniform":
        out = u.astype(dtype.np)
    else:
        scale = _ERF_SQRT2 if dist == "truncated_normal" else 1.0
        out = (np.sqrt(2.0) * erfinv((2.0 * u.astype(np.float64) - 1.0) * scale)).astype(dtype.np)
    return out[()]


def _matrix(kernel, operand, rows, cols, b, dtype):
    """The rows x cols matrix A' of a Gemm operand for batch item ``b`` (a copy)."""
    buf = kernel.mem.buffers[operand.buffer]
    offset = int(kernel.eval(operand.offset))
    if operand.batch_stride is not None:
        offset += b * int(kernel.eval(operand.batch_stride))
    ld = int(kernel.eval(operand.ld))
    r, c = (cols, rows) if operand.transposed else (rows, cols)
    if r and c:
        last = offset + (r - 1) * ld + c - 1
        if offset < 0 or last >= buf.size:
            kernel.fail(f"gemm operand {operand.buffer} reads [{offset}, {last}] of {buf.size} elements")
    rows_idx = offset + np.arange(r)[:, None] * ld + np.arange(c)[None, :]
    mat = buf[rows_idx] if r and c else np.zeros((r, c), buf.dtype)
    return mat.T if operand.transposed else mat


def _epilogue(kernel, epilogue, prod, b):
    """Run a Gemm epilogue for every element of ``prod`` (in lanes when its body allows)."""
    m, n = prod.shape
    if _lane_safe(epilogue) and m * n:
        rows = np.repeat(np.arange(m, dtype=np.int64), n)
        cols = np.tile(np.arange(n, dtype=np.int64), m)
        kernel.in_lanes(epilogue, {"acc": prod.reshape(-1), "row": rows, "col": cols, "bidx": np.int64(b)}, m * n)
        return
    for row in range(m):
        for col in range(n):
            kernel.env.update(acc=prod[row, col], row=np.int64(row), col=np.int64(col), bidx=np.int64(b))
            kernel.exec(epilogue)


def _gemm(kernel, g: K.Gemm):
    """C_b = A'_b @ B'_b per batch item; stored, accumulated or handed to the epilogue."""
    m, n, k = (int(kernel.eval(x)) for x in (g.m, g.n, g.k))
    batches = int(kernel.eval(g.batch)) if g.batch is not None else 1
    for name in (g.a.buffer, g.b.buffer):
        if name not in kernel.reads:
            kernel.fail(f"gemm reads {name}, not in its reads")
    cdecl = kernel.mem.decl(g.c.buffer)
    if g.c.transposed:
        kernel.fail("a transposed gemm output is not supported")
    for b in range(batches):
        a = _matrix(kernel, g.a, m, k, b, cdecl.dtype.np)
        bm = _matrix(kernel, g.b, k, n, b, cdecl.dtype.np)
        prod = np.matmul(a, bm).astype(cdecl.dtype.np) if k else np.zeros((m, n), cdecl.dtype.np)
        if g.epilogue is not None:
            _epilogue(kernel, g.epilogue, prod, b)
            continue
        if g.c.buffer not in kernel.writes:
            kernel.fail(f"gemm writes {g.c.buffer}, not in its writes")
        cbuf = kernel.mem.buffers[g.c.buffer]
        offset = int(kernel.eval(g.c.offset)) + (b * int(kernel.eval(g.c.batch_stride)) if g.c.batch_stride is not None else 0)
        ld = int(kernel.eval(g.c.ld))
        idx = offset + np.arange(m)[:, None] * ld + np.arange(n)[None, :]
        if m and n and (offset < 0 or idx.max() >= cbuf.size):
            kernel.fail(f"gemm writes past the end of {g.c.buffer}")
        cbuf[idx] = (cbuf[idx] + prod) if g.accumulate else prod

"""Kernel-IR kernels -> BANG C ``__mlu_entry__`` functions and the host lines invoking them
(docs/codegen-mlu.md).

A kernel is planned like the CPU's (loops threaded in place: ``For.parallel``) and each of
its top-level statements becomes one invocation, so no two tasks ever need a barrier:

* a top-level ``For`` marked parallel: a Union1 kernel of ``kiln_tasks(trip)`` tasks, task
  ``taskId`` taking iterations ``start + taskId, start + taskId + taskDim, ...`` (scalar code
  on GDRAM: elementwise work is not staged through NRAM tiles yet);
* a top-level ``Gemm``: a Union1 kernel, tasks striding over the output rows of every batch
  item, each output a scalar dot product (no NRAM/WRAM tiles or matrix intrinsic yet);
* anything else (serial loops, loops holding checks, kernels whose statements share
  top-level ``Let``s): one task (``CNRT_FUNC_TYPE_BLOCK``, dimension 1).
A failed check records the first failure in the step's error record and ends the task.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...lower import kernel_ir as K
from ...lower.schedule import plan_kernel
from ..c import exprs as c
from ..cuda.kernels import _buffers_used
from .capabilities import PLAN

MLU = c.Dialect(name="BANG C", f32_bits="kiln_bits_f32({})", f64_bits="kiln_bits_f64({})",
                fail="kiln_fail_{kind}(bufs.err, {cid}, {value}); return;", error=NotImplementedError)


@dataclass
class MluFunction:
    """One ``__mlu_entry__`` function: its name, pointer declarations and body lines."""

    name: str
    decls: str
    body: str


class MluKernels:
    """Renders the kernels of one entry point; ``launches`` collects one host block per kernel."""

    def __init__(self, program: K.Program, entry: str, add_check):
        self.program, self.entry = program, entry
        self.slot = {name: i for i, name in enumerate(program.buffers)}
        self.x = c.Exprs(program, MLU)
        self.origin = ""
        self.stmts = c.Stmts(self.x, lambda message, dtype: add_check(self.origin, message, dtype))
        self.functions: list = []
        self.launches: list = []

    def decls(self, tree) -> str:
        """Typed GDRAM pointers for the buffers ``tree`` uses, then the early exit after a check failed."""
        lines = []
        for name in sorted(_buffers_used(tree, set()), key=self.slot.__getitem__):
            ct = c.ctype(self.program.buffers[name].dtype)
            lines.append(f"  {ct}* {c.ident(name, 'b_')} = ({ct}*)bufs.p[{self.slot[name]}];")
        lines.append("  if (bufs.err->code) return;  // an earlier check failed: skip the rest of the step")
        return "\n".join(lines)

    def kernel(self, k: K.Kernel) -> None:
        """The functions and invocation lines of one kernel."""
        self.origin = k.origin or k.name
        k = plan_kernel(k, self.program.buffers, PLAN)
        body = k.body.body if isinstance(k.body, K.Block) else [k.body]
        base = c.ident(f"{self.entry}__{k.name}", "k_")
        if any(isinstance(s, (K.Let, K.DeclareAcc)) for s in body):
            self.serial(f"{base}_s", body)
            return
        for j, s in enumerate(body):
            if isinstance(s, K.For) and s.parallel:
                self.split_loop(f"{base}_p{j}", s)
            elif isinstance(s, K.Gemm):
                self.gemm(f"{base}_g{j}", s)
            else:
                self.serial(f"{base}_s{j}", [s])

    def _add(self, name, tree, lines, dim, kind) -> None:
        self.functions.append(MluFunction(name, self.decls(tree), "\n".join(lines)))
        self.launches.append(f"KILN_MLU_RUN({name}, {dim}, {kind});")

    def serial(self, name, stmts) -> None:
        """One task running ``stmts`` in order."""
        self._add(name, stmts, self.stmts.block(stmts, 1), "1LL", "CNRT_FUNC_TYPE_BLOCK")

    def split_loop(self, name, f: K.For) -> None:
        """A parallel loop's iterations strided over the tasks."""
        x, v = self.x, c.ident(f.var.name, "v_")
        trip = f"(({x(f.stop)}) - ({x(f.start)}))"
        lines = [f"  for (long long {v} = ({x(f.start)}) + taskId, {v}_stop = {x(f.stop)}; {v} < {v}_stop; "
                 f"{v} += taskDim) {{", *self.stmts.lines(f.body, 2), "  }"]
        self._add(name, [f], lines, f"kiln_tasks({trip})", "CNRT_FUNC_TYPE_UNION1")

    def gemm(self, name, g: K.Gemm) -> None:
        """C_b = A'_b B'_b: tasks stride over (batch item, row); each output a dot product,
        stored, accumulated or handed to the epilogue (``v_acc``, ``v_row``, ``v_col``, ``v_bidx``)."""
        x = self.x
        if g.c.transposed:
            raise NotImplementedError(f"gemm {name}: a transposed C is not supported by the MLU backend yet")
        ct = c.ctype(self.program.buffers[g.c.buffer].dtype)
        batch = x(g.batch) if g.batch is not None else "1LL"
        bs = (lambda o: f"({x(o.batch_stride)})" if o.batch_stride is not None else "0LL")
        elem = (lambda o, r, cc: f"{c.ident(o.buffer, 'b_')}[({x(o.offset)}) + v_bidx * {bs(o)} + "
                + (f"({cc}) * ({x(o.ld)}) + ({r})]" if o.transposed else f"({r}) * ({x(o.ld)}) + ({cc})]"))
        lines = [f"  const long long m = {x(g.m)}, n = {x(g.n)}, kk = {x(g.k)}, nb = {batch};",
                 "  for (long long kiln_r = taskId; kiln_r < nb * m; kiln_r += taskDim) {",
                 "    const long long v_bidx = kiln_r / m, row = kiln_r % m, v_row = row;",
                 "    for (long long col = 0; col < n; ++col) {",
                 "      const long long v_col = col;",
                 f"      {ct} acc_ = ({ct})0;",
                 f"      for (long long i = 0; i < kk; ++i) acc_ += {elem(g.a, 'row', 'i')} * {elem(g.b, 'i', 'col')};"]
        if g.epilogue is not None:
            lines += [f"      const {ct} v_acc = acc_;", *self.stmts.lines(g.epilogue, 3)]
        else:
            out = f"{c.ident(g.c.buffer, 'b_')}[({x(g.c.offset)}) + v_bidx * {bs(g.c)} + row * ({x(g.c.ld)}) + col]"
            lines.append(f"      {out} = {out + ' + ' if g.accumulate else ''}acc_;")
        lines += ["      (void)v_row; (void)v_col;", "    }", "  }"]
        self._add(name, [g], lines, f"kiln_tasks(({batch}) * ({x(g.m)}))", "CNRT_FUNC_TYPE_UNION1")

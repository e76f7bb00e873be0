"""Kernel-IR kernels -> BANG C ``__mlu_entry__`` functions and the host lines invoking them
(docs/codegen-mlu.md).

A kernel is planned like the CPU's (loops threaded in place: ``For.parallel``) and each of
its top-level statements becomes one invocation (only a GEMM's tasks meet at barriers):

* a top-level ``For`` marked parallel: a Union1 kernel of ``kiln_tasks(trip)`` tasks; when
  some of its buffers are accessed elementwise (``staging.py``), task ``taskId`` takes a
  contiguous span of iterations through NRAM tiles (``__bang_*`` intrinsics on double-buffered
  tiles where the body has an exact vector form, ``vector.py`` and ``pipeline.py``, else
  scalar code on the tiles); otherwise it takes iterations
  ``start + taskId, start + taskId + taskDim, ...`` with scalar code on GDRAM;
* a top-level ``Gemm``: a Union1 kernel (``gemm.py``): float32 ones in NRAM/WRAM tiles
  through ``__bang_matmul`` (filter tiles shared through cluster SRAM when the rows span
  several tiles), other dtypes as scalar dot products;
* a full float32 reduction, or a sum of rows into one row (``reduce.py``): one task
  streaming the elements through double-buffered NRAM tiles into vector-lane accumulators;
* anything else (serial loops, loops holding checks, kernels whose statements share
  top-level ``Let``s): one task (``CNRT_FUNC_TYPE_BLOCK``, dimension 1).
A failed check records the first failure in the step's error record and ends the task.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...lower import kernel_ir as K
from ...lower.footprint import walk
from ...lower.schedule import plan_kernel
from ..c import exprs as c
from ..cuda.kernels import _buffers_used
from .capabilities import MLU370, PLAN
from .gemm import gemm_kernel
from .pipeline import nram_floats, tile_loop
from .reduce import column_reduction, full_reduction
from .staging import LOCAL, index_forms, retarget, staged_buffers
from .vector import vector_body

MLU = c.Dialect(name="BANG C", f32_bits="kiln_bits_f32({})", f64_bits="kiln_bits_f64({})",
                fail="kiln_fail_{kind}(bufs.err, {cid}, {value}); return;", error=NotImplementedError)


def _has_check(tree) -> bool:
    """Whether a ``Check`` lies under ``tree`` (a GEMM's epilogue included)."""
    return any(isinstance(s, K.Check) or (isinstance(s, K.Gemm) and s.epilogue is not None and _has_check(s.epilogue))
               for s, _ in walk(tree))


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

    def decls(self, tree, gdram=frozenset()) -> str:
        """Typed GDRAM pointers for the buffers ``tree`` uses (``g_<name>`` for those in
        ``gdram``, staged in NRAM tiles named ``b_<name>``), then the early exit after a check failed."""
        lines = []
        for name in sorted(_buffers_used(tree, set()), key=self.slot.__getitem__):
            ct = c.ctype(self.program.buffers[name].dtype)
            lines.append(f"  {ct}* {c.ident(name, 'g_' if name in gdram else 'b_')} = ({ct}*)bufs.p[{self.slot[name]}];")
        lines.append("  if (bufs.err->code) return;  // an earlier check failed: skip the rest of the step")
        return "\n".join(lines)

    def kernel(self, k: K.Kernel) -> None:
        """The functions and invocation lines of one kernel."""
        self.origin = k.origin or k.name
        k = plan_kernel(k, self.program.buffers, PLAN)
        body = k.body.body if isinstance(k.body, K.Block) else [k.body]
        base = c.ident(f"{self.entry}__{k.name}", "k_")
        if any(isinstance(s, (K.Let, K.DeclareAcc)) for s in body):
            if not self.reduction(f"{base}_r", body,
                                  full_reduction(body, self.program.buffers, self.x, self.stmts.lines)):
                self.serial(f"{base}_s", body)
            return
        for j, s in enumerate(body):
            if isinstance(s, K.For) and s.parallel:
                self.split_loop(f"{base}_p{j}", s)
            elif isinstance(s, K.Gemm):
                self.gemm(f"{base}_g{j}", s)
            elif isinstance(s, K.For) and self.reduction(f"{base}_c{j}", [s],
                                                          column_reduction(s, self.program.buffers, self.x)):
                continue
            else:
                self.serial(f"{base}_s{j}", [s])

    def _add(self, name, tree, lines, dim, kind, gdram=frozenset()) -> None:
        """One function over ``tree`` with body ``lines``, invoked over ``dim`` tasks of ``kind``.
        Checks only ever run on one task: their first-failure record is written without atomics."""
        if kind != "CNRT_FUNC_TYPE_BLOCK" and _has_check(tree):
            raise NotImplementedError(f"MLU kernel {name}: a runtime check inside a multi-task kernel "
                                      "(the scheduling pass keeps loops holding checks serial)")
        self.functions.append(MluFunction(name, self.decls(tree, gdram), "\n".join(lines)))
        self.launches.append(f"KILN_MLU_RUN({name}, {dim}, {kind});")

    def serial(self, name, stmts) -> None:
        """One task running ``stmts`` in order."""
        self._add(name, stmts, self.stmts.block(stmts, 1), "1LL", "CNRT_FUNC_TYPE_BLOCK")

    def reduction(self, name, tree, found) -> bool:
        """A reduction on one core's vector lanes, ``found`` by ``reduce.full_reduction`` or
        ``reduce.column_reduction``; False when there is none or its tiles do not fit NRAM."""
        if found is None or nram_floats(found[2]) * 4 > MLU370.usable_nram_bytes:
            return False
        gdram, before, vector, after, first, count = found
        lines = [f"  const long long kiln_lo = 0, kiln_hi = {count};",
                 *tile_loop(vector, first, pipelined=True, before=before), *after]
        self._add(name, tree, lines, "1LL", "CNRT_FUNC_TYPE_BLOCK", gdram=set(gdram))
        return True

    def split_loop(self, name, f: K.For) -> None:
        """A parallel loop over the tasks: contiguous spans in NRAM tiles when some of its
        buffers can be staged (``staging.py``; as vector intrinsics when ``vector_loop`` takes
        it, else scalar code), else iterations strided over the tasks."""
        units, stored, rows = staged_buffers(f, self.program.buffers, MLU370.usable_nram_bytes)
        if not units:
            return self.strided_loop(name, f)
        staged = sorted(units)
        x, v = self.x, c.ident(f.var.name, "v_")
        start, t = x(f.start), c.ident(LOCAL.name, "v_")
        ptr = (lambda n, p: c.ident(n, p))
        lines = [f"  const long long kiln_trip = ({x(f.stop)}) - ({start}), kiln_per = (kiln_trip + taskDim - 1) / taskDim;",
                 "  const long long kiln_lo = taskId * kiln_per;",
                 "  const long long kiln_hi = kiln_lo + kiln_per < kiln_trip ? kiln_lo + kiln_per : kiln_trip;"]
        if self.vector_loop(name, f, units, stored, lines):
            return
        for n in staged:
            lines.append(f"  KILN_NRAM({c.ctype(self.program.buffers[n].dtype)}, {ptr(n, 'b_')}, {rows * units[n]});")
        gdram = (lambda n: f"{ptr(n, 'g_')} + (({start}) + kiln_i0) * {units[n]}LL")
        size = (lambda n: f"kiln_len * {units[n]}LL * sizeof(*{ptr(n, 'b_')})")
        lines += [f"  for (long long kiln_i0 = kiln_lo; kiln_i0 < kiln_hi; kiln_i0 += {rows}) {{",
                  f"    const long long kiln_len = kiln_hi - kiln_i0 < {rows} ? kiln_hi - kiln_i0 : {rows};",
                  *[f"    __memcpy({ptr(n, 'b_')}, {gdram(n)}, {size(n)}, GDRAM2NRAM);"
                    for n in staged],
                  *self.tile_body(f, staged, v, t, start),
                  *[f"    __memcpy({gdram(n)}, {ptr(n, 'b_')}, {size(n)}, NRAM2GDRAM);" for n in sorted(stored)], "  }"]
        self._add(name, [f], lines, f"kiln_tasks({x(f.stop)} - ({start}))", "CNRT_FUNC_TYPE_UNION1",
                  gdram=set(staged))

    def vector_loop(self, name, f: K.For, units, stored, head) -> bool:
        """The loop as intrinsics on double-buffered NRAM tiles (``vector.py``, ``pipeline.py``)
        after the ``head`` lines (the task's span), when its body has an exact vector form and
        its tiles fit NRAM; False otherwise."""
        vector = vector_body(f, units, stored, self.x, self.program.buffers)
        if vector is None or nram_floats(vector) * 4 > MLU370.usable_nram_bytes:
            return False
        start = self.x(f.start)
        one_tile = isinstance(f.start, K.Const) and isinstance(f.stop, K.Const) \
            and int(f.stop.value) - int(f.start.value) <= vector.rows  # no second tile to overlap
        self._add(name, [f], head + tile_loop(vector, start, pipelined=not one_tile),
                  f"kiln_tasks({self.x(f.stop)} - ({start}))", "CNRT_FUNC_TYPE_UNION1", gdram=set(units))
        return True

    def tile_body(self, f: K.For, staged, v, t, start) -> list:
        """The lines computing one tile with scalar code on the NRAM tiles."""
        return [f"    for (long long {t} = 0; {t} < kiln_len; ++{t}) {{",
                f"      const long long {v} = ({start}) + kiln_i0 + {t};",
                f"      (void){v};",
                *self.stmts.lines(retarget(f.body, set(staged), index_forms(f)), 3), "    }"]

    def strided_loop(self, name, f: K.For) -> None:
        """A parallel loop's iterations strided over the tasks (scalar code on GDRAM)."""
        x, v = self.x, c.ident(f.var.name, "v_")
        trip = f"(({x(f.stop)}) - ({x(f.start)}))"
        lines = [f"  for (long long {v} = ({x(f.start)}) + taskId, {v}_stop = {x(f.stop)}; {v} < {v}_stop; "
                 f"{v} += taskDim) {{", *self.stmts.lines(f.body, 2), "  }"]
        self._add(name, [f], lines, f"kiln_tasks({trip})", "CNRT_FUNC_TYPE_UNION1")

    def gemm(self, name, g: K.Gemm) -> None:
        """A Union1 kernel computing ``g`` (``gemm.py``: NRAM/WRAM tiles and the matrix
        intrinsic for float32, scalar dot products otherwise)."""
        lines, tasks = gemm_kernel(self.x, self.stmts, g, self.program.buffers, name)
        self._add(name, [g], lines, tasks, "CNRT_FUNC_TYPE_UNION1")

"""Kernel-IR kernels -> ``__global__`` functions and their launch lines (docs/codegen-cuda.md).

``KernelRenderer(program, entry, add_check)`` renders each ``Kernel`` of one entry point's
program as one or more ``__global__`` functions named ``k_<entry>__<kernel>_s<j>`` (loop
statements) or ``..._g<j>`` (GEMMs), and collects the host lines that launch them in order
on ``stream`` with the buffer table ``b`` and the batch size ``N`` (``templates/cuda/
host.cu.j2`` places those lines).  Launch geometry:

* an independent top-level loop (``parallel``/``vectorize``, bounds free of loop variables)
  and the perfect nest of independent loops under it: one grid-stride loop over the
  flattened iteration space, ``KILN_BLOCK`` threads per block;
* a GEMM: the tiled kernel of ``gemm.cu.j2`` (``KILN_LAUNCH_SYNC``: it uses ``__syncthreads``);
* anything else (runs of sequential statements, kernels with top-level lets): one thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...lower import kernel_ir as K
from .exprs import CudaRenderError, Exprs, Stmts, ctype, ident


@dataclass
class KernelFunction:
    """One ``__global__`` function: its text pieces for ``kernels.cu.j2``."""

    name: str
    decls: str = ""
    body: str = ""
    grid: bool = False
    stop: str = ""
    gemm: dict = None


@dataclass
class KernelText:
    """The functions rendered for one kernel-IR ``Kernel``."""

    name: str
    origin: str
    functions: list = field(default_factory=list)


def _vars_in(e) -> set:
    if isinstance(e, K.Var):
        return {e.name}
    if isinstance(e, (K.Load,)):
        return {"<load>"} | _vars_in(e.index)
    if isinstance(e, K.Op):
        return set().union(*(_vars_in(a) for a in e.args)) if e.args else set()
    if isinstance(e, K.Cast):
        return _vars_in(e.value)
    if isinstance(e, K.Random):
        return {"<random>"} | _vars_in(e.index) | _vars_in(e.step)
    return set()


def _independent(s) -> bool:
    """A top-level loop whose iterations may run on different threads."""
    return isinstance(s, K.For) and (s.parallel or s.vectorize) and not (
        _vars_in(s.start) | _vars_in(s.stop))


def _only(s):
    """The one statement of ``s`` (through single-statement Blocks)."""
    while isinstance(s, K.Block) and len(s.body) == 1:
        s = s.body[0]
    return s


def _loop_nest(loop: K.For) -> list:
    """The perfect nest of independent loops starting at ``loop`` whose bounds depend on no
    loop variable: they are flattened into one grid-stride iteration space."""
    nest = [loop]
    while True:
        inner = _only(nest[-1].body)
        if not (isinstance(inner, K.For) and (inner.parallel or inner.vectorize)
                and not (_vars_in(inner.start) | _vars_in(inner.stop))):
            return nest
        nest.append(inner)


def _buffers_used(s, acc: set) -> set:
    """Names of the buffers a statement tree loads or stores."""
    if isinstance(s, (list, tuple)):
        for y in s:
            _buffers_used(y, acc)
        return acc
    if isinstance(s, (K.Load, K.Store)):
        acc.add(s.buffer)
    if isinstance(s, K.Operand):
        acc.add(s.buffer)
    if hasattr(s, "__dataclass_fields__"):
        for f in s.__dataclass_fields__:
            v = getattr(s, f)
            if isinstance(v, (K.Expr, K.Stmt, K.Operand, list, tuple)):
                _buffers_used(v, acc)
    return acc


class KernelRenderer:
    """Renders the kernels of one entry point; ``launches`` collects the host launch lines."""

    def __init__(self, program: K.Program, entry: str, add_check):
        self.program, self.entry = program, entry
        self.slot = {name: i for i, name in enumerate(program.buffers)}
        self.x = Exprs(program)
        self.origin = ""
        self.stmts = Stmts(self.x, lambda message, dtype: add_check(self.origin, message, dtype))
        self.launches: list = []

    def decls(self, tree) -> str:
        """Typed pointers for the buffers ``tree`` uses, then the early exit after a failed check."""
        lines = []
        for name in sorted(_buffers_used(tree, set()), key=self.slot.__getitem__):
            ct = ctype(self.program.buffers[name].dtype)
            lines.append(f"  {ct}* __restrict__ {ident(name, 'b_')} = ({ct}*)bufs.p[{self.slot[name]}];")
        lines.append("  if (bufs.err->code) return;  // an earlier check failed: skip the rest of the step")
        return "\n".join(lines)

    def kernel(self, k: K.Kernel) -> KernelText:
        """The functions of one kernel; its launch lines are appended to ``launches``."""
        out = KernelText(ident(f"{self.entry}__{k.name}", "k_"), k.origin.replace("\n", " "))
        self.origin = k.origin or k.name
        body = k.body.body if isinstance(k.body, K.Block) else [k.body]
        for j, group in enumerate(_launch_groups(k.name, body)):
            if isinstance(group, K.Gemm):
                out.functions.append(self.gemm(f"{out.name}_g{j}", group))
            elif isinstance(group, K.For):
                out.functions.append(self.grid_loop(f"{out.name}_s{j}", group))
            else:
                out.functions.append(self.sequential(f"{out.name}_s{j}", group))
        return out

    def sequential(self, name, statements) -> KernelFunction:
        self.launches.append(f"KILN_LAUNCH({name}, 1, 1, stream, b, N);")
        return KernelFunction(name, self.decls(statements), "\n".join(self.stmts.block(statements, 1)))

    def grid_loop(self, name, loop: K.For) -> KernelFunction:
        nest = _loop_nest(loop)
        x = self.x
        trips = [f"(({x(f.stop)}) - ({x(f.start)}))" for f in nest]
        lines, rest = [], "kiln_f"
        for i, f in enumerate(nest):
            v = ident(f.var.name, "v_")
            inner = " * ".join(trips[i + 1:])
            if inner:
                lines.append(f"    const long long {v} = ({x(f.start)}) + {rest} / ({inner});")
                lines.append(f"    const long long {v}_rest = {rest} % ({inner});")
                rest = f"{v}_rest"
            else:
                lines.append(f"    const long long {v} = ({x(f.start)}) + {rest};")
        lines += self.stmts.lines(nest[-1].body, 2)
        total = " * ".join(trips)
        self.launches.append(f"{{ const long long trip = {total}; if (trip > 0) "
                             f"KILN_LAUNCH({name}, kiln_blocks(trip), KILN_BLOCK, stream, b, N); }}")
        return KernelFunction(name, self.decls(loop), "\n".join(lines), grid=True, stop=total)

    def gemm(self, name, g: K.Gemm) -> KernelFunction:
        x = self.x
        dtypes = {self.program.buffers[o.buffer].dtype.short for o in (g.a, g.b, g.c)}
        if len(dtypes) != 1:
            raise CudaRenderError(f"gemm {name}: mixed dtypes {sorted(dtypes)}")
        if g.c.transposed:
            raise CudaRenderError(f"gemm {name}: a transposed C is not supported yet")
        ct = ctype(self.program.buffers[g.c.buffer].dtype)
        bs = (lambda o: x(o.batch_stride) if o.batch_stride is not None else "0LL")
        epilogue = ""
        if g.epilogue is not None:
            epilogue = "\n".join([f"    const {ct} v_acc = acc;", "    const long long v_row = row;",
                                  "    const long long v_col = col;", "    const long long v_bidx = bidx;"]
                                 + self.stmts.lines(g.epilogue, 2))
        info = {"name": name, "decls": self.decls(g), "ctype": ct, "m": x(g.m), "n": x(g.n), "k": x(g.k),
                "batch": x(g.batch) if g.batch is not None else "1", "accumulate": g.accumulate,
                "epilogue": epilogue, "c": ident(g.c.buffer, "b_"), "c_off": x(g.c.offset),
                "ldc": x(g.c.ld), "c_bs": bs(g.c)}
        for key, o in (("a", g.a), ("b", g.b)):
            info.update({key: ident(o.buffer, "b_"), f"{key}_off": x(o.offset), f"ld{key}": x(o.ld),
                         f"{key}_t": o.transposed, f"{key}_bs": bs(o)})
        self.launches.append(
            f"{{ const long long m = {info['m']}, n = {info['n']}, nb = {info['batch']}; "
            f"if (m > 0 && n > 0 && nb > 0) KILN_LAUNCH_SYNC({name}, dim3(kiln_tiles(m), kiln_tiles(n), "
            f"(unsigned int)nb), dim3(KILN_TILE, KILN_TILE), stream, b, N); }}")
        return KernelFunction(name, gemm=info)


def _launch_groups(name, body) -> list:
    """Split a kernel's top-level statements into launches: each independent loop and each
    GEMM alone, runs of other statements together.  Top-level lets/accumulators are shared
    by the statements after them, so such a kernel stays one sequential group."""
    shared = any(isinstance(s, (K.Let, K.DeclareAcc)) for s in body)
    if shared and any(isinstance(s, K.Gemm) for s in body):
        raise CudaRenderError(f"kernel {name}: a Gemm next to top-level lets is not supported yet")
    groups, run = [], []
    for s in body:
        if not shared and (_independent(s) or isinstance(s, K.Gemm)):
            if run:
                groups.append(run)
                run = []
            groups.append(s)
        else:
            run.append(s)
    if run:
        groups.append(run)
    return groups

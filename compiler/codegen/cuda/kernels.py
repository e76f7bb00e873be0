"""Kernel-IR kernels -> ``__global__`` functions and their launch lines (docs/codegen-cuda.md).

``KernelRenderer(program, entry, add_check)`` renders each ``Kernel`` of one entry point's
program as one or more ``__global__`` functions named ``k_<entry>__<kernel>_s<j>`` (loop
nests and serial statements), ``..._r<j>`` (block reductions), ``..._c<j>`` (ordered loops
holding checks) or ``..._g<j>`` (GEMMs), and
collects the host lines that launch them in order on ``stream`` with the buffer table ``b``
and the batch size ``N`` (``templates/cuda/host.cu.j2`` places those lines).  Which loops
run in parallel, and how, is the kernel's plan (``Kernel.launches``, written by the
scheduling pass compiler/lower/schedule.py for ``capabilities.CAPABILITIES``; a kernel not
planned yet is planned here first); launch geometry (loop launches: ``loops.py``):

* ``Grid``: one grid-stride loop over the flattened iteration space of the parallel loops,
  ``KILN_BLOCK`` threads per block (``kernels.cu.j2``);
* ``BlockReduce``: one block per output (32 to ``KILN_RED_BLOCK`` threads, by the number of
  outputs and the reduced trip count), threads striding over the reduced loops, combined by
  warp shuffles and shared memory (``reduce.cu.j2``, ``KILN_LAUNCH_SYNC``);
* GEMM: ``gemm.cu.j2``: a k-split kernel (8x8 outputs per block, k summed by 16 slices of
  threads, then the slices in order) for few outputs over a long k; a 64x64 register-blocked
  tile (4x4 outputs per thread) when the output has enough such tiles; else the 16x16
  one-output-per-thread tile; all ``KILN_LAUNCH_SYNC``.  Rules over constant sizes are
  decided here, the others by the launch line at run time;
* ``Ordered``: an unflagged loop holding checks, in loop order: one block of up to
  ``KILN_ORD_BLOCK`` threads over chunks of ``blockDim`` iterations, stopping at the chunk's
  first failing iteration (``checked.cu.j2``, ``KILN_LAUNCH_SYNC``);
* ``Serial``: one thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...lower import kernel_ir as K
from ...lower.schedule import plan_kernel
from .capabilities import CAPABILITIES
from .exprs import CudaRenderError, Exprs, Stmts, ctype, ident
from .loops import KernelFunction, LoopLaunches, RecordedChecks

BIG_TILE = 64  # the register-blocked GEMM's tile (gemm.cu.j2: KILN_BIG_TILE)
BIG_MIN_DIM = 48  # m and n from which the big tile is worth it ...
BIG_MIN_TILES = 32  # ... with at least this many tiles (about a quarter of an H100's SMs)
KS_MIN_K = 2048  # k from which a GEMM with fewer than KS_MAX_TILES 16x16 tiles splits k
KS_MAX_TILES = 264  # (two blocks per SM of an H100)
# variant -> (function suffix, grid, block, run-time rule)
GEMM_VARIANTS = {
    "ksplit": ("k", "dim3(kiln_ks_tiles(m), kiln_ks_tiles(n), (unsigned int)nb)",
               "dim3(KILN_KS_TILE, KILN_KS_TILE, KILN_KS_SLICES)", "kiln_gemm_ksplit(m, n, nb, kk)"),
    "big": ("b", "dim3(kiln_big_tiles(m), kiln_big_tiles(n), (unsigned int)nb)", "dim3(KILN_TILE, KILN_TILE)",
            "kiln_gemm_big(m, n, nb)"),
    "small": ("", "dim3(kiln_tiles(m), kiln_tiles(n), (unsigned int)nb)", "dim3(KILN_TILE, KILN_TILE)", None),
    # --cuda-tf32, float32: TF32 tensor cores (wmma) in place of "big" / "small", same rules
    "wmma64": ("w", "dim3(kiln_big_tiles(m), kiln_big_tiles(n), (unsigned int)nb)", "dim3(KILN_WMMA_THREADS)",
               "kiln_gemm_big(m, n, nb)"),
    "wmma32": ("v", "dim3(kiln_wmma_tiles(m), kiln_wmma_tiles(n), (unsigned int)nb)", "dim3(KILN_WMMA_THREADS)", None),
}
TF32_VARIANTS = {"big": "wmma64", "small": "wmma32"}  # the k-split kernel stays fp32 (few outputs, long k)


@dataclass
class KernelText:
    """The functions rendered for one kernel-IR ``Kernel``."""

    name: str
    origin: str
    functions: list = field(default_factory=list)
    merged_into: list = field(default_factory=list)  # one-thread functions of earlier kernels that run it


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


class KernelRenderer(LoopLaunches):
    """Renders the kernels of one entry point; ``launches`` collects the host launch lines."""

    def __init__(self, program: K.Program, entry: str, add_check, tf32: bool = False):
        self.program, self.entry = program, entry
        self.tf32 = tf32  # float32 GEMMs may use TF32 tensor cores (inputs rounded to 10 mantissa bits)
        self.slot = {name: i for i, name in enumerate(program.buffers)}
        self.x = Exprs(program)
        self.origin = ""
        self.stmts = Stmts(self.x, lambda message, dtype: add_check(self.origin, message, dtype))
        self.recorded = RecordedChecks(self.x, self.stmts.add_check)
        self.launches: list = []
        self.open_serial = None  # the last launch, when it is a one-thread function (merged into)

    def decls(self, tree, early_exit=True) -> str:
        """Typed pointers for the buffers ``tree`` uses, then the early exit after a failed
        check (kernels with barriers do their own, uniform over the block)."""
        lines = []
        for name in sorted(_buffers_used(tree, set()), key=self.slot.__getitem__):
            ct = ctype(self.program.buffers[name].dtype)
            lines.append(f"  {ct}* __restrict__ {ident(name, 'b_')} = ({ct}*)bufs.p[{self.slot[name]}];")
        if early_exit:
            lines.append("  if (bufs.err->code) return;  // an earlier check failed: skip the rest of the step")
        return "\n".join(lines)

    def kernel(self, k: K.Kernel) -> KernelText:
        """The functions of one kernel; its launch lines are appended to ``launches``."""
        out = KernelText(ident(f"{self.entry}__{k.name}", "k_"), k.origin.replace("\n", " "))
        self.origin = k.origin or k.name
        launches = k.launches if k.launches is not None else \
            plan_kernel(k, self.program.buffers, CAPABILITIES).launches
        for j, group in enumerate(launches):
            if isinstance(group, K.Serial) and any(isinstance(s, K.Gemm) for s in group.stmts):
                raise CudaRenderError(f"kernel {k.name}: a Gemm next to top-level lets is not supported yet")
            if isinstance(group, K.Serial) and self.open_serial is not None:
                self.append_serial(k, group)
                out.merged_into.append(self.open_serial.name)
                continue
            self.open_serial = None
            if isinstance(group, K.Gemm):
                out.functions += self.gemm(f"{out.name}_g{j}", group)
            elif isinstance(group, K.Grid):
                out.functions.append(self.grid_loop(f"{out.name}_s{j}", group))
            elif isinstance(group, K.BlockReduce):
                out.functions.append(self.reduce(f"{out.name}_r{j}", group))
            elif isinstance(group, K.Ordered):
                out.functions.append(self.ordered(f"{out.name}_c{j}", group))
            else:
                out.functions.append(self.sequential(f"{out.name}_s{j}", group))
                self.open_serial = out.functions[-1]
        return out

    def gemm(self, name, g: K.Gemm) -> list:
        """The GEMM's functions (one per variant that may run: ``_gemm_variants``) and its
        launch line, which picks among them at run time when the sizes are not constants."""
        info = self.gemm_info(name, g)
        variants = _gemm_variants(g)
        if self.tf32 and info["ctype"] == "float":
            variants = [TF32_VARIANTS.get(v, v) for v in variants]
        launch = ""
        for i, v in enumerate(variants):
            suffix, grid, block, rule = GEMM_VARIANTS[v]
            line = f"KILN_LAUNCH_SYNC({name}{suffix}, {grid}, {block}, stream, b, N);"
            launch += line if i == len(variants) - 1 else f"if ({rule}) {line} else "
        self.launches.append(f"{{ const long long m = {info['m']}, n = {info['n']}, nb = {info['batch']}, "
                             f"kk = {info['k']}; if (m > 0 && n > 0 && nb > 0) {{ {launch} }} }}")
        return [KernelFunction(name + GEMM_VARIANTS[v][0], gemm={**info, "name": name + GEMM_VARIANTS[v][0], "variant": v})
                for v in variants]

    def gemm_info(self, name, g: K.Gemm) -> dict:
        """The pieces ``gemm.cu.j2`` splices in: operands, sizes, the epilogue."""
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
            epilogue = "\n".join([f"      const {ct} v_acc = acc_;", "      const long long v_row = row;",
                                  "      const long long v_col = col;", "      const long long v_bidx = bidx;"]
                                 + self.stmts.lines(g.epilogue, 3))
        info = {"name": name, "decls": self.decls(g, early_exit=False), "ctype": ct, "m": x(g.m), "n": x(g.n),
                "k": x(g.k), "batch": x(g.batch) if g.batch is not None else "1", "accumulate": g.accumulate,
                "epilogue": epilogue, "c": ident(g.c.buffer, "b_"), "c_off": x(g.c.offset),
                "ldc": x(g.c.ld), "c_bs": bs(g.c)}
        for key, o in (("a", g.a), ("b", g.b)):
            info.update({key: ident(o.buffer, "b_"), f"{key}_off": x(o.offset), f"ld{key}": x(o.ld),
                         f"{key}_t": o.transposed, f"{key}_bs": bs(o)})
        return info


def _gemm_variants(g: K.Gemm) -> list:
    """The GEMM variants that may run, in the launch line's order (each but the last with its
    run-time rule); a rule whose sizes are constants is decided here (same rules as
    gemm.cu.j2's ``kiln_gemm_ksplit`` / ``kiln_gemm_big``)."""
    m, n, k = (int(d.value) if isinstance(d, K.Const) else None for d in (g.m, g.n, g.k))
    nb = 1 if g.batch is None else (int(g.batch.value) if isinstance(g.batch, K.Const) else None)
    tiles = (lambda size, t: -(-size // t))
    out = []
    few = None if None in (m, n, nb) else tiles(m, 16) * tiles(n, 16) * nb < KS_MAX_TILES
    ksplit = False if (k is not None and k < KS_MIN_K) or few is False else (None if None in (k, few) else True)
    if ksplit:
        return ["ksplit"]
    if ksplit is None:
        out.append("ksplit")
    big = None if None in (m, n, nb) else tiles(m, BIG_TILE) * tiles(n, BIG_TILE) * nb >= BIG_MIN_TILES
    if any(d is not None and d < BIG_MIN_DIM for d in (m, n)):
        big = False
    if big:
        return out + ["big"]
    if big is None:
        out.append("big")
    return out + ["small"]

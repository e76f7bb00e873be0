"""A kernel-IR ``Gemm`` -> one BANG C Union1 kernel (docs/codegen-mlu.md, "GEMM").

float32 GEMMs go through on-chip tiles and the matrix intrinsic: for each output tile of
``tm x tn`` (rows of A' x columns of B'), over K in steps of ``tk``:

* the filter tile ``B'[k0:k0+tk, n0:n0+tn]ᵀ`` (``tn x tk``: the intrinsic's filter is the
  transposed right operand, mlu-ops ``fft_generic_butterfly.h``) is gathered GDRAM -> NRAM,
  zero padded, ``__bang_reshape_filter``'d and copied into WRAM;
* the A tile ``A'[m0:m0+tm, k0:k0+tk]`` (zero padded along K) is copied GDRAM -> NRAM;
* ``__bang_matmul`` multiplies them into an NRAM partial tile, ``__bang_add`` sums the K steps;
* the finished tile is accumulated onto C (``__bang_add`` with C's tile), or handed to the
  epilogue element by element, or stored with one strided ``__memcpy`` (NRAM2GDRAM).

Transposed operands are transposed while staging: an operand whose tile rows are contiguous
in GDRAM is copied with one strided ``__memcpy`` (a segment per row); otherwise each tile row
is gathered by a strided ``__memcpy`` of one-element segments.

When the rows of A' span several tiles (a static ``m`` of at least ``SHARED_MIN_ROWS``), the
4 cores of a cluster take 4 row tiles of the same output columns and share the filter tile:
each core stages and reshapes a quarter of its K columns into its quarter of one of two SRAM
filter buffers (K steps alternate), ``__sync_cluster()``, every core copies the whole tile
SRAM -> WRAM.  One barrier per K step suffices: a buffer is refilled two steps later, after
the barrier that every core reaches only once it has read it.  Otherwise every
task stages its own filter (NRAM -> WRAM).  Other dtypes keep scalar dot products on GDRAM.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...ir.types import as_dtype
from ...lower import kernel_ir as K
from ..c import exprs as c
from .capabilities import MLU370

F32 = as_dtype("float32")
MAX_TM, MAX_TK, MAX_TN = 64, 128, 256  # rows of A', K, columns of B' per tile (float32)
K_STEP = MLU370.vector_align_bytes // 4  # tk is a multiple of 128 bytes (the intrinsic needs 64)
CORES = MLU370.cores_per_cluster
SHARED_K_STEP = CORES * MLU370.matmul_k_align_bytes // 4  # shared: each core reshapes a quarter of tk
N_STEP = MLU370.matmul_n_align
SHARED_MIN_ROWS = 4  # a static m at least this shares filter tiles over a cluster's cores


@dataclass(frozen=True)
class Tiles:
    """Tile sizes of one GEMM (elements) and whether a cluster shares its filter tiles."""

    m: int
    k: int
    n: int
    shared: bool

    @property
    def kpart(self) -> int:
        """K columns of the filter tile one core stages (a quarter of ``k`` when shared)."""
        return self.k // CORES if self.shared else self.k

    def nram_bytes(self) -> int:
        """NRAM the kernel declares: A tile, sum and partial tiles, the raw and reshaped filter part."""
        return 4 * (self.m * self.k + 2 * self.m * self.n + 2 * self.n * self.kpart)


def _const(e):
    return int(e.value) if isinstance(e, K.Const) else None


def _round_up(v: int, step: int) -> int:
    return max(step, -(-v // step) * step)


def plan_tiles(g: K.Gemm) -> Tiles:
    """Tiles fitting the GEMM's static sizes (the largest ones for dynamic sizes); a static
    ``m`` of at least ``SHARED_MIN_ROWS`` is cut into at least 4 row tiles, one per core."""
    m, k, n = _const(g.m), _const(g.k), _const(g.n)
    shared = m is not None and m >= SHARED_MIN_ROWS
    tk = MAX_TK if k is None else min(MAX_TK, _round_up(k, SHARED_K_STEP if shared else K_STEP))
    tn = MAX_TN if n is None else min(MAX_TN, _round_up(n, N_STEP))
    tm = MAX_TM if m is None else max(1, min(MAX_TM, -(-m // MLU370.cores_per_cluster) if shared else m))
    tiles = Tiles(tm, tk, tn, shared)
    assert tiles.nram_bytes() <= MLU370.usable_nram_bytes and 4 * tn * tk <= MLU370.wram_bytes
    return tiles


def matmul_eligible(g: K.Gemm, buffers: dict) -> bool:
    """float32 A, B and C, C not transposed: the matrix intrinsic's case."""
    return not g.c.transposed and all(buffers[o.buffer].dtype == F32 for o in (g.a, g.b, g.c))


class GemmLines:
    """The BANG C lines of one GEMM kernel; ``x`` renders kernel-IR expressions."""

    def __init__(self, x, stmts, g: K.Gemm, tiles: Tiles):
        self.x, self.stmts, self.g, self.t = x, stmts, g, tiles

    def base(self, o: K.Operand) -> str:
        """The GDRAM address of batch item ``v_bidx``'s matrix of operand ``o``."""
        bs = f" + v_bidx * ({self.x(o.batch_stride)})" if o.batch_stride is not None else ""
        return f"({c.ident(o.buffer, 'b_')} + ({self.x(o.offset)}){bs})"

    def stage(self, dst, shape, o: K.Operand, rows_contiguous, origin, extent, pad, depth, guard=None) -> list:
        """Copy the ``rows x cols`` (``extent``) tile at ``origin`` (r0, c0) of operand ``o``'s
        matrix (element (r, c) at ``base + r * ld + c`` when ``rows_contiguous``, else at
        ``base + c * ld + r``) into the NRAM tile ``dst`` of ``shape`` (height, width), zero
        filled first when ``pad`` (a C condition) so padded lanes add nothing; the copy only
        when ``guard`` (a C condition) holds, if given."""
        ld, sp = f"({self.x(o.ld)})", "  " * depth
        (r0, c0), (rows, cols), width = origin, extent, shape[1]
        lines = [f"{sp}if ({pad}) __bang_write_value({dst}, {shape[0] * width}, 0.0f);"]
        if guard:
            lines.append(f"{sp}if ({guard})")
            sp += "  "
        if rows_contiguous:
            return lines + [f"{sp}__memcpy({dst}, {self.base(o)} + ({r0}) * {ld} + ({c0}), (int)({cols}) * 4, GDRAM2NRAM, "
                            f"{width} * 4, (int)({ld} * 4), (int)({rows}) - 1);"]
        return lines + [f"{sp}for (long long kiln_r = 0; kiln_r < {rows}; ++kiln_r)",
                        f"{sp}  __memcpy({dst} + kiln_r * {width}, {self.base(o)} + ({c0}) * {ld} + ({r0}) + kiln_r, 4, "
                        f"GDRAM2NRAM, 4, (int)({ld} * 4), (int)({cols}) - 1);"]

    def declarations(self) -> list:
        """Sizes, tile counts and the NRAM / WRAM (/ SRAM) tiles."""
        x, g, t = self.x, self.g, self.t
        batch = x(g.batch) if g.batch is not None else "1LL"
        lines = [f"  const long long m = {x(g.m)}, n = {x(g.n)}, kk = {x(g.k)}, nb = {batch};",
                 f"  const long long kiln_mt = (m + {t.m - 1}) / {t.m}, kiln_nt = (n + {t.n - 1}) / {t.n};",
                 f"  KILN_NRAM(float, kiln_a, {t.m * t.k});",
                 f"  KILN_NRAM(float, kiln_acc, {t.m * t.n});",
                 f"  KILN_NRAM(float, kiln_part, {t.m * t.n});",
                 f"  KILN_NRAM(float, kiln_braw, {t.n * t.kpart});",
                 f"  KILN_NRAM(float, kiln_bfil, {t.n * t.kpart});",
                 f"  KILN_WRAM(float, kiln_w, {t.n * t.k});"]
        if t.shared:
            lines += [f"  KILN_SRAM(float, kiln_s, {2 * t.n * t.k});  // two filter tiles: K steps alternate",
                      "  long long kiln_step = 0;  // K steps this task ran, over all its tiles"]
        return lines

    def filter_tile(self, depth) -> list:
        """The filter tile B'[k0.., n0..]ᵀ gathered, padded and reshaped into ``kiln_bfil``; when
        shared, this core's quarter of its K columns (``kiln_kq`` of them, maybe none), whose
        reshaped form is one contiguous quarter of the whole tile's (the layout groups K first)."""
        t, sp, q = self.t, "  " * depth, self.t.kpart
        if not t.shared:
            origin, extent, guard = ("kiln_n0", "kiln_k0"), ("kiln_nn", "kiln_kn"), None
            lines = []
        else:
            origin, extent, guard = ("kiln_n0", "kiln_q0"), ("kiln_nn", "kiln_kq"), "kiln_kq > 0"
            lines = [f"{sp}const long long kiln_q0 = kiln_k0 + coreId * {q}, kiln_kr = kk - kiln_q0;",
                     f"{sp}const long long kiln_kq = kiln_kr < {q} ? (kiln_kr > 0 ? kiln_kr : 0) : {q};"]
        return [*lines, *self.stage("kiln_braw", (t.n, q), self.g.b, self.g.b.transposed, origin, extent,
                                    f"kiln_nn < {t.n} || {extent[1]} < {q}", depth, guard),
                f"{sp}__bang_reshape_filter(kiln_bfil, kiln_braw, {t.n}, 1, 1, {q});"]

    def multiply(self, depth) -> list:
        """Stage the A tile and add A-tile x filter into the sum tile (``kiln_acc``)."""
        t, sp = self.t, "  " * depth
        return [*self.stage("kiln_a", (t.m, t.k), self.g.a, not self.g.a.transposed, ("kiln_m0", "kiln_k0"),
                            ("kiln_mm", "kiln_kn"), f"kiln_kn < {t.k}", depth),
                f"{sp}__bang_matmul(kiln_k0 ? kiln_part : kiln_acc, kiln_a, kiln_w, (int)kiln_mm, {t.k}, {t.n});",
                f"{sp}if (kiln_k0) __bang_add(kiln_acc, kiln_acc, kiln_part, (int)kiln_mm * {t.n});"]

    def k_loop(self, depth) -> list:
        """The K steps of one output tile (a cluster's tasks all run them: barriers inside)."""
        t, sp = self.t, "  " * depth
        head = [f"{sp}if (kk <= 0) __bang_write_value(kiln_acc, {t.m * t.n}, 0.0f);",
                f"{sp}for (long long kiln_k0 = 0; kiln_k0 < kk; kiln_k0 += {t.k}) {{",
                f"{sp}  const long long kiln_kn = kk - kiln_k0 < {t.k} ? kk - kiln_k0 : {t.k};"]
        wbytes = f"{t.n * t.k * 4}"
        if t.shared:
            part = t.n * t.kpart
            body = [f"{sp}  float* kiln_sbuf = kiln_s + (kiln_step++ & 1) * {t.n * t.k};",
                    *self.filter_tile(depth + 1),
                    f"{sp}  __memcpy(kiln_sbuf + coreId * {part}, kiln_bfil, {part * 4}, NRAM2SRAM);",
                    f"{sp}  __sync_cluster();  // the 4 quarters are in SRAM, the other buffer's readers are done",
                    f"{sp}  __memcpy(kiln_w, kiln_sbuf, {wbytes}, SRAM2WRAM);",
                    f"{sp}  if (kiln_mm > 0) {{", *self.multiply(depth + 2), f"{sp}  }}"]
        else:
            body = [*self.filter_tile(depth + 1), f"{sp}  __memcpy(kiln_w, kiln_bfil, {wbytes}, NRAM2WRAM);",
                    *self.multiply(depth + 1)]
        return head + body + [f"{sp}}}"]

    def finish(self, depth) -> list:
        """The sum tile onto C: the epilogue per element, else accumulated and/or stored."""
        g, t, sp = self.g, self.t, "  " * depth
        if g.epilogue is not None:
            return [f"{sp}for (long long kiln_r = 0; kiln_r < kiln_mm; ++kiln_r)",
                    f"{sp}  for (long long kiln_c = 0; kiln_c < kiln_nn; ++kiln_c) {{",
                    f"{sp}    const long long v_row = kiln_m0 + kiln_r, v_col = kiln_n0 + kiln_c;",
                    f"{sp}    const float v_acc = kiln_acc[kiln_r * {t.n} + kiln_c];",
                    *self.stmts.lines(g.epilogue, depth + 2),
                    f"{sp}    (void)v_row; (void)v_col;", f"{sp}  }}"]
        ld = f"({self.x(g.c.ld)})"
        tile = f"{self.base(g.c)} + kiln_m0 * {ld} + kiln_n0"
        lines = []
        if g.accumulate:
            lines += [f"{sp}__memcpy(kiln_part, {tile}, (int)kiln_nn * 4, GDRAM2NRAM, {t.n} * 4, (int)({ld} * 4), "
                      "(int)kiln_mm - 1);",
                      f"{sp}__bang_add(kiln_acc, kiln_part, kiln_acc, (int)kiln_mm * {t.n});"]
        return lines + [f"{sp}__memcpy({tile}, kiln_acc, (int)kiln_nn * 4, NRAM2GDRAM, (int)({ld} * 4), {t.n} * 4, "
                        "(int)kiln_mm - 1);"]

    def tile_bounds(self, depth) -> list:
        """Rows and columns of the current output tile (``kiln_mm`` is 0 for a core without one)."""
        t, sp = self.t, "  " * depth
        return [f"{sp}const long long kiln_m0 = kiln_mi * {t.m}, kiln_n0 = kiln_ni * {t.n};",
                f"{sp}const long long kiln_mm = kiln_mi >= kiln_mt ? 0 : (m - kiln_m0 < {t.m} ? m - kiln_m0 : {t.m});",
                f"{sp}const long long kiln_nn = n - kiln_n0 < {t.n} ? n - kiln_n0 : {t.n};"]

    def body(self) -> list:
        """The kernel: output tiles over the tasks (shared: groups of 4 row tiles over clusters)."""
        cl = "KILN_MLU_CLUSTER"
        if self.t.shared:
            loop = [f"  const long long kiln_mg = (kiln_mt + {cl} - 1) / {cl};",
                    f"  for (long long kiln_it = clusterId; kiln_it < nb * kiln_nt * kiln_mg; kiln_it += taskDim / {cl}) {{",
                    "    const long long v_bidx = kiln_it / (kiln_nt * kiln_mg), kiln_ni = kiln_it / kiln_mg % kiln_nt;",
                    f"    const long long kiln_mi = kiln_it % kiln_mg * {cl} + coreId;"]
            finish = ["    if (kiln_mm > 0) {", *self.finish(3), "    }"]
        else:
            loop = ["  for (long long kiln_it = taskId; kiln_it < nb * kiln_mt * kiln_nt; kiln_it += taskDim) {",
                    "    const long long v_bidx = kiln_it / (kiln_mt * kiln_nt), kiln_mi = kiln_it / kiln_nt % kiln_mt;",
                    "    const long long kiln_ni = kiln_it % kiln_nt;"]
            finish = self.finish(2)
        return [*self.declarations(), *loop, *self.tile_bounds(2), *self.k_loop(2), *finish,
                "    (void)v_bidx;", "  }"]

    def tasks(self) -> str:
        """The host expression of the kernel's task count (``kiln_tasks`` rounds to clusters)."""
        x, g, t = self.x, self.g, self.t
        batch = f"({x(g.batch)})" if g.batch is not None else "1LL"
        mt, nt = f"((({x(g.m)}) + {t.m - 1}) / {t.m})", f"((({x(g.n)}) + {t.n - 1}) / {t.n})"
        if t.shared:
            return f"kiln_tasks({MLU370.cores_per_cluster}LL * {batch} * {nt} * (({mt} + 3) / 4))"
        return f"kiln_tasks({batch} * {mt} * {nt})"


def scalar_lines(x, stmts, g: K.Gemm, ct: str) -> list:
    """C_b = A'_b B'_b as scalar dot products on GDRAM, tasks striding over (batch item, row):
    the GEMMs the matrix intrinsic does not take (dtypes other than float32)."""
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
        lines += [f"      const {ct} v_acc = acc_;", *stmts.lines(g.epilogue, 3)]
    else:
        out = f"{c.ident(g.c.buffer, 'b_')}[({x(g.c.offset)}) + v_bidx * {bs(g.c)} + row * ({x(g.c.ld)}) + col]"
        lines.append(f"      {out} = {out + ' + ' if g.accumulate else ''}acc_;")
    return lines + ["      (void)v_row; (void)v_col;", "    }", "  }"]


def gemm_kernel(x, stmts, g: K.Gemm, buffers: dict, name: str) -> tuple:
    """``(body lines, task count expression)`` of the Union1 kernel computing ``g``."""
    if g.c.transposed:
        raise NotImplementedError(f"gemm {name}: a transposed C is not supported by the MLU backend yet")
    if matmul_eligible(g, buffers):
        lines = GemmLines(x, stmts, g, plan_tiles(g))
        return lines.body(), lines.tasks()
    batch = x(g.batch) if g.batch is not None else "1LL"
    return scalar_lines(x, stmts, g, c.ctype(buffers[g.c.buffer].dtype)), f"kiln_tasks(({batch}) * ({x(g.m)}))"

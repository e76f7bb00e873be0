"""A ``Gemm``'s fused epilogue (render_gemm.py, way 1): the module's shared engine and the
epilogue functions its tiles call.

A module holds one ``kiln_sgemm`` variant (``shared_engine``) for every GEMM it contains;
each fused epilogue becomes two functions (full tile, edge tile) passed to it by address:

    void epilogue(ptr ctx, i64 row, i64 col, ptr tile, i64 rows[, <VEC x i1> mask_j...])

``tile`` holds the MR x NR accumulators (row-major, NR floats a row, on the tile function's
stack); the function runs the epilogue on the first ``rows`` rows, NR/VEC vectors a row,
in one loop over the vectors (the epilogue rendered once: half the code of a loop over rows
unrolled over a row's vectors, for the same speed), lanes past N masked on edge tiles, and
writes back the value stored to C where the epilogue has one.  One call per tile: the context (buffer pointers, captured values) is
loaded once and the call's clobbering of every vector register costs one spill of the tile,
not one per accumulator vector.  The engine then stores the tile into C, unless the epilogue
consumes it (``CONSUME_C``: C is scratch and the epilogue does not store to it).

Each vector of the epilogue also prefetches the line of every row-major operand it reads or
writes (``streams``: an optimizer's m, v and weights, a second output) one tile (MR rows)
below: the engine walks an MC block down a column panel, touching each row 128 bytes at a
time, which the hardware prefetchers do not follow.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ...ir.types import int64
from ...lower import kernel_ir as K
from .affine import constant_step, lane_stride, same_index
from .exprs import Lanes
from .gemm import ENGINE_PREFIX, Epilogue, emit_sgemm
from .gemm_kernel import Indirect, c64, counted_loop, fptr, if_then_values, imin, opaque, prefetch
from .vals import F32, I32, I64, PTR, broadcast, memory_type
from .walk import GEMM_VARS, all_exprs, iter_exprs, iter_stmts

#: the shared engine's last argument: store the tile into C, or leave C to the epilogue.
KEEP_C, CONSUME_C = ir.Constant(I32, 1), ir.Constant(I32, 0)
#: how many tiles ahead (down a column panel) an epilogue prefetches its operands.
PREFETCH_TILES = 1


def epilogue_type(cfg, masked: bool) -> ir.FunctionType:
    """``void (ctx, row, col, tile, rows[, one column mask per accumulator vector of a row])``."""
    masks = [ir.VectorType(ir.IntType(1), cfg.vec)] * (cfg.nr // cfg.vec) if masked else []
    return ir.FunctionType(ir.VoidType(), [PTR, I64, I64, PTR, I64, *masks])


def shared_engine(r):
    """The module's engine for the renderer's GEMM blocking (:func:`module_engine`)."""
    return module_engine(r.module, r.options.gemm)


def module_engine(module: ir.Module, cfg):
    """One ``kiln_sgemm`` variant per module whose tiles call the epilogue functions passed as
    arguments (context, full-tile function, edge-tile function, M, keep C), or none when
    they are null: every GEMM of the module shares it, so a module holds one copy of the
    engine however many epilogues it has.  With ``CONSUME_C`` the epilogue's results are not
    stored into C (the last K block does not touch C at all).  Emitted on first use."""
    cache = module.__dict__.setdefault("_kiln_gemm_shared", {})
    if cfg not in cache:
        fn = emit_sgemm(module, module.get_unique_name(f"{ENGINE_PREFIX}_epilogue"), cfg,
                        Epilogue(emit=_call_per_tile, extra_args=[PTR, PTR, PTR, I64, I32],
                                 keeps_c=lambda b, args: b.icmp_signed("!=", args[4], CONSUME_C)))
        fn.linkage = "hidden"  # not exported; called across the objects of a split module
        cache[cfg] = fn
    return cache[cfg]


def _call_per_tile(b, tctx):
    """The engine's side (an ``Epilogue.emit``): the tile to the stack, one call of the
    full- or edge-tile function (rows past M not passed), the tile back; skipped when the
    functions are null."""
    cfg = tctx.cfg
    ctx, full, masked, m = tctx.args[:4]
    nv = cfg.nr // cfg.vec
    vty = ir.VectorType(F32, cfg.vec)
    slot = _tile_slot(b, cfg)

    def run(flat):
        at = [fptr(b, slot, c64(i * cfg.vec)) for i in range(len(flat))]
        for v, p in zip(flat, at):
            b.store(v, p, align=64)
        fn = Indirect(masked if tctx.masked else full, epilogue_type(cfg, tctx.masked))
        rows = imin(b, c64(cfg.mr), b.sub(m, tctx.row)) if tctx.masked else c64(cfg.mr)
        b.call(fn, [ctx, tctx.row, tctx.col, slot, rows, *(tctx.col_masks if tctx.masked else [])])
        return [b.load(p, typ=vty, align=64) for p in at]
    flat = [v for row in tctx.accs for v in row]
    flat = if_then_values(b, b.icmp_unsigned("!=", full, ir.Constant(PTR, None)), run, flat)
    return [flat[i * nv:(i + 1) * nv] for i in range(cfg.mr)]


def _tile_slot(b, cfg):
    """The tile function's stack slot for MR x NR floats (one per function, shared by its
    full- and edge-tile paths; in the entry block: a fixed slot, not a dynamic one)."""
    fn = b.block.parent
    if getattr(fn, "kiln_tile_slot", None) is None:
        at_entry = ir.IRBuilder()
        at_entry.position_at_start(fn.entry_basic_block)
        slot = at_entry.alloca(ir.ArrayType(F32, cfg.mr * cfg.nr))
        slot.align = 64
        fn.kiln_tile_slot = opaque(slot)
    return fn.kiln_tile_slot


def epilogue_fn(r, g: K.Gemm, c_index, names, ctx_t, masked: bool) -> ir.Function:
    """The epilogue of one tile as a function (see the module doc); it reads bufs, N, bidx
    and the captured values ``names`` from the context struct ``ctx_t``.  ``c_index``: C's
    element, whose store becomes the value written back into the tile."""
    cfg = r.options.gemm
    fn = ir.Function(r.module, epilogue_type(cfg, masked), r.module.get_unique_name(f"{r.fn.name}.epilogue"))
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx, row0, col0, tile_ptr, rows = fn.args[:5]
    fields = [b.load(b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, i)], source_etype=ctx_t), typ=t)
              for i, t in enumerate(ctx_t.elements)]
    bufs, batch, bidx = fields[:3]
    tile = r.derive(fn, b, None, bufs, batch, None, None, dict(zip(names, fields[3:])))
    tile.preload(sorted({e.buffer for e in loads_and_stores(g.epilogue)}))
    nv, vty = cfg.nr // cfg.vec, ir.VectorType(F32, cfg.vec)

    def one_vector(b, i, _):  # the tile's i-th accumulator vector: row i / nv, vector i % nv
        r, j = b.udiv(i, c64(nv)), b.urem(i, c64(nv))
        row, col = b.add(row0, r), b.add(col0, b.mul(j, c64(cfg.vec)))
        at = fptr(b, tile_ptr, b.mul(i, c64(cfg.vec)))
        mask = _pick(b, j, fn.args[5:]) if masked else None
        tile.lanes, tile.lets = Lanes("col", cfg.vec, mask), {}
        tile.intercept, tile.intercepted = (g.c.buffer, c_index), None
        _prefetch_ahead(tile, g, {"row": row, "col": col, "bidx": bidx}, cfg.mr * PREFETCH_TILES)
        acc = b.load(at, typ=vty, align=64)
        tile.scoped(g.epilogue, {"acc": acc, "row": row, "bidx": bidx, "col": tile.lane_values(col)})
        if tile.intercepted is not None:
            b.store(broadcast(b, tile.intercepted, cfg.vec), at, align=64)
        return []
    counted_loop(b, c64(0), b.mul(rows, c64(nv)), c64(1), one_vector, name="vector")
    b.ret_void()
    return fn


def _pick(b, j, options):
    """``options[j]`` for a run-time index ``j`` (a chain of selects; the options are few)."""
    out = options[0]
    for k in range(1, len(options)):
        out = b.select(b.icmp_unsigned("==", j, c64(k)), options[k], out)
    return out


def streams(g: K.Gemm):
    """``(buffer, index, written)`` of each distinct row-major operand of the epilogue other
    than C: unit stride along ``col``, a constant step along ``row``, an index of the tile's
    variables only (no Let) -- an optimizer's state, a second output."""
    out = []
    for e in loads_and_stores(g.epilogue):
        if e.buffer == g.c.buffer or not {v.name for v in iter_exprs(e.index) if isinstance(v, K.Var)} <= set(GEMM_VARS):
            continue
        if lane_stride(e.index, "col") != 1 or not constant_step(e.index, "row"):
            continue
        same = [i for i, (buf, idx, _) in enumerate(out) if buf == e.buffer and same_index(idx, e.index)]
        written = isinstance(e, K.Store)
        if same:
            buf, idx, w = out[same[0]]
            out[same[0]] = (buf, idx, w or written)
        else:
            out.append((e.buffer, e.index, written))
    return out


def _prefetch_ahead(tile, g, bind, rows):
    """Prefetch each of the epilogue's ``streams`` at ``rows`` rows below this vector
    (``bind``: the scalar row, first column and batch index), for writing where it stores."""
    env = tile.env
    tile.env = {**env, **bind}
    try:
        for name, index, written in streams(g):
            ptr, dtype = tile.buffer(name)
            step = K.Const(rows * constant_step(index, "row"), int64)
            idx = tile.emit(K.Op("add", (index, step), int64))
            prefetch(tile.b, tile.module, tile.b.gep(ptr, [idx], source_etype=memory_type(dtype)), write=written)
    finally:
        tile.env = env


def loads_and_stores(epi):
    """The epilogue's stores and loads (each has ``buffer`` and ``index``)."""
    out = [s for s in iter_stmts(epi) if isinstance(s, K.Store)]
    return out + [e for e in all_exprs(epi) if isinstance(e, K.Load)]

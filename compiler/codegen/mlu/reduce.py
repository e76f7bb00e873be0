"""Reductions on one MLU core's vector lanes (docs/codegen-mlu.md, "Full reductions and row sums"):
``full_reduction`` (every element of a tensor into one scalar) and ``column_reduction``
(the rows of a matrix added into one row: a bias gradient).

The kernel shape it takes: float32 accumulators declared (``DeclareAcc``), one loop ``i`` over
``[start, stop)`` whose body accumulates (``add``, ``mul``, ``max``, ``min``) float32
expressions of loads at ``x[i]``, or one inner loop ``j`` over ``[0, C)`` doing so at
``x[i * C + j]`` (a contiguous range of elements either way), then scalar statements using the
results (a mean's division, ``l2_loss``'s halving, the stores); elementwise stores at the
element index fused into the loop are vector stores through output tiles.  The element range streams
through double-buffered 1024-element NRAM tiles (``pipeline.tile_loop``); each accumulator is
1024 lanes: every tile's values (their padding lanes set to the combine's identity) are
combined lane by lane, then a halving tree of the same intrinsic folds the lanes to 32 (one
128-byte group), and scalar code folds those in order into the declared initial value.  The
sum is reassociated (lane-wise, then a tree): within the op table's tolerance of the scalar
order, not bit for bit (products likewise); max and min are exact.  One task (a Block
kernel): partial results of several cores would need a second pass (not done yet).
"""
from __future__ import annotations

from ...ir.types import as_dtype
from ...lower import kernel_ir as K
from ..c import exprs as c
from .staging import accesses, retarget
from .vector import ACCUMULATE, F32, LANES, ROW_ELEMS, Emitter, NotVector, VectorBody, flatten

ELEMENT = K.Var("kiln_e", as_dtype("int64"))  # the element index of the flattened range
IDENTITY = {"add": 0.0, "mul": 1.0, "max": float("-inf"), "min": float("inf")}
TILE = 1024


def _shape(body: list):
    """``(accumulators, loop, inner loop or None, statements after)`` of a full reduction, or None."""
    k = 0
    while k < len(body) and isinstance(body[k], K.DeclareAcc):
        k += 1
    accs, rest = body[:k], body[k:]
    if not accs or not rest or not isinstance(rest[0], K.For) or any(a.var.dtype != F32 for a in accs):
        return None
    loop, after = rest[0], rest[1:]
    inner = flatten(loop.body)
    if len(inner) == 1 and isinstance(inner[0], K.For):
        j = inner[0]
        if not (j.start == K.Const(0, j.var.dtype) and isinstance(j.stop, K.Const) and int(j.stop.value) > 0):
            return None
        return accs, loop, j, after
    return accs, loop, None, after


def full_reduction(body: list, buffers: dict, x, scalar_lines):
    """``(staged buffers, lines before the tile loop, VectorBody, lines after, first element,
    element count)`` for a full-reduction kernel body, or None (elementwise stores at the
    element index fused into it stream back through output tiles).  ``scalar_lines(stmts, depth)``
    renders the statements after the loop as scalar code."""
    shape = _shape(body)
    if shape is None:
        return None
    accs, loop, inner, after = shape
    i64 = loop.var.dtype
    cols = int(inner.stop.value) if inner else 1
    index = K.Op("add", (K.Op("mul", (loop.var, K.Const(cols, i64)), i64), inner.var), i64) if inner else loop.var
    stmts = flatten(inner.body if inner else loop.body)
    found = {}
    for name, at, _ in accesses(stmts, []):
        found.setdefault(name, set()).add(at)
    staged = {n for n, at in found.items() if at == {index} and buffers[n].dtype == F32}
    stored = {n for n, _, is_store in accesses(stmts, []) if is_store}
    if not stored <= staged or {n for n, _, _ in accesses(after, [])} & staged:
        return None
    stmts = retarget(stmts, staged, {index: (1, ELEMENT)})
    if any(isinstance(s, K.Accumulate) and s.combine not in ACCUMULATE for s in stmts):
        return None
    flat = K.For(ELEMENT, K.Const(0, i64), K.Const(0, i64), K.Block(stmts))
    loaded = {n for n, _, is_store in accesses(stmts, []) if not is_store}
    vb = VectorBody(rows=TILE, cols=1, loads=sorted(staged & loaded), stores=sorted(stored),
                    units={n: 1 for n in staged})
    em = Emitter(flat, vb.units, x, vb, None)
    em.uses = {}
    combine = {}
    try:
        for a in accs:
            em.env[a.var] = ("vec", em.temp())
            combine[a.var] = None
        for s in stmts:
            if isinstance(s, K.Accumulate) and s.var in combine and combine[s.var] in (None, s.combine):
                combine[s.var] = s.combine
                v = em.vec(s.value)
                em.emit(f"for (long long kiln_t = kiln_len; kiln_t < {TILE}; ++kiln_t) ({v})[kiln_t] = "
                        f"{x(K.Const(IDENTITY[s.combine], F32))};  // padding lanes: the identity")
                lanes = em.env[s.var][1]
                em.emit(f"{ACCUMULATE[s.combine]}({lanes}, {lanes}, {v}, {TILE});")
            elif isinstance(s, (K.Let, K.Store)):
                em.stmt(s)
            else:
                raise NotVector(type(s).__name__)
    except NotVector:
        return None
    if None in combine.values() or not vb.loads:
        return None
    init, finish = [], []
    for a in accs:
        lanes, op = em.env[a.var][1], combine[a.var]
        init.append(f"  __bang_write_value({lanes}, {TILE}, (float)({x(K.Const(IDENTITY[op], F32))}));")
        finish += [f"  for (int kiln_h = {TILE // 2}; kiln_h >= {LANES}; kiln_h /= 2) "
                   f"{ACCUMULATE[op]}({lanes}, {lanes}, {lanes} + kiln_h, kiln_h);"]
        acc = x(a.var)
        finish += [f"  float {acc} = (float)({x(a.init)});",
                   f"  for (int kiln_t = 0; kiln_t < {LANES}; ++kiln_t) "
                   f"{acc} = (float)({x.combine(op, acc, f'{lanes}[kiln_t]', F32)});"]
    first = f"({x(loop.start)}) * {cols}LL"
    count = f"(({x(loop.stop)}) - ({x(loop.start)})) * {cols}LL"
    return sorted(staged), init, vb, finish + scalar_lines(K.Block(after), 1), first, count


def column_reduction(loop: K.For, buffers: dict, x):
    """``for i: for j in [0, C): o[j] = o[j] + f(x[i * C + j], ...)`` (a reduction over the
    outer axis, e.g. a bias gradient) with ``C`` a multiple of 32 lanes: ``(staged buffers,
    lines before the tile loop, VectorBody, lines after, first row, row count)`` or None.  One task
    streams the rows through double-buffered tiles and adds each row's ``f`` (C lanes, the row
    read in place) to a C-lane accumulator — the scalar loop's order for every column, so the
    sums are equal bit for bit; ``o`` is read into the accumulator first and written back last."""
    body = flatten(loop.body)
    if len(body) != 1 or not isinstance(body[0], K.For):
        return None
    jl = body[0]
    cols = int(jl.stop.value) if isinstance(jl.stop, K.Const) else 0
    stmts = flatten(jl.body)
    if jl.start != K.Const(0, jl.var.dtype) or cols <= 0 or cols % LANES or cols * 2 > ROW_ELEMS \
            or len(stmts) != 1 or not isinstance(stmts[0], K.Store):
        return None
    st, i64 = stmts[0], loop.var.dtype
    out = K.Load(st.buffer, jl.var, F32)
    if st.index != jl.var or buffers[st.buffer].dtype != F32 or not (
            isinstance(st.value, K.Op) and st.value.kind == "add" and out in st.value.args):
        return None
    term = st.value.args[1] if st.value.args[0] == out else st.value.args[0]
    index = K.Op("add", (K.Op("mul", (loop.var, K.Const(cols, i64)), i64), jl.var), i64)
    found = {}
    for name, at, _ in accesses(term, []):
        found.setdefault(name, set()).add(at)
    staged = sorted(n for n, at in found.items() if at == {index} and buffers[n].dtype == F32)
    if not staged or st.buffer in found:
        return None
    lanes = VectorBody(rows=cols, cols=1, loads=staged, stores=[], units={n: 1 for n in staged})
    em = Emitter(K.For(ELEMENT, K.Const(0, i64), K.Const(0, i64), K.Block([])), lanes.units, x, lanes, None)
    try:
        v = em.vec(retarget(term, set(staged), {index: (1, ELEMENT)}))
    except NotVector:
        return None
    rows = ROW_ELEMS // cols
    acc, g_out = f"kiln_v{lanes.temps}", c.ident(st.buffer, "g_")
    vb = VectorBody(rows=rows, cols=cols, loads=staged, stores=[], units={n: cols for n in staged},
                    transposed=False, text=[
                        "    for (long long kiln_r = 0; kiln_r < kiln_len; ++kiln_r) {",
                        *[f"      float* {c.ident(n, 'kiln_in_')} = {c.ident(n, 'l_')} + kiln_p * {rows * cols}"
                          f" + kiln_r * {cols};" for n in staged],
                        *["  " + line for line in lanes.text],
                        f"      __bang_add({acc}, {acc}, {v}, {cols});", "    }"])
    before = [f"  KILN_NRAM(float, kiln_v{k}, {cols});" for k in range(lanes.temps + 1)]
    before.append(f"  __memcpy({acc}, {g_out}, {cols} * sizeof(float), GDRAM2NRAM);")
    after = [f"  __memcpy({g_out}, {acc}, {cols} * sizeof(float), NRAM2GDRAM);"]
    return staged + [st.buffer], before, vb, after, x(loop.start), f"({x(loop.stop)}) - ({x(loop.start)})"

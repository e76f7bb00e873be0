"""The tile loop of a vectorized split loop (``vector.VectorBody``), double-buffered
(docs/codegen-mlu.md, "Double buffering").

Each task walks its span in tiles of ``R`` iterations.  With more than one tile possible, the
copies run asynchronously into ping-pong NRAM slots, mlu-ops' 3-stage pipeline
(``kernels/unary_op/unary_op_3pipeline.h``): while tile ``k`` is computed from slot
``k % 2``, tile ``k + 1`` is loaded into the other slot and tile ``k - 1``'s results are
stored from the other output slot; one ``__sync()`` per tile waits for both before the slots
swap.  A loop known to fit one tile uses plain ``__memcpy``s and single slots.

Per staged buffer (``l_``: input slots, ``t_``: a row input transposed to columns,
``s_``: a row output in columns, ``o_``: output slots) and ``R``-lane temporaries ``kiln_v<k>``.
"""
from __future__ import annotations

from ..c import exprs as c


def _columns(vb, n) -> bool:
    """Whether buffer ``n``'s tile is transposed to columns (``t_``/``s_``) for the compute."""
    return vb.units[n] > 1 and vb.transposed


def nram_floats(vb, slots: int = 2) -> int:
    """float32 elements of NRAM the tile loop declares (inputs/outputs ``slots`` deep)."""
    total = vb.temps * vb.rows
    for n in set(vb.loads) | set(vb.stores):
        tile = vb.rows * vb.units[n]
        total += ((n in vb.loads) + (n in vb.stores)) * slots * tile
        total += ((n in vb.loads) + (n in vb.stores)) * tile * _columns(vb, n)
    return total


def _declare(vb, slots: int) -> list:
    """The ``KILN_NRAM`` tiles of the loop."""
    lines = []
    for n in vb.loads:
        tile = vb.rows * vb.units[n]
        lines.append(f"  KILN_NRAM(float, {c.ident(n, 'l_')}, {slots * tile});")
        if _columns(vb, n):
            lines.append(f"  KILN_NRAM(float, {c.ident(n, 't_')}, {tile});")
    for n in vb.stores:
        tile = vb.rows * vb.units[n]
        lines.append(f"  KILN_NRAM(float, {c.ident(n, 'o_')}, {slots * tile});")
        if _columns(vb, n):
            lines.append(f"  KILN_NRAM(float, {c.ident(n, 's_')}, {tile});")
    lines += [f"  KILN_NRAM(float, kiln_v{k}, {vb.rows});" for k in range(vb.temps)]
    return lines


def _copies(vb, names, tile: str, slot: str, start: str, load: bool, copy: str) -> list:
    """The copies of tile ``tile`` (its first iteration ``kiln_j0``, ``kiln_m`` iterations)
    between GDRAM and slot ``slot``."""
    if not names:
        return []
    lines = []
    for n in names:
        u, buf = vb.units[n], c.ident(n, "l_" if load else "o_")
        nram, gdram = f"{buf} + ({slot}) * {vb.rows * u}", f"{c.ident(n, 'g_')} + (({start}) + kiln_j0) * {u}LL"
        ends = (nram, gdram) if load else (gdram, nram)
        lines.append(f"      {copy}({ends[0]}, {ends[1]}, kiln_m * {u}LL * sizeof(float), "
                     f"{'GDRAM2NRAM' if load else 'NRAM2GDRAM'});")
    return [f"    {{  // tile {tile}", f"      const long long kiln_j0 = kiln_lo + ({tile}) * {vb.rows};",
            f"      const long long kiln_m = kiln_hi - kiln_j0 < {vb.rows} ? kiln_hi - kiln_j0 : {vb.rows};",
            *lines, "    }"]


def _compute(vb) -> list:
    """One tile's compute on slot ``kiln_p``: inputs transposed to columns, the intrinsics,
    row outputs transposed back."""
    lines = []
    for n in vb.loads:
        u = vb.units[n]
        if u == 1:
            lines.append(f"    float* {c.ident(n, 'kiln_in_')} = {c.ident(n, 'l_')} + kiln_p * {vb.rows};")
        elif _columns(vb, n):
            lines.append(f"    __bang_transpose({c.ident(n, 't_')}, {c.ident(n, 'l_')} + kiln_p * {vb.rows * u}, "
                         f"{vb.rows}, {u});")
    lines += [f"    float* {c.ident(n, 'kiln_out_')} = {c.ident(n, 'o_')} + kiln_p * {vb.rows};"
              for n in vb.stores if vb.units[n] == 1]
    lines += vb.text
    lines += [f"    __bang_transpose({c.ident(n, 'o_')} + kiln_p * {vb.rows * vb.units[n]}, {c.ident(n, 's_')}, "
              f"{vb.units[n]}, {vb.rows});" for n in vb.stores if _columns(vb, n)]
    return lines


def tile_loop(vb, start: str, pipelined: bool, before=()) -> list:
    """The lines after the task's span (``kiln_lo``, ``kiln_hi``) is known; ``before``: lines
    placed after the tiles' declarations (e.g. accumulators' initial values)."""
    r = vb.rows
    lines = _declare(vb, 2 if pipelined else 1) + list(before)
    lines.append(f"  const long long kiln_tiles = kiln_hi > kiln_lo ? (kiln_hi - kiln_lo + {r - 1}) / {r} : 0;")
    head = ["  for (long long kiln_k = 0; kiln_k < kiln_tiles; ++kiln_k) {",
            f"    const long long kiln_i0 = kiln_lo + kiln_k * {r};",
            f"    const long long kiln_len = kiln_hi - kiln_i0 < {r} ? kiln_hi - kiln_i0 : {r};",
            "    (void)kiln_len;"]
    if not pipelined:
        return lines + head + ["    const long long kiln_p = 0;",
                               *_copies(vb, vb.loads, "kiln_k", "0", start, True, "__memcpy"),
                               *_compute(vb),
                               *_copies(vb, vb.stores, "kiln_k", "0", start, False, "__memcpy"), "  }"]
    first = _copies(vb, vb.loads, "0", "0", start, True, "__memcpy_async")
    return lines + ["  if (kiln_tiles > 0) {", *first, "  }", "  __sync();", *head,
                    "    const long long kiln_p = kiln_k % 2;",
                    "    if (kiln_k + 1 < kiln_tiles) {",
                    *["  " + x for x in _copies(vb, vb.loads, "kiln_k + 1", "1 - kiln_p", start, True,
                                                "__memcpy_async")],
                    "    }",
                    *_compute(vb),
                    "    __sync();  // tile k + 1 loaded, tile k - 1 stored: the slots swap",
                    *_copies(vb, vb.stores, "kiln_k", "kiln_p", start, False, "__memcpy_async"),
                    "  }", "  __sync();"]

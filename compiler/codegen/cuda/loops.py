"""Rendering of a kernel's loop launches (the plan of compiler/lower/launches.py, written as
``Kernel.launches`` by the scheduling pass) as ``__global__`` functions and launch lines.

``LoopLaunches`` is the part of ``kernels.KernelRenderer`` that renders ``K.Grid`` (one
grid-stride loop over the flattened ``par`` loops, ``kernels.cu.j2``), ``K.BlockReduce``
(``reduce.cu.j2``), ``K.Ordered`` (``checked.cu.j2``, with ``RecordedChecks``) and
``K.Serial`` (one thread; consecutive ones share a launch).  Nothing here decides which
loops run in parallel: that is in the plan.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...lower import kernel_ir as K
from ...lower.footprint import walk
from .exprs import Stmts, ctype, ident


@dataclass
class KernelFunction:
    """One ``__global__`` function: its text pieces for ``kernels.cu.j2``."""

    name: str
    decls: str = ""
    body: str = ""
    grid: bool = False
    stop: str = ""
    gemm: dict = None
    reduce: dict = None
    ordered: dict = None


class LoopLaunches:
    """Renders loop launches; the host class (``KernelRenderer``) provides ``x`` (expressions),
    ``stmts``, ``recorded``, ``decls(tree, early_exit)``, ``launches`` and ``open_serial``."""

    def sequential(self, name, group: K.Serial) -> KernelFunction:
        """A one-thread function (later one-thread launches may be appended to it)."""
        self.launches.append(f"KILN_LAUNCH({name}, 1, 1, stream, b, N);")
        return KernelFunction(name, self.decls(group.stmts), "\n".join(self.stmts.block(group.stmts, 1)))

    def append_serial(self, k: K.Kernel, group: K.Serial) -> None:
        """Consecutive one-thread launches become one: the same thread runs them in program
        order (a failed check returns, skipping the rest, as separate launches would)."""
        fn = self.open_serial
        if not fn.body.startswith("  {"):  # first merge: scope the first body's pointers too,
            *pointers, exit_line = fn.decls.split("\n")  # so no two __restrict__ names overlap
            fn.body = "\n".join(["  {", *pointers, fn.body, "  }"])
            fn.decls = exit_line
        fn.body += "\n".join(["", f"  {{  // + kernel {k.name}", self.decls(group.stmts, early_exit=False)]
                             + self.stmts.block(group.stmts, 2) + ["  }"])

    def trip(self, loops) -> str:
        """C expression of the product of the loops' trip counts."""
        return " * ".join(f"(({self.x(f.stop)}) - ({self.x(f.start)}))" for f in loops) or "1LL"

    def decode(self, loops, flat, pad) -> list:
        """Lines binding the loop variables of ``loops`` from the flat index ``flat``
        (row-major over their trip counts)."""
        x, lines, rest = self.x, [], flat
        trips = [f"(({x(f.stop)}) - ({x(f.start)}))" for f in loops]
        for i, f in enumerate(loops):
            v = ident(f.var.name, "v_")
            inner = " * ".join(trips[i + 1:])
            if inner:
                lines.append(f"{pad}const long long {v} = ({x(f.start)}) + {rest} / ({inner});")
                lines.append(f"{pad}const long long {v}_rest = {rest} % ({inner});")
                rest = f"{v}_rest"
            else:
                lines.append(f"{pad}const long long {v} = ({x(f.start)}) + {rest};")
        return lines

    def grid_loop(self, name, plan: K.Grid) -> KernelFunction:
        """A grid-stride loop over the flattened ``par`` loops, ``KILN_BLOCK`` threads a block."""
        lines = self.decode(plan.par, "kiln_f", "    ") + self.stmts.block(plan.body, 2)
        total = self.trip(plan.par)
        self.launches.append(f"{{ const long long trip = {total}; if (trip > 0) "
                             f"KILN_LAUNCH({name}, kiln_blocks(trip), KILN_BLOCK, stream, b, N); }}")
        return KernelFunction(name, self.decls(plan.par + plan.body), "\n".join(lines), grid=True, stop=total)

    def reduce(self, name, plan: K.BlockReduce) -> KernelFunction:
        """One block per output; partial values combined by ``kiln_block_reduce``."""
        outs = self.trip(plan.par)
        checks = any(isinstance(s, K.Check) for s, _ in walk(plan.tail))
        reducers = []
        for var, combine in plan.reducers:
            ct = ctype(var.dtype)
            reducers.append({"name": ident(var.name, "v_"), "ctype": ct,
                             "combine": self.x.combine(combine, "kiln_a", "kiln_b", var.dtype)})
        info = {"outs": outs, "trip": self.trip(plan.red), "reducers": reducers, "lambda": checks,
                "head": "\n".join(self.decode(plan.par, "kiln_o", "    ") + self.stmts.block(plan.head, 2)),
                "body": "\n".join(self.decode(plan.red, "kiln_f", "      ") + self.stmts.block(plan.body, 3)),
                "tail": "\n".join(self.stmts.block(plan.tail, 4 if checks else 3))}
        self.launches.append(f"{{ const long long outs = {outs}, trip = {info['trip']}; if (outs > 0) KILN_LAUNCH_SYNC("
                             f"{name}, kiln_red_blocks(outs), kiln_red_threads(outs, trip), stream, b, N); }}")
        tree = plan.par + plan.head + plan.red + plan.body + plan.tail
        return KernelFunction(name, self.decls(tree, early_exit=False), reduce=info)

    def ordered(self, name, plan: K.Ordered) -> KernelFunction:
        """One block over the flattened loops in chunks, reporting the first failing iteration."""
        trip = self.trip(plan.loops)
        body = self.decode(plan.loops, "kiln_f", "        ") + self.recorded.block(plan.body, 4)
        self.launches.append(f"{{ const long long trip = {trip}; if (trip > 0) "
                             f"KILN_LAUNCH_SYNC({name}, 1, kiln_ord_threads(trip), stream, b, N); }}")
        return KernelFunction(name, self.decls(plan.loops + plan.body, early_exit=False),
                              ordered={"trip": trip, "body": "\n".join(body)})


class RecordedChecks(Stmts):
    """Statements of an ordered loop's iteration (``checked.cu.j2``): a failing ``Check``
    records its id, kind and value in the thread's ``kiln_cid``/``kiln_isf``/``kiln_fv``/
    ``kiln_iv`` and returns from the iteration's lambda; the block reports the first one."""

    def lines(self, s, depth) -> list:
        if not isinstance(s, K.Check):
            return super().lines(s, depth)
        cid = self.add_check(s.message, s.value.dtype)
        isf = s.value.dtype.is_floating
        value = f"kiln_fv = (double)({self.x(s.value)})" if isf else f"kiln_iv = (long long)({self.x(s.value)})"
        return [f"{'  ' * depth}if ({self.x(s.cond)}) {{ kiln_cid = {cid}; kiln_isf = {int(isf)}; {value}; return; }}"]

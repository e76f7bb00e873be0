"""The scheduling pass: which loops run in parallel and how, decided once for every backend.

``plan_program(program, caps) -> Program`` (docs/lowering.md, "Scheduling") plans every
kernel of a lowered program for the hardware a backend declares (``Capabilities``) and
writes the decisions into the kernel IR, so a renderer only renders them:

* a target with grid launches (``caps.blocks``, CUDA) gets ``Kernel.launches``: each
  kernel's top-level statements as ``Grid`` / ``BlockReduce`` / ``Ordered`` / ``Serial``
  launches and ``Gemm``s (``launches.launch_groups``: fission, the footprint proof,
  reductions, ordered check loops);
* a target that threads loops in place (the CPU's libgomp) gets ``For.parallel`` on the
  outermost loop of each top-level nest that the same analysis proves parallel and that is
  worth threading (``caps.min_parallel_work``), with ``For.work`` estimated for the
  renderer's run-time test.  Lowering's own ``parallel`` loops stay as they are.  When the
  renderer runs a Gemm inside a loop (``caps.nested_gemm``), convolution kernels go one
  batch item at a time on per-thread slots of their im2col matrix (``conv_chunks.py``).
  With ``caps.reduction_parts``, a loop updating a reduction's result in every iteration (a sum
  over leading axes) first becomes parallel parts over partial results and a combine loop
  in a fixed order (``split_reduce.split_reductions``; the partial buffers join the program's
  scratch region).

The input is not changed; the result records ``planned_for`` (the capabilities' name) and
a one-line ``plan_summary``.  Planning a program again for the same capabilities returns
it unchanged.  ``sequential(launch)`` gives a launch's meaning as plain statements.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import kernel_ir as K
from .capabilities import Capabilities
from .conv_chunks import MIN_ITEM_WORK, split_conv
from .footprint import stmt_list, walk
from .kernel_walk import static_trip, stmt_work
from .launches import fission, independent_loops, launch_groups, nest
from .split_reduce import Parts, split_reductions

KINDS = {K.Grid: "grid", K.BlockReduce: "block reduce", K.Ordered: "ordered", K.Serial: "serial", K.Gemm: "gemm"}


class ScheduleError(ValueError):
    """A program cannot be planned for these capabilities (it was planned for others)."""


@dataclass
class _Stats:
    """What the pass decided, for its one-line summary."""

    launches: dict = field(default_factory=dict)  # launch kind -> count
    proven: int = 0  # loops run in parallel that lowering had not flagged
    split: int = 0  # extra loops made by fission
    parted: int = 0  # reduction loops split into parts (split_reduce.py)

    def line(self, caps: Capabilities, program: K.Program) -> str:
        if caps.grid_launches:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.launches.items()))
            total = sum(self.launches.values())
            return (f"{caps.name}: {total} launches ({kinds or 'none'}); {self.proven} loops proven parallel, "
                    f"{self.split} split off")
        threaded = sum(isinstance(s, K.For) and s.parallel for k in program.kernels for s, _ in walk(k.body))
        parted = f", {self.parted} reductions split into parts" if self.parted else ""
        return f"{caps.name}: {threaded} parallel loops, {self.proven} of them proven parallel here{parted}"


def plan_program(program: K.Program, caps: Capabilities) -> K.Program:
    """``program`` planned for ``caps`` (see the module docstring); a new Program."""
    if program.planned_for == caps.name:
        return program
    if program.planned_for:
        raise ScheduleError(f"program {program.name!r} is planned for {program.planned_for!r}, not {caps.name!r}")
    stats = _Stats()
    parts = Parts(program) if _splits(caps) else None
    kernels = [plan_kernel(k, program.buffers, caps, stats, parts) for k in program.kernels]
    planned = replace(program, kernels=kernels, planned_for=caps.name)
    if parts is not None and parts.count:
        planned = replace(planned, buffers=parts.buffers, scratch_static_bytes=parts.static_bytes)
    return replace(planned, plan_summary=stats.line(caps, planned))


def _splits(caps: Capabilities) -> bool:
    """Whether reductions over leading axes are split into parts (split_reduce.py)."""
    return not caps.grid_launches and caps.reduction_parts > 1


def plan_kernel(kernel: K.Kernel, buffers: dict, caps: Capabilities, stats: _Stats | None = None,
                parts: Parts | None = None) -> K.Kernel:
    """One kernel planned for ``caps``: with its launches, or with threaded loops (and, given
    ``parts``, where the program's partial results go, reductions split into parts)."""
    stats = stats if stats is not None else _Stats()
    body = kernel.body.body if isinstance(kernel.body, K.Block) else [kernel.body]
    if caps.grid_launches:
        return replace(kernel, launches=_launches(body, buffers, caps, stats))
    if caps.nested_gemm:
        parted = parts if parts is not None and _splits(caps) else None
        split = split_conv(kernel, buffers, caps.threads, caps.min_parallel_work * MIN_ITEM_WORK,
                           parted, caps.reduction_parts)
        if split is not kernel:
            return split
    if any(isinstance(s, (K.Let, K.DeclareAcc)) for s in body):
        return kernel  # top-level values the loops share
    new, partial = list(body), []
    if parts is not None and _splits(caps):
        before = parts.count
        new = split_reductions(new, buffers, caps, parts)
        stats.parted += parts.count - before
        partial, buffers = parts.kernel_buffers, parts.buffers  # read and written by the parts
    if caps.threads > 1:
        new = [_thread_nest(s, buffers, caps, stats) if isinstance(s, K.For) else s for s in new]
    if len(new) == len(body) and all(a is b for a, b in zip(new, body)):
        return kernel
    return replace(kernel, body=K.Block(new), reads=kernel.reads + partial, writes=kernel.writes + partial)


# ----------------------------------------------------------------------------- grid launches
def _launches(body: list, buffers: dict, caps: Capabilities, stats: _Stats) -> list:
    """The kernel's launches, counted into ``stats``."""
    if not caps.cooperative_blocks:
        raise ScheduleError(f"{caps.name}: grid launches need blocks of cooperating threads")
    groups = launch_groups(body, buffers)
    for s in body:
        if isinstance(s, K.For):
            stats.split += len(fission(s)) - 1
    for g in groups:
        kind = KINDS[type(g)]
        stats.launches[kind] = stats.launches.get(kind, 0) + 1
        spread = g.par if isinstance(g, (K.Grid, K.BlockReduce)) else []
        stats.proven += sum(not (f.parallel or f.vectorize) for f in spread)
    return groups


def sequential(launch) -> list:
    """A launch's meaning as plain statements, in an order the launch may run them in."""
    def around(loops, stmts):
        for f in reversed(loops):
            stmts = [replace(f, body=K.Block(stmts))]
        return stmts
    if isinstance(launch, K.Grid):
        return around(launch.par, list(launch.body))
    if isinstance(launch, K.BlockReduce):
        return around(launch.par, launch.head + around(launch.red, list(launch.body)) + launch.tail)
    if isinstance(launch, K.Ordered):
        return around(launch.loops, list(launch.body))
    if isinstance(launch, K.Serial):
        return list(launch.stmts)
    return [launch]  # a Gemm


# ----------------------------------------------------------------------------- threads in place
def _thread_nest(loop: K.For, buffers: dict, caps: Capabilities, stats: _Stats) -> K.For:
    """``loop`` with the outermost loop of its nest that is proven parallel marked so, when
    threading it pays; unchanged when lowering flagged one or nothing qualifies."""
    if any(isinstance(s, (K.Check, K.Gemm)) for s, _ in walk(loop)):
        return loop  # checks report the first failure in loop order
    if any(level.loop.parallel for level in nest(loop)[0]):
        return loop  # lowering's choice
    proven = independent_loops(loop, buffers)
    if not proven:
        return loop
    f = proven[0]  # inner loops have less work per thread team
    work = max(1, f.work, stmt_work(f.body))
    if not _pays(f, work, caps):
        return loop
    stats.proven += 1
    return _replace_loop(loop, f, replace(f, parallel=True, work=work))


def _pays(loop: K.For, work: int, caps: Capabilities) -> bool:
    """Whether a team of threads pays for ``loop``: enough work, or a trip count that grows
    with N (the renderer then tests ``trip * work`` at run time)."""
    trip = static_trip([loop])
    return trip is None or trip * work >= caps.min_parallel_work


def _replace_loop(tree: K.For, old: K.For, new: K.For) -> K.For:
    """``tree`` (a nest of ``[Lets..., For]`` levels) with its level ``old`` replaced."""
    if tree is old:
        return new
    stmts = stmt_list(tree.body)
    return replace(tree, body=K.Block(stmts[:-1] + [_replace_loop(stmts[-1], old, new)]))

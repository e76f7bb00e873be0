"""The loop-level kernel IR: what every backend renders (LLVM, CUDA C, MLU-style C).

A ``Program`` is the schedule of one entry point: buffers (feeds, state, fetches, arena
slots, constants, scratch) and kernels in order.  A ``Kernel`` is a statement tree over
scalar expressions — loops, loads and stores with index expressions, scalar ops named
like the IR's elementwise kinds, accumulations — or a ``Gemm`` (the GEMM engine) with an
optional elementwise epilogue.  Fusion and scheduling decisions are made before this
point; a renderer only translates.

Semantics (every renderer implements exactly this; ``kernel_interp.py`` is the reference):

* Buffers are flat, dense, row-major arrays of their dtype; ``Load``/``Store`` take a flat
  element index (i64).  bool elements are stored as one byte (0/1).  A renderer gets a
  pointer per buffer (the entry point computes them: feeds/fetches from the caller, state
  from the state, arena/scratch from the workspace, consts from the module's data).
* Index expressions are i64 scalar expressions over loop ``Var``s, ``Const``s and
  ``Batch()`` (the runtime batch size N), so one kernel serves every batch size.
* ``Op`` kinds are the IR's elementwise kinds with the reference interpreter's semantics
  (compiler/ir/ops/math.py): e.g. ``div`` floors for integers, ``mod`` is a floor modulo,
  comparisons give bool, ``select(c, a, b)``, ``maximum``/``minimum`` propagate NaN like
  numpy.  Index ops on i64: ``add sub mul`` (as above) and ``idiv``/``imod`` (operands are
  non-negative), ``imin``/``imax``.  ``Cast`` truncates float→int toward zero.
* ``For`` runs ``var`` over ``[start, stop)`` in order unless ``parallel`` (iterations are
  independent; the renderer may spread them over threads when ``(stop-start)*work`` is
  large) or ``vectorize`` (iterations are independent apart from ``Accumulate`` into
  accumulators declared outside the loop, which may be reassociated; the renderer may run
  several iterations as SIMD lanes).
* ``DeclareAcc``/``Accumulate`` are mutable scalars local to the enclosing block; ``Let``
  binds an immutable scalar for the rest of the block.  ``Check`` fails the kernel with
  KILN_ECHECK and its message; nothing after it in the kernel runs.
* A kernel reads the buffers in ``reads`` and writes those in ``writes``; a buffer may be
  in both only when each element is read before it is written by the same iteration
  (in-place updates planned by memory planning).
* The scheduling pass (``schedule.plan_program``) marks further loops ``parallel`` where it
  proves their iterations independent, and gives each kernel its ``launches`` when the
  target runs grids of thread blocks (``Launch`` nodes: grid, block reduction, ordered check
  loop, serial); ``Program.planned_for`` names the capabilities it planned for.
* Control flow lives between kernels (``Program.steps``): an ``IfStep`` runs its ``then`` or
  ``orelse`` steps as the 1-byte bool buffer ``pred`` holds 1 or 0 when it is reached; a
  ``WhileStep`` runs ``cond`` steps, reads ``pred``, and while it is 1 runs ``body`` steps
  and ``cond`` steps again.  A step is a kernel's index in ``Program.kernels`` or such a node;
  ``steps`` None means every kernel once, in order.  Kernels stay a flat list (each rendered
  once); only the step function — the host side — follows ``steps``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.types import DType, Sym


# ----------------------------------------------------------------------------- buffers
@dataclass(frozen=True)
class BufferDecl:
    """A tensor a kernel reads or writes.

    ``role``: "feed" | "fetch" | "state" | "arena" | "const" | "scratch".  ``shape`` may hold
    ``Sym`` dims; elements are dense row-major.  For "arena"/"scratch", ``space`` and
    ``offset`` give the planned location ("static": bytes; "batch": bytes per batch
    element).  For "state", ``key`` is the variable name; "feed"/"fetch" use their index.
    """

    name: str
    dtype: DType
    shape: tuple
    role: str
    space: str = ""
    offset: int = 0
    key: str = ""
    index: int = -1
    data: object = None  # numpy array for "const"

    def byte_size(self) -> tuple:
        """``(size, k)``: the buffer holds ``size * N**k`` bytes for batch size N."""
        size, syms = self.dtype.np.itemsize, 0
        for d in self.shape:
            syms += isinstance(d, Sym)
            size *= int(getattr(d, "coef", d))
        return size, syms


# ----------------------------------------------------------------------------- expressions
class Expr:
    """A scalar expression; ``dtype`` is its element type."""

    dtype: DType


@dataclass(frozen=True)
class Const(Expr):
    value: object
    dtype: DType


@dataclass(frozen=True)
class Var(Expr):
    """A loop index (i64) or a let-bound scalar."""

    name: str
    dtype: DType


@dataclass(frozen=True)
class Batch(Expr):
    """The runtime batch size N (i64)."""

    dtype: DType


@dataclass(frozen=True)
class Load(Expr):
    buffer: str
    index: Expr
    dtype: DType


@dataclass(frozen=True)
class Op(Expr):
    """A scalar op named like an IR elementwise kind ("add", "exp", "select", "less", ...)
    or an index op ("idiv", "imod", "imin", "imax")."""

    kind: str
    args: tuple
    dtype: DType


@dataclass(frozen=True)
class Cast(Expr):
    value: Expr
    dtype: DType


@dataclass(frozen=True)
class Random(Expr):
    """A draw of ``dist`` ("uniform" in (0,1), "normal", "truncated_normal", or "bits": the raw
    32-bit Philox word as an i64, e.g. for sort keys) for element
    ``index`` at ``step``: Philox4x32-10 word 0 with key (seed, seed2) and counter
    (index lo, index hi, step lo, step hi), mapped exactly as compiler/ir/ops/random.py does."""

    dist: str
    seed: int
    seed2: int
    index: Expr
    step: Expr
    dtype: DType


# ----------------------------------------------------------------------------- statements
class Stmt:
    pass


@dataclass
class Block(Stmt):
    body: list = field(default_factory=list)


@dataclass
class For(Stmt):
    """``for var in range(start, stop)``; ``parallel`` spreads iterations over threads,
    ``vectorize`` tells the renderer the iterations are independent and unit-stride."""

    var: Var
    start: Expr
    stop: Expr
    body: Stmt
    parallel: bool = False
    vectorize: bool = False
    work: int = 1  # rough scalar ops per iteration, for the renderer's threading decision


@dataclass
class Let(Stmt):
    """Bind a scalar (immutable) for the statements that follow in the enclosing block."""

    var: Var
    value: Expr


@dataclass
class Accumulate(Stmt):
    """``var = combine(var, value)``: a mutable scalar accumulator ("add", "max", "min", "mul",
    "and", "or"); declared with an initial value by ``DeclareAcc``."""

    var: Var
    combine: str
    value: Expr


@dataclass
class DeclareAcc(Stmt):
    var: Var
    init: Expr


@dataclass
class Store(Stmt):
    buffer: str
    index: Expr
    value: Expr


@dataclass
class If(Stmt):
    cond: Expr
    then: Stmt


@dataclass
class Check(Stmt):
    """Fail the step with KILN_ECHECK and ``message`` (``{value}`` filled in) when ``cond`` is true."""

    cond: Expr
    message: str
    value: Expr


@dataclass
class Gemm(Stmt):
    """For each batch index b < ``batch``: C_b[m, n] = sum_k A'_b[m, k] * B'_b[k, n].

    ``a``/``b`` are ``Operand``s (A' = Aᵀ when transposed).  Without an ``epilogue`` the
    sum is stored to ``c`` (added to it when ``accumulate``).  With one, the renderer binds
    ``Var("acc")`` (the sum, dtype of C), ``Var("row")``, ``Var("col")`` and ``Var("bidx")``
    (i64) and runs the epilogue statement once per output element; the epilogue does its
    own stores (it may write several buffers, e.g. a fused optimizer update).
    """

    m: Expr
    n: Expr
    k: Expr
    a: "Operand"
    b: "Operand"
    c: "Operand"
    batch: Expr = None
    accumulate: bool = False
    epilogue: Stmt = None
    split: "ItemSplit" = None  # a convolution's product, splittable per batch item


@dataclass(frozen=True)
class ItemSplit:
    """How a convolution's ``Gemm`` and the im2col/col2im nest beside it in their kernel
    break up per batch item: a hint for planners that can run a Gemm inside a loop
    (``conv_chunks.py``); the kernel's meaning is the Gemm as written.

    The nest's outer loop ``item`` runs over the ``items`` batch items and touches the
    im2col matrix ``scratch`` only in its rows ``[item*rows, (item+1)*rows)``.  For the Gemm,
    ``kind == "rows"`` (forward, input gradient): each item owns ``rows`` rows of M (of A and C;
    A and C not transposed); ``kind == "k"`` (filter gradient, A = scratchᵀ): each item owns
    ``rows`` of K, and the nest's loops ``taps`` (window row, window column) over a ``window``
    (KH, KW) write the scratch columns ``[t*channels, (t+1)*channels)`` of tap ``t = row*KW + col``."""

    kind: str
    items: Expr
    rows: int
    scratch: str
    item: str
    taps: tuple = ()
    window: tuple = ()
    channels: int = 0


@dataclass(frozen=True)
class Operand:
    """A matrix inside a buffer: element ``offset``, leading dim ``ld`` (row stride of the
    stored matrix), ``transposed``, and ``batch_stride`` (elements between batch items, 0
    when the operand is broadcast over the batch)."""

    buffer: str
    offset: Expr
    ld: Expr
    transposed: bool = False
    batch_stride: Expr = None


# ----------------------------------------------------------------------------- launch plans
class Launch(Stmt):
    """One launch of a kernel planned for a device that runs grids of thread blocks
    (``Kernel.launches``, written by the scheduling pass ``schedule.py``).  Its meaning is
    always the sequential one (``schedule.sequential``); the kind says how threads share it.
    Loops listed as spread over threads are used for their ``var``/``start``/``stop`` only."""


@dataclass
class Grid(Launch):
    """Threads over the flattened iteration space of ``par`` (row-major, outermost first):
    each runs ``body`` once (the other loops of the nest stay in it, in order)."""

    par: list
    body: list


@dataclass
class BlockReduce(Launch):
    """One block per iteration of ``par`` (the outputs): every thread runs ``head``, the
    threads share the iterations of ``red`` (each runs ``body``), the partial values of the
    ``reducers`` (``[(Var, combine)]``, declared in ``head`` at the combine's identity) are
    combined over the block, then one thread runs ``tail``.  The combination is reassociated."""

    par: list
    head: list
    red: list
    body: list
    reducers: list
    tail: list


@dataclass
class Ordered(Launch):
    """The iterations of ``loops`` (flattened, outermost first) in loop order by one block:
    ``body`` holds ``Check``s, and the first failing iteration in loop order reports."""

    loops: list
    body: list


@dataclass
class Serial(Launch):
    """``stmts`` on one thread."""

    stmts: list


# ----------------------------------------------------------------------------- control steps
@dataclass
class IfStep:
    """Run ``then`` if the bool buffer ``pred`` holds 1, else ``orelse`` (lists of steps)."""

    pred: str
    then: list
    orelse: list
    origin: str = ""


@dataclass
class WhileStep:
    """Run ``cond``; while the bool buffer ``pred`` then holds 1, run ``body`` and ``cond`` again."""

    cond: list
    pred: str
    body: list
    origin: str = ""


def program_steps(program) -> list:
    """The program's top-level steps (every kernel in order when it has no control flow)."""
    return list(range(len(program.kernels))) if program.steps is None else program.steps


# ----------------------------------------------------------------------------- kernels
@dataclass
class Kernel:
    """A kernel: ``body`` is its meaning (what the reference evaluator runs and a CPU renders,
    with ``For.parallel`` on the loops worth threading); ``launches``, set by the scheduling
    pass for a device with thread blocks, the same work as ``Launch``es and ``Gemm``s in
    order (None: not planned for such a device)."""

    name: str
    reads: list
    writes: list
    body: Stmt
    origin: str = ""  # the IR instr it comes from (kind + loc), for dumps and errors
    launches: list = None


@dataclass
class Program:
    """One entry point: buffers, kernels in order, workspace sizes.

    Workspace layout (one allocation, 64-byte aligned): static arena ``[0, static_bytes)``,
    batch arena ``static_bytes + [0, batch_bytes*N)``, then the scratch region (static part,
    then batch part).  An "arena" buffer with space "batch" and offset ``o`` starts at
    ``static_bytes + o*N``; a "scratch" buffer likewise inside the scratch region.
    ``copies`` run after the last kernel: (destination buffer, source buffer) pairs —
    fetch values into the caller's fetch memory, and state outputs that memory planning
    could not place in place.
    """

    name: str
    buffers: dict  # name -> BufferDecl, in a stable order (the renderer indexes them in this order)
    kernels: list
    static_bytes: int = 0  # the planned arena (see fn.memory)
    batch_bytes: int = 0
    scratch_static_bytes: int = 0  # one scratch region after the arena, shared by all kernels
    scratch_batch_bytes: int = 0
    copies: list = field(default_factory=list)  # [(dst buffer name, src buffer name)] after the last kernel
    feeds: list = field(default_factory=list)  # feed keys in ABI order
    fetches: list = field(default_factory=list)  # fetch keys in ABI order
    planned_for: str = ""  # the Capabilities name the scheduling pass planned it for ("": not yet)
    steps: list = None  # control flow between kernels (IfStep/WhileStep, kernel indices); None: in order
    plan_summary: str = ""  # the pass's one-line summary of what it decided

    def uses_batch(self) -> bool:
        """Whether the program depends on the batch size N (a batch dim or batch arena bytes)."""
        return bool(self.batch_bytes or self.scratch_batch_bytes
                    or any(d.byte_size()[1] for d in self.buffers.values()))

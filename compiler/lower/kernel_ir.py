"""The loop-level kernel IR: what every backend renders (LLVM, CUDA C, MLU-style C).

A ``Program`` is the schedule of one entry point: buffers (feeds, state, fetches, arena
slots, constants, scratch) and kernels in order.  A ``Kernel`` is a statement tree over
scalar expressions — loops, loads and stores with index expressions, scalar ops named
like the IR's elementwise kinds, accumulations — or a call of a library routine (the
GEMM engine) with an optional elementwise epilogue.  Fusion and scheduling decisions are
made before this point; a renderer only translates.

Index expressions are ordinary scalar expressions over loop variables, integer constants
and ``Batch()`` (the runtime batch size N), so one kernel serves every batch size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.types import DType


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
class RandomBits(Expr):
    """Philox4x32-10 word 0 for key (seed, seed2) and counter (index, step) — see ir/ops/random.py."""

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
    """C[m, n] = sum_k A'[m, k] * B'[k, n] (+ C when ``accumulate``), batched over ``batch``.

    Operands are (buffer, element offset expr, leading dim expr, transposed flag);
    ``epilogue`` maps the accumulator to the stored value: an Expr over ``Var("acc")``,
    ``Var("row")``, ``Var("col")`` and loads, or None.
    """

    m: Expr
    n: Expr
    k: Expr
    a: tuple
    b: tuple
    c: tuple
    batch: Expr = None
    batch_strides: tuple = ()
    accumulate: bool = False
    epilogue: Expr = None


# ----------------------------------------------------------------------------- kernels
@dataclass
class Kernel:
    name: str
    reads: list
    writes: list
    body: Stmt
    origin: str = ""  # the IR instr it comes from (kind + loc), for dumps and errors


@dataclass
class Program:
    """One entry point: buffers, kernels in order, workspace sizes."""

    name: str
    buffers: dict  # name -> BufferDecl
    kernels: list
    static_bytes: int = 0
    batch_bytes: int = 0
    copies: list = field(default_factory=list)  # [(state key, buffer name)] copied back at the end

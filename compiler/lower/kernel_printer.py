"""Readable text of a kernel-IR Program (the ``kernels`` file of an artifact's ``ir/`` folder).

For people, not for parsing back: a header with the workspace sizes, the buffer table, each
kernel as indented pseudo-code (loops, lets, accumulators, stores, gemm lines), then the
final copies.  Example::

    kernel loop_relu  (fused[loop] relu)
      reads feed_x_0  writes fetch_y_0
      for i0 in [0, N*3) parallel vectorize:
        v_y[i0] = relu(feed_x_0[i0])
"""
from __future__ import annotations

from ..ir.types import shape_str
from . import kernel_ir as K

INFIX = {"add": "+", "sub": "-", "mul": "*", "idiv": "//", "imod": "%"}
INDENT = "  "


def print_program(program: K.Program) -> str:
    """The whole program as text (ends with a newline)."""
    sizes = (f"arena {program.static_bytes} B + {program.batch_bytes} B*N, "
             f"scratch {program.scratch_static_bytes} B + {program.scratch_batch_bytes} B*N")
    lines = [f"program @{program.name}", f"{INDENT}workspace: {sizes}",
             f"{INDENT}feeds: {', '.join(map(repr, program.feeds)) or '-'}",
             f"{INDENT}fetches: {', '.join(map(repr, program.fetches)) or '-'}"]
    if program.planned_for:
        lines.append(f"{INDENT}plan: {program.plan_summary or program.planned_for}")
    lines += ["", "buffers:"]
    lines += _buffer_table(program.buffers.values())
    for kernel in program.kernels:
        lines += ["", *_kernel(kernel)]
    if program.steps is not None:
        lines += ["", "steps:"] + _steps(program.steps, program, INDENT)
    if program.copies:
        lines += ["", "copies:"] + [f"{INDENT}{dst} <- {src}" for dst, src in program.copies]
    return "\n".join(lines) + "\n"


def _steps(steps, program, indent) -> list:
    """The control steps: kernel names, ``if pred:``/``else:`` and ``while:``/``pred``/``do:`` blocks."""
    lines, inner = [], indent + INDENT
    for step in steps:
        if isinstance(step, K.IfStep):
            lines += [f"{indent}if {step.pred}:  # {step.origin}", *_steps(step.then, program, inner),
                      f"{indent}else:", *_steps(step.orelse, program, inner)]
        elif isinstance(step, K.WhileStep):
            lines += [f"{indent}while:  # {step.origin}", *_steps(step.cond, program, inner),
                      f"{inner}test {step.pred}", f"{indent}do:", *_steps(step.body, program, inner)]
        else:
            lines.append(f"{indent}{program.kernels[step].name}")
    return lines


def _buffer_table(decls) -> list:
    rows = [(d.name, f"{d.dtype.short}{shape_str(d.shape)}", _where(d)) for d in decls]
    width0 = max((len(r[0]) for r in rows), default=0)
    width1 = max((len(r[1]) for r in rows), default=0)
    return [f"{INDENT}{a.ljust(width0)}  {b.ljust(width1)}  {c}".rstrip() for a, b, c in rows]


def _where(d: K.BufferDecl) -> str:
    if d.role in ("feed", "fetch"):
        return f"{d.role} #{d.index} {d.key!r}"
    if d.role == "state":
        return f"state {d.key!r}"
    if d.role in ("arena", "scratch"):
        return f"{d.role} {d.space}@{d.offset}"
    return d.role


def _kernel(kernel: K.Kernel) -> list:
    head = f"kernel {kernel.name}" + (f"  ({kernel.origin})" if kernel.origin else "")
    io = f"{INDENT}reads {' '.join(kernel.reads) or '-'}  writes {' '.join(kernel.writes) or '-'}"
    if kernel.launches is not None:
        return [head, io] + [line for launch in kernel.launches for line in launch_lines(launch, 1)]
    return [head, io] + stmt_lines(kernel.body, 1)


# ----------------------------------------------------------------------------- launches
def _ranges(loops) -> str:
    return ", ".join(f"{f.var.name} in [{expr_str(f.start)}, {expr_str(f.stop)})" for f in loops)


def _block(stmts, depth) -> list:
    return [line for s in stmts for line in stmt_lines(s, depth)]


def launch_lines(launch, depth: int) -> list:
    """Lines of one planned launch (a ``K.Launch`` or a ``Gemm``) indented ``depth`` levels."""
    pad = INDENT * depth
    if isinstance(launch, K.Grid):
        return [f"{pad}grid {_ranges(launch.par)}:"] + _block(launch.body, depth + 1)
    if isinstance(launch, K.BlockReduce):
        combine = ", ".join(f"{v.name} {c}" for v, c in launch.reducers)
        head = f"{pad}block reduce {_ranges(launch.par) or 'once'} over {_ranges(launch.red)} ({combine}):"
        return ([head] + _block(launch.head, depth + 1) + [f"{pad}{INDENT}each:"] + _block(launch.body, depth + 2)
                + [f"{pad}{INDENT}then:"] + _block(launch.tail, depth + 2))
    if isinstance(launch, K.Ordered):
        return [f"{pad}ordered {_ranges(launch.loops)}:"] + _block(launch.body, depth + 1)
    if isinstance(launch, K.Serial):
        return [f"{pad}serial:"] + _block(launch.stmts, depth + 1)
    return stmt_lines(launch, depth)


# ----------------------------------------------------------------------------- statements
def stmt_lines(s, depth: int) -> list:
    """Lines of statement ``s`` indented ``depth`` levels."""
    pad = INDENT * depth
    if isinstance(s, K.Block):
        return [line for sub in s.body for line in stmt_lines(sub, depth)]
    if isinstance(s, K.For):
        flags = "".join(f" {name}" for name, on in (("parallel", s.parallel), ("vectorize", s.vectorize)) if on)
        head = f"{pad}for {s.var.name} in [{expr_str(s.start)}, {expr_str(s.stop)}){flags}:"
        return [head] + stmt_lines(s.body, depth + 1)
    if isinstance(s, K.Let):
        return [f"{pad}let {s.var.name}: {s.var.dtype.short} = {expr_str(s.value)}"]
    if isinstance(s, K.DeclareAcc):
        return [f"{pad}acc {s.var.name}: {s.var.dtype.short} = {expr_str(s.init)}"]
    if isinstance(s, K.Accumulate):
        return [f"{pad}{s.var.name} = {s.combine}({s.var.name}, {expr_str(s.value)})"]
    if isinstance(s, K.Store):
        return [f"{pad}{s.buffer}[{expr_str(s.index)}] = {expr_str(s.value)}"]
    if isinstance(s, K.If):
        return [f"{pad}if {expr_str(s.cond)}:"] + stmt_lines(s.then, depth + 1)
    if isinstance(s, K.Check):
        return [f"{pad}fail if {expr_str(s.cond)}: {s.message!r} (value {expr_str(s.value)})"]
    if isinstance(s, K.Gemm):
        return _gemm_lines(s, pad, depth)
    return [f"{pad}<{type(s).__name__}>"]


def _operand(o: K.Operand) -> str:
    parts = [o.buffer]
    if not (isinstance(o.offset, K.Const) and o.offset.value == 0):
        parts.append(f"+{expr_str(o.offset)}")
    text = "".join(parts) + f" ld={expr_str(o.ld)}"
    if o.batch_stride is not None:
        text += f" bstride={expr_str(o.batch_stride)}"
    return f"[{text}]" + ("ᵀ" if o.transposed else "")


def _gemm_lines(g: K.Gemm, pad: str, depth: int) -> list:
    batch = f" x{expr_str(g.batch)}" if g.batch is not None else ""
    op = "+=" if g.accumulate else "="
    head = (f"{pad}gemm{batch} m={expr_str(g.m)} n={expr_str(g.n)} k={expr_str(g.k)}: "
            f"{_operand(g.c)} {op} {_operand(g.a)} @ {_operand(g.b)}")
    if g.split is not None:
        sp = g.split
        head += f"  per item {sp.item} < {expr_str(sp.items)}: {sp.rows} {'rows' if sp.kind == 'rows' else 'k'} of {sp.scratch}"
        head += f", taps {','.join(sp.taps)} of {sp.window[0]}x{sp.window[1]} x{sp.channels}" if sp.taps else ""
    if g.epilogue is None:
        return [head]
    return [head + "  epilogue(acc, row, col, bidx):"] + stmt_lines(g.epilogue, depth + 1)


# ----------------------------------------------------------------------------- expressions
def expr_str(e, nested: bool = False) -> str:
    """An expression in infix/call form (index arithmetic infix, scalar ops as calls)."""
    if isinstance(e, K.Const):
        if isinstance(e.value, bool):
            return "true" if e.value else "false"
        if e.dtype.is_floating:
            return str(e.dtype.np.type(e.value))  # shortest text that reads back in the dtype
        return repr(e.value)
    if isinstance(e, K.Var):
        return e.name
    if isinstance(e, K.Batch):
        return "N"
    if isinstance(e, K.Load):
        return f"{e.buffer}[{expr_str(e.index)}]"
    if isinstance(e, K.Cast):
        return f"{e.dtype.short}({expr_str(e.value)})"
    if isinstance(e, K.Random):
        return (f"random_{e.dist}<{e.seed},{e.seed2}>({expr_str(e.index)}, step={expr_str(e.step)})")
    if isinstance(e, K.Op):
        if e.kind in INFIX and len(e.args) == 2 and e.dtype.short == "i64":
            text = f"{expr_str(e.args[0], True)} {INFIX[e.kind]} {expr_str(e.args[1], True)}"
            return f"({text})" if nested else text
        return f"{e.kind}({', '.join(expr_str(a) for a in e.args)})"
    return f"<{type(e).__name__}>"

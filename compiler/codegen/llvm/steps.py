"""The control flow of an entry's step function (kernel_ir ``IfStep``/``WhileStep``) in LLVM IR."""
from __future__ import annotations

from llvmlite import ir

from ...lower import kernel_ir as K
from .gemm_kernel import I8


def emit_steps(b, steps, call, pointer) -> None:
    """The kernel calls of ``steps`` with their control flow (kernel_ir ``IfStep``/``WhileStep``):
    a branch on the predicate byte, or a loop that tests it after the cond steps."""
    for step in steps:
        if isinstance(step, K.IfStep):
            taken = b.icmp_unsigned("!=", b.load(pointer(step.pred), typ=I8), ir.Constant(I8, 0))
            with b.if_else(taken) as (then, otherwise):
                with then:
                    emit_steps(b, step.then, call, pointer)
                with otherwise:
                    emit_steps(b, step.orelse, call, pointer)
        elif isinstance(step, K.WhileStep):
            head, body, done = (b.append_basic_block(name) for name in ("loop_cond", "loop_body", "loop_end"))
            b.branch(head)
            b.position_at_end(head)
            emit_steps(b, step.cond, call, pointer)
            going = b.icmp_unsigned("!=", b.load(pointer(step.pred), typ=I8), ir.Constant(I8, 0))
            b.cbranch(going, body, done)
            b.position_at_end(body)
            emit_steps(b, step.body, call, pointer)
            b.branch(head)
            b.position_at_end(done)
        else:
            call(step)

"""The entry point's kernel calls and buffer pointers as data (module.py's ``kiln_entry_<name>``).

A graph of thousands of kernels (an unrolled RNN) would give an entry function with code per
kernel and per buffer; here they are tables walked by loops, so the entry's code stays the
same size: the workspace buffers' pointers (slot, base, bytes per batch row), and per kernel
call its function (a kernel function of ``compiler/lower/dedup.py``), its origin for error
messages, and the ``bufs`` indices and byte offsets of its arguments.  ``abi`` is
module.py's emission context (``table``, ``cstring``, ``error``, ``snprintf``).
"""
from __future__ import annotations

from llvmlite import ir

from runtime.abi_spec import ERROR_BYTES

from .gemm_kernel import I32, I64, PTR, Indirect, c64, counted_loop, i32, opaque
from .profile import active as active_profiler

I8 = ir.IntType(8)


def emit_workspace_pointers(abi, b, entry: str, located, bufs, env) -> None:
    """``bufs[i] = ws + base + per_n * N`` for every ``(i, Place)`` in ``located``, as tables
    and one loop (the entry's code does not grow with the number of buffers)."""
    if not located:
        return
    count = len(located)
    prefix = f"kiln.places.{entry}."
    tables = [abi.table(prefix + name, I64, [f(i, p) for i, p in located]) for name, f in
              (("slot", lambda i, p: i), ("base", lambda i, p: p.base), ("per_n", lambda i, p: p.per_n))]
    ty = ir.ArrayType(I64, count)

    def body(b, j, _):
        slot, base, per_n = (b.load(b.gep(t, [i32(0), j], source_etype=ty), typ=I64) for t in tables)
        ptr = b.gep(env["ws"], [b.add(base, b.mul(env["n"], per_n))], source_etype=I8)
        b.store(ptr, b.gep(bufs, [slot], source_etype=PTR))
        return []
    counted_loop(b, c64(0), c64(count), c64(1), body, name="place")


_KERNEL_TYPE = ir.FunctionType(I32, [PTR, I64, PTR])


def kernel_function(abi, entry: str, name: str) -> ir.Function:
    """The rendered kernel function ``name`` (checked to have the kernel signature)."""
    kfn = abi.module.globals.get(name)
    if kfn is None:
        raise ValueError(f"entry {entry!r}: rendered kernel {name!r} not in the module")
    if kfn.function_type != _KERNEL_TYPE:
        raise ValueError(f"kernel {name!r} has type {kfn.function_type}, expected {_KERNEL_TYPE}")
    return kfn


def emit_call(abi, b, kfn, where, env, event_id=0) -> None:
    """Call kernel ``kfn`` with a buffer table; a non-zero code stops the step with the
    kernel's message prefixed by ``where`` (a string constant or pointer).  In a profiling
    build the call is recorded as event ``event_id`` (an int or i32 value, ``profile.py``)."""
    state, table, n, err = env
    b.store(ir.Constant(I8, 0), err)
    profiler = active_profiler(abi.module)
    if profiler:
        rc = profiler.timed_call(b, event_id, lambda: b.call(kfn, [table, n, err]))
    else:
        rc = b.call(kfn, [table, n, err])
    with b.if_then(b.icmp_signed("!=", rc, i32(0)), likely=False):
        where = abi.cstring(where) if isinstance(where, str) else where
        b.call(abi.snprintf, [abi.error(b, state), c64(ERROR_BYTES),
                              abi.cstring("%s: %s"), where, err])
        b.ret(rc)


def emit_call_args(b, program, args, offsets, bufs, table) -> None:
    """Fill ``table`` with one call's arguments: ``bufs`` slots of the buffers ``args``,
    each moved by its byte offset (a call of a shared kernel function, outside a call table)."""
    index = {name: i for i, name in enumerate(program.buffers)}
    for j, (arg, shift) in enumerate(zip(args, offsets or [0] * len(args))):
        ptr = b.load(b.gep(bufs, [c64(index[arg])], source_etype=PTR), typ=PTR)
        if shift:
            ptr = b.gep(ptr, [c64(shift)], source_etype=I8)
        b.store(ptr, b.gep(table, [c64(j)], source_etype=PTR))


def emit_call_table(abi, b, entry: str, program, calls, functions, env, first_id: int = 0) -> None:
    """The kernels as data and one loop (the entry's code does not grow with the kernels):
    per call its function, its origin and the indices (into ``bufs``) and byte offsets of its
    arguments; the loop fills an argument table and calls through the function pointer.
    Call ``c`` is profiling event ``first_id + c``."""
    state, bufs, n, err = env
    index = {name: i for i, name in enumerate(program.buffers)}
    flat, shifts, starts = [], [], [0]
    for _, args, offsets in calls:
        flat += [index[a] for a in args]
        shifts += list(offsets)
        starts.append(len(flat))
    prefix = f"kiln.calls.{entry}."
    fns = abi.table(prefix + "fn", PTR, [Indirect(f, _KERNEL_TYPE) for f in functions])
    where = abi.table(prefix + "origin", PTR, [abi.cstring(k.origin or k.name) for k in program.kernels])
    start_of = abi.table(prefix + "start", I32, starts)
    arg_of = abi.table(prefix + "args", I32, flat or [0])
    shift_of = abi.table(prefix + "offsets", I64, shifts or [0]) if any(shifts) else None
    width = max(len(args) for _, args, _ in calls)
    table = opaque(b.alloca(ir.ArrayType(PTR, max(width, 1)), name="args"))
    at = (lambda b, g, ty, i, count: b.load(b.gep(g, [i32(0), i], source_etype=ir.ArrayType(ty, count)), typ=ty))

    def one_call(b, c, _):
        lo = b.sext(at(b, start_of, I32, c, len(starts)), I64)
        hi = b.sext(at(b, start_of, I32, b.add(c, c64(1)), len(starts)), I64)

        def fill(b, j, _):
            slot = b.gep(bufs, [b.sext(at(b, arg_of, I32, j, len(flat) or 1), I64)], source_etype=PTR)
            ptr = b.load(slot, typ=PTR)
            if shift_of is not None:
                ptr = b.gep(ptr, [at(b, shift_of, I64, j, len(flat))], source_etype=I8)
            b.store(ptr, b.gep(table, [b.sub(j, lo)], source_etype=PTR))
            return []
        counted_loop(b, lo, hi, c64(1), fill, name="arg")
        kfn = Indirect(at(b, fns, PTR, c, len(calls)), _KERNEL_TYPE)
        event_id = b.add(b.trunc(c, I32), i32(first_id)) if active_profiler(abi.module) else 0
        emit_call(abi, b, kfn, at(b, where, PTR, c, len(calls)), (state, table, n, err), event_id)
        return []
    counted_loop(b, c64(0), c64(len(calls)), c64(1), one_call, name="call")

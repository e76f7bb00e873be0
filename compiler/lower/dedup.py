"""Kernel functions: kernels that differ only in the buffers they touch are one function.

An unrolled RNN lowers to the same cell kernels at every step (and their gradients); a
backend that emitted one function per kernel compiled hundreds of copies.  ``kernel_functions``
decides, once for every backend, which kernels share code:

* a kernel's **canonical form** names its buffers ``p0, p1, ...`` in order of first mention
  (``reads``, then ``writes``, then the body) and the scalars it binds (``For``/``Let``/
  ``DeclareAcc`` variables) ``v0, v1, ...``; everything else (shapes, constants, launches
  planned by the scheduling pass, check messages) stays as it is.  Two kernels whose
  canonical forms print the same, with the same dtype, shape, role and space for every
  parameter, are one ``KernelFunction``.  The same buffer passed twice is one parameter, so
  aliasing is part of the form;
* a kernel holding a ``Check`` keeps its origin in the form: its failure message names the
  instr it comes from;
* each kernel of the program becomes a ``Call``: the function and the program's buffers
  bound to its parameters, in parameter order.

A function's ``program`` is a one-kernel ``Program`` whose buffers are its parameters
(``BufferDecl``s named ``p<i>``, no placement): a renderer renders it as it renders any
kernel, with buffer ``i`` of the table being parameter ``i``, and each call passes a table
of the call's buffers.  The program must be planned first (``schedule.plan_program``) where
the target plans: the plan is part of the form.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields

from . import kernel_ir as K
from .dedup_offsets import buffer_offsets, shifted_index

_NODES = (K.Expr, K.Stmt, K.Operand)
_BINDERS = (K.For, K.Let, K.DeclareAcc)


@dataclass
class KernelFunction:
    """One distinct kernel: ``program`` holds it (``program.kernels[0]``, named after its first
    instance) over its parameters (``program.buffers``)."""

    program: K.Program
    calls: int = 0

    @property
    def kernel(self) -> K.Kernel:
        return self.program.kernels[0]


@dataclass(frozen=True)
class Call:
    """A kernel of the program runs function ``function`` with ``args`` (program buffer
    names, one per parameter), parameter i starting ``offsets[i]`` elements into its buffer."""

    function: int
    args: tuple
    offsets: tuple = ()

    def offset(self, i: int) -> int:
        return self.offsets[i] if self.offsets else 0


def kernel_functions(program: K.Program) -> tuple:
    """``(functions, calls)``: the distinct kernels of ``program`` and one ``Call`` per kernel,
    in kernel order (see the module doc).  Kernels alike only up to constant offsets into
    their buffers share a function when no exact twin exists (``dedup_offsets``).  A kernel
    that shares with none keeps its own names (readable sources and dumps)."""
    forms = [_form(k, program.buffers, shift=False) for k in program.kernels]
    exact = _counts(f[0] for f in forms)
    alone = [i for i, f in enumerate(forms) if exact[f[0]] == 1 and not _has_gemm(program.kernels[i])]
    shifted = {i: _form(program.kernels[i], program.buffers, shift=True) for i in alone}
    shared = _counts(f[0] for f in shifted.values() if any(f[4]))
    for i, f in shifted.items():
        if any(f[4]) and shared[f[0]] > 1:
            forms[i] = f
    uses = _counts(f[0] for f in forms)
    functions, calls, index = [], [], {}
    for kernel, (key, canon, params, args, offsets) in zip(program.kernels, forms):
        if key not in index:
            index[key] = len(functions)
            if uses[key] == 1:  # its own function: keep its names
                canon = kernel
                params = {a: _param_decl(a, program.buffers[a]) for a in args}
            functions.append(KernelFunction(K.Program(f"{program.name}__{kernel.name}", params, [canon],
                                                      planned_for=program.planned_for)))
        functions[index[key]].calls += 1
        calls.append(Call(index[key], tuple(args), tuple(offsets) if any(offsets) else ()))
    return functions, calls


def _counts(keys) -> dict:
    out = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return out


def _form(kernel, buffers, shift) -> tuple:
    """``(key, canonical kernel, parameter decls, argument buffers, element offsets)``."""
    canon, args, offsets = canonical_kernel(kernel, buffers, shift)
    params = {f"p{i}": _param_decl(f"p{i}", buffers[a]) for i, a in enumerate(args)}
    key = (repr((canon.reads, canon.writes, canon.body, canon.origin, canon.launches)),
           tuple((d.dtype.short, tuple(map(str, d.shape)), d.role, d.space) for d in params.values()))
    return key, canon, params, args, offsets


def _has_gemm(kernel) -> bool:
    return any(isinstance(n, K.Gemm) for n in _walk([kernel.body, kernel.launches]))


def canonical_kernel(kernel: K.Kernel, buffers: dict, shift: bool = False) -> tuple:
    """``(canonical kernel, argument buffer names, element offsets)``: ``kernel`` with buffers
    renamed to parameters and bound scalars renumbered (see the module doc); with ``shift``,
    constant offsets moved out of the indices into the arguments where possible."""
    order = list(dict.fromkeys(list(kernel.reads) + list(kernel.writes)))
    bound, has_check, accesses, loops = {}, False, {}, set()
    for node in _walk([kernel.body, kernel.launches]):
        if isinstance(node, (K.Load, K.Store, K.Operand)) and node.buffer not in order:
            order.append(node.buffer)
        if isinstance(node, (K.Load, K.Store)):
            accesses.setdefault(node.buffer, []).append(node.index)
        elif isinstance(node, K.Operand):
            accesses.setdefault(node.buffer, []).append(None)  # a GEMM operand: never shifted
        if isinstance(node, K.For):
            loops.add(node.var.name)
        if isinstance(node, _BINDERS) and node.var.name not in bound:
            bound[node.var.name] = f"v{len(bound)}"
        has_check = has_check or isinstance(node, K.Check)
    missing = [b for b in order if b not in buffers]
    if missing:
        raise KeyError(f"kernel {kernel.name}: buffers {missing} are not declared")
    param = {b: f"p{i}" for i, b in enumerate(order)}
    offsets = {}
    if shift:
        offsets = buffer_offsets({b: ix for b, ix in accesses.items() if None not in ix}, loops)
    rename = _Renamer(param, bound, {param[b]: c for b, c in offsets.items()}, loops)
    canon = K.Kernel(kernel.name, [param[b] for b in kernel.reads], [param[b] for b in kernel.writes],
                     rename(kernel.body), origin=kernel.origin if has_check else "",
                     launches=rename(kernel.launches))
    return canon, order, [offsets.get(b, 0) for b in order]


def _param_decl(name: str, decl: K.BufferDecl) -> K.BufferDecl:
    """The declaration of a parameter bound to ``decl`` (what code depends on: dtype, shape, role)."""
    return K.BufferDecl(name, decl.dtype, decl.shape, decl.role, space=decl.space)


@functools.cache
def _fields(cls) -> tuple:
    """The field names of a kernel-IR node class."""
    return tuple(f.name for f in fields(cls))


def _walk(node):
    """Every kernel-IR node under ``node`` (lists, tuples, dataclass fields), depth first."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (list, tuple)):
            stack.extend(reversed(n))
        elif isinstance(n, _NODES):
            yield n
            stack.extend(reversed([getattr(n, f) for f in _fields(type(n))]))


class _Renamer:
    """Rebuilds a kernel-IR tree with buffers and bound variables renamed; a node shared
    within the tree (a loop both in the body and in a launch) stays shared."""

    def __init__(self, buffers: dict, variables: dict, offsets=None, loops=()):
        self.buffers, self.variables, self.memo = buffers, variables, {}
        self.offsets, self.loops = offsets or {}, loops

    def __call__(self, node):
        if isinstance(node, list):
            return [self(x) for x in node]
        if isinstance(node, tuple):
            return tuple(self(x) for x in node)
        if not isinstance(node, _NODES):
            return node
        if id(node) in self.memo:
            return self.memo[id(node)][1]
        if isinstance(node, K.Var):
            new = K.Var(self.variables.get(node.name, node.name), node.dtype)
        else:
            values = {f: self(getattr(node, f)) for f in _fields(type(node))}
            if isinstance(node, (K.Load, K.Store, K.Operand)):
                values["buffer"] = self.buffers[node.buffer]
                if values["buffer"] in self.offsets:  # shift the original index, then rename
                    values["index"] = self(shifted_index(node.index, self.offsets[values["buffer"]], self.loops))
            new = type(node)(**values)
        self.memo[id(node)] = (node, new)  # keeps node alive so its id is not reused
        return new

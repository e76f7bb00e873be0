"""Render kernel-IR kernels (compiler/lower/kernel_ir.py) as LLVM functions.

Each ``Kernel`` becomes ::

    i32 @<name>(ptr %bufs, i64 %N, ptr %err)

``bufs[i]`` points at buffer ``i`` of ``program.buffers`` (in that order), ``N`` is the batch
size, ``err`` an ``ERROR_BYTES``-byte buffer (runtime/abi_spec.py) for the message of a failed ``Check``.  It returns 0, 3
(KILN_ECHECK, message written with ``snprintf``) or 2 (KILN_ENOMEM: a GEMM could not
allocate its packing or temporary buffers).

Statements map one to one: ``For`` -> a counted loop (SIMD main loop + scalar tail when
``vectorize`` and the body is only Let/Store/Accumulate/DeclareAcc: full W-lane vectors, then
one masked vector for the remainder; GOMP_parallel when
``parallel`` and the trip count times ``work`` is large, see parallel.py), ``Let`` -> an
SSA value, ``DeclareAcc``/``Accumulate`` -> an alloca (promoted to registers by LLVM),
``If``/``Check`` -> branches, ``Gemm`` -> the GEMM engine (render_gemm.py).  Expressions
are in exprs.py / ops.py / mathfuncs.py / philox.py.

In a vectorized loop, accumulators declared outside it become vector accumulators
(started at the combine's identity, reduced horizontally after the loop, then combined
into the scalar); only those float adds/muls carry ``reassoc contract``.  No ``nnan`` /
``ninf`` anywhere: NaN and infinities behave as in the reference interpreter.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from runtime.abi_spec import ERROR_BYTES, KILN_ECHECK

from ...lower import kernel_ir as K
from ...lower.combine import identity_value
from ...lower.dedup import kernel_functions
from ...lower.schedule import plan_program
from .affine import same_index
from .capabilities import PARALLEL_MIN_WORK, host_capabilities
from .exprs import AccSlot, Emitter, Lanes
from .gemm import GemmConfig, config_for
from .gemm_kernel import c64, counted_loop, imax, new_function
from .ops import emit_combine
from .parallel import emit_parallel_for
from .render_epilogue import module_engine
from .render_gemm import render_gemm
from .target import HostTarget, host_target
from .vals import (I8, I32, I64, PTR, broadcast, const, declare, lane_iota,
                   scalar_type, shaped, splat, unify)
from .walk import accumulated, declared_accs, dtypes_used, iter_stmts, read_vars

_VECTOR_STMTS = (K.Block, K.Let, K.Store, K.Accumulate, K.DeclareAcc)


@dataclass(frozen=True)
class RenderOptions:
    """Target facts the renderer chooses from: SIMD lanes of a 32-bit element, GEMM blocking,
    and the work (trip count x ``For.work``) from which a parallel loop uses threads."""

    lanes32: int = 16
    gemm: GemmConfig = None
    parallel_min_work: int = PARALLEL_MIN_WORK


class RenderError(ValueError):
    """A kernel cannot be rendered (unbound variable, unsupported construct); the message
    names the kernel and the IR instr it came from."""


def options_for(target: HostTarget | None = None) -> RenderOptions:
    """The host capabilities' lanes (16 with AVX-512, 8 with AVX2, else 4; float64: half as
    many) and parallel work threshold, and the GEMM blocking."""
    target = target or host_target()
    caps = host_capabilities(target)
    return RenderOptions(lanes32=caps.vector_width, gemm=config_for(target), parallel_min_work=caps.min_parallel_work)


def render_program_kernels(module: ir.Module, program: K.Program, prefix: str = "kiln_kernel_",
                           target: HostTarget | None = None) -> list:
    """Render every kernel of ``program`` (planned for the host's capabilities first, unless
    the scheduling pass did already); returns the function names, in kernel order."""
    opts = options_for(target)
    program = plan_program(program, host_capabilities(target))
    names = []
    for i, kernel in enumerate(program.kernels):
        name = f"{prefix}{i}_{_ident(kernel.name)}"
        render_kernel(module, kernel, program, name, options=opts)
        names.append(name)
    return names


def render_program_functions(module: ir.Module, program: K.Program, prefix: str = "kiln_kernel_",
                             target: HostTarget | None = None) -> list:
    """Render each distinct kernel of ``program`` once (``lower.dedup.kernel_functions``, after
    planning for the host's capabilities) as ``i32 @name(ptr args, i64 N, ptr err)`` whose
    ``args[i]`` is its parameter i; returns ``(function name, argument buffer names, byte
    offsets into them)`` per kernel, in kernel order, for the entry point to call.  Shared functions are ``noinline``
    so that each is compiled once."""
    opts = options_for(target)
    program = plan_program(program, host_capabilities(target))
    functions, calls = kernel_functions(program)
    if any(isinstance(s, K.Gemm) for f in functions for s in iter_stmts(f.kernel.body)):
        engine_first(module, opts.gemm)
    names = []
    for i, f in enumerate(functions):
        names.append(f"{prefix}{i}_{_ident(f.kernel.name)}")
        fn = render_kernel(module, f.kernel, f.program, names[-1], options=opts)
        if f.calls > 1:
            fn.attributes.add("noinline")
    size = (lambda name: program.buffers[name].dtype.np.itemsize)
    return [(names[c.function], list(c.args), [c.offset(i) * size(a) for i, a in enumerate(c.args)])
            for c in calls]


#: ``module.__dict__`` key of ``engine_ready(module)``, called once the GEMM engine is emitted
ENGINE_READY = "_kiln_engine_ready"


def engine_first(module: ir.Module, cfg) -> None:
    """Emit the module's GEMM engine before the kernels that call it, and tell the module's
    ``ENGINE_READY`` hook (once): the CPU backend starts compiling the engine, the largest
    function group, while the kernels render (``build.EarlyUnit``)."""
    module_engine(module, cfg)
    ready = module.__dict__.pop(ENGINE_READY, None)
    if ready is not None:
        ready(module)


def render_kernel(module: ir.Module, kernel: K.Kernel, program: K.Program, name: str,
                  options: RenderOptions | None = None) -> ir.Function:
    """Add ``i32 @name(ptr bufs, i64 N, ptr err)`` computing ``kernel``."""
    fn, pro, b = open_function(module, name, I32, [PTR, I64, PTR], ["bufs", "N", "err"], internal=False)
    bufs, batch, err = fn.args
    r = Renderer(module, fn, b, program, bufs, batch, err, KernelFail(), options or options_for(),
                 prologue=pro)
    try:
        r.render(kernel.body)
    except (NotImplementedError, KeyError) as exc:
        raise RenderError(f"kernel {kernel.name} ({kernel.origin}): {exc}") from exc
    if not r.b.block.is_terminated:
        r.b.ret(ir.Constant(I32, 0))
    r.finish()
    return fn


def open_function(module, name, ret, types, names, internal=True):
    """A function with a prologue block (allocas, buffer pointers) and a body block;
    returns (fn, prologue builder, body builder).  ``Renderer.finish`` links the two."""
    fn, pro = new_function(module, name, ret, types, names, internal)
    pro.block.name = "prologue"
    return fn, pro, ir.IRBuilder(fn.append_basic_block("body"))


class KernelFail:
    """Failing in the kernel function itself: write the message, free the renderer's live
    temporaries (``r.cleanups``), return the code."""

    def fail(self, r, code, message, value=None, dtype=None):
        r.write_message(message, value, dtype)
        self.propagate(r, ir.Constant(I32, code))

    def propagate(self, r, status):
        free = declare(r.module, "free", ir.VoidType(), [PTR])
        for ptr in r.cleanups:
            r.b.call(free, [ptr])
        r.b.ret(status)


class Renderer(Emitter):
    """Renders statements into one function (the kernel, or an outlined/tile function)."""

    def __init__(self, module, fn, builder, program, bufs, batch, err, fail, options,
                 prologue=None, in_parallel=False):
        super().__init__(module, fn, builder, program, bufs, batch, prologue)
        self.err, self.failure, self.options, self.in_parallel = err, fail, options, in_parallel
        # a GEMM's nthreads: 0 (the engine's team) outside parallel loops, 1 inside
        self.gemm_threads = ir.Constant(I32, 1 if in_parallel else 0)
        self._body_block = builder.block
        self.intercept, self.intercepted = None, None  # GEMM tile: (C buffer, C element index)
        self.cleanups = []  # heap temporaries to free when the kernel fails

    def derive(self, fn, builder, prologue, bufs, batch, err, fail, env, in_parallel=True):
        """A renderer for another function of the same kernel (outlined body, GEMM tile)."""
        child = Renderer(self.module, fn, builder, self.program, bufs, batch, err, fail, self.options,
                         prologue=prologue, in_parallel=in_parallel)
        child.env = dict(env)
        return child

    def finish(self):
        """Close the prologue block with a branch to the body."""
        if self.pro is not None and not self.pro.block.is_terminated:
            self.pro.branch(self._body_block)

    def alloca(self, ty):
        """A stack slot in the prologue (so loops do not grow the stack)."""
        return (self.pro or self.b).alloca(ty)

    # ------------------------------------------------------------------ statements
    def render(self, s):
        method = getattr(self, "s_" + type(s).__name__, None)
        if method is None:
            raise NotImplementedError(f"cannot render statement {type(s).__name__}")
        method(s)

    def scoped(self, stmt, bind=None):
        """Render ``stmt`` with extra bindings (a dict); its Lets and accumulators end with it."""
        env, lets = self.env, self.lets
        self.env, self.lets = {**env, **(bind or {})}, dict(lets)
        try:
            self.render(stmt)
        finally:
            self.env, self.lets = env, lets

    def s_Block(self, s):
        env, lets = self.env, self.lets
        self.env, self.lets = dict(env), dict(lets)
        try:
            for sub in s.body:
                self.render(sub)
        finally:
            self.env, self.lets = env, lets

    def s_Let(self, s):
        self.env[s.var.name] = self.emit(s.value)
        if self.lanes is not None:
            self.lets[s.var.name] = s.value

    def s_DeclareAcc(self, s):
        w = self.lanes.width if self.lanes is not None else 1
        ty = shaped(scalar_type(s.var.dtype), w)
        ptr = self.alloca(ty)
        self.b.store(broadcast(self.b, self.emit(s.init), w), ptr)
        self.env[s.var.name] = AccSlot(ptr, ty, s.var.dtype)

    def s_Accumulate(self, s):
        slot = self.env[s.var.name]
        cur, value = unify(self.b, self.b.load(slot.ptr, typ=slot.type), self.emit(s.value))
        if cur.type != slot.type:
            raise NotImplementedError(f"accumulator {s.var.name} combined with per-lane values")
        new = emit_combine(self.b, s.combine, cur, value, slot.dtype, fast=self.lanes is not None)
        if self.lanes is not None and self.lanes.mask is not None:
            new = self.b.select(self.lanes.mask, new, cur)  # lanes past the end keep their value
        self.b.store(new, slot.ptr)

    def s_Store(self, s):
        value = self.emit(s.value)
        if self.intercept is not None and s.buffer == self.intercept[0] and same_index(
                s.index, self.intercept[1], self.lets):
            self.intercepted = value  # the GEMM engine stores it as C's element
            return
        self.store(s.buffer, s.index, value)

    def s_If(self, s):
        with self.b.if_then(self.emit(s.cond)):
            self.scoped(s.then)

    def s_Check(self, s):
        with self.b.if_then(self.emit(s.cond), likely=False):
            self.failure.fail(self, KILN_ECHECK, s.message, self.emit(s.value), s.value.dtype)

    def s_Gemm(self, s):
        render_gemm(self, s)

    def s_For(self, s):
        start, stop = self.emit(s.start), self.emit(s.stop)
        outer_accs = [n for n in accumulated(s.body) if isinstance(self.env.get(n), AccSlot)]
        if s.parallel and not self.in_parallel and not outer_accs:
            emit_parallel_for(self, s, start, stop)
        else:
            self.loop_range(s, start, stop)

    # ------------------------------------------------------------------ loops
    def loop_range(self, s, lo, hi):
        """Iterations ``[lo, hi)`` of loop ``s`` on this thread (SIMD when it can be)."""
        combines = self.vector_accumulators(s) if s.vectorize and self.lanes is None else None
        if combines is None:
            self.scalar_loop(s, lo, hi)
        else:
            self.vector_loop(s, lo, hi, combines)

    def scalar_loop(self, s, lo, hi):
        def body(b, i, _):
            self.scoped(s.body, {s.var.name: i})
        counted_loop(self.b, lo, hi, c64(1), body, name=_ident(s.var.name)[:20])

    def vector_width(self, s) -> int:
        """SIMD lanes for loop ``s``: 32-bit lanes, halved when float64 data is involved."""
        return self.options.lanes32 // 2 if "f64" in dtypes_used(s.body) else self.options.lanes32

    def vector_accumulators(self, s):
        """{outer accumulator: combine} when ``s`` can run as SIMD lanes, else None."""
        if not all(isinstance(st, _VECTOR_STMTS) for st in iter_stmts(s.body)):
            return None
        inner = declared_accs(s.body)
        outer = {n: c for n, c in accumulated(s.body).items() if n not in inner}
        if any(len(c) != 1 or not isinstance(self.env.get(n), AccSlot) for n, c in outer.items()):
            return None
        if read_vars(s.body) & set(outer):
            return None  # an outer accumulator read inside: lanes would see stale values
        return {n: next(iter(c)) for n, c in outer.items()}

    def vector_loop(self, s, lo, hi, combines):
        """SIMD main loop of W lanes over ``[lo, lo + W*floor(n/W))``, then one masked
        vector step for the ``n mod W`` last iterations (the same code, so every element
        is computed identically; masked lanes neither load, store nor accumulate)."""
        b, w = self.b, self.vector_width(s)
        n = imax(b, b.sub(hi, lo), c64(0))
        vend = b.add(lo, b.and_(n, c64(-w)))
        vslots = {}
        for name, combine in combines.items():
            slot = self.env[name]
            vty = ir.VectorType(slot.type, w)
            vslots[name] = AccSlot(self.alloca(vty), vty, slot.dtype)
            b.store(const(vty, identity_value(combine, slot.dtype)), vslots[name].ptr)

        def lanes_step(i, mask=None, active=None):
            saved = self.lanes, self.lets
            self.lanes, self.lets = Lanes(s.var.name, w, mask, active), {}
            try:
                self.scoped(s.body, {**vslots, s.var.name: self.lane_values(i)})
            finally:
                self.lanes, self.lets = saved
        counted_loop(b, lo, vend, c64(w), lambda b, i, _: lanes_step(i), name="vec")
        rest = b.sub(hi, vend)
        with b.if_then(b.icmp_signed(">", rest, c64(0))):
            lanes_step(vend, b.icmp_signed("<", lane_iota(w), splat(b, rest, w)), rest)
        for name, vslot in vslots.items():
            slot = self.env[name]
            total = self.horizontal(b.load(vslot.ptr, typ=vslot.type), combines[name], slot.dtype)
            cur = b.load(slot.ptr, typ=slot.type)
            b.store(emit_combine(b, combines[name], cur, total, slot.dtype), slot.ptr)

    def horizontal(self, v, combine, dtype):
        """Combine the lanes of ``v`` pairwise down to one scalar."""
        b = self.b
        w = v.type.count
        while w > 1:
            h = w // 2
            undef = ir.Constant(v.type, ir.Undefined)
            lo = b.shuffle_vector(v, undef, ir.Constant(ir.VectorType(I32, h), list(range(h))))
            hi = b.shuffle_vector(v, undef, ir.Constant(ir.VectorType(I32, h), list(range(h, w))))
            v, w = emit_combine(b, combine, lo, hi, dtype, fast=True), h
        return b.extract_element(v, ir.Constant(I32, 0))

    # ------------------------------------------------------------------ messages
    def write_message(self, message, value=None, dtype=None):
        """``snprintf(err, ERROR_BYTES, message with {value} formatted, value)``."""
        b = self.b
        parts = [p.replace("%", "%%").replace("{{", "{").replace("}}", "}")
                 for p in message.split("{value}")]
        args = []
        if value is not None and len(parts) > 1:
            spec, arg = self._format_arg(value, dtype)
            args = [arg] * (len(parts) - 1)
            fmt = spec.join(parts)
        else:
            fmt = "".join(parts)
        snprintf = declare(self.module, "snprintf", I32, [PTR, I64, PTR], var_arg=True)
        b.call(snprintf, [self.err, c64(ERROR_BYTES), cstring(self.module, fmt), *args])

    def _format_arg(self, value, dtype):
        b = self.b
        if dtype.is_floating:
            return "%g", value if dtype.short == "f64" else b.fpext(value, ir.DoubleType())
        if dtype.is_bool:
            return "%s", b.select(value, cstring(self.module, "True"), cstring(self.module, "False"))
        wide = b.zext(value, I64) if dtype.is_unsigned else (
            b.sext(value, I64) if value.type != I64 else value)
        return "%lld", wide


def cstring(module: ir.Module, text: str):
    """A private constant NUL-terminated string global (one per distinct text)."""
    cache = module.__dict__.setdefault("_kiln_cstrings", {})
    if text not in cache:
        data = bytearray(text.encode("utf-8")) + b"\0"
        gv = ir.GlobalVariable(module, ir.ArrayType(I8, len(data)), module.get_unique_name("kiln.str"))
        gv.global_constant = True
        gv.linkage = "private"
        gv.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
        cache[text] = gv
    return cache[text]


def _ident(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(text)) or "k"

"""The generated module's C ABI (docs/ABI.md) around the rendered kernels.

``build_module(programs, variables)`` renders every entry point's kernels into one LLVM
module and adds the exported functions of the Kiln C ABI:

* ``kiln_abi_version``, ``kiln_num_variables``, ``kiln_last_error``;
* ``kiln_create`` / ``kiln_destroy``: the state, a heap struct
  ``{ptr vars[V]; ptr owned[V]; ptr workspace; i64 workspace_bytes; char error[ERROR_BYTES]}``:
  ``vars[i]`` is where variable i lives now, ``owned[i]`` the 64-byte aligned, zero-filled
  storage the state allocated for it (NULL once the caller bound its own memory);
* ``kiln_read_variable`` / ``kiln_write_variable`` / ``kiln_bind_variable``: byte counts
  and indices checked, KILN_EINVAL with a message otherwise;
* ``kiln_entry_<name>(state, batch, feeds, fetches)``: checks the batch, grows the
  workspace (``static + batch_bytes*N + scratch``), fills the ``bufs[]`` array the kernels
  index (program.buffers order), calls the kernels in order, each distinct kernel one
  function called with a table of its own buffers (compiler/lower/dedup.py; the first non-zero code stops
  the step; its message is copied into the state's error, prefixed with the kernel's
  origin), then runs the program's copies.

Where each buffer lives (``compiler/codegen/layout.py``, shared with the CUDA backend):
constants become private, 64-byte aligned module globals, one per distinct constant of the
module's ``ConstantPool`` (shared between entry points when their bytes are equal).
"""
from __future__ import annotations

from llvmlite import ir

from runtime import abi_spec as spec
from runtime.abi_spec import ERROR_BYTES, KILN_EINVAL, KILN_ENOMEM

from ...lower import kernel_ir as K
from ...lower.profile_table import id_bases
from ..layout import ConstantPool, Place, Variables, max_batch, places, workspace_bytes
from .calls import emit_call, emit_call_args, emit_call_table, emit_workspace_pointers, kernel_function
from .gemm_kernel import I8, I32, I64, PTR, c64, counted_loop, i32, intrinsic, new_function, opaque
from .profile import active as active_profiler
from .profile import install as install_profiler
from .steps import emit_steps

ALIGN = spec.BIND_ALIGNMENT  # variables and the workspace (kernels may assume it)
VARS, OWNED, WORKSPACE, WORKSPACE_BYTES, ERROR = range(5)
_LLVM_TYPES = {"void": ir.VoidType(), "int32_t": I32, "int64_t": I64}


def _llvm_type(ctype: str) -> ir.Type:
    """The LLVM type of a C type of runtime/abi_spec.py (every pointer is ``ptr``)."""
    return PTR if ctype.endswith("*") else _LLVM_TYPES[ctype]


def _define(module: ir.Module, fn: spec.Function, name: str = ""):
    """Define the exported ABI function ``fn`` (named ``name``, default ``fn.name``) with
    its C signature from runtime/abi_spec.py; returns (function, builder)."""
    return new_function(module, name or fn.name, _llvm_type(fn.restype), [_llvm_type(t) for t, _ in fn.params],
                        [n for _, n in fn.params], internal=False)


class _Abi:
    """Emission context: the module, the variables, libc declarations and string constants."""

    def __init__(self, module: ir.Module, variables):
        self.module = module
        self.variables = Variables.of(variables)
        nv = self.nv
        self.state_type = ir.LiteralStructType([
            ir.ArrayType(PTR, nv), ir.ArrayType(PTR, nv), PTR, I64, ir.ArrayType(I8, ERROR_BYTES)])
        self.strings: dict = {}
        self.consts = ConstantPool(ALIGN)
        self.const_globals: list = []  # per constant id
        m = module
        self.aligned_alloc = intrinsic(m, "aligned_alloc", PTR, [I64, I64])
        self.calloc = intrinsic(m, "calloc", PTR, [I64, I64])
        self.free = intrinsic(m, "free", ir.VoidType(), [PTR])
        self.memset = intrinsic(m, "memset", PTR, [PTR, I32, I64])
        self.memcpy = intrinsic(m, "memcpy", PTR, [PTR, PTR, I64])
        self.memmove = intrinsic(m, "memmove", PTR, [PTR, PTR, I64])
        self.snprintf = m.globals.get("snprintf") or ir.Function(
            m, ir.FunctionType(I32, [PTR, I64, PTR], var_arg=True), "snprintf")
        self.var_bytes = self.table("kiln.abi.var_bytes", I64, self.variables.nbytes)
        self.var_names = self.table("kiln.abi.var_names", PTR, [self.cstring(n) for n in self.variables.names])

    # -- module data
    def cstring(self, text: str):
        """A private NUL-terminated string constant (one per distinct text)."""
        if text not in self.strings:
            data = bytearray(text.encode("utf-8") + b"\0")
            g = ir.GlobalVariable(self.module, ir.ArrayType(I8, len(data)), self.module.get_unique_name("kiln.abi.str"))
            g.initializer = ir.Constant(g.value_type, data)
            g.global_constant, g.linkage, g.unnamed_addr = True, "private", True
            self.strings[text] = opaque(g)
        return self.strings[text]

    def table(self, name, elt, values):
        g = ir.GlobalVariable(self.module, ir.ArrayType(elt, len(values)), name)
        g.initializer = ir.Constant(g.value_type, [v if isinstance(v, ir.Value) else ir.Constant(elt, v)
                                                   for v in values])
        g.global_constant, g.linkage = True, "private"
        return opaque(g)

    def const_global(self, const_id: int) -> ir.GlobalVariable:
        """The private, 64-byte aligned global holding constant ``const_id`` of the pool."""
        while len(self.const_globals) <= const_id:
            raw = self.consts.raw[len(self.const_globals)] or b"\0"  # LLVM has no empty arrays
            g = ir.GlobalVariable(self.module, ir.ArrayType(I8, len(raw)), self.module.get_unique_name("kiln.abi.const"))
            g.initializer = ir.Constant(g.value_type, bytearray(raw))
            g.global_constant, g.linkage, g.align = True, "private", ALIGN
            self.const_globals.append(opaque(g))
        return self.const_globals[const_id]

    @property
    def nv(self) -> int:
        """The number of variables."""
        return len(self.variables.names)

    # -- state access
    def field(self, b, state, index, *more):
        """Address of a field of the state struct (``more``: array index)."""
        return b.gep(state, [i32(0), i32(index), *more], source_etype=self.state_type)

    def fail(self, b, state, code: int, fmt: str, *args):
        """Write a message into the state's error buffer and return ``code``."""
        b.call(self.snprintf, [self.field(b, state, ERROR, i32(0)), c64(ERROR_BYTES),
                               self.cstring(fmt), *args])
        b.ret(i32(code))

    def error(self, b, state):
        """Address of the state's error message buffer."""
        return self.field(b, state, ERROR, i32(0))

    def clear_error(self, b, state):
        b.store(ir.Constant(I8, 0), self.field(b, state, ERROR, i32(0)))

    def check_index(self, b, state, index):
        """Return KILN_EINVAL unless ``0 <= index < V``; gives the variable's byte count."""
        nv = self.nv
        bad = b.or_(b.icmp_signed("<", index, i32(0)), b.icmp_signed(">=", index, i32(nv)))
        with b.if_then(bad, likely=False):
            self.fail(b, state, KILN_EINVAL, f"no variable with index %d (have {nv})", index)
        return b.load(b.gep(self.var_bytes, [i32(0), index], source_etype=self.var_bytes_type), typ=I64)

    @property
    def var_bytes_type(self):
        return ir.ArrayType(I64, self.nv)

    def check_bytes(self, b, state, index, nbytes, what):
        """KILN_EINVAL unless ``nbytes`` is variable ``index``'s size exactly."""
        size = self.check_index(b, state, index)
        with b.if_then(b.icmp_signed("!=", nbytes, size), likely=False):
            name = b.load(b.gep(self.var_names, [i32(0), index],
                                source_etype=ir.ArrayType(PTR, self.nv)), typ=PTR)
            self.fail(b, state, KILN_EINVAL,
                      f"{what} variable %d ('%s'): byte count %lld, expected %lld",
                      index, name, nbytes, size)
        return size

    def alloc_zeroed(self, b, size):
        """``aligned_alloc(64, round_up(max(size, 1), 64))`` zero-filled; may be NULL."""
        rounded = b.and_(b.add(b.select(b.icmp_signed(">", size, c64(0)), size, c64(1)),
                               c64(ALIGN - 1)), c64(-ALIGN))
        p = b.call(self.aligned_alloc, [c64(ALIGN), rounded])
        with b.if_then(b.icmp_unsigned("!=", p, ir.Constant(PTR, None))):
            b.call(self.memset, [p, i32(0), rounded])
        return p


# ----------------------------------------------------------------------------- fixed ABI
def _emit_constants(abi: _Abi) -> None:
    """``kiln_abi_version``, ``kiln_num_variables`` and ``kiln_last_error``."""
    for name, value in (("kiln_abi_version", spec.ABI_VERSION), ("kiln_num_variables", abi.nv)):
        _, b = _define(abi.module, spec.function(name))
        b.ret(i32(value))
    fn, b = _define(abi.module, spec.function("kiln_last_error"))
    state = fn.args[0]
    with b.if_then(b.icmp_unsigned("==", state, ir.Constant(PTR, None))):
        b.ret(abi.cstring(""))
    b.ret(abi.field(b, state, ERROR, i32(0)))


def _emit_destroy(abi: _Abi) -> ir.Function:
    """``kiln_destroy``: free the owned variables, the workspace and the state (NULL allowed)."""
    fn, b = _define(abi.module, spec.function("kiln_destroy"))
    state = fn.args[0]
    with b.if_then(b.icmp_unsigned("==", state, ir.Constant(PTR, None))):
        b.ret_void()

    def body(b, i, _):
        b.call(abi.free, [b.load(abi.field(b, state, OWNED, i), typ=PTR)])
        return []
    counted_loop(b, c64(0), c64(abi.nv), c64(1), body, name="v")
    b.call(abi.free, [b.load(abi.field(b, state, WORKSPACE), typ=PTR)])
    b.call(abi.free, [state])
    b.ret_void()
    return fn


def _emit_create(abi: _Abi, destroy: ir.Function) -> None:
    """``kiln_create``: calloc the struct, then each variable (64-byte aligned, zeroed).
    Any failed allocation frees what was made and returns NULL."""
    _, b = _define(abi.module, spec.function("kiln_create"))
    null = ir.Constant(PTR, None)
    state = b.call(abi.calloc, [c64(1), c64(abi.state_type.get_abi_size(_target_data()))])
    with b.if_then(b.icmp_unsigned("==", state, null), likely=False):
        b.ret(null)

    def body(b, i, _):
        size = b.load(b.gep(abi.var_bytes, [i32(0), i], source_etype=abi.var_bytes_type), typ=I64)
        p = abi.alloc_zeroed(b, size)
        with b.if_then(b.icmp_unsigned("==", p, null), likely=False):
            b.call(destroy, [state])
            b.ret(null)
        b.store(p, abi.field(b, state, OWNED, i))
        b.store(p, abi.field(b, state, VARS, i))
        return []
    counted_loop(b, c64(0), c64(abi.nv), c64(1), body, name="v")
    b.ret(state)


def _target_data():
    """The host's data layout (struct sizes for calloc)."""
    from .target import host_target
    return host_target().machine.target_data


def _emit_read_write(abi: _Abi) -> None:
    """``kiln_read_variable`` / ``kiln_write_variable``: checked memcpy out of / into vars[i]."""
    for name, what in (("kiln_read_variable", "read"), ("kiln_write_variable", "write")):
        fn, b = _define(abi.module, spec.function(name))
        state, index, data, nbytes = fn.args
        abi.clear_error(b, state)
        size = abi.check_bytes(b, state, index, nbytes, what)
        var = b.load(abi.field(b, state, VARS, index), typ=PTR)
        src, dst = (var, data) if what == "read" else (data, var)
        b.call(abi.memcpy, [dst, src, size])
        b.ret(i32(0))


def _emit_bind(abi: _Abi) -> None:
    """``kiln_bind_variable(state, index, ptr, nbytes)``: make ``ptr`` (64-byte aligned, caller
    owned) the variable's storage, freeing the state's own; ``ptr == NULL`` goes back to
    state-owned storage holding a copy of the current value."""
    fn, b = _define(abi.module, spec.function("kiln_bind_variable"))
    state, index, ptr, nbytes = fn.args
    null = ir.Constant(PTR, None)
    abi.clear_error(b, state)
    size = abi.check_bytes(b, state, index, nbytes, "bind")
    owned_slot, var_slot = abi.field(b, state, OWNED, index), abi.field(b, state, VARS, index)
    owned = b.load(owned_slot, typ=PTR)
    with b.if_then(b.icmp_unsigned("==", ptr, null)):
        with b.if_then(b.icmp_unsigned("!=", owned, null)):
            b.ret(i32(0))  # already state-owned
        p = abi.alloc_zeroed(b, size)
        with b.if_then(b.icmp_unsigned("==", p, null), likely=False):
            abi.fail(b, state, KILN_ENOMEM, "cannot allocate %lld bytes for variable %d", size, index)
        b.call(abi.memcpy, [p, b.load(var_slot, typ=PTR), size])
        b.store(p, owned_slot)
        b.store(p, var_slot)
        b.ret(i32(0))
    misaligned = b.and_(b.ptrtoint(ptr, I64), c64(ALIGN - 1))
    with b.if_then(b.icmp_unsigned("!=", misaligned, c64(0)), likely=False):
        abi.fail(b, state, KILN_EINVAL, f"bind variable %d: memory at %p is not {ALIGN}-byte aligned",
                 index, ptr)
    b.call(abi.free, [owned])
    b.store(null, owned_slot)
    b.store(ptr, var_slot)
    b.ret(i32(0))


# ----------------------------------------------------------------------------- entry points
def _nbytes(b, decl, n):
    """Byte size of a buffer for batch ``n`` (an i64 value)."""
    size, syms = decl.byte_size()
    out = c64(size)
    for _ in range(syms):
        out = b.mul(out, n)
    return out


def _grow_workspace(abi: _Abi, b, state, program, n):
    """Make the workspace at least ``need`` bytes; returns its base pointer."""
    fixed, per = workspace_bytes(program)
    if per:
        limit = c64(max_batch(fixed, per))
        with b.if_then(b.icmp_signed(">", n, limit), likely=False):
            abi.fail(b, state, KILN_ENOMEM, "batch size %lld needs more than 2^62 bytes of workspace", n)
    need = b.add(c64(fixed), b.mul(n, c64(per)))
    ws_slot, size_slot = abi.field(b, state, WORKSPACE), abi.field(b, state, WORKSPACE_BYTES)
    with b.if_then(b.icmp_signed(">", need, b.load(size_slot, typ=I64)), likely=False):
        b.call(abi.free, [b.load(ws_slot, typ=PTR)])
        rounded = b.and_(b.add(need, c64(ALIGN - 1)), c64(-ALIGN))
        p = b.call(abi.aligned_alloc, [c64(ALIGN), rounded])
        b.store(p, ws_slot)
        failed = b.icmp_unsigned("==", p, ir.Constant(PTR, None))
        b.store(b.select(failed, c64(0), rounded), size_slot)
        with b.if_then(failed, likely=False):
            abi.fail(b, state, KILN_ENOMEM, "cannot allocate a workspace of %lld bytes (batch %lld)",
                     rounded, n)
    return b.load(ws_slot, typ=PTR)


def _buffer_pointer(abi: _Abi, b, place: Place, env):
    """The pointer the kernels get for a buffer at ``place`` (compiler/codegen/layout.py)."""
    if place.kind in ("feed", "fetch"):
        arr = env["feeds"] if place.kind == "feed" else env["fetches"]
        return b.load(b.gep(arr, [c64(place.index)], source_etype=PTR), typ=PTR)
    if place.kind == "state":
        return b.load(abi.field(b, env["state"], VARS, i32(place.index)), typ=PTR)
    if place.kind == "const":
        return abi.const_global(place.index)
    offset = b.add(c64(place.base), b.mul(env["n"], c64(place.per_n))) if place.per_n else c64(place.base)
    return b.gep(env["ws"], [offset], source_etype=I8)


def _emit_entry(abi: _Abi, entry: str, program, kernel_names, step_id: int = 0) -> None:
    """``kiln_entry_<entry>``: batch check, workspace, bufs[], kernels, copies.  In a profiling
    build the step is event ``step_id`` and kernel ``i``'s calls are ``step_id + 1 + i``."""
    if len(kernel_names) != len(program.kernels):
        raise ValueError(f"entry {entry!r}: {len(kernel_names)} rendered kernels for "
                         f"{len(program.kernels)} in the program")
    fn, b = _define(abi.module, spec.ENTRY, spec.entry_symbol(entry))
    state, batch, feeds, fetches = fn.args
    decls = list(program.buffers.values())
    bufs = opaque(b.alloca(ir.ArrayType(PTR, max(len(decls), 1)), name="bufs"))
    err = opaque(b.alloca(ir.ArrayType(I8, ERROR_BYTES), name="err"))
    abi.clear_error(b, state)
    n = c64(1)
    if program.uses_batch():
        with b.if_then(b.icmp_signed("<", batch, c64(1)), likely=False):
            abi.fail(b, state, KILN_EINVAL, "batch size must be >= 1, got %lld", batch)
        n = batch
    profiler = active_profiler(abi.module)
    step_start = profiler.now(b) if profiler else None
    env = {"n": n, "state": state, "feeds": feeds, "fetches": fetches,
           "ws": _grow_workspace(abi, b, state, program, n)}
    slot = {d.name: b.gep(bufs, [c64(i)], source_etype=PTR) for i, d in enumerate(decls)}
    at = places(program, abi.variables, abi.consts)
    in_workspace = [i for i, p in enumerate(at) if p.kind == "workspace"]
    emit_workspace_pointers(abi, b, entry, [(i, at[i]) for i in in_workspace], bufs, env)
    for i, (d, place) in enumerate(zip(decls, at)):
        if place.kind != "workspace":
            b.store(_buffer_pointer(abi, b, place, env), slot[d.name])
    calls = [(k, None, None) if isinstance(k, str) else tuple(k) for k in kernel_names]
    functions = [kernel_function(abi, entry, name) for name, _, _ in calls]
    if program.steps is None and calls and all(args is not None for _, args, _ in calls):
        emit_call_table(abi, b, entry, program, calls, functions, (state, bufs, n, err), step_id + 1)
    else:  # control flow (or kernels of their own): the calls in the program's steps
        width = max([len(args) for _, args, _ in calls if args is not None] + [1])
        table = opaque(b.alloca(ir.ArrayType(PTR, width), name="args"))

        def call(index):
            (_, args, offsets), kernel = calls[index], program.kernels[index]
            if args is not None:
                emit_call_args(b, program, args, offsets, bufs, table)
            emit_call(abi, b, functions[index], kernel.origin or kernel.name,
                      (state, bufs if args is None else table, n, err), step_id + 1 + index)

        emit_steps(b, K.program_steps(program), call, lambda name: b.load(slot[name], typ=PTR))
    for dst, src in program.copies:
        size = _nbytes(b, program.buffers[dst], n)
        b.call(abi.memmove, [b.load(slot[dst], typ=PTR), b.load(slot[src], typ=PTR), size])
    if profiler:
        profiler.record(b, step_id, b.trunc(n, I32), step_start)  # a step event's arg: the batch
    b.ret(i32(0))


# ----------------------------------------------------------------------------- driver
def build_module(programs: dict, variables, render=None, module: ir.Module | None = None,
                 profile: bool = False, engine_ready=None) -> ir.Module:
    """One LLVM module: every program's kernels plus the Kiln C ABI over ``variables``.

    ``programs`` maps entry names (C identifiers) to kernel-IR ``Program``s; ``variables``
    is ``[(name, dtype, shape)]`` in ABI index order.  ``render(module, program, prefix)``
    gives per kernel either a function name (called with the whole buffer table) or
    ``(name, argument buffer names)`` (called with a table of those buffers: a kernel
    function shared by several kernels); the default renders each distinct kernel once.
    ``profile`` adds the event recorder (``profile.py``; ids of ``lower/profile_table.py``).
    ``engine_ready(module)`` is called once the GEMM engine is in the module, before the
    kernels of the first program that uses it (``render.engine_first``).
    """
    if render is None:
        from .render import render_program_functions as render
    module = module or ir.Module(name="kiln_model")
    if engine_ready is not None:
        from .render import ENGINE_READY

        module.__dict__[ENGINE_READY] = engine_ready
    abi = _Abi(module, variables)
    if profile:
        install_profiler(module)
    ids = id_bases(programs)
    _emit_constants(abi)
    _emit_create(abi, _emit_destroy(abi))
    _emit_read_write(abi)
    _emit_bind(abi)
    for entry, program in programs.items():
        names = render(module, program, f"kiln_k_{entry}_")
        _emit_entry(abi, entry, program, list(names), ids[entry])
    return module

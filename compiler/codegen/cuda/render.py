"""Kernel IR -> one CUDA C translation unit (docs/codegen-cuda.md).

``render_program(program)`` returns the text of a ``.cu`` file holding, per ``Kernel``,
one or more ``__global__`` functions (``<kernel>_s<j>`` for loop statements, ``<kernel>_g<j>``
for GEMMs) and the host entry ``extern "C" int kiln_cuda_run_<entry>(void** bufs, long long N)``
that launches them in order.  Scalar semantics are those of ``compiler/lower/kernel_ir.py``
(the reference is ``kernel_interp.py``); the helpers live in ``templates/cuda/prelude.cu.j2``.

Statements are rendered here as C text; the file layout (prelude, kernel skeletons, the
tiled GEMM, the host entry) is in the jinja2 templates under ``templates/cuda/``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import jinja2
import numpy as np

from ...ir.types import Sym, as_dtype
from ...lower import kernel_ir as K

CTYPE = {"f32": "float", "f64": "double", "i8": "signed char", "i32": "int", "i64": "long long",
         "u8": "unsigned char", "bool": "unsigned char"}

_CMP = {"equal": "==", "not_equal": "!=", "less": "<", "less_equal": "<=", "greater": ">",
        "greater_equal": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_FLOAT_FN = {  # kind -> (float32 name, float64 name)
    "exp": ("expf", "exp"), "log": ("logf", "log"), "log1p": ("log1pf", "log1p"),
    "expm1": ("expm1f", "expm1"), "tanh": ("tanhf", "tanh"), "sqrt": ("sqrtf", "sqrt"),
    "abs": ("fabsf", "fabs"), "floor": ("floorf", "floor"), "ceil": ("ceilf", "ceil"),
    "round": ("rintf", "rint"), "erf": ("erff", "erf"), "sin": ("sinf", "sin"), "cos": ("cosf", "cos"),
    "pow": ("powf", "pow"), "tan": ("tanf", "tan"),
}
_HELPER_FN = {"sigmoid": "kiln_sigmoid", "softplus": "kiln_softplus", "elu": "kiln_elu",
              "maximum": "kiln_max", "minimum": "kiln_min", "relu": "kiln_relu"}
_COMBINE = {"add": "add", "mul": "mul", "max": "maximum", "min": "minimum", "and": "logical_and",
            "or": "logical_or"}


_F64 = as_dtype("float64")


class CudaRenderError(Exception):
    """A kernel-IR construct this renderer does not handle (yet)."""


_env = None


def environment() -> jinja2.Environment:
    """The jinja2 environment over the ``templates`` package (templates/cuda/*.cu.j2)."""
    global _env
    if _env is None:
        _env = jinja2.Environment(loader=jinja2.PackageLoader("templates", "."), trim_blocks=True,
                                  lstrip_blocks=True, keep_trailing_newline=True,
                                  undefined=jinja2.StrictUndefined)
    return _env


def ident(name: str, prefix: str) -> str:
    """A C identifier for a kernel-IR name (buffers ``b_``, variables ``v_``, kernels ``k_``)."""
    return prefix + re.sub(r"[^0-9A-Za-z_]", "_", name)


def ctype(dtype) -> str:
    try:
        return CTYPE[dtype.short]
    except KeyError:
        raise CudaRenderError(f"dtype {dtype.short} is not supported by the CUDA renderer") from None


# ----------------------------------------------------------------------------- expressions
def const(value, dtype) -> str:
    short = dtype.short
    if short == "bool":
        return "1" if value else "0"
    if dtype.is_floating:
        v = float(np.asarray(value, dtype.np))
        suffix = "f" if short == "f32" else ""
        if math.isnan(v):
            return "__int_as_float(0x7fc00000)" if short == "f32" else "__longlong_as_double(0x7ff8000000000000LL)"
        if math.isinf(v):
            inf = "__int_as_float(0x7f800000)" if short == "f32" else "__longlong_as_double(0x7ff0000000000000LL)"
            return inf if v > 0 else f"(-{inf})"
        text = repr(v)  # shortest float64 text of the (already rounded) value: reads back exactly
        if "e" not in text and "." not in text:
            text += ".0"
        return f"({text}{suffix})" if v < 0 else text + suffix
    v = int(np.asarray(value, dtype.np))
    if short == "i64":
        return "(-9223372036854775807LL - 1)" if v == -(2 ** 63) else (f"({v}LL)" if v < 0 else f"{v}LL")
    if short == "i32":
        return "(-2147483647 - 1)" if v == -(2 ** 31) else (f"({v})" if v < 0 else str(v))
    return f"(({ctype(dtype)}){v})"


@dataclass(frozen=True)
class _Raw(K.Expr):
    """Already-rendered C text posing as an expression (for accumulator combines)."""

    text: str
    dtype: object


class _Exprs:
    """Renders expressions of one kernel (buffers as ``b_<name>`` pointers)."""

    def __init__(self, program: K.Program):
        self.program = program

    def __call__(self, e) -> str:
        if isinstance(e, _Raw):
            return e.text
        if isinstance(e, K.Const):
            return const(e.value, e.dtype)
        if isinstance(e, K.Var):
            return ident(e.name, "v_")
        if isinstance(e, K.Batch):
            return "N"
        if isinstance(e, K.Load):
            return f"{ident(e.buffer, 'b_')}[{self(e.index)}]"
        if isinstance(e, K.Cast):
            return self.cast(self(e.value), e.value.dtype, e.dtype)
        if isinstance(e, K.Random):
            return self.random(e)
        if isinstance(e, K.Op):
            return self.op(e)
        raise CudaRenderError(f"unknown expression {type(e).__name__}")

    def cast(self, text, src, dst) -> str:
        if src.short == dst.short:
            return text
        if dst.short == "bool":
            return f"((unsigned char)(({text}) != 0))"
        if src.is_floating and dst.is_integer:
            if dst.short == "i64":
                return f"kiln_f2i64((double)({text}))"
            return f"(({ctype(dst)})kiln_f2i32((double)({text})))"  # narrow ints through int32, as numpy
        return f"(({ctype(dst)})({text}))"

    def random(self, e: K.Random) -> str:
        bits = (f"kiln_philox({e.seed & 0xFFFFFFFF}u, {e.seed2 & 0xFFFFFFFF}u, "
                f"(unsigned long long)({self(e.index)}), (unsigned long long)({self(e.step)}))")
        if e.dist == "bits":
            return f"((long long)({bits}))"
        if e.dist == "uniform":
            return f"(({ctype(e.dtype)})kiln_unit({bits}))"
        if e.dist in ("normal", "truncated_normal"):
            return f"(({ctype(e.dtype)})kiln_{e.dist}({bits}))"
        raise CudaRenderError(f"unknown random distribution {e.dist}")

    def op(self, e: K.Op) -> str:
        kind, args = e.kind, [self(a) for a in e.args]
        if kind in ("idiv", "imod", "imin", "imax"):
            return f"kiln_{kind}({args[0]}, {args[1]})"
        if kind == "select":
            return f"(({args[0]}) ? ({args[1]}) : ({args[2]}))"
        dt = e.args[0].dtype
        ct = ctype(dt)
        flt, short = dt.is_floating, dt.short
        if flt and short not in ("f32", "f64"):
            raise CudaRenderError(f"op {kind} on {short} is not supported")
        if kind in _CMP:
            return f"((unsigned char)(({args[0]}) {_CMP[kind]} ({args[1]})))"
        if kind in ("logical_and", "logical_or", "logical_xor"):
            sym = {"logical_and": "&&", "logical_or": "||", "logical_xor": "!="}[kind]
            return f"((unsigned char)((({args[0]}) != 0) {sym} (({args[1]}) != 0)))"
        if kind == "logical_not":
            return f"((unsigned char)(({args[0]}) == 0))"
        if kind in _ARITH:
            text = f"(({args[0]}) {_ARITH[kind]} ({args[1]}))"
            if not flt and short not in ("i32", "i64"):  # C promotes narrow ints; wrap back
                return f"(({ct}){text})"
            return text
        if kind == "neg":
            return f"(-({args[0]}))" if flt else f"(({ct})(0 - ({args[0]})))"
        if kind == "square":
            return f"(({args[0]}) * ({args[0]}))" if flt else f"(({ct})(({args[0]}) * ({args[0]})))"
        if kind == "div":
            return f"(({args[0]}) / ({args[1]}))" if flt else f"kiln_floordiv(({ct})({args[0]}), ({ct})({args[1]}))"
        if kind == "floordiv":
            fl = "floorf" if short == "f32" else "floor"
            return f"{fl}(({args[0]}) / ({args[1]}))" if flt else f"kiln_floordiv(({ct})({args[0]}), ({ct})({args[1]}))"
        if kind == "mod":
            return f"kiln_fmod({args[0]}, {args[1]})" if flt else f"kiln_floormod(({ct})({args[0]}), ({ct})({args[1]}))"
        if kind in ("maximum", "minimum", "relu"):
            return f"{_HELPER_FN[kind]}<{ct}>({', '.join(args)})"
        if kind == "sign":
            return f"kiln_{'f' if flt else 'i'}sign<{ct}>({args[0]})"
        if kind == "is_nan":
            return f"((unsigned char)(({args[0]}) != ({args[0]})))" if flt else "((unsigned char)0)"
        if kind == "is_finite":
            fa = "fabsf" if short == "f32" else "fabs"
            return f"((unsigned char)({fa}({args[0]}) < {const(float('inf'), dt)}))" if flt else "((unsigned char)1)"
        if flt:
            one = const(1.0, dt)
            if kind == "reciprocal":
                return f"({one} / ({args[0]}))"
            if kind == "rsqrt":
                return f"({one} / {_FLOAT_FN['sqrt'][short == 'f64']}({args[0]}))"
            if kind in _FLOAT_FN:
                return f"{_FLOAT_FN[kind][short == 'f64']}({', '.join(args)})"
            if kind in _HELPER_FN:
                return f"{_HELPER_FN[kind]}({', '.join(args)})"
        else:
            if kind == "pow":
                return f"kiln_ipow<{ct}>({args[0]}, {args[1]})"
            if kind == "abs":
                return f"(({ct})(({args[0]}) < 0 ? 0 - ({args[0]}) : ({args[0]})))"
            if kind in ("round", "floor", "ceil"):
                return args[0]
            if kind in ("reciprocal", "rsqrt"):  # numpy computes these in float64 and casts back
                inv = f"(1.0 / (double)({args[0]}))" if kind == "reciprocal" else f"(1.0 / sqrt((double)({args[0]})))"
                return self.cast(inv, _F64, dt)
        raise CudaRenderError(f"op {kind} on {short} is not supported by the CUDA renderer")

    def combine(self, combine, acc, value, dtype) -> str:
        return self.op(K.Op(_COMBINE[combine], (_Raw(acc, dtype), _Raw(value, dtype)), dtype))


# ----------------------------------------------------------------------------- statements
class _Stmts:
    """Renders a statement tree as indented C lines."""

    def __init__(self, exprs: _Exprs, messages: list):
        self.x, self.messages = exprs, messages

    def lines(self, s, depth) -> list:
        pad = "  " * depth
        x = self.x
        if isinstance(s, K.Block):
            return self.block(s.body, depth)
        if isinstance(s, K.For):
            v = ident(s.var.name, "v_")
            head = (f"{pad}for (long long {v} = {x(s.start)}, {v}_stop = {x(s.stop)}; "
                    f"{v} < {v}_stop; ++{v}) {{")
            return [head] + self.lines(s.body, depth + 1) + [pad + "}"]
        if isinstance(s, K.Let):
            ct = ctype(s.var.dtype)
            return [f"{pad}const {ct} {ident(s.var.name, 'v_')} = ({ct})({x(s.value)});"]
        if isinstance(s, K.DeclareAcc):
            ct = ctype(s.var.dtype)
            return [f"{pad}{ct} {ident(s.var.name, 'v_')} = ({ct})({x(s.init)});"]
        if isinstance(s, K.Accumulate):
            v = ident(s.var.name, "v_")
            value = self.x.combine(s.combine, v, f"(({ctype(s.var.dtype)})({x(s.value)}))", s.var.dtype)
            return [f"{pad}{v} = ({ctype(s.var.dtype)})({value});"]
        if isinstance(s, K.Store):
            dtype = self.x.program.buffers[s.buffer].dtype
            value = x(s.value)
            if dtype.is_bool:
                value = f"(({value}) != 0)"
            return [f"{pad}{ident(s.buffer, 'b_')}[{x(s.index)}] = ({ctype(dtype)})({value});"]
        if isinstance(s, K.If):
            return [f"{pad}if ({x(s.cond)}) {{"] + self.lines(s.then, depth + 1) + [pad + "}"]
        if isinstance(s, K.Check):
            cid = len(self.messages)
            self.messages.append(s.message)
            return [f"{pad}if ({x(s.cond)}) {{ kiln_fail({cid}, (double)({x(s.value)})); return; }}"]
        if isinstance(s, K.Gemm):
            raise CudaRenderError("a Gemm nested inside loops is not supported yet")
        raise CudaRenderError(f"unknown statement {type(s).__name__}")

    def block(self, body, depth) -> list:
        """Statements of one block; a name bound twice opens a nested C scope."""
        out, names, opened = [], set(), 0
        for sub in body:
            if isinstance(sub, (K.Let, K.DeclareAcc)):
                if sub.var.name in names:
                    out.append("  " * (depth + opened) + "{")
                    opened += 1
                    names = set()
                names.add(sub.var.name)
            out += self.lines(sub, depth + opened)
        for i in reversed(range(opened)):
            out.append("  " * (depth + i) + "}")
        return out


# ----------------------------------------------------------------------------- kernels
@dataclass
class _Function:
    name: str
    decls: str = ""
    body: str = ""
    grid: bool = False
    start: str = ""
    stop: str = ""
    gemm: dict = None


@dataclass
class _KernelText:
    name: str
    origin: str
    functions: list = field(default_factory=list)


def _vars_in(e) -> set:
    if isinstance(e, K.Var):
        return {e.name}
    if isinstance(e, (K.Load,)):
        return {"<load>"} | _vars_in(e.index)
    if isinstance(e, K.Op):
        return set().union(*(_vars_in(a) for a in e.args)) if e.args else set()
    if isinstance(e, K.Cast):
        return _vars_in(e.value)
    if isinstance(e, K.Random):
        return {"<random>"} | _vars_in(e.index) | _vars_in(e.step)
    return set()


def _independent(s) -> bool:
    """A top-level loop whose iterations may run on different threads."""
    return isinstance(s, K.For) and (s.parallel or s.vectorize) and not (
        _vars_in(s.start) | _vars_in(s.stop))


def _only(s):
    """The one statement of ``s`` (through single-statement Blocks)."""
    while isinstance(s, K.Block) and len(s.body) == 1:
        s = s.body[0]
    return s


def _loop_nest(loop: K.For) -> list:
    """The perfect nest of independent loops starting at ``loop`` whose bounds depend on no
    loop variable: they are flattened into one grid-stride iteration space."""
    nest = [loop]
    while True:
        inner = _only(nest[-1].body)
        if not (isinstance(inner, K.For) and (inner.parallel or inner.vectorize)
                and not (_vars_in(inner.start) | _vars_in(inner.stop))):
            return nest
        nest.append(inner)


def _buffers_used(s, acc: set) -> set:
    """Names of the buffers a statement tree loads or stores."""
    if isinstance(s, (list, tuple)):
        for y in s:
            _buffers_used(y, acc)
        return acc
    if isinstance(s, (K.Load, K.Store)):
        acc.add(s.buffer)
    if isinstance(s, K.Operand):
        acc.add(s.buffer)
    if hasattr(s, "__dataclass_fields__"):
        for f in s.__dataclass_fields__:
            v = getattr(s, f)
            if isinstance(v, (K.Expr, K.Stmt, K.Operand, list, tuple)):
                _buffers_used(v, acc)
    return acc


class _Renderer:
    def __init__(self, program: K.Program):
        self.program = program
        self.slot = {name: i for i, name in enumerate(program.buffers)}
        self.x = _Exprs(program)
        self.messages = []
        self.stmts = _Stmts(self.x, self.messages)
        self.launches = []

    def decls(self, tree) -> str:
        lines = []
        for name in sorted(_buffers_used(tree, set()), key=self.slot.__getitem__):
            ct = ctype(self.program.buffers[name].dtype)
            lines.append(f"  {ct}* __restrict__ {ident(name, 'b_')} = ({ct}*)bufs.p[{self.slot[name]}];")
        lines.append("  if (kiln_cuda_err.code) return;  // an earlier check failed: skip the rest of the step")
        return "\n".join(lines)

    def kernel(self, k: K.Kernel) -> _KernelText:
        out = _KernelText(ident(k.name, "k_"), k.origin.replace("\n", " "))
        body = k.body.body if isinstance(k.body, K.Block) else [k.body]
        # Top-level Lets/accumulators are shared by the statements after them: keep the
        # kernel as one sequential function then.  Otherwise each independent loop (and each
        # GEMM) gets its own launch, and runs of other statements one single-thread launch.
        if any(isinstance(s, (K.Let, K.DeclareAcc)) for s in body) and any(isinstance(s, K.Gemm) for s in body):
            raise CudaRenderError(f"kernel {k.name}: a Gemm next to top-level lets is not supported yet")
        shared = any(isinstance(s, (K.Let, K.DeclareAcc)) for s in body)
        groups, run = [], []
        for s in body:
            if not shared and (_independent(s) or isinstance(s, K.Gemm)):
                if run:
                    groups.append(run)
                    run = []
                groups.append(s)
            else:
                run.append(s)
        if run:
            groups.append(run)
        for j, g in enumerate(groups):
            if isinstance(g, K.Gemm):
                out.functions.append(self.gemm(f"{out.name}_g{j}", g))
            elif isinstance(g, K.For):
                out.functions.append(self.grid_loop(f"{out.name}_s{j}", g))
            else:
                fn = _Function(f"{out.name}_s{j}", self.decls(g), "\n".join(self.stmts.block(g, 1)))
                self.launches.append(f"{fn.name}<<<1, 1>>>(b, N);")
                out.functions.append(fn)
        return out

    def grid_loop(self, name, loop: K.For) -> _Function:
        nest = _loop_nest(loop)
        x = self.x
        trips = [f"(({x(f.stop)}) - ({x(f.start)}))" for f in nest]
        lines, rest = [], "kiln_f"
        for i, f in enumerate(nest):
            v = ident(f.var.name, "v_")
            inner = " * ".join(trips[i + 1:])
            if inner:
                lines.append(f"    const long long {v} = ({x(f.start)}) + {rest} / ({inner});")
                lines.append(f"    const long long {v}_rest = {rest} % ({inner});")
                rest = f"{v}_rest"
            else:
                lines.append(f"    const long long {v} = ({x(f.start)}) + {rest};")
        lines += self.stmts.lines(nest[-1].body, 2)
        total = " * ".join(trips)
        fn = _Function(name, self.decls(loop), "\n".join(lines), grid=True, start="0LL", stop=total)
        self.launches.append(f"{{ const long long trip = {total}; "
                             f"if (trip > 0) {name}<<<kiln_blocks(trip), KILN_BLOCK>>>(b, N); }}")
        return fn

    def gemm(self, name, g: K.Gemm) -> _Function:
        x = self.x
        dtypes = {self.program.buffers[o.buffer].dtype.short for o in (g.a, g.b, g.c)}
        if len(dtypes) != 1:
            raise CudaRenderError(f"gemm {name}: mixed dtypes {sorted(dtypes)}")
        if g.c.transposed:
            raise CudaRenderError(f"gemm {name}: a transposed C is not supported yet")
        ct = ctype(self.program.buffers[g.c.buffer].dtype)
        bs = (lambda o: x(o.batch_stride) if o.batch_stride is not None else "0LL")
        epilogue = ""
        if g.epilogue is not None:
            epilogue = "\n".join([f"    const {ct} v_acc = acc;", "    const long long v_row = row;",
                                  "    const long long v_col = col;", "    const long long v_bidx = bidx;"]
                                 + self.stmts.lines(g.epilogue, 2))
        info = {"name": name, "decls": self.decls(g), "ctype": ct, "m": x(g.m), "n": x(g.n), "k": x(g.k),
                "batch": x(g.batch) if g.batch is not None else "1", "accumulate": g.accumulate,
                "epilogue": epilogue, "c": ident(g.c.buffer, "b_"), "c_off": x(g.c.offset),
                "ldc": x(g.c.ld), "c_bs": bs(g.c)}
        for key, o in (("a", g.a), ("b", g.b)):
            info.update({key: ident(o.buffer, "b_"), f"{key}_off": x(o.offset), f"ld{key}": x(o.ld),
                         f"{key}_t": o.transposed, f"{key}_bs": bs(o)})
        batch = info["batch"]
        self.launches.append(
            f"{{ const long long m = {info['m']}, n = {info['n']}, nb = {batch}; "
            f"if (m > 0 && n > 0 && nb > 0) {name}<<<dim3(kiln_tiles(m), kiln_tiles(n), (unsigned int)nb), "
            f"dim3(KILN_TILE, KILN_TILE)>>>(b, N); }}")
        return _Function(name, gemm=info)


def _numel_expr(decl: K.BufferDecl) -> str:
    parts = [f"{d.coef}LL * N" if isinstance(d, Sym) else f"{int(d)}LL" for d in decl.shape]
    return " * ".join(parts) or "1LL"


def _c_string(text: str) -> str:
    return '"' + "".join(c if (c.isprintable() and c not in '"\\?') else f"\\{ord(c):03o}"
                         for c in text) + '"'


def render_program(program: K.Program, entry: str | None = None) -> str:
    """The ``.cu`` translation unit of ``program`` (entry name defaults to program.name)."""
    entry = re.sub(r"[^0-9A-Za-z_]", "_", entry or program.name)
    r = _Renderer(program)
    kernels = [r.kernel(k) for k in program.kernels]
    copies = []
    for dst, src in program.copies:
        decl = program.buffers[dst]
        copies.append({"dst": r.slot[dst], "src": r.slot[src],
                       "bytes": f"({_numel_expr(decl)}) * {decl.dtype.np.itemsize}"})
    buffers = [f"{d.name}: {d.dtype.short}{list(d.shape)} {d.role}" for d in program.buffers.values()]
    return environment().get_template("cuda/program.cu.j2").render(
        entry=entry, nbufs=len(program.buffers), buffers=buffers, kernels=kernels,
        launches=r.launches, copies=copies, messages=[_c_string(m) for m in r.messages])


def global_functions(program: K.Program) -> dict:
    """Kernel name -> the names of the ``__global__`` functions rendered for it."""
    r = _Renderer(program)
    return {k.name: [f.name for f in r.kernel(k).functions] for k in program.kernels}

"""A staged split loop's body as ``__bang_*`` vector intrinsics on NRAM tiles
(docs/codegen-mlu.md, "Vectorized tiles").

``vector_body(loop, units, stored, x)`` returns a ``VectorBody`` (its NRAM tiles and the lines
computing one tile) when every statement of the loop's body maps onto intrinsics whose result
is the scalar code's (bit for bit, or for the activations the same libm function in the
emulator), else None and the caller keeps the scalar tile code.  Two shapes:

* flat (``y[i] = f(a[i], ...)``): every staged buffer has one element per iteration; a tile of
  ``R`` iterations is one ``R``-lane vector per buffer;
* rows (one inner loop ``j`` over ``[0, C)``, with accumulators declared before it and row
  results stored after it): a tile of ``R`` rows of a row buffer is transposed into ``C``
  columns of ``R`` lanes (``__bang_transpose``), so the body runs once per column ``j`` on
  ``R``-lane vectors: a per-row value (``m[i]``: a row max, a row sum) is an ``R``-lane
  vector usable in every column, a per-column value (``bias[j]``) a scalar operand, and an
  accumulation over ``j`` one ``__bang_add`` / ``__bang_nan_maximum`` per column into an
  ``R``-lane accumulator, in the scalar loop's order (so sums round identically).

Every expression node becomes one intrinsic into an NRAM temporary (``kiln_v<k>``), or is a
scalar operand (constants, GDRAM loads not indexed by the row) rendered by the C renderer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...ir.types import as_dtype
from ...lower import kernel_ir as K
from ..c import exprs as c
from .staging import accesses, index_forms

F32 = as_dtype("float32")
LANES = 128 // 4  # float32 lanes of one 128-byte vector group
ROW_ELEMS = 8192  # the most elements of one row tile (R rows x C columns): 32 KiB of float32
UNARY = {"exp": "__bang_active_exp", "tanh": "__bang_active_tanh", "sigmoid": "__bang_active_sigmoid",
         "abs": "__bang_active_abs", "relu": "__bang_active_relu", "sqrt": "__bang_sqrt"}
BINARY = {"add": "__bang_add", "sub": "__bang_sub", "mul": "__bang_mul", "div": None,
          "maximum": "__bang_nan_maximum", "minimum": "__bang_nan_minimum"}
COMPARE = {"greater": "gt", "greater_equal": "ge", "less": "lt", "less_equal": "le", "equal": "eq",
           "not_equal": "ne"}
FLIPPED = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq", "ne": "ne"}
ACCUMULATE = {"add": "__bang_add", "mul": "__bang_mul", "max": "__bang_nan_maximum", "min": "__bang_nan_minimum"}


class NotVector(Exception):
    """Some statement or expression has no exact intrinsic form: keep the scalar tile code."""


@dataclass
class VectorBody:
    """The tiles and lines of a vectorized loop body: ``rows`` iterations (lanes) per tile,
    ``cols`` elements per iteration of the row buffers (1 when flat), the staged buffers it
    loads and stores, the temporaries' count, the compute text of one tile, and whether row
    buffers are transposed to columns (else the text reads the rows in place)."""

    rows: int
    cols: int
    loads: list
    stores: list
    units: dict
    temps: int = 0
    text: list = field(default_factory=list)
    transposed: bool = True


def flatten(stmt) -> list:
    """The statements of ``stmt`` with nested blocks spliced in."""
    if isinstance(stmt, K.Block):
        return [s for sub in stmt.body for s in flatten(sub)]
    return [stmt]


class Emitter:
    """Walks the body, writing intrinsic lines into ``self.body.text``."""

    def __init__(self, loop: K.For, units: dict, x, body: VectorBody, inner):
        self.loop, self.units, self.x, self.body, self.inner = loop, units, x, body, inner
        self.forms = index_forms(loop)
        self.env: dict = {}  # Var -> ("vec" | "mask", pointer) or ("scalar", C text)
        self.stored: set = set()
        self.uses: dict = {}  # Var -> reads in the body (``_uses``), for ``block``
        self.col = False  # inside the column loop

    # ------------------------------------------------------------------ expressions
    def temp(self) -> str:
        """A fresh R-lane NRAM temporary."""
        self.body.temps += 1
        return f"kiln_v{self.body.temps - 1}"

    def emit(self, line: str) -> None:
        """Append one line of the tile's compute text (indented inside the column loop)."""
        self.body.text.append(("    " + "  " * self.col) + line)

    def scalar_ok(self, e) -> bool:
        """``e`` is the same for every lane: constants, Batch, scalar lets, GDRAM loads (of
        unstaged buffers) indexed by constants or the column."""
        if isinstance(e, (K.Const, K.Batch)):
            return True
        if isinstance(e, K.Var):
            kind = self.env.get(e, ("",))[0]
            return kind == "scalar" or (self.col and self.inner is not None and e == self.inner.var)
        if isinstance(e, K.Load):
            return e.buffer not in self.units and self.scalar_ok(e.index)
        if isinstance(e, (K.Op, K.Cast)):
            args = e.args if isinstance(e, K.Op) else (e.value,)
            return all(self.scalar_ok(a) for a in args)
        return False

    def value(self, e, dst=None):
        """``("vec" | "mask", pointer)`` of an R-lane vector holding ``e``, or ``("scalar", text)``."""
        if self.scalar_ok(e):
            return "scalar", f"({c.ctype(e.dtype)})({self.x(e)})"
        if e.dtype not in (F32, as_dtype("bool")):
            raise NotVector(f"{e.dtype} value")
        if isinstance(e, K.Var) and e in self.env:
            return self.env[e]
        if isinstance(e, K.Load):
            return "vec", self.load(e)
        if isinstance(e, K.Op):
            return self.op(e, dst)
        raise NotVector(type(e).__name__)

    def load(self, e: K.Load) -> str:
        """The NRAM lanes of a staged load: a per-iteration buffer's input tile, or column
        ``j`` of a row buffer's transposed tile."""
        if e.buffer not in self.units or e.buffer in self.stored or e.dtype != F32:
            raise NotVector(f"load of {e.buffer}")
        form = self.forms.get(e.index)
        if form is None or form[0] != self.units[e.buffer]:
            raise NotVector(f"index of {e.buffer}")
        if form[0] == 1 and e.index == self.loop.var:
            return c.ident(e.buffer, "kiln_in_")
        if not self.col:
            raise NotVector("row element outside the column loop")
        return f"{c.ident(e.buffer, 't_')} + {self.jvar} * {self.body.rows}"

    @property
    def jvar(self) -> str:
        """The C name of the column index."""
        return c.ident(self.inner.var.name, "v_")

    def vec(self, e) -> str:
        """A pointer to R lanes holding ``e`` (a scalar is written into a temporary)."""
        kind, p = self.value(e)
        if kind == "mask":
            raise NotVector("a comparison used as a number")
        if kind == "scalar":
            t = self.temp()
            self.emit(f"__bang_write_value({t}, {self.body.rows}, (float){p});")
            return t
        return p

    def op(self, e: K.Op, dst):
        """One intrinsic (or a short exact sequence) for op node ``e``."""
        n, kind = self.body.rows, e.kind
        out = dst or self.temp()
        if kind in COMPARE:
            if e.args[0].dtype != F32:
                raise NotVector("non-f32 comparison")
            (ka, a), (kb, b) = self.value(e.args[0]), self.value(e.args[1])
            cmp = COMPARE[kind]
            if ka == "scalar":
                (ka, a), (kb, b), cmp = (kb, b), (ka, a), FLIPPED[cmp]
            if kb == "scalar":
                self.emit(f"__bang_{cmp}_scalar({out}, {a}, {b}, {n});")
            else:
                self.emit(f"__bang_{cmp}({out}, {a}, {b}, {n});")
            return "mask", out
        if kind == "select":
            return "vec", self.select(e, out)
        if e.dtype != F32 or any(a.dtype != F32 for a in e.args):
            raise NotVector(f"{kind} on {e.dtype}")
        if kind in UNARY or kind in ("neg", "square"):
            a = self.vec(e.args[0])
            line = {"neg": f"__bang_mul_scalar({out}, {a}, (float)-1.0f, {n});",
                    "square": f"__bang_mul({out}, {a}, {a}, {n});"}.get(kind)
            self.emit(line or f"{UNARY.get(kind)}({out}, {a}, {n});")
            return "vec", out
        if kind not in BINARY:
            raise NotVector(kind)
        (ka, a), (kb, b) = self.value(e.args[0]), self.value(e.args[1])
        if "mask" in (ka, kb):
            raise NotVector("a comparison used as a number")
        if ka == "scalar" and kind in ("add", "mul", "maximum", "minimum"):
            (ka, a), (kb, b) = (kb, b), (ka, a)  # exact: IEEE add/mul and NaN-propagating max/min commute
        if kb == "scalar" and kind in ("add", "mul"):
            self.emit(f"__bang_{kind}_scalar({out}, {a}, {b}, {n});")
        elif kb == "scalar" and kind == "sub":
            self.emit(f"__bang_sub_scalar({out}, {a}, {b}, {n});")
        elif ka == "scalar" and kind == "sub":  # s - b == (-b) + s exactly
            self.emit(f"__bang_mul_scalar({out}, {b}, (float)-1.0f, {n});")
            self.emit(f"__bang_add_scalar({out}, {out}, {a}, {n});")
        elif kind == "div":
            self.divide(e, (ka, a), (kb, b), out)
        else:
            self.emit(f"{BINARY[kind]}({out}, {self.vec(e.args[0]) if ka == 'scalar' else a}, "
                      f"{self.vec(e.args[1]) if kb == 'scalar' else b}, {n});")
        return "vec", out

    def divide(self, e: K.Op, num, den, out: str) -> None:
        """``a / b`` as ``a * (1 / b)``, mlu-ops' division on MLU370 (``__mluop_div``: no float
        ``__bang_div`` for ``__BANG_ARCH__ == 372``): within 2 ulp of IEEE division, not equal."""
        n, (ka, a), (kb, b) = self.body.rows, num, den
        a = self.vec(e.args[0]) if ka == "scalar" else a
        if kb == "scalar":
            self.emit(f"__bang_mul_scalar({out}, {a}, (float)(1.0f / {b}), {n});")
            return
        r = self.temp()
        self.emit(f"__bang_recip({r}, {b}, {n});")
        self.emit(f"__bang_mul({out}, {a}, {r}, {n});")

    def select(self, e: K.Op, out: str) -> str:
        """``select(c, a, b)`` bitwise, exact for every value (NaN, inf, -0): the 1.0/0.0 mask
        of the comparison, as int32 1/0 (``> 0`` on its bits), becomes all-ones/zero masks
        ``k``/``~k`` (``* -1`` and ``- 1``), and ``(a & k) | (b & ~k)``."""
        kc, m = self.value(e.args[0])
        if kc != "mask":
            raise NotVector("select on a loaded condition")
        a, b = self.vec(e.args[1]), self.vec(e.args[2])
        n, k, nk = self.body.rows, self.temp(), self.temp()
        bytes_ = f"{n} * 4"
        for line in (f"__bang_gt_scalar((int*)({k}), (int*)({m}), (int)0, {n});",
                     f"__bang_add_scalar((int*)({nk}), (int*)({k}), (int)-1, {n});",
                     f"__bang_mul_scalar((int*)({k}), (int*)({k}), (int)-1, {n});",
                     f"__bang_band((char*)({k}), (char*)({a}), (char*)({k}), {bytes_});",
                     f"__bang_band((char*)({nk}), (char*)({b}), (char*)({nk}), {bytes_});",
                     f"__bang_bor((char*)({out}), (char*)({k}), (char*)({nk}), {bytes_});"):
            self.emit(line)
        return out

    # ------------------------------------------------------------------ statements
    def block(self, stmts: list) -> None:
        """Statements in order; a ``Let`` or accumulator whose one read is a later ``Store``
        of this block is computed straight into the stored lanes (no temporary, no copy)."""
        stores = {st.value: st for st in stmts if isinstance(st, K.Store) and isinstance(st.value, K.Var)}
        moved = set()
        for s in stmts:
            if id(s) in moved:
                continue
            st = stores.get(getattr(s, "var", None)) if isinstance(s, (K.Let, K.DeclareAcc)) else None
            if st is None or self.uses.get(s.var) != 1:
                self.stmt(s)
            elif isinstance(s, K.Let):
                self.store(K.Store(st.buffer, st.index, s.value))
                moved.add(id(st))
            else:
                self.stmt(s, self.target(st))
                self.stored.add(st.buffer)
                moved.add(id(st))

    def stmt(self, s, acc=None) -> None:
        """One statement of the body (``Let``, ``Store``, ``DeclareAcc`` (its lanes at ``acc``
        when given), ``Accumulate``, the inner loop)."""
        if isinstance(s, K.Let):
            kind, p = self.value(s.value)
            if kind == "scalar":
                ct = c.ctype(s.var.dtype)
                self.emit(f"const {ct} {c.ident(s.var.name, 'v_')} = ({ct}){p};")
                self.env[s.var] = ("scalar", c.ident(s.var.name, "v_"))
            else:
                self.env[s.var] = (kind, p)
        elif isinstance(s, K.Store):
            self.store(s)
        elif isinstance(s, K.DeclareAcc) and not self.col and s.var.dtype == F32:
            kind, init = self.value(s.init)
            if kind != "scalar":
                raise NotVector("accumulator initial value")
            acc = acc or self.temp()
            self.emit(f"__bang_write_value({acc}, {self.body.rows}, (float){init});")
            self.env[s.var] = ("vec", acc)
        elif isinstance(s, K.Accumulate) and self.col and s.combine in ACCUMULATE and s.var in self.env:
            v = self.vec(s.value)
            acc = self.env[s.var][1]
            self.emit(f"{ACCUMULATE[s.combine]}({acc}, {acc}, {v}, {self.body.rows});")
        elif isinstance(s, K.For) and s is self.inner and not self.col:
            self.emit(f"for (long long {self.jvar} = 0; {self.jvar} < {self.body.cols}; ++{self.jvar}) {{")
            self.col = True
            self.block(flatten(s.body))
            self.col = False
            self.emit("}")
        else:
            raise NotVector(type(s).__name__)

    def target(self, s: K.Store) -> str:
        """The output lanes of staged float32 store ``s``."""
        form = self.forms.get(s.index)
        if s.buffer not in self.units or s.buffer in self.stored or form is None \
                or form[0] != self.units[s.buffer] or s.value.dtype != F32:
            raise NotVector(f"store to {s.buffer}")
        if form[0] == 1 and s.index == self.loop.var:
            return c.ident(s.buffer, "kiln_out_")
        if self.col:
            return f"{c.ident(s.buffer, 's_')} + {self.jvar} * {self.body.rows}"
        raise NotVector("row store outside the column loop")

    def store(self, s: K.Store) -> None:
        """A staged float32 store: the value computed straight into the output lanes."""
        dst = self.target(s)
        kind, p = self.value(s.value, dst)
        if kind == "mask":
            raise NotVector("a comparison stored as a number")
        if kind == "scalar":
            self.emit(f"__bang_write_value({dst}, {self.body.rows}, (float){p});")
        elif p != dst:
            self.emit(f"__memcpy({dst}, {p}, {self.body.rows} * sizeof(float), NRAM2NRAM);")
        self.stored.add(s.buffer)


def _uses(tree, out: dict) -> dict:
    """How many times each ``Var`` is read under ``tree`` (an accumulation's target is not a read)."""
    if isinstance(tree, (list, tuple)):
        for t in tree:
            _uses(t, out)
    elif isinstance(tree, K.Var):
        out[tree] = out.get(tree, 0) + 1
    elif isinstance(tree, (K.Expr, K.Stmt)):
        for name in tree.__dataclass_fields__:
            if not (name == "var" and isinstance(tree, (K.Let, K.For, K.DeclareAcc, K.Accumulate))):
                _uses(getattr(tree, name), out)
    return out


def vector_body(loop: K.For, units: dict, stored: set, x, buffers: dict):
    """The loop's body as intrinsics on R-lane NRAM vectors (module doc), or None."""
    body = flatten(loop.body)
    loops = [s for s in body if isinstance(s, K.For)]
    if any(buffers[n].dtype != F32 for n in units) or len(loops) > 1:
        return None
    cols = max(units.values(), default=1)
    if loops and (cols == 1 or any(u not in (1, cols) for u in units.values())):
        return None
    if cols * LANES > ROW_ELEMS:
        return None
    rows = 1024 if cols == 1 else max(LANES, min(1024, ROW_ELEMS // cols) // LANES * LANES)
    loads = sorted({n for n, _, is_store in accesses(body, []) if not is_store and n in units})
    vb = VectorBody(rows=rows, cols=cols, loads=loads, stores=sorted(stored), units=dict(units))
    try:
        em = Emitter(loop, units, x, vb, loops[0] if loops else None)
        em.uses = _uses(body, {})
        em.block(body)
        if em.stored != set(stored):
            return None
    except NotVector:
        return None
    return vb


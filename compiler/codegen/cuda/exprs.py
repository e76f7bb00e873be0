"""CUDA C's dialect of the C-family expression and statement renderer
(``compiler/codegen/c/exprs.py``): NaN/inf spelled with CUDA's bit-cast intrinsics, and a
failed check recorded in the state's device error record (``bufs.err``, see
``templates/cuda/prelude.cu.j2``) before the thread leaves the kernel."""
from __future__ import annotations

from ..c import exprs as c

CUDA = c.Dialect(name="CUDA", f32_bits="__int_as_float({})", f64_bits="__longlong_as_double({})",
                 fail="kiln_fail_{kind}(bufs.err, {cid}, {value}); return;")
CudaRenderError = c.CRenderError  # what the CUDA renderer raises (the C family's error)
Stmts, ctype, ident = c.Stmts, c.ctype, c.ident


def Exprs(program):  # noqa: N802 - stands in for the class, bound to the CUDA dialect
    """The C-family ``Exprs`` of ``program`` in the CUDA dialect."""
    return c.Exprs(program, CUDA)


def const(value, dtype) -> str:
    """A C literal in the CUDA dialect."""
    return c.const(value, dtype, CUDA)

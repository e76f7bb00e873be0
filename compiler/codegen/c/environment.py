"""What the C-family text backends share (CUDA C today): the jinja2 environment over the
``templates`` package and the Kiln ABI header generated from ``runtime/abi_spec.py``.

``abi_header()`` renders ``templates/kiln_abi.h.j2``: ``KILN_ABI_VERSION``, the error codes,
the limits and the exported functions' prototypes, all read from ``runtime.abi_spec`` when
rendered (the templates see it as ``abi``).  Every artifact carries the header
(``include/kiln_abi.h``, written by ``compiler/artifact.py``) and the CUDA prelude embeds it,
so generated C never repeats an ABI number.
"""
from __future__ import annotations

import jinja2

from runtime import abi_spec

_env = None


def environment() -> jinja2.Environment:
    """The jinja2 environment over the ``templates`` package (templates/cuda/*.cu.j2,
    templates/kiln_abi.h.j2), with ``abi`` (runtime.abi_spec) and the ``c_declaration`` filter."""
    global _env
    if _env is None:
        _env = jinja2.Environment(loader=jinja2.PackageLoader("templates", "."), trim_blocks=True,
                                  lstrip_blocks=True, keep_trailing_newline=True,
                                  undefined=jinja2.StrictUndefined)
        _env.globals["abi"] = abi_spec
        _env.filters["c_declaration"] = c_declaration
    return _env


def _declarator(ctype: str, name: str) -> str:
    """``int32_t index`` / ``kiln_state *state``: a C type followed by a name."""
    return f"{ctype}{name}" if ctype.endswith("*") else f"{ctype} {name}"


def c_declaration(fn: abi_spec.Function, name: str = "") -> str:
    """``fn`` as a C declarator: ``int32_t kiln_abi_version(void)``; ``name`` replaces the
    function's name (e.g. ``(*kiln_entry_fn)`` for a function pointer type)."""
    params = ", ".join(_declarator(t, n) for t, n in fn.params) or "void"
    return f"{_declarator(fn.restype, name or fn.name)}({params})"


def abi_header() -> str:
    """The text of ``kiln_abi.h`` for the ABI defined in runtime/abi_spec.py."""
    return environment().get_template("kiln_abi.h.j2").render()

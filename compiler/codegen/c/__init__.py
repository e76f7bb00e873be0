"""The C-family base of the text backends (CUDA C today, BANG C next), in the spirit of
tinygrad's C-style renderer: ``exprs`` (kernel-IR expressions and statements -> C text in a
``Dialect``), ``environment`` (the jinja2 environment over ``templates/`` and the generated
ABI header), and ``templates/c/scalar.h.j2`` (scalar helpers with the IR's semantics and
Philox, qualified by the target's ``KILN_FN`` macro).  See docs/backends.md."""

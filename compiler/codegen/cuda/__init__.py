"""CUDA backend: kernel IR -> CUDA C (jinja2 templates in templates/cuda/) -> nvcc, see docs/codegen-cuda.md.

The names below are imported on first use (``kiln compile --target cpu`` lists this
backend's options without loading jinja2 and the renderer)."""
import importlib

_HOMES = {"CudaRenderError": ".exprs", "global_functions": ".module", "program_variables": ".module",
          "render_module": ".module"}

__all__ = list(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)

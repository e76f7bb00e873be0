"""CUDA backend: kernel IR -> CUDA C (jinja2 templates in templates/cuda/) -> nvcc, see docs/codegen-cuda.md."""
from .exprs import CudaRenderError
from .module import global_functions, program_variables, render_module

__all__ = ["CudaRenderError", "global_functions", "program_variables", "render_module"]

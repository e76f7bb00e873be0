"""CUDA backend: kernel IR -> CUDA C (jinja2 templates in templates/cuda/), see docs/codegen-cuda.md."""
from .render import CudaRenderError, global_functions, render_program

__all__ = ["CudaRenderError", "global_functions", "render_program"]

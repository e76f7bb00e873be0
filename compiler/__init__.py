"""Kiln compiler: TF1-style graph API, IR, passes, code generation, artifacts.

``from compiler import tf`` gives the graph API.
"""
from .frontend import tf_api as _tf_api

tf = _tf_api.build()

__all__ = ["tf"]

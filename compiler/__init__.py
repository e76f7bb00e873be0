"""Kiln compiler: TF1-style graph API, IR, passes, code generation, artifacts.

``from compiler import tf`` gives the graph API; ``from compiler import Model`` the Model base class.
"""
from .frontend import tf_api as _tf_api

tf = _tf_api.build()

from .frontend.model import Model  # noqa: E402  (seed 000's Model base class)

__all__ = ["tf", "Model"]

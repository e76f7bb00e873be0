"""Optimization passes over IR functions.

Each pass is one module with ``NAME`` (e.g. "constant-folding") and one entry point
``run(fn: Function) -> PassResult`` whose ``summary`` says in one line what it changed
("folded 12 ops").  ``manager.run_pipeline`` runs them in order and dumps the IR after
each one.
"""
from .base import PassResult  # noqa: F401

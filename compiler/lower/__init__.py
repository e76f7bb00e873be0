"""Lowering: fused IR groups -> the loop-level kernel IR (``kernel_ir.py``), target independent.

``lower_function(fn)`` (``program.py``) turns an optimized, memory-planned Function into a
``Program``; ``run_program`` (``kernel_interp.py``) evaluates one with numpy (the reference
for every renderer); ``print_program`` (``kernel_printer.py``) dumps one as text;
``plan_program`` (``schedule.py``, the scheduling pass) decides which loops run in parallel
and how, for a backend's ``Capabilities``.
"""
from .kernel_interp import run_program  # noqa: F401
from .kernel_printer import print_program  # noqa: F401
from .program import LoweringError, lower_function  # noqa: F401
from .schedule import plan_program  # noqa: F401

"""When the compiler may ``fork``: the LLVM backend compiles a module's parts in forked
children (``codegen/llvm/build.py``) and the driver draws the initial values in one
(``init_ahead.py``)."""
from __future__ import annotations

import sys
import threading


def fork_is_safe() -> bool:
    """Whether this process may ``fork`` a child that runs Python or LLVM: on Linux, with no
    other Python thread running (a thread holding a lock at the fork would deadlock the
    child)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1

"""Facts about the process the compiler runs in: whether it may ``fork`` (the LLVM backend
compiles a module's parts in forked children, ``codegen/llvm/build.py``, and the driver draws
the initial values in one, ``init_ahead.py``) and how many cores it may use (the CPU
backend's thread plans, ``codegen/llvm/capabilities.py``).  Light on purpose: a compile-cache
hit asks for the cores without loading LLVM."""
from __future__ import annotations

import os
import sys
import threading


def fork_is_safe() -> bool:
    """Whether this process may ``fork`` a child that runs Python or LLVM: on Linux, with no
    other Python thread running (a thread holding a lock at the fork would deadlock the
    child)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

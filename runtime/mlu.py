"""Whether this machine can run MLU artifacts built by cncc: Cambricon's runtime library and
its devices.

``device_count()`` asks CNRT (``libcnrt.so``: ``cnrtGetDeviceCount``) through ctypes, looked
up by the loader and then under ``$NEUWARE_HOME/lib64`` and ``/usr/local/neuware/lib64``
(where Cambricon's Neuware SDK installs it); it is 0 when the library is missing or reports an
error (``why_no_device()`` says which).  CNRT itself honours ``MLU_VISIBLE_DEVICES``.  MLU
code built for the emulator is an ordinary host library and needs none of this.
"""
from __future__ import annotations

import ctypes
import functools
import os

from .driver import load_driver

_CNRT_NAMES = ("libcnrt.so",)


def _search_dirs() -> list:
    """Where the Neuware SDK puts its libraries."""
    home = os.environ.get("NEUWARE_HOME", "")
    return [os.path.join(home, "lib64") if home else "", "/usr/local/neuware/lib64"]


@functools.cache
def _probe() -> tuple:
    """``(device count, reason when 0)``, asked once per process."""
    lib = load_driver(_CNRT_NAMES, _search_dirs())
    if lib is None:
        return 0, "Cambricon's runtime library (libcnrt.so, Neuware SDK) is not installed"
    count = ctypes.c_uint(0)
    code = lib.cnrtGetDeviceCount(ctypes.byref(count))
    if code != 0:
        return 0, f"cnrtGetDeviceCount failed with CNRT error {code} (no usable MLU or driver)"
    if count.value < 1:
        return 0, "CNRT reports no MLU (check MLU_VISIBLE_DEVICES)"
    return count.value, ""


def device_count() -> int:
    """How many MLUs this process can use (0 without CNRT or a device)."""
    return _probe()[0]


def why_no_device() -> str:
    """Why :func:`device_count` is 0 ("" when there is an MLU)."""
    return _probe()[1]

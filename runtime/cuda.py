"""Whether this machine can run CUDA artifacts: the NVIDIA driver and its GPUs.

``device_count()`` asks the driver library (``libcuda.so.1``, the CUDA driver API:
``cuInit`` + ``cuDeviceGetCount``) through ctypes, so no CUDA Python package is needed; it
is 0 when the driver is missing or reports an error (``why_no_device()`` says which).
Honours ``CUDA_VISIBLE_DEVICES`` like every CUDA program.
"""
from __future__ import annotations

import ctypes
import functools

from .driver import load_driver

_DRIVER_NAMES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


@functools.cache
def _probe() -> tuple:
    """``(device count, reason when 0)``, asked once per process."""
    lib = load_driver(_DRIVER_NAMES)
    if lib is None:
        return 0, "the NVIDIA driver library (libcuda.so.1) is not installed"
    count = ctypes.c_int(0)
    code = lib.cuInit(0)
    if code != 0:
        return 0, f"cuInit failed with CUDA driver error {code} (no usable GPU or driver)"
    code = lib.cuDeviceGetCount(ctypes.byref(count))
    if code != 0:
        return 0, f"cuDeviceGetCount failed with CUDA driver error {code}"
    if count.value < 1:
        return 0, "the NVIDIA driver reports no GPU (check CUDA_VISIBLE_DEVICES)"
    return count.value, ""


def device_count() -> int:
    """How many CUDA GPUs this process can use (0 without a driver or GPU)."""
    return _probe()[0]


def why_no_device() -> str:
    """Why :func:`device_count` is 0 ("" when there is a GPU)."""
    return _probe()[1]

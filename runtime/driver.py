"""Loading a vendor's driver library through ctypes, for the device checks of
``runtime.cuda`` and ``runtime.mlu`` (no vendor Python package is needed)."""
from __future__ import annotations

import ctypes
import os


def load_driver(names, search_dirs=()):
    """The first of ``names`` that loads, tried by the dynamic loader's own search and then
    in each of ``search_dirs``; None when none loads."""
    candidates = list(names) + [os.path.join(d, n) for d in search_dirs if d for n in names]
    for name in candidates:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None

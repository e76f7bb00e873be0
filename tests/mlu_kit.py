"""Shared by the MLU emulator tests: hand-written BANG C kernels (``tests/mlu/*.mlu``) built
once with g++ against the emulation header and loaded with ctypes."""
from __future__ import annotations

import ctypes
from pathlib import Path

from compiler.codegen.mlu.build import compile_mlu


def emulated_library(source: Path, folder: Path) -> ctypes.CDLL:
    """Build ``source`` for the emulator into ``folder`` and load it, with the emulator's
    control functions typed (``kiln_mlu_last_error``, ``kiln_mlu_set_schedule``)."""
    path = Path(folder) / (source.stem + ".so")
    compile_mlu(source.read_text(), path)
    so = ctypes.CDLL(str(path))
    so.kiln_mlu_last_error.restype = ctypes.c_char_p
    so.kiln_mlu_set_schedule.argtypes = [ctypes.c_int, ctypes.c_ulonglong]
    return so


def compiled_and_interpreted(fetches, feed, backend: str = "mlu"):
    """``(got, want)``: ``fetches`` run by a ``backend`` session (a fall-back to the
    interpreter warns, and the warning is an error here) and by the reference interpreter,
    in the current default graph."""
    import warnings

    from compiler import tf

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tf.Session(config={"backend": backend}) as sess:
            got = sess.run(fetches, feed)
    with tf.Session(config={"backend": "interpreter"}) as sess:
        want = sess.run(fetches, feed)
    return got, want

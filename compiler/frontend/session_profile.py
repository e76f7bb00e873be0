"""``KILN_PROFILE=1`` for ``tf.Session`` (docs/performance.md): every compiled ``Session.run``
signature is built with profiling instrumentation (its own cache entry: the target differs),
its kernels are timed on every run, and when the session closes the kernel table of each
signature is printed to stderr, or written to the file ``KILN_PROFILE_OUT`` names; a Chrome
trace of all of them goes to ``KILN_PROFILE_TRACE`` when set (one process track per
signature).  A session config ``{"profile": True}`` (``kiln_profile`` on a ConfigProto)
does the same as the environment variable.  Profiling is for CPU builds; a signature placed on
another backend runs unprofiled, with one warning.
"""
from __future__ import annotations

import os
import sys
import warnings

from .placement import config_get

_TRUE = ("1", "true", "yes", "on")


def profiling_wanted(config) -> bool:
    """Whether a session with ``config`` profiles (config ``profile``, else $KILN_PROFILE)."""
    value = config_get(config, "profile")
    if value is None:
        value = os.environ.get("KILN_PROFILE", "")
    return str(value).strip().lower() in _TRUE


class SessionProfiler:
    """The recorders of one session's compiled signatures, reported at close."""

    def __init__(self):
        self.recorders: dict = {}  # artifact path -> (label, runtime.profiling.Recorder)
        self._warned = False

    def target(self, target):
        """``target`` with profiling on (CPU), or as is with a warning (other backends)."""
        from ..codegen.registry import get_backend

        if target.backend == "cpu":
            return get_backend("cpu").make_target(**{**dict(target.options), "profile": True})
        if not self._warned:
            warnings.warn(f"KILN_PROFILE: profiling supports CPU builds only; signatures on the "
                          f"{target.backend!r} backend run unprofiled", RuntimeWarning, stacklevel=4)
            self._warned = True
        return target

    def watch(self, path, artifact) -> None:
        """Start recording the events of a loaded profiling artifact (once per artifact)."""
        from runtime.profiling import Recorder

        if path not in self.recorders and "profile" in artifact.manifest:
            self.recorders[path] = (_label(artifact.manifest, path), Recorder(artifact))

    def report(self) -> None:
        """Print (or write to $KILN_PROFILE_OUT) each signature's table; write the trace to
        $KILN_PROFILE_TRACE; stop recording."""
        from runtime.files import atomic_write
        from runtime.profile_report import profile_table, write_trace

        profiles = []
        for label, recorder in self.recorders.values():
            profiles.append((label, recorder.collect()))
            recorder.close()
        self.recorders.clear()
        if not profiles:
            return
        text = "".join(f"Kiln profile of Session.run({label}):\n{profile_table(p)}\n" for label, p in profiles)
        out, trace = os.environ.get("KILN_PROFILE_OUT"), os.environ.get("KILN_PROFILE_TRACE")
        if out:
            atomic_write(out, text)
        else:
            print(text, end="", file=sys.stderr)
        if trace:
            write_trace(profiles, trace)


def _label(manifest: dict, path) -> str:
    """A signature's name in reports: its fetches and its cache entry."""
    fetches = [f["name"] for e in manifest["entry_points"].values() for f in e["fetches"]]
    return f"{', '.join(fetches) or 'no fetches'}; artifact {os.path.basename(os.fspath(path))[:12]}"

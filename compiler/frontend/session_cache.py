"""tf.Session's use of the compile cache (``compiler/cache.py``): the artifact of one
``Session.run`` signature, keyed by the fingerprint of its function as lowered from the
graph (before the passes, so a hit skips them), the target, the versions and Kiln's
sources; built once and reused across sessions and processes.

The cache folder is ``config={"cache_dir": ...}``, else the default one
(``$KILN_CACHE_DIR``, ``~/.cache/kiln``); with ``KILN_CACHE=0`` each session builds into
its own temp folder, deleted by ``Session.close``.  An artifact has no initial values
(``"init": "zeros"``: the session binds its own arrays) and, in its manifest's ``"session"`` record, the
origins of its kernels (native error messages name them).
"""
from __future__ import annotations

from runtime import manifest as mf

from ..cache import CompileCache, cache_key, target_key
from ..codegen.registry import Target
from ..compile import build_artifact, finish_entry, gc_paused, profile_sources, state_keys
from ..ir.fingerprint import fingerprint
from .compile_graph import variable_infos
from .op_source import graph_sources

__all__ = ["NoKernels", "fingerprint", "session_artifact"]


class NoKernels(Exception):
    """The optimized signature has no kernels: the session interprets it."""


def _build(graph, fn, name, target, folder) -> None:
    """Optimize, lower and build ``fn`` into ``folder`` (raises NoKernels when empty)."""
    lowered = finish_entry(name, fn, skip_empty=True)
    if lowered.program is None:
        raise NoKernels(name)
    variables = variable_infos(graph, state_keys([lowered.fn]))
    build_artifact([lowered], variables, None, folder,
                   {k: round(v, 4) for k, v in lowered.timings.items()}, target,
                   sources=lambda: graph_sources(graph))
    m = mf.read_manifest(folder)
    m["session"] = {"kernels": [k.origin or k.name for k in lowered.program.kernels]}
    mf.write_manifest(folder, m)


def session_artifact(graph, fn, name, cache: CompileCache, load, target: Target = Target()):
    """``(load(entry folder), kernel origins)`` for the signature lowered as ``fn`` (entry
    ``name``), from ``cache`` or built into it.  ``load`` (``runtime.load_artifact``, or a
    session's memo of it) runs while the entry cannot be evicted; an entry it finds damaged
    (``ArtifactError``) is discarded and rebuilt once.  Raises NoKernels for a signature
    with nothing to compile, NotImplementedError for an op without a kernel lowering."""
    key = cache_key("session", name, fingerprint(fn), target_key(target),
                    profile_sources(target, lambda: graph_sources(graph)))
    for attempt in range(2):
        def build(folder):
            with gc_paused():
                _build(graph, fn, name, target, folder)
        with cache.open(key, build, check=None) as (path, _hit):
            try:
                artifact = load(path)
            except mf.ArtifactError:
                if attempt:
                    raise
                cache.discard(path)
                continue
            return artifact, tuple(artifact.manifest.get("session", {}).get("kernels", ()))

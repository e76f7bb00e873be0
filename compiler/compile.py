"""The compile driver: IR functions -> optimized IR -> kernel IR -> a backend's source ->
artifact.  It knows nothing of graphs or sessions (``frontend/compile_graph.py`` lowers a
graph's entry points and calls it) and nothing of any one backend (``codegen/registry.py``).

``compile_functions(functions, variables, out_dir, target=...)`` runs the pass pipeline on
each entry function (dumping every stage to ``out_dir/ir/<entry>/``), lowers the result to
a kernel-IR ``Program``, plans it for the backend's capabilities (the scheduling pass,
``compiler/lower/schedule.py``), has the target's backend render all programs into one module with
the C ABI and build it, and writes the artifact (``compiler/artifact.py``): the manifest,
the source, ``lib/model.so`` and ``init.safetensors``.  Timings of each stage go into the
manifest's ``"build"`` record.  ``finish_entry`` and ``build_artifact`` are the steps
``tf.Session``'s per-signature cache uses (``frontend/session_cache.py``).
"""
from __future__ import annotations

import gc
import importlib
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from runtime import manifest as mf
from runtime.files import apply_umask, atomic_write, current_umask

from .artifact import (EntryInfo, check_output_dir, new_staging_dir, replace_artifact_dir, write_artifact,
                       mark_zero_init, write_init_values)
from .codegen.registry import Target, get_backend, make_target
from .ir.from_graph import RNG_STATE
from .passes.manager import run_pipeline


class CompileError(ValueError):
    """An entry point cannot be compiled (bad name, unknown variable, ...)."""


@dataclass
class LoweredEntry:
    """One entry point on its way down: the optimized function and its kernel program."""

    name: str
    fn: object  # the optimized IR Function (schedule + memory plan)
    program: object  # compiler.lower.kernel_ir.Program
    timings: dict = field(default_factory=dict)
    unplanned: object = None  # the program before plan_entry (costs are counted there)


def finish_entry(name, fn, dump_dir=None, timings=None, skip_empty=False) -> LoweredEntry:
    """Run the pipeline on a lowered ``fn`` and lower the result to a kernel Program.

    With ``skip_empty``, a function whose optimized body has no kernels gets
    ``program=None`` (``tf.Session`` interprets those).
    """
    from .lower.program import lower_function
    from .passes.manager import count_kernels

    timings = dict(timings or {})
    t1 = time.perf_counter()
    opt = run_pipeline(fn, dump_dir=str(dump_dir) if dump_dir else None).fn
    t2 = time.perf_counter()
    timings["pipeline_s"] = t2 - t1
    if skip_empty and count_kernels(opt) == 0:
        return LoweredEntry(name, opt, None, timings)
    program = lower_function(opt)
    timings["lowering_s"] = time.perf_counter() - t2
    return LoweredEntry(name, opt, program, timings)


def entry_info(fn) -> EntryInfo:
    """The manifest record of an optimized function (feeds/fetches in ABI order)."""
    feeds = [(p.key, p.value.type.dtype, p.value.type.shape) for p in fn.feeds()]
    fetches = [(k, v.type.dtype, v.type.shape) for k, v in fn.fetches]
    return EntryInfo(feeds, fetches, [p.key for p in fn.state_in()], [k for k, _ in fn.state_out])


def state_keys(fns) -> list:
    """Every variable the functions read or write, first-seen order, ``kiln/rng_step`` last."""
    keys = list(dict.fromkeys(k for fn in fns for k in [p.key for p in fn.state_in()] + [k for k, _ in fn.state_out]))
    return [k for k in keys if k != RNG_STATE] + ([RNG_STATE] if RNG_STATE in keys else [])


def _print_kernels(program) -> str | None:
    """The kernel-IR dump of a program, when a printer exists."""
    try:
        printer = importlib.import_module("compiler.lower.kernel_printer")
    except ModuleNotFoundError:
        return None
    return printer.print_program(program)


def check_entry_name(name: str) -> None:
    if not mf._SYMBOL.match(name):
        raise CompileError(f"entry point name {name!r} must be a C identifier")


def plan_entry(entry: LoweredEntry, target: Target) -> LoweredEntry:
    """Run the scheduling pass on the entry's program for ``target``'s backend capabilities
    (once: a planned program is returned as is), timed.  A backend that declares none gets
    the program unplanned (its renderer plans, or renders the sequential bodies)."""
    from .lower.schedule import plan_program

    caps = get_backend(target.backend).capabilities(target)
    if caps is None:
        return entry
    t0 = time.perf_counter()
    planned = plan_program(entry.program, caps)
    if planned is not entry.program:
        entry.unplanned, entry.program = entry.program, planned
        entry.timings["schedule_s"] = time.perf_counter() - t0
    return entry


def build_artifact(lowered: list, variables: list, init: dict, out_dir, timings=None,
                   target: Target = Target(), sources=None) -> Path:
    """Render ``lowered`` entries into one module with the ABI (the target's backend renders
    and builds it) and write the artifact.  A profiling build (the target's ``profile``
    option) also gets the manifest's ``"profile"`` record (``lower/profile_table.py``;
    ``sources``: graph op name -> ``"file:line"``, or a callable giving that dict)."""
    t0 = time.perf_counter()
    backend = get_backend(target.backend)
    for e in lowered:
        if e.program.steps is not None and not backend.control_flow:
            first = next(s for s in e.program.steps if not isinstance(s, int))
            raise NotImplementedError(f"backend {backend.name!r} cannot run control flow ({first.origin} in entry "
                                      f"{e.name!r}): it does not render control steps")
    programs = {e.name: plan_entry(e, target).program for e in lowered}
    unplanned = {e.name: e.unplanned or e.program for e in lowered}
    var_list = [(v.name, v.dtype, v.shape) for v in variables]
    entries = {e.name: entry_info(e.fn) for e in lowered}
    build = dict(timings or {})
    source = backend.render(programs, var_list, target)  # write_artifact closes it
    build["render_s"] = round(time.perf_counter() - t0, 4)
    out = write_artifact(out_dir, source, variables, init, entries, target, build)
    if target.get("profile"):
        from .lower.profile_table import profile_record

        _add_manifest_records(out, {"profile": profile_record(programs, sources, unplanned)})
    return out


def compile_functions(functions: dict, variables, out_dir, target="cpu", dump_ir: bool = True,
                      manifest_extra: dict | None = None, timings: dict | None = None, sources=None,
                      cache_parts=None, init_key=None, any_seeds=frozenset(), **options) -> Path:
    """Compile IR ``functions`` (``entry name -> Function`` as lowered) into the artifact
    directory ``out_dir`` for ``target`` (a backend name of ``codegen.registry`` with its
    ``options``, e.g. ``"cuda", arch="sm_90", emulate=True, tf32=True``, or a ready
    ``Target``); returns its path.

    ``variables(keys) -> (VariableInfo list in ABI order, {name: initial value})`` gives the
    variables the optimized entries read or write (``keys``, ``kiln/rng_step`` last): the
    caller (e.g. ``frontend.compile_graph``) knows them, the driver knows which are used.
    The values may come as a callable returning the dict: the artifact writer then computes
    them while the native library compiles (``artifact.write_artifact``).
    The artifact is built in a hidden sibling folder and swapped into place when complete
    (``artifact.replace_artifact_dir``): an interrupted or failed compile leaves an older
    artifact at ``out_dir`` untouched.  ``manifest_extra`` adds top-level manifest records
    (e.g. the model file's ``"model"``).  The manifest's ``"build"`` record holds the seconds
    spent per stage (``timings`` from the caller, ``pipeline_s``, ``lowering_s``,
    ``render_s``, ``llvm_optimize_s``, ...).  ``sources`` (op name -> ``"file:line"``) feeds a
    profiling build's manifest record (``build_artifact``); a profiling build's cache key
    covers them, so a hit never shows stale lines.

    With ``cache_parts`` (JSON-able facts the functions do not show, e.g. the variables'
    ABI order) and the compile cache on (``compiler/cache.py``), the artifact comes from the
    cache when one was built from the same input, and goes into it otherwise;
    ``build.cache`` says ``"hit"`` or ``"miss"``, ``build.cache_s`` the seconds of this
    call (for a hit the other timings are those of the build it reuses).  Initial values
    are not part of the key: ``init_key()`` fingerprints the initializers, and a hit whose
    recorded ``init_key`` differs (e.g. unseeded random initializers) gets them computed
    afresh.  Random ops whose ``(seed, seed2)`` are in ``any_seeds`` (drawn at random: no
    graph or op seed) match a cached artifact whatever seeds it was compiled with: an
    artifact fixes its random seeds when it is compiled, and the cached one's were drawn
    at random just the same.
    """
    from . import cache

    start = time.perf_counter()
    tgt = target if isinstance(target, Target) else make_target(target, **options)
    out = Path(out_dir)
    check_output_dir(out)

    def build(folder: Path) -> None:
        _compile_into(functions, variables, folder, tgt, dump_ir, dict(timings or {}), sources)
        _finish_manifest(folder, time.perf_counter() - start, manifest_extra or {},
                         **({"init_key": init_key()} if init_key else {}))

    store = cache.default_cache() if cache_parts is not None else None
    if store is None:
        _staged_install(out, build)
        return out
    from .ir.fingerprint import fingerprint

    key = cache.cache_key("artifact", {n: fingerprint(fn, any_seeds) for n, fn in functions.items()},
                          cache.target_key(tgt),
                          dump_ir, manifest_extra, cache_parts,
                          profile_sources(tgt, sources))
    with store.open(key, build) as (entry, hit):
        _staged_install(out, lambda folder: _install_cached(entry, folder, hit, key, start, variables, init_key))
    return out


def profile_sources(tgt: Target, sources):
    """The source lines a profiling build records (part of its cache key); None otherwise."""
    if sources is None or not dict(tgt.options).get("profile"):
        return None
    return sources() if callable(sources) else sources


def _install_cached(entry: Path, folder: Path, hit: bool, key: str, start: float, variables, init_key) -> None:
    """Copy the cache ``entry`` into the staging ``folder``; on a hit recompute the initial
    values if the initializers differ; note the cache's part in the manifest (a hit keeps
    the build record of the compile it reuses)."""
    from .cache import STAT_NAME

    shutil.copytree(entry, folder, copy_function=_link_or_copy, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(STAT_NAME))
    _dirs_follow_umask(folder)
    if hit and init_key is not None:
        _refresh_init(folder, variables, init_key())
    m = mf.read_manifest(folder)
    m["build"].update(cache="hit" if hit else "miss", cache_key=key, cache_s=round(time.perf_counter() - start, 4))
    mf.write_manifest(folder, m)


def _link_or_copy(src, dst) -> None:
    """Hard-link a cached file (its content never changes: Kiln replaces artifact files, never
    rewrites them), or copy it (across file systems, or when this process's umask wants
    another mode than the cached file has: an artifact's files follow the umask)."""
    mode = os.stat(src).st_mode & 0o777
    want = (0o777 if mode & 0o111 else 0o666) & ~current_umask()
    if mode == want:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)
    os.chmod(dst, want)


def _dirs_follow_umask(folder: Path) -> None:
    """Give ``folder`` and its sub-folders the mode a plain ``mkdir`` would (copytree copies
    the cache's modes)."""
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        apply_umask(d, is_dir=True)


def _refresh_init(folder: Path, variables, init_key: str) -> None:
    """Recompute ``init.safetensors`` of a cached artifact copied to ``folder`` unless it was
    built from the same initializers (``build.init_key``)."""
    m = mf.read_manifest(folder)
    if m["build"].get("init_key") == init_key or not m["variables"]:
        return
    t0 = time.perf_counter()
    infos, values = variables([v["name"] for v in m["variables"]])
    zeros = write_init_values(folder / mf.INIT_NAME, infos, values() if callable(values) else values)
    mark_zero_init(m, zeros)
    m["files"][mf.INIT_NAME] = mf.file_digest(folder / mf.INIT_NAME)
    m["build"].update(init_key=init_key, initial_values_s=round(time.perf_counter() - t0, 4))
    mf.write_manifest(folder, m)


def _staged_install(out: Path, fill) -> None:
    """``fill(folder)`` a new staging folder beside ``out`` and swap it in when complete."""
    staged = new_staging_dir(out)
    try:
        fill(staged)
        replace_artifact_dir(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


@contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for a compile: passes, lowering and rendering
    allocate millions of small objects, and the collections they trigger rescan everything
    alive (a third of the render time of the seed-002 CNN).  Afterwards every object alive
    joins the oldest generation (``freeze``/``unfreeze`` moves them there without a scan):
    else the first allocation's young collection scans all that the compile left alive
    (~50 ms for the CNN).  Cyclic garbage of the compile goes with the next full collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:  # (never unfreeze what the program froze)
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _compile_into(functions: dict, variables, out: Path, tgt: Target, dump_ir: bool, totals: dict,
                  sources=None) -> None:
    """Optimize, lower, render and build every function into the (staging) folder ``out``."""
    with gc_paused():
        _compile_entries_into(functions, variables, out, tgt, dump_ir, totals, sources)


def _compile_entries_into(functions: dict, variables, out: Path, tgt: Target, dump_ir: bool, totals: dict,
                          sources=None) -> None:
    """The body of :func:`_compile_into` (per entry: pipeline, lowering, plan, dumps; then
    the artifact).  The initial values are drawn meanwhile in a forked child where that is
    safe (``init_ahead.py``), else before the library builds."""
    ahead = _start_init_ahead(functions, variables, out)
    try:
        lowered = []
        for name, fn in functions.items():
            check_entry_name(name)
            dump = out / "ir" / name if dump_ir else None
            e = plan_entry(finish_entry(name, fn, dump), tgt)
            lowered.append(e)
            for k, v in e.timings.items():
                totals[k] = totals.get(k, 0.0) + v
            text = _print_kernels(e.program) if dump_ir else None
            if text is not None:
                dump.mkdir(parents=True, exist_ok=True)
                atomic_write(dump / "kernels.txt", text, durable=False)
        t0 = time.perf_counter()
        infos, init = variables(state_keys(e.fn for e in lowered))
        if ahead is not None and callable(init) and infos and ahead.covers(infos):
            init = ahead
        elif not callable(init):  # else computed (and timed) by the artifact writer
            totals["initial_values_s"] = time.perf_counter() - t0
        build_artifact(lowered, infos, init, out, {k: round(v, 4) for k, v in totals.items()}, tgt, sources)
    finally:
        if ahead is not None:
            ahead.close()


def _start_init_ahead(functions: dict, variables, out: Path):
    """The forked child drawing the initial values of the variables the (unoptimized)
    ``functions`` use, when they are computed (a callable) and forking is safe; else None."""
    from .host import fork_is_safe
    from .init_ahead import InitAhead

    if not fork_is_safe():
        return None
    infos, init = variables(state_keys(functions.values()))
    if not callable(init) or not infos:
        return None
    return InitAhead(out / mf.INIT_NAME, infos, init)


def _finish_manifest(out: Path, seconds: float, extra: dict, **build) -> None:
    """Add the whole compile's wall time (``build.total_s``), more ``build`` facts and
    ``extra`` records to the written manifest."""
    _add_manifest_records(out, extra, total_s=round(seconds, 4), **build)


def _add_manifest_records(out: Path, records: dict, **build) -> None:
    """Add top-level ``records`` (and ``build`` fields) to the manifest written at ``out``."""
    m = mf.read_manifest(out)
    m["build"].update(build)
    m.update(records)
    mf.write_manifest(out, m)

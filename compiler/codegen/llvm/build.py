"""Turn LLVM IR into a shared library: parse, verify, optimize (O2), emit an object, link.

The object comes from ``TargetMachine.emit_object`` (host CPU, PIC); the library is
linked by the system C compiler (``cc -shared``) against libgomp, which provides the
``GOMP_parallel`` thread teams the generated kernels use, and libm.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ...host import fork_is_safe, host_cores
from ..registry import BuildError
from .gemm import ENGINE_PREFIX
from .split import split_module, split_off
from .target import HostTarget, host_target, optimize

DEFAULT_LINK_FLAGS = ("-lgomp", "-lm")


@dataclass
class BuildResult:
    """What ``compile_module`` made and how long each stage took (seconds)."""

    path: str
    timings: dict = field(default_factory=dict)


def parse_module(source, target: HostTarget) -> llvm.ModuleRef:
    """Parse IR text (or an ``llvmlite.ir.Module``) and verify it, set for ``target``."""
    if isinstance(source, ir.Module):
        source.triple = target.triple
        source.data_layout = target.data_layout
    text = str(source)
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as exc:
        raise BuildError(f"invalid LLVM IR: {exc}") from exc
    mod.triple = target.triple
    mod.data_layout = target.data_layout
    return mod


def link_shared(obj_paths, out_path: str, extra_link_flags=()) -> None:
    """Link objects (a path or a list) into a shared library with ``cc -shared``; raise
    BuildError on failure."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise BuildError(f"C compiler {cc!r} not found: it is needed to link {out_path}")
    objs = [obj_paths] if isinstance(obj_paths, str) else list(obj_paths)
    cmd = [cc, "-shared", "-o", out_path, *objs, *DEFAULT_LINK_FLAGS, *extra_link_flags]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"linking failed ({' '.join(cmd)}), exit {proc.returncode}:\n{proc.stderr.strip()}")


# Modules smaller than this (characters of IR) compile in one piece: forking costs more.
SPLIT_MIN_CHARS = 200_000
JOBS_ENV = "KILN_LLVM_JOBS"


def llvm_jobs() -> int:
    """How many processes compile one module: ``$KILN_LLVM_JOBS``, else the usable cores (at
    most 4: the parts get lumpy).  Not fewer on a busy machine: the load average lags (a
    compile right after another saw its own predecessor's load and ran alone), and parts
    that share busy cores cost about what one process would.  1 where ``fork`` is unsafe
    (not Linux, or other Python threads running)."""
    if not fork_is_safe():
        return 1
    env = os.environ.get(JOBS_ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise BuildError(f"{JOBS_ENV}={env!r}: expected a number of processes") from None
    return max(1, min(4, host_cores()))


def _object(source, target: HostTarget, timings: dict, explicit: bool = False) -> bytes:
    """The object code of one module (:func:`_compile`)."""
    return _compile(source, target, timings, explicit)[1]


def _compile(source, target: HostTarget, timings: dict, explicit: bool = False) -> tuple:
    """``(optimized module, object code)``: parse, optimize (``explicit``: the GEMM engine's
    pipeline, ``target.optimize``) and code-generate one module; adds the stages' seconds to
    ``timings``."""
    t0 = time.perf_counter()
    mod = parse_module(source, target)
    t1 = time.perf_counter()
    optimize(mod, target, explicit=explicit)
    t2 = time.perf_counter()
    obj = target.machine.emit_object(mod)
    t3 = time.perf_counter()
    for k, v in (("parse", t1 - t0), ("optimize", t2 - t1), ("codegen", t3 - t2)):
        timings[k] = timings.get(k, 0.0) + v
    return mod, obj


def _units(text: str, jobs: int, early=None) -> tuple:
    """``(units, early)``: the ``(module text, explicit)`` pieces of a module to compile
    separately, and ``early`` when it compiles one of them already.  The kernels are split
    into up to ``jobs`` parts when large (``split.py``); the GEMM engine is a unit of its own
    (``explicit``: its lighter pipeline) unless ``early`` (an :class:`EarlyUnit`) compiles
    the same engine since the module rendered: then the kernels get every job.
    ``[(text, False)]`` when nothing splits off."""
    engine = split_off(text, ENGINE_PREFIX)
    rest, units = (engine[1], [(engine[0], True)]) if engine else (text, [])
    early = early if early is not None and units and early.matches(units[0][0]) else None
    if early is not None:
        units = []
    if rest is None:
        return units, early
    jobs = max(1, jobs - len(units))
    parts = split_module(rest, jobs) if len(rest) >= SPLIT_MIN_CHARS else [rest]
    return [(p, False) for p in parts] + units, early


def _objects(units: list, target: HostTarget, tmp: str, timings: dict, fork: bool) -> list:
    """Object files of ``(text, explicit)`` units.  With ``fork``: ``units[1:]`` each in a
    forked child while this process compiles ``units[0]``; a child that fails is redone here,
    so its error is raised as usual.  Without: the units one after another here."""
    here = units[:1] if fork else units
    children = []
    try:
        _fork_units(units[len(here):] if fork else [], target, tmp, children)
        paths = []
        for k, (text, explicit) in enumerate(here):
            paths.append(os.path.join(tmp, f"here{k}.o"))
            with open(paths[-1], "wb") as f:
                f.write(_object(text, target, timings, explicit))
    finally:  # never leave a child behind, also when this process's share failed
        statuses = _wait_all(children, timings, "wait")
    return paths + _collect(children, statuses, target, timings)


def _wait_all(children: list, timings: dict, key: str) -> list:
    """The exit statuses of forked ``children`` once all have ended; the seconds this process
    waited go to ``timings[key]`` (when there were any)."""
    t0 = time.perf_counter()
    statuses = [os.waitpid(pid, 0)[1] for pid, *_ in children]
    if children:
        timings[key] = time.perf_counter() - t0
    return statuses


def _collect(children: list, statuses: list, target: HostTarget, timings: dict) -> list:
    """The object paths of finished forked ``children`` (their exit ``statuses``), their
    stage timings added to ``timings``; a child that failed is redone here."""
    paths = []
    for (_pid, path, text, explicit), status in zip(children, statuses):
        if os.waitstatus_to_exitcode(status) != 0:
            with open(path, "wb") as f:
                f.write(_object(text, target, timings, explicit))
        else:
            with open(path + ".json") as f:
                for k, v in json.load(f).items():
                    timings[k] = timings.get(k, 0.0) + v
        paths.append(path)
    return paths


class EarlyUnit:
    """The GEMM engine compiling in a forked child while the rest of the module renders.

    ``build_module(engine_ready=EarlyUnit())`` calls it once the engine is in
    the module (the largest function group: ~0.4 s of LLVM for the seed-002 CNN, about what
    rendering the kernels takes, so the two overlap on two cores).  ``compile_module(early=)``
    then links its object instead of compiling the engine again, when the module's engine
    unit defines the same functions and variables (else it compiles that unit as usual).
    ``close()`` stops the child and removes its folder (always call it: ``compile_module``
    does, and the backend does when rendering fails)."""

    def __init__(self, target: HostTarget | None = None):
        self.target = target or host_target()
        self.children, self.signature, self.timings = [], None, {}
        self.tmp = None

    def __call__(self, module) -> None:
        """The ``engine_ready`` hook: split the engine off the module so far and fork its compile."""
        if self.tmp is not None:
            return  # started already
        engine = split_off(str(module), ENGINE_PREFIX)
        if engine is None or engine[1] is None:
            return
        self.tmp = tempfile.mkdtemp(prefix="kiln-llvm-engine-")
        self.signature = _signature(engine[0])
        _fork_units([(engine[0], True)], self.target, self.tmp, self.children)

    def matches(self, unit_text: str) -> bool:
        """Whether ``unit_text`` is the engine this compiles."""
        return bool(self.children) and _signature(unit_text) == self.signature

    def wait(self) -> str:
        """The engine's object file, once compiled (its stage timings: ``self.timings``)."""
        children, self.children = self.children, []
        statuses = _wait_all(children, self.timings, "early_wait")
        return _collect(children, statuses, self.target, self.timings)[0]

    def close(self) -> None:
        """Stop the child if it still runs; remove the folder (its object goes with it)."""
        for pid, *_ in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.children = []
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _signature(unit_text: str) -> str:
    """What must match for one compile of a unit to stand for another: its function
    definitions (they follow every top-level line, ``split._assemble``) and the module
    variables it defines."""
    start = unit_text.find("\ndefine ")
    if start < 0:
        return unit_text
    defined = [ln for ln in unit_text[:start].split("\n") if " = hidden global " in ln]
    return "\n".join(defined) + unit_text[start:]


def _fork_units(units: list, target: HostTarget, tmp: str, children: list) -> None:
    """Compile each unit in a forked child that writes its object file and exits; appends
    ``(pid, path, text, explicit)`` to ``children`` as they start."""
    for k, (text, explicit) in enumerate(units, 1):
        path = os.path.join(tmp, f"part{k}.o")
        pid = os.fork()
        if pid == 0:  # the child: compile, write the object, exit without unwinding
            code, stages = 1, {}
            try:
                with open(path, "wb") as f:
                    f.write(_object(text, target, stages, explicit))
                with open(path + ".json", "w") as f:
                    json.dump(stages, f)
                code = 0
            finally:
                os._exit(code)
        children.append((pid, path, text, explicit))


def compile_module(source, out_so_path: str, extra_link_flags=(),
                   target: HostTarget | None = None, asm_path: str | None = None,
                   opt_ir_path: str | None = None, jobs: int | None = None,
                   early: EarlyUnit | None = None) -> BuildResult:
    """Optimize ``source`` (IR text or module), emit objects, link ``out_so_path``.

    Module text is compiled in units (``_units``): the GEMM engine on its own, with its
    lighter pipeline, and the rest, split (``split.py``) when large; with ``jobs``
    (``llvm_jobs()``) above 1 the units compile in as many processes at once.  Returns the
    library path and the seconds of parse, optimize and codegen (summed over the units,
    whichever process compiled them), of this process waiting for the others (``wait``)
    and of the link.
    ``asm_path``/``opt_ir_path`` optionally keep the assembly and optimized IR (dumps; the
    module then compiles in one piece, with the kernels' pipeline unless it is the engine
    alone).  ``early``: the engine's compile started while rendering (:class:`EarlyUnit`; closed here).
    """

    target = target or host_target()
    timings = {}
    out_dir = os.path.dirname(os.path.abspath(out_so_path))
    os.makedirs(out_dir, exist_ok=True)
    jobs = llvm_jobs() if jobs is None else jobs
    text = source if isinstance(source, str) else str(source)
    dumps = bool(asm_path or opt_ir_path)
    try:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            units, ahead = _units(text, jobs, None if dumps else early)
            if len(units) + (ahead is not None) > 1 and not dumps:
                obj_paths = _objects(units, target, tmp, timings, jobs > 1)
                obj_paths += [ahead.wait()] if ahead is not None else []
            else:
                obj_paths = [os.path.join(tmp, "module.o")]
                _whole(text, obj_paths[0], target, timings, len(units) == 1 and units[0][1], asm_path, opt_ir_path)
            t3 = time.perf_counter()
            tmp_so = os.path.join(tmp, "module.so")
            link_shared(obj_paths, tmp_so, extra_link_flags)
            os.replace(tmp_so, out_so_path)  # atomic: a loaded old library stays valid
    finally:
        if early is not None:
            for k, v in early.timings.items():
                timings[k] = timings.get(k, 0.0) + v
            early.close()
    timings["link"] = time.perf_counter() - t3
    return BuildResult(path=out_so_path, timings=timings)


def _whole(text: str, obj_path: str, target: HostTarget, timings: dict, explicit: bool,
           asm_path=None, opt_ir_path=None) -> None:
    """Compile module ``text`` in one piece here into ``obj_path``; write the optimized IR
    and the assembly where asked."""
    mod, obj = _compile(text, target, timings, explicit)
    with open(obj_path, "wb") as f:
        f.write(obj)
    if opt_ir_path:
        with open(opt_ir_path, "w") as f:
            f.write(str(mod))
    if asm_path:
        with open(asm_path, "w") as f:
            f.write(target.machine.emit_assembly(mod))

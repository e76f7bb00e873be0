"""The compile driver: graph entry points -> optimized IR -> kernel IR -> LLVM/CUDA -> artifact.

``compile_entries(graph, entries, out_dir, target=...)`` lowers each entry point
(``lower_graph``), runs the pass pipeline (dumping every stage to ``out_dir/ir/<entry>/``),
lowers the result to a kernel-IR ``Program``, plans it for the target's capabilities (the
scheduling pass, ``compiler/lower/schedule.py``), renders all programs into one module with the
C ABI — LLVM for ``target="cpu"`` (``codegen/llvm/module.py``), CUDA C for ``"cuda"``
(``codegen/cuda/module.py``, built by nvcc, or by g++ against the host emulator with
``emulate=True``/``KILN_CUDA_EMULATE=1``) — and writes the artifact
(``compiler/artifact.py``): the manifest, ``src/model.ll`` or ``src/model.cu``,
``lib/model.so`` and ``init.safetensors`` (every variable's initializer run by the
reference interpreter).  Timings of each stage go into the manifest's ``"build"`` record.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime import manifest as mf
from runtime.files import atomic_write

from .artifact import (CUDA_SOURCE, EntryInfo, VariableInfo, check_output_dir, cuda_target_record,
                       host_target_record, new_staging_dir, replace_artifact_dir, write_artifact)
from .ir.from_graph import RNG_STATE, lower_graph
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


def _unique(items) -> list:
    seen, out = set(), []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def lower_entry(name, fetches, targets=(), feeds=(), dump_dir=None) -> LoweredEntry:
    """Graph -> IR -> pipeline (dumped to ``dump_dir``) -> kernel Program, timed."""
    t0 = time.perf_counter()
    fn = lower_graph(_unique(fetches), _unique(targets), _unique(feeds), name=name)
    return finish_entry(name, fn, dump_dir, {"graph_to_ir_s": time.perf_counter() - t0})


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
    keys = _unique(k for fn in fns for k in [p.key for p in fn.state_in()] + [k for k, _ in fn.state_out])
    return [k for k in keys if k != RNG_STATE] + ([RNG_STATE] if RNG_STATE in keys else [])


def variable_infos(graph, keys) -> list:
    """``VariableInfo`` for each key, in the graph's variable order (``kiln/rng_step`` last)."""
    from .frontend.graph import GraphKeys

    trainable = {v.op.name for v in graph.get_collection(GraphKeys.TRAINABLE_VARIABLES)}
    order = {op.name: i for i, op in enumerate(graph.get_operations())}
    infos = []
    for key in sorted(keys, key=lambda k: (k == RNG_STATE, order.get(k, -1))):
        if key == RNG_STATE:
            infos.append(VariableInfo(RNG_STATE, "int64", (), False))
            continue
        try:
            t = graph.get_operation_by_name(key).outputs[0]
        except KeyError:
            raise CompileError(f"state {key!r} is not a variable of the graph") from None
        infos.append(VariableInfo(key, t.dtype.np_name, tuple(t.type.shape), key in trainable))
    return infos


def initial_values(graph, infos) -> dict:
    """Run every variable's initializer with the reference interpreter; read them back.

    ``kiln/rng_step`` gets the value it has after the initializers ran (random initializers
    advance it), so the compiled step continues the interpreter session's random stream.
    """
    from .frontend.session import Session

    variables = [graph.get_operation_by_name(v.name).outputs[0] for v in infos if v.name != RNG_STATE]
    with Session(graph=graph, config={"backend": "interpreter"}) as sess:
        if variables:
            sess.run([v.initializer for v in variables])
        values = {v.name: sess.variable_value(v.name) for v in infos
                  if v.name != RNG_STATE}
        if any(v.name == RNG_STATE for v in infos):
            values[RNG_STATE] = sess.rng_step_value()
    return values


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


@dataclass(frozen=True)
class Target:
    """Where compiled code runs: ``kind`` "cpu" (LLVM) or "cuda" (``arch`` e.g. "sm_90";
    ``emulate``: built with g++ for the host emulator instead of nvcc; ``tf32``: float32
    GEMMs may use TF32 tensor cores, off by default so results stay fp32-exact)."""

    kind: str = "cpu"
    arch: str = ""
    emulate: bool = False
    tf32: bool = False

    @staticmethod
    def make(kind="cpu", cuda_arch=None, emulate=None, tf32=False) -> "Target":
        if kind == "cpu":
            if tf32:
                raise CompileError("tf32 is an option of the cuda target")
            return Target()
        if kind != "cuda":
            raise CompileError(f"unknown target {kind!r}; choose 'cpu' or 'cuda'")
        from .codegen.cuda.build import DEFAULT_ARCH, check_arch, emulate_default, find_nvcc

        emulate = emulate_default() if emulate is None else bool(emulate)
        if not emulate:
            find_nvcc()  # fail before any work when the toolkit is missing
        return Target("cuda", check_arch(cuda_arch or DEFAULT_ARCH), emulate, bool(tf32))

    def record(self) -> dict:
        if self.kind == "cpu":
            return host_target_record()
        return cuda_target_record(self.arch, self.emulate, self.tf32)

    def capabilities(self):
        """What the target offers the scheduling pass (``compiler/lower/schedule.py``)."""
        if self.kind == "cuda":
            from .codegen.cuda.capabilities import CAPABILITIES

            return CAPABILITIES
        from .codegen.llvm.capabilities import host_capabilities

        return host_capabilities()


def plan_entry(entry: LoweredEntry, target: Target) -> LoweredEntry:
    """Run the scheduling pass on the entry's program for ``target`` (once), timed."""
    from .lower.schedule import plan_program

    t0 = time.perf_counter()
    planned = plan_program(entry.program, target.capabilities())
    if planned is not entry.program:
        entry.program = planned
        entry.timings["schedule_s"] = time.perf_counter() - t0
    return entry


def build_artifact(lowered: list, variables: list, init: dict, out_dir, timings=None,
                   target: Target = Target()) -> Path:
    """Render ``lowered`` entries into one module with the ABI and write the artifact."""
    t0 = time.perf_counter()
    programs = {e.name: plan_entry(e, target).program for e in lowered}
    var_list = [(v.name, v.dtype, v.shape) for v in variables]
    extra = {}
    if target.kind == "cuda":
        from .codegen.cuda import render_module
        from .codegen.cuda.build import compile_cuda

        module = render_module(programs, var_list, f"CUDA {target.arch}" + (" (host emulator)" if target.emulate else ""),
                               tf32=target.tf32)
        extra = {"source_name": CUDA_SOURCE, "build_library": lambda src, lib: {
            k: round(v, 4) for k, v in compile_cuda(src, lib, target.arch, target.emulate).timings.items()}}
    else:
        from .codegen.llvm.module import build_module

        module = build_module(programs, var_list)
    build = dict(timings or {})
    build["render_s"] = round(time.perf_counter() - t0, 4)
    entries = {e.name: entry_info(e.fn) for e in lowered}
    return write_artifact(out_dir, module, variables, init, entries, target.record(), build, **extra)


def compile_entries(graph, entries: dict, out_dir, target: str = "cpu", dump_ir: bool = True,
                    cuda_arch: str | None = None, emulate: bool | None = None, tf32: bool = False,
                    manifest_extra: dict | None = None) -> Path:
    """Compile ``entries`` (``name -> (fetch tensors, target ops, feed tensors)``) of ``graph``
    into the artifact directory ``out_dir`` for ``target`` ("cpu" or "cuda"; ``cuda_arch``
    defaults to sm_90; ``tf32`` allows TF32 tensor cores in float32 GEMMs); returns its path.

    The artifact is built in a hidden sibling folder and swapped into place when complete
    (``artifact.replace_artifact_dir``): an interrupted or failed compile leaves an older
    artifact at ``out_dir`` untouched.  ``manifest_extra`` adds top-level manifest records
    (e.g. the model file's ``"model"``).  The manifest's ``"build"`` record holds the seconds
    spent per stage (``pipeline_s``, ``lowering_s``, ``render_s``, ``llvm_optimize_s``, ...).
    """
    start = time.perf_counter()
    tgt = Target.make(target, cuda_arch, emulate, tf32)
    out = Path(out_dir)
    check_output_dir(out)
    staged = new_staging_dir(out)
    try:
        _compile_into(graph, entries, staged, tgt, dump_ir)
        _finish_manifest(staged, time.perf_counter() - start, manifest_extra or {})
        replace_artifact_dir(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def _compile_into(graph, entries: dict, out: Path, tgt: Target, dump_ir: bool) -> None:
    """Lower, optimize, render and build every entry into the (staging) folder ``out``."""
    lowered, totals = [], {}
    for name, (fetches, targets, feeds) in entries.items():
        check_entry_name(name)
        dump = out / "ir" / name if dump_ir else None
        e = plan_entry(lower_entry(name, list(fetches), list(targets), list(feeds), dump), tgt)
        lowered.append(e)
        for k, v in e.timings.items():
            totals[k] = totals.get(k, 0.0) + v
        text = _print_kernels(e.program) if dump_ir else None
        if text is not None:
            dump.mkdir(parents=True, exist_ok=True)
            atomic_write(dump / "kernels.txt", text, durable=False)
    t0 = time.perf_counter()
    variables = variable_infos(graph, state_keys(e.fn for e in lowered))
    init = initial_values(graph, variables)
    totals["initial_values_s"] = time.perf_counter() - t0
    build_artifact(lowered, variables, init, out, {k: round(v, 4) for k, v in totals.items()}, tgt)


def _finish_manifest(out: Path, seconds: float, extra: dict) -> None:
    """Add the whole compile's wall time (``build.total_s``) and ``extra`` records to the
    written manifest."""
    m = mf.read_manifest(out)
    m["build"]["total_s"] = round(seconds, 4)
    m.update(extra)
    mf.write_manifest(out, m)


# ----------------------------------------------------------------------------- tf.Session
def _attr_token(value, h) -> None:
    """Feed one attr value into hash ``h``: arrays by dtype, shape and the SHA-256 of their
    bytes (printing a large constant as text would cost far more than compiling it)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        h.update(f"<{value.dtype}{value.shape}>".encode())
        h.update(hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}(".encode())
        for v in value:
            _attr_token(v, h)
        h.update(b")")
    elif isinstance(value, dict):
        h.update(f"dict{len(value)}{{".encode())
        for k in sorted(value, key=str):
            h.update(repr(k).encode())
            _attr_token(value[k], h)
        h.update(b"}")
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


def fingerprint(fn) -> str:
    """A content hash of an optimized function: params, instrs (kinds, operands, attrs,
    types, locs, regions, buffers), outputs and memory plan."""
    h = hashlib.sha256()
    ids: dict = {}

    def vid(v) -> str:
        return str(ids.setdefault(id(v), len(ids)))

    def instrs(body):
        for ins in body:
            h.update(f"{ins.kind}({','.join(vid(v) for v in ins.operands)})@{ins.loc}".encode())
            _attr_token(ins.attrs, h)
            h.update(";".join(f"{vid(v)}:{v.type}" for v in ins.results).encode())
            h.update(repr(ins.buffers).encode())
            if ins.region is not None:
                h.update(("^" + ",".join(f"{vid(v)}:{v.type}" for v in ins.region.params)).encode())
                instrs(ins.region.body)
                h.update(("yield" + ",".join(vid(v) for v in ins.region.yields)).encode())
    for p in fn.params:
        h.update(f"{p.kind} {p.key!r} {vid(p.value)}:{p.value.type};".encode())
    instrs(fn.body)
    for kind, outs in (("state", fn.state_out), ("fetch", fn.fetches)):
        h.update("".join(f"{kind} {k!r}={vid(v)};" for k, v in outs).encode())
    _attr_token(dict(fn.memory), h)
    return h.hexdigest()


@functools.cache
def code_digest() -> str:
    """SHA-256 of the code generator's sources (lowering, LLVM and CUDA backends, CUDA
    templates, driver), so a cached artifact is never reused by a compiler that would
    generate other code."""
    here = Path(__file__).resolve().parent
    files = sorted([*(here / "lower").glob("*.py"), *(here / "codegen" / "llvm").glob("*.py"),
                    *(here / "codegen" / "cuda").glob("*.py"), *(here.parent / "templates" / "cuda").glob("*"),
                    here / "compile.py", here / "artifact.py"])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _cache_key(opt, target: dict) -> str:
    """Content hash of an entry point: the optimized function, the target, the versions and
    the code generator's sources."""
    import json

    from .artifact import KILN_VERSION

    h = hashlib.sha256()
    h.update(json.dumps([KILN_VERSION, mf.ABI_VERSION, target, code_digest()], sort_keys=True).encode())
    h.update(fingerprint(opt).encode())
    return h.hexdigest()[:32]


def session_artifact(graph, lowered: LoweredEntry, root, target: Target = Target()) -> Path:
    """The artifact of one ``Session.run`` signature (entry ``lowered.name``) under ``root``.

    The directory is ``root/<content hash>``: an artifact already there is reused (after
    ``runtime.load_artifact``'s hash checks, done by the caller); otherwise it is built in a
    temp directory beside it and renamed into place, so concurrent builders never see a
    half-written one.  Initial values are zeros: the session binds its own arrays.
    """
    import os

    import numpy as np

    root = Path(root)
    final = root / _cache_key(lowered.fn, target.record())
    if (final / mf.MANIFEST_NAME).is_file():
        return final
    tmp = new_staging_dir(final)
    try:
        variables = variable_infos(graph, state_keys([lowered.fn]))
        zeros = {v.name: np.zeros(v.shape, v.dtype) for v in variables}
        build_artifact([lowered], variables, zeros, tmp,
                       {k: round(v, 4) for k, v in lowered.timings.items()}, target)
        try:
            os.rename(tmp, final)
        except OSError:  # another builder won the race: use theirs
            if not (final / mf.MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final

"""The pass manager: runs the optimization pipeline, checks the IR after every pass, dumps it.

``run_pipeline(fn)`` works on a copy of ``fn`` (the caller's function is never touched),
runs the passes of ``PIPELINE`` in order, verifies the IR after each one (an error names
the pass that broke it) and records one ``Stage`` per step: stage 0 is the input
("graph"), stage *k* the IR after the *k*-th pass, with the pass's summary and stats,
op/kernel counts and wall time.  With ``dump_dir`` it writes ``00-graph.kir``,
``01-constant-folding.kir``, ... and ``stages.json``; ``load_dump`` reads such a folder
back (it is also what an artifact's ``ir/`` folder holds) for ``kiln inspect``.
"""
from __future__ import annotations

from ..ir.opdef import VIEW_KINDS

import copy
import difflib
import importlib
import json
import os
import re
import time
from dataclasses import dataclass, field

from runtime.files import atomic_write

from ..ir.function import Function, Param, Value
from ..ir.printer import print_function
from .base import clone_instrs, count_ops

# Module names under compiler/passes/, in the order they run.
PIPELINE = ["constant_folding", "simplify", "cse", "pruning", "fusion", "memory_plan"]

# Body ops that launch no kernel: literals and views that only rename or re-shape a buffer.
NON_KERNEL_KINDS = frozenset({"constant"}) | VIEW_KINDS

DUMP_SUFFIX = ".kir"
STAGES_FILE = "stages.json"
DUMP_FORMAT = {"format": "kiln-ir-dump", "version": 1}
_DUMP_NAME = re.compile(r"(\d+)-(.+)\.kir\Z")


class PipelineError(RuntimeError):
    """A pass failed or left IR that does not verify; the message names the pass and stage."""


# ----------------------------------------------------------------------------- copying
def clone_function(fn: Function) -> Function:
    """A copy of ``fn`` with its own values, params, instrs and regions.

    Attr dicts are copied one level deep, so the (possibly large) constant arrays inside
    them are shared: passes replace attrs, they never write into those arrays.  A value
    the function uses but does not define (broken IR) is kept as is.
    """
    vmap: dict = {}

    def define(v: Value) -> Value:
        vmap[v] = Value(v.name, v.type)
        return vmap[v]

    def ref(v):
        return vmap.get(v, v)

    params = [Param(p.kind, p.key, define(p.value)) for p in fn.params]
    body = clone_instrs(fn.body, vmap)
    return Function(fn.name, params, body,
                    [(k, ref(v)) for k, v in fn.state_out],
                    [(k, ref(v)) for k, v in fn.fetches],
                    copy.deepcopy(fn.memory))


def count_kernels(fn: Function) -> int:
    """Body instrs that would launch a kernel: everything but constants and pure views."""
    return sum(1 for ins in fn.body if ins.kind not in NON_KERNEL_KINDS)


# ----------------------------------------------------------------------------- records
@dataclass
class Stage:
    """The IR after one pipeline step and what that step did."""

    index: int
    name: str
    summary: str = ""
    stats: dict = field(default_factory=dict)
    ops_before: int = 0
    ops_after: int = 0
    kernels: int = 0
    time_ms: float = 0.0
    _text: str | None = None  # printed lazily from fn (printing big constants is slow)
    fn: Function | None = None  # None for a stage read from a dump, until function() parses it

    @property
    def text(self) -> str:
        """The stage's IR text (printed on first use)."""
        if self._text is None:
            self._text = print_function(self.fn) if self.fn is not None else ""
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value

    @property
    def file(self) -> str:
        """Dump file name: ``03-cse.kir``."""
        return f"{self.index:02d}-{self.name}{DUMP_SUFFIX}"

    def function(self) -> Function:
        """The stage's IR as a Function (parsed from ``text`` on first use for loaded dumps)."""
        if self.fn is None:
            from ..ir.parser import parse_function

            self.fn = parse_function(self.text)
        return self.fn

    def record(self) -> dict:
        """The JSON-able record written to ``stages.json`` (no text, no function)."""
        return {"index": self.index, "name": self.name, "file": self.file, "summary": self.summary,
                "stats": self.stats, "ops_before": self.ops_before, "ops_after": self.ops_after,
                "kernels": self.kernels, "time_ms": self.time_ms}


@dataclass
class PipelineResult:
    """All stages of one run (or one loaded dump); ``fn`` is the last stage's function."""

    stages: list

    @property
    def fn(self) -> Function:
        return self.stages[-1].function()

    def stage(self, key) -> Stage:
        """A stage by index (``3``, ``"03"``, ``-1``), pass name (``cse``, ``constant_folding``) or file stem."""
        return find_stage(self.stages, key)


def _stage_names(stages) -> str:
    return ", ".join(f"{s.index} {s.name}" for s in stages)


def find_stage(stages, key) -> Stage:
    """Look a stage up by index, name (dashes or underscores) or ``NN-name``; KeyError lists the valid ones."""
    text = str(key).strip()
    if re.fullmatch(r"-?\d+", text):
        i = int(text)
        by_index = {s.index: s for s in stages}
        if i in by_index:
            return by_index[i]
        if i < 0 and -i <= len(stages):
            return stages[i]
    if text == "last" and stages:
        return stages[-1]
    wanted = text.replace("_", "-")
    for s in stages:
        if wanted in (s.name, s.file[:-len(DUMP_SUFFIX)]):
            return s
    raise KeyError(f"unknown stage {text!r}; stages are: {_stage_names(stages)}")


# ----------------------------------------------------------------------------- running
def resolve_pass(item):
    """A pass object (module or anything with ``NAME`` and ``run``) from a module name or itself."""
    if not isinstance(item, str):
        if not (hasattr(item, "NAME") and callable(getattr(item, "run", None))):
            raise TypeError(f"a pass needs NAME and run(fn); got {item!r}")
        return item
    try:
        return importlib.import_module(f"{__package__}.{item}")
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.{item}":
            raise
        raise PipelineError(f"pass module {__package__}.{item} does not exist "
                            f"(known passes: {', '.join(PIPELINE)})") from None


def _input_stage(fn: Function, verify_each: bool) -> Stage:
    """Stage 0: the function as lowered from the graph."""
    if verify_each:
        _verify(fn, "the input function", 0)
    n = count_ops(fn)
    return Stage(0, "graph", "lowered from the graph", {}, n, n, count_kernels(fn),
                 0.0, None, fn)


def _verify(fn: Function, what: str, index: int) -> None:
    from ..ir.verifier import verify

    try:
        verify(fn)
    except Exception as err:
        raise PipelineError(f"stage {index:02d}: IR does not verify after {what}: {err}") from err


def _run_one(index: int, pass_, prev: Function, verify_each: bool) -> Stage:
    """Run one pass on a copy of the previous stage's function and record the stage."""
    work = clone_function(prev)
    ops_before = count_ops(work)
    start = time.perf_counter()
    try:
        result = pass_.run(work)
    except Exception as err:
        raise PipelineError(f"stage {index:02d}: pass {pass_.NAME!r} failed: "
                            f"{type(err).__name__}: {err}") from err
    elapsed = round((time.perf_counter() - start) * 1000.0, 3)  # as stored in stages.json
    out = result.fn
    if verify_each:
        _verify(out, f"pass {pass_.NAME!r}", index)
    return Stage(index, pass_.NAME, result.summary, dict(result.stats), ops_before, count_ops(out),
                 count_kernels(out), elapsed, None, out)


def run_pipeline(fn: Function, passes=None, dump_dir=None, verify_each=True) -> PipelineResult:
    """Run ``passes`` (default ``PIPELINE``) in order on a copy of ``fn``; dump to ``dump_dir`` if given.

    ``passes`` items are module names under ``compiler.passes`` or pass objects with
    ``NAME`` and ``run(fn) -> PassResult``.  Each stage keeps its own function, so a later
    pass that mutates its input never changes an earlier stage.
    """
    chosen = [resolve_pass(p) for p in (PIPELINE if passes is None else passes)]
    stages = [_input_stage(clone_function(fn), verify_each)]
    for index, pass_ in enumerate(chosen, start=1):
        stages.append(_run_one(index, pass_, stages[-1].fn, verify_each))
    result = PipelineResult(stages)
    if dump_dir is not None:
        write_dump(result, dump_dir)
    return result


# ----------------------------------------------------------------------------- dumps
def _json_default(obj):
    """numpy scalars and other odd stats values become plain JSON numbers or strings."""
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _function_name(stage: Stage) -> str:
    """The entry point's name, without parsing a loaded stage's text."""
    if stage.fn is not None:
        return stage.fn.name
    m = re.search(r"func @(\S+) \{", stage.text)
    return m.group(1).strip('"') if m else ""


def write_dump(result: PipelineResult, dump_dir: str) -> None:
    """Write one ``NN-name.kir`` per stage and ``stages.json``; stale ``NN-*.kir`` files go."""
    os.makedirs(dump_dir, exist_ok=True)
    keep = {s.file for s in result.stages}
    for old in os.listdir(dump_dir):
        if _DUMP_NAME.match(old) and old not in keep:
            os.unlink(os.path.join(dump_dir, old))
    for s in result.stages:
        atomic_write(os.path.join(dump_dir, s.file), s.text, durable=False)
    index = dict(DUMP_FORMAT, function=_function_name(result.stages[0]),
                 stages=[s.record() for s in result.stages])
    atomic_write(os.path.join(dump_dir, STAGES_FILE), json.dumps(index, indent=2, default=_json_default) + "\n",
                 durable=False)


def _records_from_files(dump_dir: str) -> list:
    """Minimal records for a folder of ``NN-name.kir`` files without ``stages.json``."""
    found = sorted((int(m.group(1)), m.group(2)) for m in map(_DUMP_NAME.match, os.listdir(dump_dir)) if m)
    return [{"index": i, "name": name} for i, name in found]


def load_dump(dump_dir: str) -> PipelineResult:
    """Read a dump folder back: stage records from ``stages.json`` and each stage's IR text.

    Functions are parsed (``parse_function``) when first asked for, so listing or diffing a
    dump needs no parse.  A folder of ``.kir`` files without ``stages.json`` loads too,
    with no stats.
    """
    if not os.path.isdir(dump_dir):
        raise FileNotFoundError(f"no IR dump folder at {dump_dir}")
    index_path = os.path.join(dump_dir, STAGES_FILE)
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            records = json.load(f)["stages"]
    else:
        records = _records_from_files(dump_dir)
    if not records:
        raise FileNotFoundError(f"{dump_dir} holds no IR dump ({STAGES_FILE} or NN-name{DUMP_SUFFIX} files)")
    stages = []
    for rec in records:
        fields = {k: rec[k] for k in ("summary", "stats", "ops_before", "ops_after", "kernels", "time_ms") if k in rec}
        stage = Stage(int(rec["index"]), rec["name"], **fields)
        with open(os.path.join(dump_dir, rec.get("file", stage.file)), encoding="utf-8") as f:
            stage.text = f.read()
        stages.append(stage)
    return PipelineResult(stages)


# ----------------------------------------------------------------------------- reports
def format_table(stages) -> str:
    """A fixed-width table: stage index, name, ops, kernels, time in ms, summary."""
    width = max([len("stage")] + [len(s.name) for s in stages])
    lines = [f"{'#':>2}  {'stage':<{width}}  {'ops':>5}  {'kernels':>7}  {'ms':>8}  summary"]
    for s in stages:
        lines.append(f"{s.index:>2}  {s.name:<{width}}  {s.ops_after:>5}  {s.kernels:>7}  "
                     f"{s.time_ms:>8.2f}  {s.summary}".rstrip())
    return "\n".join(lines) + "\n"


def diff_stages(a: Stage, b: Stage) -> str:
    """A unified diff of two stages' IR text (empty when they print the same)."""
    return "".join(difflib.unified_diff(a.text.splitlines(keepends=True), b.text.splitlines(keepends=True),
                                        fromfile=a.file, tofile=b.file))

"""Model files: loading a Python model script and collecting its entry points.

A model file builds a graph with ``from compiler import tf`` and defines ``build()`` (or the
older ``build_graph()``), which returns the entry points::

    {"train":   {"feeds": [x, labels], "fetches": {"loss": loss}, "targets": [train_op]},
     "predict": {"feeds": [x], "fetches": {"probabilities": probs}}}

The file runs with ``__name__ == "kiln_model"`` (its ``if __name__ == "__main__":`` code does
not run) inside a fresh default graph.  Every problem is a :class:`ModelFileError` whose
message starts with ``FILE:LINE:`` (or ``FILE:``) so the CLI can print it as is.
The convention is documented in ``docs/model-files.md``.
"""
from __future__ import annotations

import os
import re
import runpy
import sys
import traceback
from dataclasses import dataclass, field

BUILD_FUNCTIONS = ("build", "build_graph")
ENTRY_KEYS = ("feeds", "fetches", "targets")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ModelFileError(Exception):
    """A model file cannot be loaded or declares bad entry points; the message names it."""


@dataclass
class EntryPoint:
    """One declared entry point: fed tensors, named fetch tensors, and target ops."""

    name: str
    feeds: list
    fetches: dict  # key -> Tensor, in declaration order
    targets: list = field(default_factory=list)

    def as_compile_entry(self) -> tuple:
        """The ``(fetch tensors, target ops, feed tensors)`` tuple ``compile_entries`` takes."""
        return list(self.fetches.values()), list(self.targets), list(self.feeds)

    def record(self) -> dict:
        """JSON record: fetch key -> tensor name, feed tensor names, target op names."""
        return {"feeds": [t.name for t in self.feeds],
                "fetches": {k: t.name for k, t in self.fetches.items()},
                "targets": [op.name for op in self.targets]}


@dataclass
class LoadedModel:
    """A model file run in its own graph: the graph, the namespace and ``build()``'s result."""

    path: str
    graph: object
    namespace: dict
    build_name: str | None
    result: object
    build_line: int = 0

    def where(self) -> str:
        """``FILE:LINE`` of the build function (``FILE`` when there is none)."""
        return f"{self.path}:{self.build_line}" if self.build_line else self.path


# ----------------------------------------------------------------------------- running

def _model_frame_line(err: BaseException, path: str):
    """Line of the innermost traceback frame inside the model file, or ``None``."""
    target = os.path.realpath(path)
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
             if os.path.realpath(f.filename) == target]
    return lines[-1] if lines else None


def _build_error(err: BaseException, path: str) -> ModelFileError:
    """A ModelFileError for an exception raised while running the file or ``build()``."""
    if isinstance(err, SyntaxError) and err.filename and \
            os.path.realpath(err.filename) == os.path.realpath(path):
        return ModelFileError(f"{path}:{err.lineno}: syntax error: {err.msg}")
    line = _model_frame_line(err, path)
    where = f"{path}:{line}" if line else path
    return ModelFileError(f"{where}: error while building the model: {type(err).__name__}: {err}")


def run_model_file(path: str, require_build: bool = False) -> LoadedModel:
    """Execute the model file in a fresh graph and call ``build()``/``build_graph()``.

    With ``require_build``, a file defining neither function is an error; otherwise the
    graph the script built at top level is used (``result`` is then ``None``).
    """
    from compiler import tf

    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: model file not found")
    graph = tf.Graph()
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # the file may import its neighbours, as when run as a script
    try:
        with graph.as_default():
            return _run_in_graph(path, graph, require_build)
    finally:
        sys.path.remove(folder)


def _run_in_graph(path, graph, require_build) -> LoadedModel:
    """Execute the file and call its build function (the default graph is ``graph``)."""
    try:
        namespace = runpy.run_path(path, run_name="kiln_model")
    except Exception as err:  # SyntaxError included
        raise _build_error(err, path) from err
    name = next((n for n in BUILD_FUNCTIONS if callable(namespace.get(n))), None)
    if name is None:
        if require_build:
            raise ModelFileError(f"{path}: defines no build() function (a model file must "
                                 "define build() returning its entry points; see docs/model-files.md)")
        return LoadedModel(path, graph, namespace, None, None)
    fn = namespace[name]
    try:
        result = fn()
    except Exception as err:
        raise _build_error(err, path) from err
    line = getattr(getattr(fn, "__code__", None), "co_firstlineno", 0)
    return LoadedModel(path, graph, namespace, name, result, line)


# ----------------------------------------------------------------------------- entries

def _is_tensor(x) -> bool:
    return hasattr(x, "op") and hasattr(x, "dtype") and hasattr(x, "graph")


def _is_op(x) -> bool:
    return hasattr(x, "outputs") and hasattr(x, "type") and hasattr(x, "graph")


def _as_list(value, where, what):
    if value is None:
        return []
    if _is_tensor(value) or _is_op(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ModelFileError(f"{where}: '{what}' must be a list, got {type(value).__name__}")


def _check_graph(items, graph, where, what):
    for item in items:
        if getattr(item, "graph", graph) is not graph:
            raise ModelFileError(f"{where}: {what} {item.name!r} belongs to another graph "
                                 "(build every tensor inside build())")


def _fetches(value, where) -> dict:
    """``{"key": tensor}`` (a list is keyed by the tensor names)."""
    if isinstance(value, (list, tuple)) or _is_tensor(value):
        value = {t.name if _is_tensor(t) else str(t): t for t in _as_list(value, where, "fetches")}
    if not isinstance(value, dict) or not value:
        raise ModelFileError(f"{where}: 'fetches' must be a non-empty dict of name -> tensor")
    for key, t in value.items():
        if not isinstance(key, str) or not key:
            raise ModelFileError(f"{where}: fetch key {key!r} must be a non-empty string")
        if not _is_tensor(t):
            hint = " (an op: put it in 'targets')" if _is_op(t) else ""
            raise ModelFileError(f"{where}: fetch {key!r} is not a tensor, got "
                                 f"{type(t).__name__}{hint}")
    return dict(value)


def parse_entry(name, spec, graph, where) -> EntryPoint:
    """Validate one entry declaration and return it as an :class:`EntryPoint`."""
    at = f"{where}: entry {name!r}"
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ModelFileError(f"{where}: entry name {name!r} must be a C identifier "
                             "(letters, digits, '_', not starting with a digit)")
    if not isinstance(spec, dict):
        raise ModelFileError(f"{at}: expected a dict with 'feeds', 'fetches' and optional "
                             f"'targets', got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(ENTRY_KEYS), key=str)
    if unknown:
        raise ModelFileError(f"{at}: unknown key(s) {', '.join(map(repr, unknown))} "
                             f"(allowed: {', '.join(ENTRY_KEYS)})")
    for key in ("feeds", "fetches"):
        if key not in spec:
            raise ModelFileError(f"{at}: missing {key!r}")
    feeds = _as_list(spec["feeds"], at, "feeds")
    bad = [f for f in feeds if not _is_tensor(f)]
    if bad:
        raise ModelFileError(f"{at}: feed {bad[0]!r} is not a tensor (feeds are placeholders)")
    fetches = _fetches(spec["fetches"], at)
    targets = _as_list(spec.get("targets"), at, "targets")
    bad = [t for t in targets if not (_is_op(t) or _is_tensor(t))]
    if bad:
        raise ModelFileError(f"{at}: target {bad[0]!r} is not an op")
    targets = [t.op if _is_tensor(t) else t for t in targets]
    if name == "train" and not targets:
        raise ModelFileError(f"{at}: 'train' needs 'targets' (the train op, e.g. "
                             "optimizer.minimize(loss))")
    for items, what in ((feeds, "feed"), (list(fetches.values()), "fetch"), (targets, "target")):
        _check_graph(items, graph, at, what)
    return EntryPoint(name, feeds, fetches, targets)


def collect_entries(model: LoadedModel) -> dict:
    """The validated entry points ``build()`` returned: ``name -> EntryPoint``."""
    where, result = model.where(), model.result
    if not isinstance(result, dict) or not result:
        raise ModelFileError(f"{where}: {model.build_name}() must return a non-empty dict of entry "
                             f"points (name -> {{'feeds', 'fetches', 'targets'}}), got "
                             f"{type(result).__name__ if result is not None else 'None'}")
    if not any(isinstance(spec, dict) for spec in result.values()):
        raise ModelFileError(f"{where}: {model.build_name}() returned a dict of tensors/ops, not of "
                             "entry points; define build() returning {name: {'feeds', 'fetches', "
                             "'targets'}} (see docs/model-files.md)")
    entries = {name: parse_entry(name, spec, model.graph, where) for name, spec in result.items()}
    for entry in entries.values():
        check_trainer_feeds(entry, where)
    return entries


# The most feeds the trainer gives each conventional entry: features (and labels).
TRAINER_FEEDS = {"train": ("features", "labels"), "eval": ("features", "labels"), "predict": ("features",)}


def check_trainer_feeds(entry: EntryPoint, where: str) -> None:
    """Refuse, at compile time, a conventional entry with more feeds than ``kiln train`` /
    ``eval`` / ``predict`` give it (e.g. a ``training`` flag or ``keep_prob`` placeholder),
    which would compile and then fail at the first step."""
    allowed = TRAINER_FEEDS.get(entry.name)
    if allowed is None or len(entry.feeds) <= len(allowed):
        return
    extra = ", ".join(t.name for t in entry.feeds[len(allowed):])
    raise ModelFileError(
        f"{where}: entry {entry.name!r} feeds {len(entry.feeds)} tensors, but the trainer feeds it "
        f"{' and '.join(allowed)} only (extra: {extra}). For a training flag or keep_prob, build the "
        "network twice with shared layers instead: once with dropout for 'train', once without for "
        "'eval'/'predict' (the pattern of samples/mnist_cnn.py); or give the entry another name "
        "if it is not for the trainer")


def load_model(path: str):
    """Run ``path`` and return ``(LoadedModel, {name: EntryPoint})``."""
    model = run_model_file(path, require_build=True)
    return model, collect_entries(model)


def entries_record(path: str, entries: dict) -> dict:
    """The ``"model"`` manifest record: source file and each entry's key -> tensor names."""
    return {"source": os.path.basename(path),
            "entries": {name: e.record() for name, e in entries.items()}}

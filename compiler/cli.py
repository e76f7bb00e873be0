"""`kiln` command line.

* ``kiln ir MODEL.py --fetch NAME ...`` prints the IR of an entry point as lowered.
* ``kiln compile MODEL.py -o build/NAME`` compiles a model file's entry points into an
  artifact (the model-file convention: ``docs/model-files.md``).
* ``kiln train ARTIFACT --data SPEC``, ``kiln eval ARTIFACT --data SPEC`` and ``kiln predict
  ARTIFACT --data SPEC --out FILE`` run a compiled artifact through ``runtime.trainer``
  (docs/trainer.md).
* ``kiln inspect TARGET ...`` runs the pass pipeline on a model (or reads an IR dump
  folder) and lists the stages, prints or diffs their IR, or writes Graphviz DOT.
* ``kiln profile ARTIFACT --data SPEC`` times each kernel of a ``kiln compile --profile``
  build and writes a Chrome trace (``compiler/cli_profile.py``, docs/performance.md).

Every command loads a model file the same way, through ``compiler.model_file``: the script
runs with ``__name__ == "kiln_model"`` (its ``if __name__ == "__main__":`` training code does
not run) in a fresh graph, with its own folder on the import path, and its ``build()`` (or
``build_graph()``) is called.  ``kiln ir``/``inspect`` also take a script that builds its graph
at top level, and resolve ``--fetch`` names in the graph (``loss:0``, ``train``) or, failing
that, among the fetch keys of the entry points ``build()`` returned.  ``kiln --version``
prints the version.  Errors in the user's input (missing file, broken model, unknown stage)
exit with status 2 and a one-line message on stderr.
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import sys

from .cli_errors import CliError

HINT_NAMES = 8  # how many graph names an unknown-name error suggests for a script without build()


def kiln_version() -> str:
    """Kiln's version: the installed package's metadata, else ``compiler.artifact.KILN_VERSION``
    (a source tree used without ``pip install``)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("kiln")
    except importlib.metadata.PackageNotFoundError:
        from compiler.artifact import KILN_VERSION

        return KILN_VERSION


class _VersionAction(argparse.Action):
    """``--version``: prints ``kiln VERSION`` and exits; the version is looked up only then
    (reading package metadata costs every other command ~10 ms of start-up)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"kiln {kiln_version()}")
        parser.exit()


# ----------------------------------------------------------------------------- ir
def _load_model(path):
    """Run a model file as ``kiln compile`` does (``compiler.model_file``), but accept a script
    that builds its graph at top level (no ``build()``); returns the ``LoadedModel``."""
    from compiler.model_file import ModelFileError, run_model_file

    try:
        return run_model_file(path, require_build=False)
    except ModelFileError as err:
        raise CliError(str(err))


def _entry_points(model) -> dict:
    """The well-formed entry points ``build()`` returned, ``name -> EntryPoint`` (``{}`` for a
    script without one).  Bad ones are skipped: ``kiln compile`` reports them, and here entry
    points only resolve fetch keys and suggest names."""
    from compiler.model_file import ModelFileError, parse_entry

    if not isinstance(model.result, dict):
        return {}
    entries = {}
    for name, spec in model.result.items():
        try:
            entries[name] = parse_entry(name, spec, model.graph, model.where())
        except ModelFileError:
            continue
    return entries


def _names_hint(graph, entries) -> str:
    """Names the user could pass: each entry point's targets and fetch tensors, or (a script
    without ``build()``) the last few top-level names of the graph."""
    if entries:
        return "the entry points use: " + "; ".join(
            f"{name}: " + ", ".join([op.name for op in e.targets] + [t.name for t in e.fetches.values()])
            for name, e in entries.items())
    ops = [op for op in graph.get_operations() if "/" not in op.name]
    names = [op.outputs[0].name if op.outputs else op.name for op in ops[-HINT_NAMES:]]
    return f"names in the graph include: {', '.join(names) or '(none: the graph is empty)'}"


def _fetch_keys(entries) -> dict:
    """Fetch key -> the tensors the entry points fetch under it (several when entries disagree)."""
    keys: dict = {}
    for e in entries.values():
        for key, t in e.fetches.items():
            keys.setdefault(key, {})[t.name] = t
    return keys


def _graph_element(model, entries, name, keys):
    """The tensor or op ``name`` names in the graph (``loss:0``, ``train``), else the one tensor
    the fetch key ``name`` names in ``keys``; an unknown name is a CliError suggesting names."""
    try:
        return model.graph.as_graph_element(name)
    except (KeyError, ValueError, TypeError) as err:
        detail = err.args[0] if err.args else err
    tensors = keys.get(name, {})
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    clash = f"; fetch key {name!r} names several tensors: {', '.join(tensors)}" if tensors else ""
    raise CliError(f"{model.path}: no tensor or op named {name!r} ({detail}){clash}; "
                   f"{_names_hint(model.graph, entries)}")


def _needed_placeholders(tensors, targets):
    """Every placeholder the fetches need: the default feeds of a model file's entry point."""
    from compiler.ir.from_graph import needed_ops

    ops = needed_ops([t.op for t in tensors] + list(targets), set())
    return [op.outputs[0] for op in ops if op.type == "placeholder"]


def _lower_model(path, fetch_names, feed_names, name):
    """Build the model file's graph and lower the ops the fetches need to one IR function."""
    from compiler.ir.from_graph import LoweringError, lower_graph

    model = _load_model(path)
    entries = _entry_points(model)
    keys = _fetch_keys(entries)
    tensors, targets = [], []
    for fetch in fetch_names:
        item = _graph_element(model, entries, fetch, keys)
        (tensors if hasattr(item, "op") else targets).append(item)
    feeds = [_graph_element(model, entries, n, {}) for n in feed_names] \
        or _needed_placeholders(tensors, targets)
    try:
        return lower_graph(tensors, targets, feeds, name=name)
    except LoweringError as err:
        raise CliError(f"{path}: {err}")


def _elide_above(args):
    """The element count above which printed constants are elided (``None``: --full-constants)."""
    from compiler.ir.printer import ELIDE_ABOVE

    return None if args.full_constants else ELIDE_ABOVE


def cmd_ir(args) -> int:
    """``kiln ir MODEL.py --fetch NAME``: print the lowered IR (large constants elided)."""
    from compiler.ir.printer import print_function
    from compiler.ir.verifier import verify

    fn = _lower_model(args.model, args.fetch, args.feed, args.name)
    verify(fn)
    sys.stdout.write(print_function(fn, _elide_above(args)))
    return 0


FULL_CONSTANTS_HELP = "print every value of every constant (default: a constant of more than 16 " \
                      "elements prints as dense<f32[2,100]>(__elided__))"


def _add_ir(sub) -> None:
    ir = sub.add_parser("ir", help="print the IR of the ops a set of fetches needs",
                        description="Lower the ops the fetches need to one IR function and print it.")
    ir.add_argument("model", help="model file (a Python script building a graph)")
    ir.add_argument("--fetch", action="append", required=True,
                    help="tensor or op name to fetch, or a fetch key of build()'s entry points (repeatable)")
    ir.add_argument("--feed", action="append", default=[],
                    help="tensor name that is fed (repeatable; default: every placeholder the fetches need)")
    ir.add_argument("--name", default="step", help="entry point name in the printed IR")
    ir.add_argument("--full-constants", action="store_true", help=FULL_CONSTANTS_HELP)
    ir.set_defaults(func=cmd_ir)


# ----------------------------------------------------------------------------- inspect
def _artifact_dump(artifact, entry):
    """The IR dump folder of one entry point of an artifact (default: train, else the first)."""
    ir_dir = os.path.join(artifact, "ir")
    entries = sorted(d for d in os.listdir(ir_dir) if os.path.isdir(os.path.join(ir_dir, d))) \
        if os.path.isdir(ir_dir) else []
    if not entries:
        raise CliError(f"{artifact}: the artifact has no IR dumps (compiled with --no-dump-ir?)")
    entry = entry or ("train" if "train" in entries else entries[0])
    if entry not in entries:
        raise CliError(f"{artifact}: no entry point {entry!r}; entries: {', '.join(entries)}")
    return os.path.join(ir_dir, entry)


def _inspect_result(args):
    """The stages to inspect: run the pipeline on a model file, or load a dump folder."""
    from compiler.passes.manager import PipelineError, load_dump, run_pipeline

    target = args.target
    if os.path.isfile(os.path.join(target, "manifest.json")):  # an artifact: its ir/<entry>/ dump
        target = _artifact_dump(target, args.entry)
    elif args.entry is not None:
        raise CliError("--entry applies to an artifact directory")
    if os.path.isdir(target):
        if args.fetch or args.feed or args.dump_dir or args.passes is not None:
            raise CliError(f"{target} is an IR dump folder: --fetch, --feed, --passes and --dump-dir "
                           "apply to a model file")
        try:
            return load_dump(target)
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise CliError(f"{target}: not a readable IR dump: {err}")
    if not os.path.exists(target):
        raise CliError(f"target not found: {target} (expected a model .py file or an IR dump folder)")
    if not args.fetch:
        raise CliError(f"{target}: a model file needs at least one --fetch NAME")
    fn = _lower_model(target, args.fetch, args.feed, args.name)
    passes = None if args.passes is None else [p.strip().replace("-", "_") for p in args.passes.split(",") if p.strip()]
    try:
        result = run_pipeline(fn, passes=passes, dump_dir=args.dump_dir)
    except PipelineError as err:
        raise CliError(str(err), code=1)
    except OSError as err:
        raise CliError(f"cannot write the IR dump to {args.dump_dir}: {err}")
    if args.dump_dir:
        print(f"kiln: wrote {len(result.stages)} stages to {args.dump_dir}", file=sys.stderr)
    return result


def _pick(result, key):
    try:
        return result.stage(key)
    except KeyError as err:
        raise CliError(err.args[0])


def _write_dot(path, stage, to_dot) -> None:
    """Write the stage's DOT text atomically; a bad path is a user error."""
    from runtime.files import atomic_write

    try:
        fn = stage.function()
    except ValueError as err:  # IRParseError: a hand-edited or foreign dump file
        raise CliError(f"cannot read stage {stage.index} {stage.name} ({stage.file}): {err}")
    try:
        atomic_write(path, to_dot(fn))
    except OSError as err:
        raise CliError(f"cannot write {path}: {err.strerror or err}")
    print(f"kiln: wrote DOT of stage {stage.index} {stage.name} to {path}", file=sys.stderr)


def _shown(stage, args):
    """The stage as printed: a copy whose text has its large constants elided (the stage
    itself, with its full text, under --full-constants)."""
    from compiler.ir.printer import elide_constants

    if args.full_constants:
        return stage
    shown = copy.copy(stage)
    shown.text = elide_constants(stage.text, _elide_above(args))
    return shown


def _diff_text(a, b, args) -> str:
    """The unified diff of two stages as printed, or a line saying why there is none."""
    from compiler.passes.manager import diff_stages

    diff = diff_stages(_shown(a, args), _shown(b, args))
    if diff:
        return diff
    if a.text != b.text:
        return (f"(stages {a.name} and {b.name} differ only in elided constant values; "
                "--full-constants shows them)\n")
    return f"(stages {a.name} and {b.name} print the same IR)\n"


def cmd_inspect(args) -> int:
    """List, print, diff or draw the IR stages of a model or a dump folder."""
    from compiler.passes.dot import to_dot
    from compiler.passes.manager import format_table

    result = _inspect_result(args)
    chosen = _pick(result, args.stage if args.stage is not None else "last")
    diff = [_pick(result, key) for key in args.diff] if args.diff else None
    if args.list:
        sys.stdout.write(format_table(result.stages))
    if diff:
        sys.stdout.write(_diff_text(*diff, args))
    if args.dot:
        _write_dot(args.dot, chosen, to_dot)
    explicit_stage = args.stage is not None and not args.dot
    if explicit_stage or not (args.list or diff or args.dot):
        sys.stdout.write(_shown(chosen, args).text)
    return 0


INSPECT_EPILOG = """\
examples:
  kiln inspect samples/plane_fit.py --fetch train --fetch loss:0 --list
  kiln inspect samples/plane_fit.py --fetch train --fetch loss:0 --dump-dir build/plane_ir
  kiln inspect build/plane_ir --stage cse
  kiln inspect build/plane_ir --diff graph constant-folding
  kiln inspect build/plane_ir --stage fusion --dot build/step.dot   (then: dot -Tsvg build/step.dot -o build/step.svg)
  kiln inspect build/mlp --entry train --list                  (an artifact made by kiln compile)

Stages are named by index (0 is the lowered graph, -1 the last) or by pass name.
With no --list/--diff/--dot, the chosen stage's IR is printed (default: the last).
Printed IR and diffs elide constants of more than 16 elements (--full-constants: all values);
the dump files always hold every value.
"""


def _add_inspect(sub) -> None:
    ins = sub.add_parser("inspect", help="list, print, diff or draw the IR after each pass",
                         description="Run the pass pipeline on a model file (or read an IR dump folder, "
                                     "e.g. an artifact's ir/) and show the IR stages.",
                         epilog=INSPECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ins.add_argument("target", help="model file (a Python script building a graph), artifact directory, "
                                    "or IR dump folder")
    ins.add_argument("--fetch", action="append", default=[], metavar="NAME",
                     help="tensor or op name to fetch, or a fetch key of build()'s entry points "
                          "(repeatable; needed for a model file)")
    ins.add_argument("--feed", action="append", default=[], metavar="NAME",
                     help="tensor name that is fed (repeatable; default: every placeholder the fetches need)")
    ins.add_argument("--name", default="step", help="entry point name (model file only; default: step)")
    ins.add_argument("--entry", help="entry point of an artifact directory to show (default: train)")
    ins.add_argument("--passes", metavar="P1,P2", help="comma-separated passes to run instead of the full "
                     "pipeline (e.g. constant_folding,cse; empty: none)")
    ins.add_argument("--list", action="store_true", help="print a table: stage, ops, kernels, time, summary")
    ins.add_argument("--stage", metavar="NAME_OR_INDEX", help="stage to print or draw (default: the last)")
    ins.add_argument("--diff", nargs=2, metavar=("A", "B"), help="unified diff of the IR of stages A and B")
    ins.add_argument("--dot", metavar="FILE", help="write the chosen stage as Graphviz DOT to FILE")
    ins.add_argument("--dump-dir", metavar="DIR", help="also write NN-stage.kir files and stages.json to DIR")
    ins.add_argument("--full-constants", action="store_true", help=FULL_CONSTANTS_HELP)
    ins.set_defaults(func=cmd_inspect)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: compile TF1-style graphs to kernels.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_ir(sub)
    from .cli_compile import add_compile_command

    add_compile_command(sub)
    _add_inspect(sub)
    from .cli_run import add_run_commands

    add_run_commands(sub)
    from .cli_profile import add_profile_command

    add_profile_command(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # kiln train --workers re-runs it
    try:
        return args.func(args)
    except CliError as err:
        print(f"kiln: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:  # kiln train reports its own; an artifact or file is never half-written
        print(f"kiln: {args.command} interrupted; nothing was left half-written", file=sys.stderr)
        return 130


def run() -> None:
    """The ``kiln`` program (console script and ``python -m compiler.cli``): ``main()``, then
    exit.  Python's final garbage collection at exit would scan every object the command
    left alive (0.13 s after compiling the seed-002 CNN); frozen, they are skipped and the
    process ends as it would have."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()

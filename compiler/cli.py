"""`kiln` command line.  For now: `kiln ir MODEL.py --fetch NAME ...` prints the IR of an entry point.

A model file is a Python script that builds a graph with ``from compiler import tf``; it is
executed with ``__name__ == "kiln_model"`` so its ``if __name__ == "__main__":`` training
code does not run; if it defines ``build_graph()``, that is called to build the graph.  Later issues add compile/train/eval/predict/inspect.
"""
from __future__ import annotations

import argparse
import runpy
import sys
import traceback


def _load_model_graph(path):
    """Run a model file in a fresh default graph and return that graph."""
    from compiler import tf

    graph = tf.Graph()
    with graph.as_default():
        try:
            namespace = runpy.run_path(path, run_name="kiln_model")
            if callable(namespace.get("build_graph")):
                namespace["build_graph"]()
        except FileNotFoundError:
            raise SystemExit(f"kiln: model file not found: {path}")
        except SyntaxError as err:
            raise SystemExit(f"kiln: syntax error in {err.filename}, line {err.lineno}: {err.msg}")
        except Exception as err:  # report the model file's own frame
            frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.endswith(path.split("/")[-1])]
            where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
            raise SystemExit(f"kiln: error while building the model{where}: {type(err).__name__}: {err}")
    return graph


def cmd_ir(args) -> int:
    from compiler.ir.from_graph import lower_graph
    from compiler.ir.printer import print_function
    from compiler.ir.verifier import verify

    graph = _load_model_graph(args.model)
    tensors, targets = [], []
    for name in args.fetch:
        try:
            element = graph.as_graph_element(name)
        except (KeyError, ValueError) as err:
            raise SystemExit(f"kiln: {args.model}: no tensor or op named {name!r} ({err})")
        (tensors if hasattr(element, "op") else targets).append(element)
    feeds = [graph.as_graph_element(n) for n in args.feed]
    fn = lower_graph(tensors, targets, feeds, name=args.name)
    verify(fn)
    sys.stdout.write(print_function(fn))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: compile TF1-style graphs to kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    ir = sub.add_parser("ir", help="print the IR of the ops a set of fetches needs")
    ir.add_argument("model", help="model file (a Python script building a graph)")
    ir.add_argument("--fetch", action="append", required=True, help="tensor or op name to fetch (repeatable)")
    ir.add_argument("--feed", action="append", default=[], help="tensor name that is fed (repeatable)")
    ir.add_argument("--name", default="step", help="entry point name in the printed IR")
    ir.set_defaults(func=cmd_ir)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

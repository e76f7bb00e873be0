"""Compiling a graph's entry points (``kiln compile``, tests, benches): each entry is lowered
from the graph to IR (``ir.from_graph.lower_graph``), the variables it uses get their
graph order, trainable flags and initial values (every initializer run by the reference
interpreter), and the driver (``compiler/compile.py``) does the rest.

    from compiler.frontend.compile_graph import compile_entries
    compile_entries(graph, {"train": ([loss], [train_op], [x, labels])}, "build/mlp")
"""
from __future__ import annotations

import time

from ..artifact import VariableInfo
from ..compile import CompileError, compile_functions, state_keys
from ..ir.fingerprint import fingerprint
from ..ir.from_graph import RNG_STATE, LoweringError, lower_graph
from .graph import GraphKeys
from .op_source import graph_sources
from .ops.random_ops import auto_seeds


def compile_entries(graph, entries: dict, out_dir, target="cpu", dump_ir: bool = True,
                    manifest_extra: dict | None = None, **options):
    """Compile ``entries`` (``name -> (fetch tensors, target ops, feed tensors)``) of ``graph``
    into the artifact directory ``out_dir`` for ``target`` with the backend's ``options``
    (see ``compile.compile_functions``); returns its path."""
    t0 = time.perf_counter()
    functions = {name: _lower_entry(name, fetches, targets, feeds) for name, (fetches, targets, feeds) in entries.items()}
    timings = {"graph_to_ir_s": time.perf_counter() - t0}

    def variables(keys):
        infos = variable_infos(graph, keys)
        return infos, lambda: initial_values(graph, infos)  # drawn while LLVM compiles

    layout = [(v.name, v.dtype, list(v.shape), v.trainable) for v in variable_infos(graph, state_keys(functions.values()))]
    return compile_functions(functions, variables, out_dir, target, dump_ir, manifest_extra, timings,
                             sources=lambda: graph_sources(graph), cache_parts=[layout], init_key=lambda: initializers_fingerprint(graph, functions.values()),
                             any_seeds=frozenset(auto_seeds(graph)), **options)


def initializers_fingerprint(graph, functions) -> str:
    """Fingerprint of the initializers of every variable the (unoptimized) ``functions``
    touch: when it matches a cached artifact's, its ``init.safetensors`` is reused."""
    inits = [graph.get_operation_by_name(k).outputs[0].initializer
             for k in state_keys(functions) if k != RNG_STATE]
    return fingerprint(lower_graph([], [op for op in inits if op is not None], [], name="init"))


def _lower_entry(name, fetches, targets, feeds):
    """One entry point as an IR function (shapes static but the batch dim); errors name the entry."""
    try:
        return lower_graph(*(list(dict.fromkeys(x)) for x in (fetches, targets, feeds)), name=name)
    except LoweringError as err:
        raise type(err)(f"entry '{name}': {err}") from None


def variable_infos(graph, keys) -> list:
    """``VariableInfo`` for each key, in the graph's variable order (``kiln/rng_step`` last)."""
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
    from .session import Session

    variables = [graph.get_operation_by_name(v.name).outputs[0] for v in infos if v.name != RNG_STATE]
    with Session(graph=graph, config={"backend": "interpreter"}) as sess:
        if variables:
            sess.run([v.initializer for v in variables])
        values = {v.name: sess.variable_value(v.name) for v in infos
                  if v.name != RNG_STATE}
        if any(v.name == RNG_STATE for v in infos):
            values[RNG_STATE] = sess.rng_step_value()
    return values

"""Random op constructors (tf.random_uniform, random_normal, truncated_normal, random_shuffle).

Seeds follow TF1's rules (``get_seed``): a graph seed plus an op seed; with a graph seed
and no op seed the op seed is the op counter; with neither, a fresh seed is drawn at graph
construction.  Every draw also reads the hidden step counter ``kiln/rng_step`` (see
compiler/ir/ops/random.py), so repeated ``run`` calls give new values.
"""
from __future__ import annotations

from ...ir.from_graph import RNG_STATE
from ...ir.types import TensorType, as_dtype, int64
from ..convert import convert_pair, convert_to_tensor
from ..gradients import not_differentiable
from ..graph import get_default_graph, graph_for, make_op

not_differentiable("random_uniform", "random_normal", "truncated_normal", "random_shuffle", "rng_fold")

DEFAULT_GRAPH_SEED = 87654321


def get_seed(op_seed):
    """TF1's (graph seed, op seed) pair for an op."""
    graph = get_default_graph()
    global_seed = graph.seed
    if global_seed is not None:
        if op_seed is None:
            op_seed = graph._id_counter
        return int(global_seed), int(op_seed)
    if op_seed is not None:
        return DEFAULT_GRAPH_SEED, int(op_seed)
    import secrets  # here: it costs every import of the frontend ~5 ms

    seeds = secrets.randbits(31), secrets.randbits(31)
    auto_seeds(graph).add(seeds)
    return seeds


def auto_seeds(graph) -> set:
    """The (seed, seed2) pairs drawn at random for ops of ``graph`` (and of its control-flow
    bodies): the seeds no one chose, which ``kiln compile``'s cache key leaves out
    (docs/compile-cache.md)."""
    root = getattr(graph, "root", None) or graph
    return root.__dict__.setdefault("_kiln_auto_seeds", set())


def rng_step(graph=None):
    """The int64 step random ops in ``graph`` are keyed by: the hidden counter (created on
    first use, outside any scope), or in a control-flow body its own key (``_body_key``)."""
    graph = graph or get_default_graph()
    if getattr(graph, "outer", None) is not None:
        return _body_key(graph)
    try:
        return graph.get_operation_by_name(RNG_STATE).outputs[0]
    except KeyError:
        pass
    saved_scope, saved_control = graph._name_stack, graph._control_stack
    graph._name_stack, graph._control_stack = "", []
    try:
        op = graph.create_op("variable", (), {"dtype": int64, "shape": ()}, RNG_STATE,
                             ttype=TensorType(int64, ()))
    finally:
        graph._name_stack, graph._control_stack = saved_scope, saved_control
    return op.outputs[0]


def _body_key(body):
    """The step of the random ops in a body graph, made once: the enclosing graph's step
    (captured), folded with the iteration number in a while loop's cond or body
    (``rng_fold``), so each iteration, and each (outer, inner) pair of nested loops, draws
    fresh numbers.  The loop's gradient rebuilds the fold from the forward iteration's number
    (grads/control_flow_grad.py), so a replayed iteration draws what the forward one drew."""
    if body.rng_key is None:
        key = body.capture(rng_step(body.outer))
        if body.loop:
            with body.as_default(), body.name_scope(body.body_name.rstrip("/") + "/"), \
                    body.control_dependencies(None):
                key = make_op("rng_fold", [key, body.iteration_input()], {}, name="rng_key")
        body.rng_key = key
    return body.rng_key


def _shape_attr(shape):
    """A draw's shape: static, holding the batch dim, or from a shape tensor such as
    ``tf.shape(z)`` whose dims are known when the run is lowered (``deferred``)."""
    from .array_ops import shape_arg

    return shape_arg(shape, "random op shape")


def _draw(kind, shape, dtype, seed, name):
    seed, seed2 = get_seed(seed)
    attrs = {"shape": _shape_attr(shape), "dtype": as_dtype(dtype), "seed": seed, "seed2": seed2}
    return make_op(kind, [rng_step()], attrs, name=name)


def _scale(z, scale, shift, dtype):
    from . import math_ops

    if not _is_const(scale, 1):
        z = math_ops.multiply(z, convert_to_tensor(scale, dtype=dtype))
    if not _is_const(shift, 0):
        z = math_ops.add(z, convert_to_tensor(shift, dtype=dtype))
    return z


def _is_const(x, value):
    return isinstance(x, (int, float)) and x == value


def random_uniform(shape, minval=0, maxval=None, dtype="float32", seed=None, name=None):
    """Uniform draws in [minval, maxval); integer dtypes need maxval (floor of a scaled draw)."""
    dtype = as_dtype(dtype)
    if dtype.is_integer:
        if maxval is None:
            raise ValueError("Must specify maxval for integer dtype int32/int64 in random_uniform")
        from . import math_ops

        u = _draw("random_uniform", shape, "float64", seed, name or "random_uniform")
        lo, hi = convert_pair(minval, maxval)
        span = math_ops.cast(math_ops.subtract(hi, lo), "float64")
        return math_ops.add(math_ops.cast(math_ops.floor(math_ops.multiply(u, span)), dtype), math_ops.cast(lo, dtype))
    maxval = 1 if maxval is None else maxval
    u = _draw("random_uniform", shape, dtype, seed, name or "random_uniform")
    if _is_const(minval, 0) and _is_const(maxval, 1):
        return u
    from . import math_ops

    lo = convert_to_tensor(minval, dtype=dtype) if not hasattr(minval, "op") else minval
    hi = convert_to_tensor(maxval, dtype=dtype) if not hasattr(maxval, "op") else maxval
    return math_ops.add(math_ops.multiply(u, math_ops.subtract(hi, lo)), lo)


def random_normal(shape, mean=0.0, stddev=1.0, dtype="float32", seed=None, name=None):
    dtype = as_dtype(dtype)
    return _scale(_draw("random_normal", shape, dtype, seed, name or "random_normal"), stddev, mean, dtype)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype="float32", seed=None, name=None):
    """Normal draws restricted to mean ± 2·stddev."""
    dtype = as_dtype(dtype)
    return _scale(_draw("truncated_normal", shape, dtype, seed, name or "truncated_normal"), stddev, mean, dtype)


def random_shuffle(value, seed=None, name=None):
    value = convert_to_tensor(value)
    seed, seed2 = get_seed(seed)
    return make_op("random_shuffle", [rng_step(graph_for([value])), value], {"seed": seed, "seed2": seed2},
                   name=name or "RandomShuffle")


TF_API = {
    "tf": {"random_uniform": random_uniform, "random_normal": random_normal,
           "truncated_normal": truncated_normal, "random_shuffle": random_shuffle, "get_seed": get_seed},
    "tf.random": {"uniform": random_uniform, "normal": random_normal, "truncated_normal": truncated_normal,
                  "shuffle": random_shuffle},
}

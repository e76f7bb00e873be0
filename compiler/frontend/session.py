"""tf.Session: runs fetches by compiling the needed subgraph to native code (or interpreting it).

Backends (``Session(config=...)``; the config wins over the environment):

* ``"compiled"`` (default): each distinct (fetches, targets, feeds, fed shapes) signature
  is lowered, optimized, lowered to kernels and built once into an artifact (LLVM CPU),
  loaded with ``runtime.load_artifact``; one native state per artifact runs it.  The fed shapes count
  without their batch dims (``shape_key``): one artifact serves every batch size, unless
  the graph pins the batch dim to a size (``NeedsStaticBatch``: then each batch size is
  its own signature; docs/graph.md, "Shapes known at run time").  Artifacts go to a
  the compile cache (``compiler/cache.py``: ``config={"cache_dir": ...}``, else
  ``$KILN_CACHE_DIR`` or ``~/.cache/kiln``; size-capped, least recently used entries go),
  keyed by the signature's IR, the target and Kiln's sources, reused across sessions and
  processes (``frontend/session_cache.py``); with ``KILN_CACHE=0``, to a per-session temp
  dir deleted by ``close``.
  Interpreted instead: initializers (runs that only write variables, without feeds,
  fetches or variable reads: they run once), signatures whose optimized body has no
  kernels (e.g. fetching a variable), runs with an empty feed, and signatures using an op
  that has no kernel lowering yet (with a ``RuntimeWarning`` naming it).
* ``"interpreter"``: the numpy reference interpreter (``config={"backend": "interpreter"}``,
  a ConfigProto-like object with ``kiln_backend = "interpreter"``, or ``KILN_BACKEND=interpreter``).
* ``"cuda"``: every compiled signature runs on the GPU.  With the default backend, a
  signature runs on the GPU when one of its ops was placed with ``tf.device('/gpu:0')``
  (``placement.py``: no usable GPU is an InvalidArgumentError unless
  ``allow_soft_placement``).  Device states keep their own copy of the variables; the
  session copies values between them and its arrays only when another holder needs them.

Variables live in the session as 64-byte aligned numpy arrays (``self._arrays``), one copy
each: native states are bound to them with ``kiln_bind_variable`` and update them in
place; replacing a value (initializer, ``Variable.load``, ``Saver.restore``) copies into the
existing array.  A variable is initialized once some run (or ``set_variable_value``)
wrote it; reading an uninitialized one raises ``Attempting to use uninitialized value X``
before any native call.  Native errors surface like the interpreter's: a failed check
(label out of range, ...) is a ``ValueError`` with the check's message.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from ..ir.from_graph import RNG_STATE, LoweringError, NeedsStaticBatch, lower_graph
from ..ir.interpreter import InterpreterError, run_function
from ..ir.types import shape_str
from . import collectives, errors
from .fetches import FetchMapper
from .graph import Operation, Tensor, get_default_graph
from .host_ops import HostFetches, handlers_for, has_host_ops
from .placeholder_default import feeds_with_defaults
from .run_feeds import HostPull, batch_size, feed_array, shape_key
from .session_profile import SessionProfiler, profiling_wanted
from .placement import VariableHomes, choose_target, config_get

_local = threading.local()
BACKENDS = ("compiled", "interpreter")  # and every device backend's name (codegen.registry), e.g. "cuda"
ENTRY = "run"


def get_default_session():
    stack = getattr(_local, "stack", [])
    return stack[-1] if stack else None


def select_backend(config) -> str:
    """The backend a session with ``config`` uses: config, then $KILN_BACKEND, then compiled."""
    from ..codegen.registry import backend_names

    backend = config_get(config, "backend") or os.environ.get("KILN_BACKEND") or "compiled"
    choices = BACKENDS + tuple(n for n in backend_names() if n != "cpu")
    if backend not in choices:
        raise ValueError(f"unknown Kiln backend {backend!r}; choose one of {choices}")
    return backend


def is_initializer(fn) -> bool:
    """A run that only writes variables from nothing (no feeds, no fetches, no variable
    read besides the random counter): an initializer.  It runs once, so it is interpreted:
    compiling it would cost far more than it saves (the values are the same: random ops
    draw the same Philox numbers on every backend)."""
    return bool(fn.state_out) and not fn.feeds() and not fn.fetches and \
        all(p.key == RNG_STATE for p in fn.state_in())


@dataclass
class _Plan:
    """How one run signature executes: ``fn`` (as lowered) and, if compiled, its native state."""

    fn: object
    state: object = None  # runtime.State of the signature's artifact, None: interpreter
    origins: tuple = ()  # kernel origins, stripped from native error messages


class Session:
    """A TF1 session over one graph; ``config`` picks the backend (compiled or interpreter)."""

    def __init__(self, target="", graph=None, config=None):
        self.graph = graph or get_default_graph()
        self.config = config
        self.backend = select_backend(config)
        self._arrays: dict[str, np.ndarray] = {}
        self._homes = VariableHomes(self._arrays)
        self._cache: dict = {}  # run signature (+ fed shapes, + batch size) -> _Plan
        self._static_batch: set = set()  # signatures that cannot keep the batch dim symbolic
        self._host_cache: dict = {}  # run signature -> host-op handlers it needs (host_ops.py)
        self._splits: dict = {}  # run signature -> collectives.Split or None
        self.host_state: dict = {}  # per-session state of host ops (tf.data iterators)
        self._artifacts: dict = {}  # artifact dir -> runtime.Artifact
        self._tmpdir = None
        self._closed = False
        self._default_ctx = None
        self._profiler = SessionProfiler() if profiling_wanted(config) and self.backend != "interpreter" else None

    @property
    def graph_def(self):
        """The session graph as a ``GraphDef`` protobuf (``Graph.as_graph_def``)."""
        return self.graph.as_graph_def()

    # --- context management -------------------------------------------------------------
    def as_default(self):
        return _session_context(self)

    def __enter__(self):
        self._graph_ctx = self.graph.as_default()
        self._graph_ctx.__enter__()
        self._default_ctx = self.as_default()
        self._default_ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._default_ctx.__exit__(*exc)
        self._graph_ctx.__exit__(*exc)
        self.close()

    def close(self):
        """Free the native states and the per-session artifact directory (reporting the
        profile first under KILN_PROFILE, session_profile.py)."""
        if self._profiler is not None:
            self._profiler.report()
        self._closed = True
        for plan in self._cache.values():
            if plan.state is not None:
                plan.state.close()
        self._cache.clear()
        self.host_state.clear()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __del__(self):
        with contextlib.suppress(Exception):
            if self._tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

    # --- variable storage (used by Saver and tests) -----------------------------------------
    def variable_value(self, name):
        """A copy of variable ``name``'s current value."""
        return self._require(name).copy()

    def set_variable_value(self, name, value):
        """Set (and initialize) variable ``name``; copies into the existing array in place."""
        self._store(name, value)

    def rng_step_value(self) -> np.ndarray:
        """The hidden random counter ``kiln/rng_step`` (0 before any random op ran)."""
        if RNG_STATE not in self._arrays:
            return np.zeros((), np.int64)
        return np.array(self._require(RNG_STATE))

    def _require(self, name) -> np.ndarray:
        if name not in self._arrays:
            raise errors.FailedPreconditionError(None, None, f"Attempting to use uninitialized value {name}")
        self._homes.to_host(name)
        return self._arrays[name]

    def _store(self, name, value):
        """Write ``value`` into the variable's array, keeping the array when shape/dtype fit."""
        from runtime.abi import aligned_empty

        value = np.asarray(value)
        arr = self._arrays.get(name)
        dtype = arr.dtype if arr is not None else self._variable_dtype(name, value.dtype)
        if arr is None or arr.shape != value.shape:
            arr = self._arrays[name] = aligned_empty(value.shape, dtype)
        arr[...] = value
        self._homes.host_wrote(name)

    def _variable_dtype(self, name, default):
        with contextlib.suppress(KeyError):
            return self.graph.get_operation_by_name(name).outputs[0].dtype.np
        return default

    # --- run ------------------------------------------------------------------------------
    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        """Evaluate ``fetches`` (a tensor, op, name, or nested list/tuple/dict of them).

        ``options`` (a ``tf.RunOptions``) and ``run_metadata`` (a ``tf.RunMetadata``) are
        accepted for TF1 compatibility; Kiln records no traces, so they are left as given.
        A summary tensor (``tf.summary.*``) comes back as its serialized ``Summary`` bytes,
        computed on the host from numeric values fetched in the same run (``host_ops``).
        """
        if self._closed:
            raise RuntimeError("Attempted to use a closed Session.")
        mapper = FetchMapper(self.graph, fetches)
        host = HostFetches(mapper.unique_tensors(), mapper.unique_ops())
        feeds = self._convert_feeds(feed_dict or {})
        host.check_feeds(feeds)
        values = self._run_tensors(host.device_tensors, host.device_targets, feeds)
        return mapper.build(host.values(values))

    def _run_tensors(self, tensors, targets, feeds) -> dict:
        """Run one signature: ``{tensor: value}`` of ``tensors``; a run reaching collective
        ops (``hvd.allreduce``, ``DistributedOptimizer``) runs in two phases around them
        (collectives.py)."""
        split = collectives.cached_plan(self._splits, self.graph, tensors, targets, feeds)
        if split is not None:
            return collectives.run_split(split, self._run_tensors, tensors, targets, feeds)
        feeds = feeds_with_defaults(self.graph, feeds, tensors, targets)
        pull = HostPull(self, self._host_handlers(tensors, targets, feeds), feeds)
        fed = sorted([*feeds, *pull.tensors], key=lambda t: (t.op.id, t.name))
        # a pulled tensor's shape is its declared one (static but for the batch dim)
        key = (tuple(tensors), tuple(targets), tuple(fed),
               tuple(shape_key(t, feeds[t].shape if t in feeds else t.type.shape) for t in fed))
        if key in self._static_batch:
            pull()
            key += (batch_size(feeds),)
        plan = self._cache.get(key)
        if plan is None:
            plan, key = self._plan_signature(key, tensors, targets, fed, feeds, pull)
        pull()  # after planning: a run that cannot start does not consume an element
        by_name = {t.name: v for t, v in feeds.items()}
        if plan.state is not None and not any(v.size == 0 for v in by_name.values()):
            results = self._run_native(plan, by_name)
        else:
            results = self._run_interpreter(plan.fn, by_name)
        return {t: results[t.name] for t in tensors}

    def _host_handlers(self, tensors, targets, feeds) -> list:
        """The host ops this run needs (tf.data iterator initializers and ``get_next``,
        see host_ops.py), looked up once per run signature."""
        if not has_host_ops(self.graph):
            return []
        key = (tuple(tensors), tuple(targets), tuple(sorted(feeds, key=lambda t: (t.op.id, t.name))))
        handlers = self._host_cache.get(key)
        if handlers is None:
            handlers = self._host_cache[key] = handlers_for(self.graph, tensors, targets, feeds)
        return handlers

    def _plan_signature(self, key, tensors, targets, fed, feeds, pull):
        """Plan a new signature on the fed shapes, the batch dim symbolic where the graph
        lets it (else specialized on the fed batch size: ``key`` gets it, after ``pull``
        filled the host-fed tensors); returns (plan, key)."""
        shapes = {t: feeds[t].shape for t in fed if t in feeds}  # host-fed: as declared
        try:
            try:
                plan = self._plan(tensors, targets, fed, shapes)
            except NeedsStaticBatch:
                pull()
                n = batch_size(feeds)
                if n is None:
                    raise
                self._static_batch.add(key)
                key += (n,)
                plan = self._plan(tensors, targets, fed, shapes, n)
        except LoweringError as err:  # e.g. an unfed placeholder
            raise errors.InvalidArgumentError(None, None, str(err)) from None
        self._cache[key] = plan
        return plan, key

    def _plan(self, tensors, targets, fed, feed_shapes=None, batch=None) -> _Plan:
        """Lower the signature; compile it unless interpreting (see the module doc)."""
        fn = lower_graph(tensors, targets, fed, name="session_run", feed_shapes=feed_shapes, batch=batch)
        if self.backend == "interpreter" or is_initializer(fn):
            return _Plan(fn)
        from .session_cache import NoKernels

        target = choose_target(self.backend, self.config, tensors, targets)
        if self._profiler is not None:
            target = self._profiler.target(target)
        try:
            artifact, origins = self._load_artifact(fn, target)
        except NoKernels:
            return _Plan(fn)
        except NotImplementedError as err:  # an op without a kernel lowering/renderer yet
            warnings.warn(f"Kiln: cannot compile this Session.run ({err}); it runs on the "
                          "reference interpreter", RuntimeWarning, stacklevel=3)
            return _Plan(fn)
        return _Plan(fn, artifact.new_state(initialize=False), origins)

    def _load_artifact(self, fn, target):
        """Build (or find in the compile cache) and load the artifact of one signature."""
        import runtime

        from .. import cache
        from .session_cache import session_artifact

        root = config_get(self.config, "cache_dir")
        store = cache.CompileCache(root) if root else cache.default_cache()
        if store is None:  # KILN_CACHE=0 (or no writable cache folder): this session's own
            self._tmpdir = self._tmpdir or tempfile.mkdtemp(prefix="kiln-session-")
            store = cache.CompileCache(self._tmpdir)

        def load(path):
            if path not in self._artifacts:
                self._artifacts[path] = runtime.load_artifact(path)
            if self._profiler is not None:
                self._profiler.watch(path, self._artifacts[path])
            return self._artifacts[path]

        return session_artifact(self.graph, fn, ENTRY, store, load, target)

    def _state_inputs(self, fn) -> dict:
        """The arrays of every variable ``fn`` reads (the hidden rng counter starts at 0)."""
        if RNG_STATE not in self._arrays and any(p.key == RNG_STATE for p in fn.state_in()):
            self._store(RNG_STATE, np.zeros((), np.int64))
        return {p.key: self._require(p.key) for p in fn.state_in()}

    def _run_interpreter(self, fn, feeds) -> dict:
        state_in = self._state_inputs(fn)
        try:
            new_state, results = run_function(fn, state_in, feeds)
        except InterpreterError as err:  # a failed runtime check (e.g. a label out of range)
            raise errors.InvalidArgumentError(None, None, str(err)) from err
        live = list(state_in.values())
        new_state = {k: np.array(v) if any(np.may_share_memory(v, a) for a in live) else v
                     for k, v in new_state.items()}  # snapshot before writing in place
        for k, v in new_state.items():
            self._store(k, v)
        return results

    def _run_native(self, plan, feeds) -> dict:
        from runtime import KilnRuntimeError
        from runtime.abi import aligned_empty

        self._state_inputs(plan.fn)
        state = plan.state
        fresh = []
        for v in state.artifact.variables:  # written but not yet initialized: new arrays
            if v.name not in self._arrays:
                self._arrays[v.name] = aligned_empty(v.shape, v.dtype)
                self._arrays[v.name][...] = 0
                fresh.append(v.name)
        shares = state.can_bind
        for v in state.artifact.variables:  # (to_host below fills the arrays in place)
            if shares and state.bound_array(v.name) is not self._arrays[v.name]:
                state.bind_variable(v.name, self._arrays[v.name])
        spec = state.artifact.entry(ENTRY)
        try:
            if shares:
                for v in state.artifact.variables:
                    self._homes.to_host(v.name)
            else:
                self._homes.before_native(state)
            results = state.run(ENTRY, {s.name: feeds[s.name] for s in spec.feeds})
        except KilnRuntimeError as err:
            for name in fresh:
                del self._arrays[name]
                self._homes.holders.pop(name, None)
            raise _translate(err, plan.origins) from err
        for name in spec.state_out:
            if shares:
                self._homes.host_wrote(name)
            else:
                self._homes.after_native(state, [name])
        return results

    def _convert_feeds(self, feed_dict):
        feeds = {}
        for key, value in feed_dict.items():
            tensor = self.graph.as_graph_element(key) if not isinstance(key, Tensor) else key
            if isinstance(tensor, Operation):
                raise TypeError(f"Cannot feed an Operation ({tensor.name}); feed its output tensor")
            if tensor.graph is not self.graph:
                raise ValueError(f"Cannot feed {tensor.name}: it is not an element of this session's graph")
            feeds[tensor] = feed_array(tensor, value)
        return feeds


def _translate(err, origins):
    """The exception for a native error: a failed check is tf.errors.InvalidArgumentError
    (a ValueError) with the check's own message (the kernel origin prefix removed), no memory a MemoryError."""
    from runtime.abi import KILN_ECHECK, KILN_ENOMEM

    message = err.message
    for origin in origins:
        if message.startswith(origin + ": "):
            message = message[len(origin) + 2:]
            break
    if err.code == KILN_ECHECK:
        return errors.InvalidArgumentError(None, None, message)
    if err.code == KILN_ENOMEM:
        return MemoryError(message)
    return err


class InteractiveSession(Session):
    """A session that installs itself as the default on construction."""

    def __init__(self, target="", graph=None, config=None):
        super().__init__(target, graph, config)
        self._ctx = self.as_default()
        self._ctx.__enter__()

    def close(self):
        super().close()
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


@contextlib.contextmanager
def _session_context(sess):
    if not hasattr(_local, "stack"):
        _local.stack = []
    _local.stack.append(sess)
    try:
        yield sess
    finally:
        _local.stack.pop()


__all__ = [
    "InteractiveSession",
    "LoweringError",
    "Session",
    "get_default_session",
    "select_backend",
    "shape_str",
]

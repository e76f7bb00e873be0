"""Device placement for tf.Session: which target runs a signature, and where variables live.

* ``ConfigProto`` — the TF1 session options Kiln honours: ``allow_soft_placement``,
  ``log_device_placement``, ``device_count`` (``{"GPU": 0}`` hides the GPU), plus Kiln's
  own ``kiln_backend`` / ``kiln_cache_dir`` / ``kiln_cuda_emulate`` / ``kiln_cuda_tf32``.
* ``choose_target`` — a signature runs on a device backend (``codegen.registry``: the
  backend serving the device type, e.g. CUDA for ``GPU``) when the session's backend names
  it (``"cuda"``) or one of its ops was placed with ``tf.device('/gpu:0')``; the backend's
  options come from the config (``kiln_<backend>_<option>``, e.g. ``kiln_cuda_tf32``).
  Without a usable device that is an ``InvalidArgumentError`` like TF's, unless soft
  placement is on (then it runs on the CPU).
* ``VariableHomes`` — which copies of each variable are current: the session's numpy array
  ("host") and/or native states that cannot share it (device states copy variables in and
  out only when another holder needs them, so a training loop never leaves the GPU).
"""
from __future__ import annotations

import sys

from . import errors

HOST = "host"
_NOT_DEVICES = ("JOB", "REPLICA", "TASK")  # parts of a TF device string that name no device


class GPUOptions:
    """TF1 ``tf.GPUOptions``: recorded.  Kiln allocates device memory as it is needed (the
    behaviour ``allow_growth=True`` asks for); the other fields have no effect."""

    def __init__(self, allow_growth=False, per_process_gpu_memory_fraction=0.0, visible_device_list=""):
        self.allow_growth = allow_growth
        self.per_process_gpu_memory_fraction = per_process_gpu_memory_fraction
        self.visible_device_list = visible_device_list


class ConfigProto:
    """TF1 ``tf.ConfigProto`` (the fields Kiln reads; thread counts are recorded only)."""

    def __init__(self, allow_soft_placement=False, log_device_placement=False, device_count=None,
                 gpu_options=None, intra_op_parallelism_threads=0, inter_op_parallelism_threads=0,
                 kiln_backend=None, kiln_cache_dir=None, **kiln_options):
        self.allow_soft_placement = bool(allow_soft_placement)
        self.log_device_placement = bool(log_device_placement)
        self.device_count = dict(device_count or {})
        self.gpu_options = gpu_options or GPUOptions()
        self.intra_op_parallelism_threads = intra_op_parallelism_threads
        self.inter_op_parallelism_threads = inter_op_parallelism_threads
        self.kiln_backend = kiln_backend
        self.kiln_cache_dir = kiln_cache_dir
        for key, value in kiln_options.items():  # kiln_<backend>_<option>, e.g. kiln_cuda_tf32
            if not key.startswith("kiln_"):
                raise TypeError(f"ConfigProto got an unexpected keyword argument {key!r}")
            setattr(self, key, value)


def config_get(config, key):
    """``config[key]`` for a dict, ``config.<key>`` / ``config.kiln_<key>`` for a ConfigProto."""
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    value = getattr(config, key, None)
    return value if value is not None else getattr(config, f"kiln_{key}", None)


def device_type(spec: str) -> str:
    """The device type a ``tf.device`` string names, upper case (``/gpu:0``,
    ``/device:GPU:0``, ``/job:w/replica:0/task:0/device:CPU:0`` -> ``GPU``/``CPU``), or ""."""
    for part in reversed((spec or "").split("/")):
        part = part.strip()
        name = part.split(":")[1] if part.lower().startswith("device:") else part.split(":")[0]
        if name and name.upper() not in _NOT_DEVICES:
            return name.upper()
    return ""


def _reachable_ops(tensors, targets) -> list:
    """The ops a run of ``tensors``/``targets`` depends on (data and control inputs)."""
    seen, stack, out = set(), [t.op for t in tensors] + list(targets), []
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        out.append(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return out


def _backend_target(backend, config):
    """``(Target, reason it cannot run here or "")`` of ``backend`` with the config's options."""
    from ..codegen.registry import BuildError

    options = {o.name: config_get(config, f"{backend.name}_{o.name}") for o in backend.options}
    for device in backend.devices:
        count = (config_get(config, "device_count") or {}).get(device)
        if count is not None and int(count) == 0:
            return None, f"the session config hides the {device} (device_count={{'{device}': 0}})"
    try:
        target = backend.make_target(**options)
    except (BuildError, ValueError) as err:  # e.g. the toolkit is missing
        return None, str(err)
    return target, backend.unavailable(target)


def _wanted_backend(session_backend: str, ops):
    """The device backend a signature asks for (by the session's backend or an op's
    ``tf.device``), with the op that asked; ``(None, None)`` for the CPU."""
    from ..codegen.registry import backend_for_device, backend_names, get_backend

    if session_backend in backend_names() and session_backend != "cpu":
        return get_backend(session_backend), None
    for op in ops:
        backend = backend_for_device(device_type(op.device)) if op.device else None
        if backend is not None and backend.name != "cpu":
            return backend, op
    return None, None


def choose_target(session_backend: str, config, tensors, targets):
    """The ``codegen.registry.Target`` one run signature compiles for (see the module doc)."""
    from ..codegen.registry import make_target

    ops = _reachable_ops(tensors, targets)
    backend, placed = _wanted_backend(session_backend, ops)
    if backend is None:
        return make_target("cpu")
    target, reason = _backend_target(backend, config)
    device = backend.devices[0] if backend.devices else backend.name.upper()
    if not reason:
        _log(config, ops, f"/device:{device}:0")
        return target
    if config_get(config, "allow_soft_placement"):
        _log(config, ops, "/device:CPU:0")
        return make_target("cpu")
    what = f"operation {placed.name}" if placed else f"this session (backend '{backend.name}')"
    spec = placed.device if placed else f"/device:{device}:0"
    raise errors.InvalidArgumentError(
        None, placed,
        f"Cannot assign a device for {what}: Could not satisfy explicit device specification "
        f"'{spec}' because no {device} is usable: {reason}. Set allow_soft_placement=True in the "
        "session config to run it on the CPU instead.")


def _log(config, ops, device):
    if config_get(config, "log_device_placement"):
        for op in sorted(ops, key=lambda o: o.id):
            print(f"{op.name}: ({op.type}): {device}", file=sys.stderr)


class VariableHomes:
    """Which holders have the current value of each variable.

    A holder is ``HOST`` (the session's numpy array, shared zero-copy by CPU states bound
    to it) or a native state that keeps its own copy (a device state).  ``before_native``
    brings a state's copies up to date, ``after_native`` records what a step wrote, and
    ``to_host`` makes the numpy array current before Python reads it.
    """

    def __init__(self, arrays: dict):
        self.arrays = arrays
        self.holders: dict = {}  # name -> set of holders with the current value

    def to_host(self, name) -> None:
        holders = self.holders.get(name)
        if not holders or HOST in holders:
            return
        state = next(iter(holders))
        self.arrays[name][...] = state.read_variable(name)
        holders.add(HOST)

    def host_wrote(self, name) -> None:
        self.holders[name] = {HOST}

    def before_native(self, state) -> None:
        """Copy into ``state`` every variable of its artifact whose copy there is stale."""
        for v in state.artifact.variables:
            holders = self.holders.setdefault(v.name, {HOST})
            if state not in holders:
                self.to_host(v.name)
                state.write_variable(v.name, self.arrays[v.name])
                holders.add(state)

    def after_native(self, state, written) -> None:
        for name in written:
            self.holders[name] = {state}

    def forget(self, state) -> None:
        """``state`` is closing: move what only it holds to the host first."""
        for name, holders in self.holders.items():
            if state in holders:
                if holders == {state}:
                    self.to_host(name)
                holders.discard(state)


TF_API = {"tf": {"ConfigProto": ConfigProto, "GPUOptions": GPUOptions}}

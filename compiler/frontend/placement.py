"""Device placement for tf.Session: which target runs a signature, and where variables live.

* ``ConfigProto`` — the TF1 session options Kiln honours: ``allow_soft_placement``,
  ``log_device_placement``, ``device_count`` (``{"GPU": 0}`` hides the GPU), plus Kiln's
  own ``kiln_backend`` / ``kiln_cache_dir`` / ``kiln_cuda_emulate`` / ``kiln_cuda_tf32``.
* ``choose_target`` — a signature runs on the GPU (the CUDA backend) when the session's
  backend is ``"cuda"`` or one of its ops was placed with ``tf.device('/gpu:0')``.  Without a
  usable GPU that is an ``InvalidArgumentError`` like TF's, unless soft placement is on (then
  it runs on the CPU).
* ``VariableHomes`` — which copies of each variable are current: the session's numpy array
  ("host") and/or native states that cannot share it (device states copy variables in and
  out only when another holder needs them, so a training loop never leaves the GPU).
"""
from __future__ import annotations

import os
import re
import sys

from . import errors

HOST = "host"
_GPU = re.compile(r"(?:^|[/:])gpu(?::\d+)?(?:/|$)", re.IGNORECASE)


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
                 kiln_backend=None, kiln_cache_dir=None, kiln_cuda_emulate=None, kiln_cuda_tf32=False):
        self.allow_soft_placement = bool(allow_soft_placement)
        self.log_device_placement = bool(log_device_placement)
        self.device_count = dict(device_count or {})
        self.gpu_options = gpu_options or GPUOptions()
        self.intra_op_parallelism_threads = intra_op_parallelism_threads
        self.inter_op_parallelism_threads = inter_op_parallelism_threads
        self.kiln_backend = kiln_backend
        self.kiln_cache_dir = kiln_cache_dir
        self.kiln_cuda_emulate = kiln_cuda_emulate
        self.kiln_cuda_tf32 = kiln_cuda_tf32


def config_get(config, key):
    """``config[key]`` for a dict, ``config.<key>`` / ``config.kiln_<key>`` for a ConfigProto."""
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    value = getattr(config, key, None)
    return value if value is not None else getattr(config, f"kiln_{key}", None)


def is_gpu_device(spec: str) -> bool:
    """Whether a ``tf.device`` string names a GPU (``/gpu:0``, ``/device:GPU:0``, ``GPU``...)."""
    return bool(spec and _GPU.search(spec))


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


def cuda_unavailable_reason(config) -> str:
    """Why the CUDA backend cannot run here ("" when it can: a GPU and nvcc, or emulation)."""
    count = (config_get(config, "device_count") or {}).get("GPU")
    if count is not None and int(count) == 0:
        return "the session config hides the GPU (device_count={'GPU': 0})"
    if emulate_cuda(config):
        return ""
    from runtime import cuda

    if cuda.device_count() == 0:
        return cuda.why_no_device()
    from ..codegen.cuda.build import CudaToolchainError, find_nvcc

    try:
        find_nvcc()
    except CudaToolchainError as err:
        return str(err)
    return ""


def emulate_cuda(config) -> bool:
    """Whether CUDA code runs on the host emulator (config ``cuda_emulate`` or $KILN_CUDA_EMULATE)."""
    value = config_get(config, "cuda_emulate")
    if value is not None:
        return bool(value)
    return os.environ.get("KILN_CUDA_EMULATE", "") not in ("", "0")


def choose_target(backend: str, config, tensors, targets):
    """``"cuda"`` or ``"cpu"`` for one run signature (see the module doc)."""
    ops = _reachable_ops(tensors, targets)
    gpu_ops = [op for op in ops if is_gpu_device(op.device)]
    if backend != "cuda" and not gpu_ops:
        return "cpu"
    reason = cuda_unavailable_reason(config)
    if not reason:
        _log(config, ops, "/device:GPU:0")
        return "cuda"
    if config_get(config, "allow_soft_placement"):
        _log(config, ops, "/device:CPU:0")
        return "cpu"
    what = f"operation {gpu_ops[0].name}" if gpu_ops else "this session (backend 'cuda')"
    spec = gpu_ops[0].device if gpu_ops else "/device:GPU:0"
    raise errors.InvalidArgumentError(
        None, gpu_ops[0] if gpu_ops else None,
        f"Cannot assign a device for {what}: Could not satisfy explicit device specification "
        f"'{spec}' because no GPU is usable: {reason}. Set allow_soft_placement=True in the "
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

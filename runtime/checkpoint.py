"""Checkpoints: safetensors files with an integrity record, an index file, keep-N, restore.

A checkpoint is one ``<prefix>-<step>.safetensors`` file (no pickle) holding every variable
by name; its safetensors metadata holds ``format`` (``kiln-checkpoint-1``), ``step``, the
caller's ``metadata`` (JSON) and ``sha256``, a digest over all of that and every tensor's
name, dtype, shape and bytes.  Files are written atomically (temp file in the same
directory, flush, fsync, ``os.replace``, fsync of the directory); then the directory's
``checkpoint`` index (TF's text format) is rewritten the same way; then checkpoints beyond
the newest ``keep`` are deleted.  :func:`load_checkpoint` detects truncated, altered and
foreign files with a :class:`CheckpointError` naming the file.  ``tf.train.Saver`` (graph
API) writes and reads this same format through this module.  See docs/checkpoints.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct

import numpy as np
import safetensors.numpy as st

from .files import atomic_write

FORMAT = "kiln-checkpoint-1"
SUFFIX = ".safetensors"
INDEX = "checkpoint"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, altered, or not a Kiln checkpoint."""


# ----------------------------------------------------------------------------- paths
def checkpoint_file(path) -> str:
    """The ``.safetensors`` file of a checkpoint given by its prefix or by the file itself."""
    path = os.fspath(path)
    return path if path.endswith(SUFFIX) else path + SUFFIX


def prefix_of(path) -> str:
    """The prefix of a checkpoint given by its prefix or by its ``.safetensors`` file."""
    path = os.fspath(path)
    return path.removesuffix(SUFFIX)


# ----------------------------------------------------------------------------- file format
def _digest(arrays: dict, meta: dict) -> str:
    """sha256 over the format, step, user metadata and every tensor (sorted by name)."""
    h = hashlib.sha256()
    for key in ("format", "step", "metadata"):
        h.update(f"{key}={meta.get(key, '')}\0".encode())
    for name in sorted(arrays):
        a = np.asarray(arrays[name], order="C")
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def encode_checkpoint(variables: dict, step=None, metadata=None) -> bytes:
    """The bytes of a checkpoint file holding ``variables`` (``name -> array``)."""
    arrays = {}
    for name, value in variables.items():
        if not isinstance(name, str):
            raise TypeError(f"checkpoint variable names must be str, got {name!r}")
        arrays[name] = np.asarray(value, order="C")
    meta = {"format": FORMAT}
    if step is not None:
        meta["step"] = str(int(step))
    if metadata is not None:
        meta["metadata"] = json.dumps(metadata, sort_keys=True)
    meta["sha256"] = _digest(arrays, meta)
    return st.save(arrays, metadata=meta)


def write_checkpoint_file(file, variables: dict, step=None, metadata=None) -> str:
    """Atomically write one checkpoint file (no index update); returns ``file``."""
    atomic_write(os.fspath(file), encode_checkpoint(variables, step, metadata))
    return os.fspath(file)


def _header(data: bytes, file):
    """The parsed safetensors header; raises CheckpointError for truncated/corrupt layouts."""
    if len(data) < 8:
        raise CheckpointError(f"Checkpoint {file} is truncated: {len(data)} bytes, not even a header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        raise CheckpointError(f"Checkpoint {file} is corrupt or not a safetensors checkpoint "
                              f"(header length {n})")
    if 8 + n > len(data):
        raise CheckpointError(f"Checkpoint {file} is truncated: {len(data)} bytes, "
                              f"its header alone needs {8 + n}")
    try:
        header = json.loads(data[8:8 + n])
        end = max([int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"] or [0])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise CheckpointError(f"Checkpoint {file} is corrupt or not a safetensors checkpoint "
                              f"(bad header: {err})") from None
    if 8 + n + end > len(data):
        raise CheckpointError(f"Checkpoint {file} is truncated: {len(data)} bytes, "
                              f"its header describes {8 + n + end}")
    if 8 + n + end < len(data):
        raise CheckpointError(f"Checkpoint {file} was altered: {len(data) - 8 - n - end} "
                              "unexpected bytes after the tensor data")
    return header


def decode_checkpoint(data: bytes, file="<bytes>"):
    """``(variables, step, metadata)`` from checkpoint bytes, verifying the integrity record."""
    header = _header(data, file)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a Kiln checkpoint (its safetensors metadata has no "
                              f"'format': '{FORMAT}')")
    if "sha256" not in meta:
        raise CheckpointError(f"Checkpoint {file} has no integrity record (sha256)")
    try:
        arrays = st.load(data)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise CheckpointError(f"Checkpoint {file} is corrupt or not a safetensors checkpoint "
                              f"({err})") from None
    if _digest(arrays, meta) != meta["sha256"]:
        raise CheckpointError(f"Checkpoint {file} was altered or is corrupt: the sha256 of its "
                              "contents does not match its integrity record")
    step = int(meta["step"]) if meta.get("step") not in (None, "") else None
    user = json.loads(meta["metadata"]) if "metadata" in meta else None
    return arrays, step, user


def load_checkpoint(path):
    """``(variables dict, step or None, metadata or None)`` of a checkpoint (prefix or file).

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file when it is missing,
    truncated, altered, or not a Kiln checkpoint.
    """
    file = checkpoint_file(path)
    if not os.path.isfile(file):
        raise CheckpointError(f"{os.fspath(path)} is not a valid checkpoint: no file {file}")
    with open(file, "rb") as f:
        data = f.read()
    return decode_checkpoint(data, file)


def is_valid_checkpoint(path) -> bool:
    """Whether ``path`` loads completely and passes the integrity check."""
    try:
        load_checkpoint(path)
        return True
    except (CheckpointError, OSError):
        return False


# ----------------------------------------------------------------------------- index file
class CheckpointState:
    """TF's CheckpointState: the latest checkpoint and all kept ones, in save order."""

    def __init__(self, model_checkpoint_path="", all_model_checkpoint_paths=()):
        self.model_checkpoint_path = model_checkpoint_path
        self.all_model_checkpoint_paths = list(all_model_checkpoint_paths)

    def to_text(self):
        lines = [f"model_checkpoint_path: {_quote(self.model_checkpoint_path)}"]
        lines += [f"all_model_checkpoint_paths: {_quote(p)}" for p in self.all_model_checkpoint_paths]
        return "\n".join(lines) + "\n"

    __str__ = to_text

    def __repr__(self):
        return f"CheckpointState({self.model_checkpoint_path!r}, {self.all_model_checkpoint_paths!r})"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "'": "'"}
_LINE = re.compile(r'^\s*(\w+)\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')


def _quote(s):
    return '"' + "".join(_ESCAPES.get(c, c) for c in s) + '"'


def _unquote(s):
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(1)), s)


def parse_index(text, source="checkpoint") -> CheckpointState:
    """Parse the text-format index; unknown and numeric fields (timestamps) are ignored."""
    state = CheckpointState()
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            if re.match(r"^\s*\w+\s*:\s*[-+0-9.eE]+\s*$", line):
                continue
            raise ValueError(f"{source}: cannot parse line {line!r}")
        key, value = m.group(1), _unquote(m.group(2))
        if key == "model_checkpoint_path":
            state.model_checkpoint_path = value
        elif key == "all_model_checkpoint_paths":
            state.all_model_checkpoint_paths.append(value)
    return state


def write_index(directory, state: CheckpointState, filename=None) -> None:
    """Atomically rewrite ``directory``'s index file with ``state`` (paths written as given)."""
    atomic_write(os.path.join(directory, filename or INDEX), state.to_text().encode("utf-8"))


def read_index(directory, filename=None):
    """The directory's CheckpointState with relative paths joined to it, or None without one.

    Raises ``ValueError`` for an index that cannot be parsed.
    """
    path = os.path.join(directory, filename or INDEX)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        state = parse_index(f.read(), path)
    join = lambda p: p if not p or os.path.isabs(p) else os.path.join(directory, p)
    state.model_checkpoint_path = join(state.model_checkpoint_path)
    state.all_model_checkpoint_paths = [join(p) for p in state.all_model_checkpoint_paths]
    return state


# ----------------------------------------------------------------------------- directory API
def _disk_checkpoints(directory, prefix=None):
    """``.safetensors`` files of ``directory`` (of ``<prefix>-<step>`` when given), newest first."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+){re.escape(SUFFIX)}$" if prefix
                         else rf"^[^.].*?(?:-(\d+))?{re.escape(SUFFIX)}$")
    found = []
    for name in os.listdir(directory):
        m = pattern.match(name)
        if m:
            path = os.path.join(directory, name)
            found.append((int(m.group(1) or -1), os.path.getmtime(path), path))
    return [p for _, _, p in sorted(found, reverse=True)]


def save_checkpoint(directory, variables: dict, step: int, prefix="ckpt", keep=5, metadata=None) -> str:
    """Write ``<directory>/<prefix>-<step>.safetensors``, update the index, keep the newest ``keep``.

    Order: checkpoint file (atomic) -> index (atomic) -> deletions, so a crash at any point
    leaves the index naming a complete checkpoint.  ``keep`` counts in save order (the index
    list); other ``<prefix>-<N>.safetensors`` files not kept (e.g. left by a crash) and stale
    temp files are deleted too.  ``keep=None`` or ``0`` keeps everything.  Returns the file path.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    file = os.path.join(directory, f"{prefix}-{int(step)}{SUFFIX}")
    write_checkpoint_file(file, variables, step, metadata)
    try:
        old = read_index(directory)
    except ValueError as err:
        _log.warning("ignoring unreadable checkpoint index: %s", err)
        old = None
    kept = [checkpoint_file(p) for p in (old.all_model_checkpoint_paths if old else [])]
    kept = [p for p in kept if os.path.isfile(p) and p != file] + [file]
    dropped = kept[:-keep] if keep else []
    kept = kept[-keep:] if keep else kept
    rel = [os.path.relpath(prefix_of(p), directory) for p in kept]
    write_index(directory, CheckpointState(rel[-1], rel))
    _delete(directory, prefix, kept, dropped)
    return file


def _delete(directory, prefix, kept, dropped):
    """Remove dropped checkpoints, un-kept ``<prefix>-<N>`` files and stale temp files."""
    keep_set = {os.path.abspath(p) for p in kept}
    orphans = [p for p in _disk_checkpoints(directory, prefix) if os.path.abspath(p) not in keep_set]
    stale = [os.path.join(directory, n) for n in os.listdir(directory)
             if n.startswith(f".{prefix}-") and n.endswith(".tmp")]
    for path in dict.fromkeys(dropped + orphans + stale):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def has_checkpoints(directory) -> bool:
    """Whether ``directory`` holds an index or any checkpoint file (complete or not)."""
    directory = os.fspath(directory)
    return os.path.isdir(directory) and (os.path.isfile(os.path.join(directory, INDEX))
                                         or bool(_disk_checkpoints(directory)))


def remove_checkpoints(directory, prefix="ckpt") -> None:
    """Delete the index, every ``<prefix>-<N>`` checkpoint and stale temp files of
    ``directory`` (other files stay): the start of a run that replaces an earlier one."""
    directory = os.fspath(directory)
    try:
        os.remove(os.path.join(directory, INDEX))
    except FileNotFoundError:
        pass
    _delete(directory, prefix, [], [])


def latest_checkpoint(directory, verify=True):
    """The file of the newest complete checkpoint of ``directory``, or None.

    The index's newest entry wins; when it is missing or (with ``verify``) fails to load,
    the other index entries and then the directory's other ``.safetensors`` files (highest
    step first) are tried, with a warning.  ``verify`` reads each candidate in full.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return None
    try:
        state = read_index(directory)
    except ValueError as err:
        _log.warning("ignoring unreadable checkpoint index: %s", err)
        state = None
    listed = [state.model_checkpoint_path, *reversed(state.all_model_checkpoint_paths)] if state else []
    candidates = dict.fromkeys([checkpoint_file(p) for p in listed if p] + _disk_checkpoints(directory))
    for i, path in enumerate(candidates):
        if os.path.isfile(path) and (not verify or is_valid_checkpoint(path)):
            if i:
                _log.warning("%s: newest checkpoint unusable, falling back to %s", directory, path)
            return path
    return None


# ----------------------------------------------------------------------------- restore
def select_variables(arrays: dict, expected: dict, var_list=None, name_map=None, source="<checkpoint>"):
    """``{variable name: array}`` to restore, every check done before anything is written.

    ``expected`` is ``{variable name: (shape, dtype)}``; ``var_list`` (default: all of
    ``expected``) restricts the restored variables; ``name_map`` maps checkpoint names to
    variable names (unmapped variables use their own name).  Missing entries, unknown
    variables, and shape or dtype mismatches raise ``ValueError`` naming file and variable.
    """
    key_of = {}
    for key, var in (name_map or {}).items():
        if var in key_of:
            raise ValueError(f"name_map maps both {key_of[var]!r} and {key!r} to variable {var!r}")
        key_of[var] = key
    names = list(expected) if var_list is None else list(var_list)
    out = {}
    for var in names:
        if var not in expected:
            raise ValueError(f"Cannot restore unknown variable {var}: the target has "
                             f"{sorted(expected)[:10]}")
        key = key_of.get(var, var)
        if key not in arrays:
            raise ValueError(f"Key {key} not found in checkpoint {source}: variable {var} "
                             f"cannot be restored (the file holds {sorted(arrays)[:10]})")
        arr, (shape, dtype) = arrays[key], expected[var]
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"Cannot restore variable {var} from {source}: checkpoint entry {key} "
                             f"has shape {list(arr.shape)}, the variable has shape {list(shape)}")
        if arr.dtype != np.dtype(dtype):
            raise ValueError(f"Cannot restore variable {var} from {source}: checkpoint entry {key} "
                             f"has dtype {arr.dtype.name}, the variable has dtype {np.dtype(dtype).name}")
        out[var] = arr
    return out


def expected_variables(state_like) -> dict:
    """``{name: (shape, dtype)}`` of a runtime State (from its manifest) or any object with
    ``variables()`` returning ``name -> array``."""
    artifact = getattr(state_like, "artifact", None)
    if artifact is not None and hasattr(artifact, "variables"):
        return {v.name: (tuple(v.shape), np.dtype(v.dtype)) for v in artifact.variables}
    return {n: (a.shape, a.dtype) for n, a in state_like.variables().items()}


def restore_into(state_like, path, var_list=None, name_map=None, expected=None):
    """Load checkpoint ``path`` (file, prefix or directory -> its latest) into ``state_like``
    (anything with ``write_variable(name, value)``); returns ``(restored names, step, metadata)``.

    Nothing is written unless every selected variable passes the checks.
    """
    path = _resolve(path)
    arrays, step, meta = load_checkpoint(path)
    expected = expected_variables(state_like) if expected is None else expected
    values = select_variables(arrays, expected, var_list, name_map, checkpoint_file(path))
    for name, value in values.items():
        state_like.write_variable(name, value)
    return list(values), step, meta


def _resolve(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"No complete checkpoint in directory {path}")
        return latest
    return path


def save_state(state, directory, step=None, prefix="ckpt", keep=5, metadata=None) -> str:
    """Checkpoint every variable of a runtime State (optimizer slots and global_step included).

    ``step`` defaults to the value of a ``global_step`` variable.
    """
    variables = state.variables()
    if step is None:
        if "global_step" not in variables:
            raise ValueError("save_state needs a step: the state has no global_step variable")
        step = int(variables["global_step"])
    return save_checkpoint(directory, variables, step, prefix, keep, metadata)


def restore_state(state, path, var_list=None, name_map=None):
    """Restore a runtime State from a checkpoint (or a directory's latest); returns ``(step, metadata)``."""
    _, step, meta = restore_into(state, path, var_list, name_map)
    return step, meta

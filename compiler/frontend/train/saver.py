"""tf.train.Saver: checkpoints as safetensors files (no pickle), TF1's API and index file.

``save(sess, "dir/model.ckpt", global_step=100)`` writes ``dir/model.ckpt-100.safetensors``
holding every saved variable keyed by its name (or by its key in a ``var_list`` dict), and
rewrites ``dir/checkpoint`` in TF's text format::

    model_checkpoint_path: "model.ckpt-100"
    all_model_checkpoint_paths: "model.ckpt-50"
    all_model_checkpoint_paths: "model.ckpt-100"

The file format, its integrity record (sha256) and the atomic writes (temp file in the
same directory, flush + fsync, ``os.replace``) live in :mod:`runtime.checkpoint`, so files
written here load with the runtime and vice versa (docs/checkpoints.md).  ``save`` returns the checkpoint *prefix* (as TF does); ``restore`` and the
helpers accept either the prefix or the ``.safetensors`` file.  Restore checks every
variable (present, same shape, same dtype) before it changes any session value.
"""
from __future__ import annotations

import logging
import numbers
import os
import time

import numpy as np

from runtime import checkpoint as ckpt
from runtime.checkpoint import SUFFIX, CheckpointState, checkpoint_file, prefix_of  # noqa: F401

from .. import variables as vs
from .schedules import global_step as _global_step_value

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- files
def read_checkpoint(path) -> dict:
    """All arrays of a checkpoint, integrity-checked (runtime.checkpoint raises a clear error)."""
    return ckpt.load_checkpoint(path)[0]


def checkpoint_exists(checkpoint_prefix):
    """tf.train.checkpoint_exists: whether the checkpoint's file is there."""
    return os.path.isfile(checkpoint_file(checkpoint_prefix))


def get_checkpoint_mtimes(checkpoint_prefixes):
    return [os.path.getmtime(checkpoint_file(p)) for p in checkpoint_prefixes if checkpoint_exists(p)]


def remove_checkpoint(checkpoint_prefix, checkpoint_format_version=None, meta_graph_suffix="meta"):
    """Delete a checkpoint's files (missing ones are ignored)."""
    prefix = prefix_of(checkpoint_prefix)
    for file in (checkpoint_file(prefix), f"{prefix}.{meta_graph_suffix}"):
        try:
            os.remove(file)
        except FileNotFoundError:
            pass


def list_variables(ckpt_dir_or_file):
    """tf.train.list_variables: sorted (name, shape) pairs of a checkpoint (or a directory's latest)."""
    arrays = read_checkpoint(_resolve(ckpt_dir_or_file))
    return [(name, list(arrays[name].shape)) for name in sorted(arrays)]


def load_variable(ckpt_dir_or_file, name):
    """tf.train.load_variable: one array of a checkpoint (or a directory's latest)."""
    path = _resolve(ckpt_dir_or_file)
    arrays = read_checkpoint(path)
    name = name.removesuffix(":0")
    if name not in arrays:
        raise ValueError(f"Key {name} not found in checkpoint {checkpoint_file(path)}")
    return arrays[name]


def _resolve(ckpt_dir_or_file):
    if os.path.isdir(ckpt_dir_or_file):
        latest = latest_checkpoint(ckpt_dir_or_file)
        if latest is None:
            raise ValueError(f"Couldn't find 'checkpoint' file or checkpoints in given directory {ckpt_dir_or_file}")
        return latest
    return ckpt_dir_or_file


# ----------------------------------------------------------------------------- index file
def _state_path(save_dir, latest_filename):
    return os.path.join(save_dir, latest_filename or "checkpoint")


def update_checkpoint_state(save_dir, model_checkpoint_path, all_model_checkpoint_paths=None,
                            latest_filename=None, save_relative_paths=False):
    """Rewrite the index file of ``save_dir`` (atomically).

    As in TF: the latest path is appended to the list if it is not last; paths are written
    relative to ``save_dir`` when ``save_relative_paths`` or when ``save_dir`` is relative.
    """
    paths = list(all_model_checkpoint_paths or [])
    if not paths or paths[-1] != model_checkpoint_path:
        paths.append(model_checkpoint_path)
    if save_relative_paths or not os.path.isabs(save_dir):
        model_checkpoint_path = _relative_to(model_checkpoint_path, save_dir)
        paths = [_relative_to(p, save_dir) for p in paths]
    ckpt.write_index(save_dir, CheckpointState(model_checkpoint_path, paths), latest_filename)


def _relative_to(path, directory):
    """``path`` relative to ``directory`` when both are absolute or both relative, else as is."""
    return os.path.relpath(path, directory) if os.path.isabs(path) == os.path.isabs(directory) else path


def get_checkpoint_state(checkpoint_dir, latest_filename=None):
    """The CheckpointState of a directory (relative paths joined to it), or None without one."""
    try:
        state = ckpt.read_index(checkpoint_dir, latest_filename)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        _log.warning("%s: Checkpoint ignored (%s)", _state_path(checkpoint_dir, latest_filename), err)
        return None
    if state is not None and not state.model_checkpoint_path:
        raise ValueError(f"Invalid checkpoint state loaded from {checkpoint_dir}")
    return state


def latest_checkpoint(checkpoint_dir, latest_filename=None):
    """The prefix of the newest checkpoint named by the directory's index file, or None."""
    state = get_checkpoint_state(checkpoint_dir, latest_filename)
    if state and state.model_checkpoint_path:
        if checkpoint_exists(state.model_checkpoint_path):
            return state.model_checkpoint_path
        _log.error("Couldn't match files for checkpoint %s", state.model_checkpoint_path)
    return None


# ----------------------------------------------------------------------------- Saver
def _var_dict(var_list):
    """{checkpoint name: Variable} from None (all global variables), a list or a dict."""
    if isinstance(var_list, dict):
        for key, var in var_list.items():
            if not isinstance(key, str):
                raise TypeError(f"Saver var_list keys must be names (str), got {key!r}")
            if not isinstance(var, vs.Variable):
                raise TypeError(f"Variable to save is not a Variable: {var!r}")
        return dict(var_list)
    if var_list is None:
        var_list = vs.global_variables()
    out = {}
    for var in var_list:
        if not isinstance(var, vs.Variable):
            raise TypeError(f"Variable to save is not a Variable: {var!r}")
        name = var.op.name
        if name in out:
            raise ValueError(f"At least two variables have the same name: {name}")
        out[name] = var
    return out


def _check_session(sess):
    if not (hasattr(sess, "variable_value") and hasattr(sess, "set_variable_value")):
        raise TypeError(f"'sess' must be a Session; {sess!r}")


class Saver:
    """tf.train.Saver(var_list=None, max_to_keep=5, keep_checkpoint_every_n_hours=10000.0, ...)."""

    def __init__(self, var_list=None, reshape=False, sharded=False, max_to_keep=5,
                 keep_checkpoint_every_n_hours=10000.0, name=None, restore_sequentially=False,
                 saver_def=None, builder=None, defer_build=False, allow_empty=False, write_version=None,
                 pad_step_number=False, save_relative_paths=False, filename=None):
        self._var_list_arg = var_list
        self._allow_empty = allow_empty
        self._max_to_keep = max_to_keep
        self._keep_every_s = keep_checkpoint_every_n_hours * 3600.0
        self._next_keep_time = time.time() + self._keep_every_s
        self._pad_step_number = pad_step_number
        self._save_relative_paths = save_relative_paths
        self._filename = filename
        self._last_checkpoints = []  # (prefix, time) newest last
        self._to_delete = []  # (prefix, time) that fell out of the newest max_to_keep
        self._var_dict = None
        if not defer_build:
            self.build()

    def build(self):
        """Fix the set of saved variables (TF does this at construction unless defer_build)."""
        self._var_dict = _var_dict(self._var_list_arg)
        if not self._var_dict and not self._allow_empty:
            raise ValueError("No variables to save")

    @property
    def last_checkpoints(self):
        """Prefixes of the kept checkpoints this saver wrote, oldest first."""
        return [p for p, _ in self._last_checkpoints]

    def set_last_checkpoints(self, last_checkpoints):
        self._last_checkpoints = [(p, None) for p in last_checkpoints]

    def set_last_checkpoints_with_time(self, last_checkpoints_with_time):
        self._last_checkpoints = list(last_checkpoints_with_time)

    def recover_last_checkpoints(self, checkpoint_paths):
        """Adopt existing checkpoints (e.g. get_checkpoint_state's list) for keep-N after a restart."""
        self._last_checkpoints = [(p, os.path.getmtime(checkpoint_file(p))) for p in checkpoint_paths
                                  if checkpoint_exists(p)]

    # --- save ----------------------------------------------------------------------------
    def save(self, sess, save_path, global_step=None, latest_filename=None, meta_graph_suffix="meta",
             write_meta_graph=True, write_state=True, strip_default_attrs=False, save_debug_info=False):
        """Write ``<save_path>[-<step>].safetensors`` and the index; return the checkpoint prefix.

        No ``.meta`` graph file is written (``write_meta_graph`` is accepted and ignored).
        """
        if self._var_dict is None:
            self.build()
        _check_session(sess)
        latest_filename = latest_filename or "checkpoint"
        if os.path.split(latest_filename)[0]:
            raise ValueError("'latest_filename' must not contain path components")
        save_path = os.fspath(save_path)
        prefix = self._prefix(sess, save_path, global_step)
        if global_step is None and os.path.basename(save_path) == latest_filename:
            raise ValueError(f"'latest_filename' collides with 'save_path': '{latest_filename}' and '{save_path}'")
        parent = os.path.dirname(save_path) or "."
        try:  # TF's V2 checkpoint writer creates the folder; the error is for one it cannot make
            os.makedirs(parent, exist_ok=True)
        except OSError:
            raise ValueError(f"Parent directory of {save_path} doesn't exist, can't save.") from None
        if not self._var_dict:
            return None
        arrays = {key: np.array(sess.variable_value(var.op.name), dtype=var.dtype.np, order="C")
                  for key, var in self._var_dict.items()}
        step = None if global_step is None else int(prefix.rsplit("-", 1)[1])
        ckpt.write_checkpoint_file(checkpoint_file(prefix), arrays, step)
        if write_state:
            self._record(prefix)
            update_checkpoint_state(parent, prefix, self.last_checkpoints,
                                    latest_filename, self._save_relative_paths)
            self._delete_old(meta_graph_suffix)
        return prefix

    def _prefix(self, sess, save_path, global_step):
        if global_step is None:
            return save_path
        if not isinstance(global_step, numbers.Number):
            global_step = _global_step_value(sess, global_step)
        step = f"{int(global_step):08d}" if self._pad_step_number else str(int(global_step))
        return f"{save_path}-{step}"

    def _record(self, prefix):
        """Move ``prefix`` to the newest end of the kept list (TF's _RecordLastCheckpoint)."""
        if not self._max_to_keep:
            return
        self._last_checkpoints = [(p, t) for p, t in self._last_checkpoints if p != prefix]
        self._last_checkpoints.append((prefix, time.time()))
        while len(self._last_checkpoints) > self._max_to_keep:
            self._to_delete.append(self._last_checkpoints.pop(0))

    def _delete_old(self, meta_graph_suffix):
        """Delete checkpoints that fell out of the newest ``max_to_keep``, except one every N hours."""
        for prefix, saved_at in self._to_delete:
            if saved_at is not None and saved_at > self._next_keep_time:
                self._next_keep_time += self._keep_every_s
                continue
            remove_checkpoint(prefix, meta_graph_suffix=meta_graph_suffix)
        self._to_delete = []

    # --- restore -------------------------------------------------------------------------
    def restore(self, sess, save_path):
        """Load every saved variable of this Saver from the checkpoint (prefix or file)."""
        if self._var_dict is None:
            self.build()
        if not self._var_dict:
            return
        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        _check_session(sess)
        arrays = read_checkpoint(save_path)
        expected = {var.op.name: (tuple(var.shape.as_list()), var.dtype.np) for var in self._var_dict.values()}
        name_map = {key: var.op.name for key, var in self._var_dict.items()}
        values = ckpt.select_variables(arrays, expected, list(expected), name_map, checkpoint_file(save_path))
        for name, arr in values.items():
            sess.set_variable_value(name, np.array(arr, copy=True))


TF_API = {
    "tf.train": {
        "Saver": Saver, "latest_checkpoint": latest_checkpoint, "get_checkpoint_state": get_checkpoint_state,
        "checkpoint_exists": checkpoint_exists, "get_checkpoint_mtimes": get_checkpoint_mtimes,
        "remove_checkpoint": remove_checkpoint, "update_checkpoint_state": update_checkpoint_state,
        "list_variables": list_variables, "load_variable": load_variable, "CheckpointState": CheckpointState,
    },
}

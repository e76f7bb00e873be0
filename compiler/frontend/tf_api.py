"""The ``tf`` namespace: ``from compiler import tf`` follows TF1 (``tf.compat.v1``) names.

Each frontend module lists what it exports in a ``TF_API`` dict that maps a namespace
("tf", "tf.nn", "tf.train", ...) to ``{public name: object}``; this module gathers them
so no two modules edit one shared list.

A name Kiln does not provide raises ``AttributeError: module 'tf' (Kiln) has no attribute
'X'`` pointing at docs/api.md (the module-level ``__getattr__`` below for ``tf`` itself,
:class:`Namespace` for ``tf.nn``, ``tf.train``, ...), instead of an error that names this
internal module.
"""
from __future__ import annotations

import importlib
import sys
import types

_MODULES = [
    "compiler.frontend.core_api",
    "compiler.frontend.placeholder_default",
    "compiler.frontend.errors",
    "compiler.frontend.placement",
    "compiler.frontend.ops.math_ops",
    "compiler.frontend.ops.array_ops",
    "compiler.frontend.ops.nn_ops",
    "compiler.frontend.ops.random_ops",
    "compiler.frontend.ops.losses",
    "compiler.frontend.ops.clip_ops",
    "compiler.frontend.ops.compat_ops",
    "compiler.frontend.ops.norm_ops",
    "compiler.frontend.ops.conv1d_ops",
    "compiler.frontend.variables",
    "compiler.frontend.initializers",
    "compiler.frontend.train.optimizers",
    "compiler.frontend.train.schedules",
    "compiler.frontend.train.moving_averages",
    "compiler.frontend.train.regularizers",
    "compiler.frontend.train.saver",
    "compiler.frontend.layers",
    "compiler.frontend.layers_norm",
    "compiler.frontend.layers_conv1d",
    "compiler.frontend.contrib_layers",
    "compiler.frontend.model",
    "compiler.frontend.rnn",
    "compiler.frontend.metrics",
    "compiler.frontend.app",
    "compiler.frontend.gfile",
    "compiler.frontend.tf_logging",
    "compiler.frontend.compat",
    "compiler.frontend.data.dataset",
    "compiler.frontend.summary",
    "compiler.frontend.summary_writer",
    "compiler.frontend.control_flow",
]
# gradient rules register themselves on import
_GRADIENT_MODULES = [
    "compiler.frontend.grads.math_grad",
    "compiler.frontend.grads.array_grad",
    "compiler.frontend.grads.nn_grad",
    "compiler.frontend.grads.control_flow_grad",
]


def _missing(path: str, name: str) -> AttributeError:
    return AttributeError(f"module '{path}' (Kiln) has no attribute '{name}': {path}.{name} is not "
                          "provided by Kiln (docs/api.md lists the names it provides)")


def __getattr__(name: str):
    """Called for a name ``tf`` lacks (PEP 562): say so in TF's terms, not this module's."""
    raise _missing("tf", name)


class Namespace(types.ModuleType):
    """A sub-namespace such as ``tf.nn`` (named by its public path); a missing name says so."""

    def __getattr__(self, name: str):
        raise _missing(self.__name__, name)


def _namespace(root: types.ModuleType, path: str) -> types.ModuleType:
    node, prefix = root, "tf"
    for part in path.split(".")[1:]:
        prefix = f"{prefix}.{part}"
        child = getattr(node, part, None)
        if child is None:
            child = Namespace(prefix)
            setattr(node, part, child)
        node = child
    return node


def build() -> types.ModuleType:
    tf = sys.modules[__name__]
    for name in _MODULES + _GRADIENT_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # an area not built yet
            raise
        for path, names in getattr(module, "TF_API", {}).items():
            ns = tf if path == "tf" else _namespace(tf, path)
            for public, obj in names.items():
                setattr(ns, public, obj)
    tf.compat = Namespace("tf.compat")
    tf.compat.v1 = tf  # TF1 code written against tf.compat.v1 sees the same names
    return tf

"""The ``tf`` namespace: ``from compiler import tf`` follows TF1 (``tf.compat.v1``) names.

Each frontend module lists what it exports in a ``TF_API`` dict that maps a namespace
("tf", "tf.nn", "tf.train", ...) to ``{public name: object}``; this module gathers them
so no two modules edit one shared list.
"""
from __future__ import annotations

import importlib
import sys
import types

_MODULES = [
    "compiler.frontend.core_api",
    "compiler.frontend.errors",
    "compiler.frontend.placement",
    "compiler.frontend.ops.math_ops",
    "compiler.frontend.ops.array_ops",
    "compiler.frontend.ops.nn_ops",
    "compiler.frontend.ops.random_ops",
    "compiler.frontend.ops.losses",
    "compiler.frontend.ops.clip_ops",
    "compiler.frontend.variables",
    "compiler.frontend.initializers",
    "compiler.frontend.train.optimizers",
    "compiler.frontend.train.schedules",
    "compiler.frontend.train.moving_averages",
    "compiler.frontend.train.regularizers",
    "compiler.frontend.train.saver",
    "compiler.frontend.layers",
    "compiler.frontend.model",
]
# gradient rules register themselves on import
_GRADIENT_MODULES = [
    "compiler.frontend.grads.math_grad",
    "compiler.frontend.grads.array_grad",
    "compiler.frontend.grads.nn_grad",
]


def _namespace(root: types.ModuleType, path: str) -> types.ModuleType:
    node = root
    for part in path.split(".")[1:]:
        child = getattr(node, part, None)
        if child is None:
            child = types.ModuleType(f"{node.__name__}.{part}")
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
    tf.compat = types.ModuleType("tf.compat")
    tf.compat.v1 = tf
    return tf

"""Where in the user's program an op was made: the first stack frame outside the ``compiler``
package (TF keeps a whole ``Operation.traceback``; one ``file:line`` is what ``kiln profile``
shows beside each kernel, docs/performance.md).  Recorded for every op when it is created, as
a ``(filename, line)`` pair (a few frame hops, no formatting); ``graph_sources`` formats them
for the manifest of a profiling build only."""
from __future__ import annotations

import os
import re
import sys

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def caller_location(skip: int = 2):
    """``(filename, line)`` of the innermost frame outside ``compiler/``, or None."""
    frame = sys._getframe(skip)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_PACKAGE) and not name.startswith("<frozen"):
            return name, frame.f_lineno
        frame = frame.f_back
    return None


def format_location(location, root: str | None = None) -> str:
    """``"path:line"`` (relative to ``root``, default the working folder, when inside it)."""
    if location is None:
        return ""
    name, line = location
    root = os.path.abspath(root or os.getcwd()) + os.sep
    shown = name[len(root):] if name.startswith(root) else name
    return f"{shown}:{line}"


def _all_ops(graph):
    """The ops of ``graph`` and of the body graphs its control-flow ops hold (``tf.cond``
    branches, ``tf.while_loop`` cond and body), recursively."""
    for op in graph.get_operations():
        yield op
        for value in op.attrs.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                if hasattr(sub, "get_operations"):
                    yield from _all_ops(sub)


_GRAD = re.compile(r"^gradients(?:_\d+)?/(.+)_grad/[^/]+$")


def graph_sources(graph) -> dict:
    """``op name -> "file:line"`` for every op of ``graph`` that has a location.  A gradient op
    (``gradients/fc1/MatMul_grad/MatMul``, made inside ``tf.gradients``/``minimize``) gets the
    line of the forward op it differentiates, marked ``(grad)``: that names the layer whose
    backward pass it is, not the one ``minimize`` call every gradient shares."""
    where = {op.name: format_location(op.source) for op in _all_ops(graph)
             if getattr(op, "source", None) is not None}
    for name in list(where):
        match = _GRAD.match(name)
        if match and where.get(match.group(1)):
            where[name] = where[match.group(1)] + " (grad)"
    return where

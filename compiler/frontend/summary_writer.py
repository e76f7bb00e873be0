"""``tf.summary.FileWriter`` / ``FileWriterCache`` and the TensorBoard proto classes
(``tf.Summary``, ``tf.Event``, ...), over ``runtime.events.EventWriter`` (tensorboardX).

As in TF1 a FileWriter opens a new event file in ``logdir``; ``add_summary`` takes a
``Summary`` proto or the bytes ``Session.run`` returns for a summary tensor; ``graph=``
(or ``add_graph``) writes a graph event (``graph_def``).  After ``close`` the writer ignores
new events until ``reopen`` (which starts another file), like TF's.  Writing is
synchronous: an event goes to the file's buffer when added (``max_queue`` is accepted; there
is no queue) and reaches the disk every ``flush_secs``, on ``flush`` and ``close``
(``runtime.events``).  ``add_run_metadata`` writes a tagged run-metadata event whose
``RunMetadata`` is empty unless a protobuf is given: Kiln records no traces.
"""
from __future__ import annotations

import threading

from runtime.events import EventWriter, proto

from .graph import Graph, get_default_graph
from .graph_def import graph_def as make_graph_def


class FileWriter:
    """tf.summary.FileWriter: writes summaries, graphs and events to an event file in ``logdir``."""

    def __init__(self, logdir, graph=None, max_queue=10, flush_secs=120, graph_def=None,
                 filename_suffix=None, session=None):
        if session is not None:
            raise NotImplementedError("tf.summary.FileWriter(session=...) (the tf.contrib.summary writer) "
                                      "is not provided by Kiln; omit session=")
        self._logdir, self._suffix = str(logdir), filename_suffix or ""
        self._flush_secs = flush_secs  # max_queue: accepted; events are written when added
        self._events = self._open()
        self._run_metadata_tags: set = set()
        if graph is not None or graph_def is not None:
            self.add_graph(graph, graph_def=graph_def)

    def _open(self) -> EventWriter:
        return EventWriter(self._logdir, self._suffix, self._flush_secs)

    def get_logdir(self):
        """The directory the event file is written in."""
        return self._logdir

    def add_event(self, event):
        """Write an ``Event`` proto as it is (the wall time is set when it has none)."""
        self._write(event, None)

    def add_summary(self, summary, global_step=None):
        """Write a ``Summary`` (proto or serialized bytes) at ``global_step``."""
        if not self._events.closed:
            self._events.add_summary(summary, global_step)

    def add_graph(self, graph, global_step=None, graph_def=None):
        """Write a graph event: a Kiln ``Graph`` (as its GraphDef) or a ``GraphDef`` proto."""
        if graph is not None and graph_def is not None:
            raise ValueError("Please pass only graph, or graph_def (deprecated), but not both.")
        given = graph if graph is not None else graph_def
        if isinstance(given, Graph):
            given = make_graph_def(given)
        elif not hasattr(given, "SerializeToString"):
            raise TypeError("The passed graph must be an instance of `Graph` or the deprecated `GraphDef`")
        self._write(proto("event").Event(graph_def=given.SerializeToString()), global_step)

    def add_session_log(self, session_log, global_step=None):
        """Write a ``SessionLog`` event (e.g. ``SessionLog(status=SessionLog.START)``)."""
        self._write(proto("event").Event(session_log=session_log), global_step)

    def add_run_metadata(self, run_metadata, tag, global_step=None):
        """Write a tagged ``RunMetadata`` event (empty for Kiln's ``tf.RunMetadata``)."""
        if tag in self._run_metadata_tags:
            raise ValueError("The provided tag was already used for this event type")
        self._run_metadata_tags.add(tag)
        data = run_metadata.SerializeToString() if hasattr(run_metadata, "SerializeToString") else b""
        event_pb2 = proto("event")
        self._write(event_pb2.Event(tagged_run_metadata=event_pb2.TaggedRunMetadata(tag=tag, run_metadata=data)),
                    global_step)

    def _write(self, event, step):
        if not self._events.closed:
            self._events.add_event(event, step)

    def flush(self):
        """Write the buffered events to disk."""
        self._events.flush()

    def close(self):
        """Flush and close the event file; later events are ignored until ``reopen``."""
        self._events.close()

    def reopen(self):
        """After ``close``: continue in a new event file in the same ``logdir``."""
        if self._events.closed:
            self._events = self._open()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileWriterCache:
    """tf.summary.FileWriterCache: one shared FileWriter per logdir (with the default graph)."""

    _cache: dict = {}
    _lock = threading.RLock()

    @staticmethod
    def get(logdir):
        """The FileWriter of ``logdir``, created on first use."""
        with FileWriterCache._lock:
            key = str(logdir)
            if key not in FileWriterCache._cache:
                FileWriterCache._cache[key] = FileWriter(key, graph=get_default_graph())
            return FileWriterCache._cache[key]

    @staticmethod
    def clear():
        """Close and forget every cached FileWriter."""
        with FileWriterCache._lock:
            for writer in FileWriterCache._cache.values():
                writer.close()
            FileWriterCache._cache.clear()


class _LazyProto(type):
    """The metaclass of the stand-ins for TensorBoard's protobuf message classes
    (tensorboardX's), imported on first use so that ``from compiler import tf`` does not load
    protobuf: calling one, its attributes (``tf.Summary.Value``, ``tf.Summary.FromString``)
    and ``isinstance`` act on the real class."""

    def _real(cls):
        return getattr(proto(cls._module), cls.__name__)

    def __call__(cls, *args, **kwargs):
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(cls._real(), attr)

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls._real())


def _lazy_proto(module, name):
    doc = f"TensorBoard's {name} protobuf message (tensorboardX.proto.{module}_pb2), loaded on first use."
    return _LazyProto(name, (), {"_module": module, "__doc__": doc})


_PROTOS = {name: _lazy_proto(module, name) for module, name in [
    ("summary", "Summary"), ("event", "Event"), ("event", "SessionLog"), ("summary", "HistogramProto"),
    ("summary", "SummaryMetadata")]}

TF_API = {
    "tf": {**_PROTOS, "GraphDef": _lazy_proto("graph", "GraphDef")},
    "tf.summary": {"FileWriter": FileWriter, "FileWriterCache": FileWriterCache, **_PROTOS},
}

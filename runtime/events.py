"""TensorBoard event files: the one home of Kiln's event writing (``kiln train``'s per-epoch
scalars, ``tf.summary.FileWriter``).

Events are ``Event`` protocol buffers in TFRecord framing, written with tensorboardX's
synchronous ``EventsWriter`` (tensorboardX needs only numpy and protobuf; it is imported on
first use, so ``import runtime`` stays fast).  A file is named like TF's,
``events.out.tfevents.<time>.<host>``, plus ``.<pid>.<n>`` so two writers that open in the
same second in one directory never share a file; TensorBoard reads every ``*tfevents*``
file in a directory.

Writing is synchronous (no background thread): each event goes to the file's buffer when it
is added, and the buffer reaches the disk on :meth:`EventWriter.flush`, when ``max_pending``
events are waiting, when ``flush_secs`` have passed since the last flush, and on ``close``.
"""
from __future__ import annotations

import importlib
import itertools
import os
import time

__all__ = ["EventWriter", "EventsUnavailable", "proto"]

_counter = itertools.count()


class EventsUnavailable(ImportError):
    """tensorboardX (the event-file writer Kiln uses) is not installed."""


def proto(name: str):
    """The protobuf module ``<name>_pb2`` (summary, event, graph, node_def, attr_value,
    tensor, tensor_shape, types) of TensorBoard's formats, as tensorboardX ships them."""
    try:
        return importlib.import_module(f"tensorboardX.proto.{name}_pb2")
    except ImportError as err:
        if err.name and not err.name.startswith(("tensorboardX", "google")):
            raise
        raise EventsUnavailable("TensorBoard summaries and event files need tensorboardX "
                                "(pip install tensorboardX)") from err


class EventWriter:
    """One event file in ``logdir`` (created with its directory); see the module doc."""

    def __init__(self, logdir, filename_suffix="", max_pending=10, flush_secs=120):
        proto("event")  # fail early, with the install hint, before creating anything
        from tensorboardX.event_file_writer import EventsWriter

        self.logdir = str(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        suffix = f".{os.getpid()}.{next(_counter)}{filename_suffix or ''}"
        self._writer = EventsWriter(os.path.join(self.logdir, "events"), suffix)
        self.path = self._writer._file_name
        self.max_pending, self.flush_secs = int(max_pending), float(flush_secs)
        self._pending, self._last_flush = 0, time.monotonic()
        self._seen_tags: set = set()
        self.closed = False

    def add_event(self, event, step=None) -> None:
        """Write an ``Event`` proto with ``step`` (if given), stamped with the wall time
        unless it has one."""
        if self.closed:
            raise ValueError(f"the event file {self.path} is closed")
        if not event.wall_time:
            event.wall_time = time.time()
        if step is not None:
            event.step = int(step)
        self._writer.write_event(event)
        self._pending += 1
        if self._pending >= self.max_pending or time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def add_summary(self, summary, step=None) -> None:
        """Write a ``Summary`` (a proto or its serialized bytes, as ``Session.run`` returns).

        As TF's FileWriter does, a value's plugin metadata is kept only the first time its
        tag is written to this file (TensorBoard reads it from there)."""
        summary_pb2 = proto("summary")
        if isinstance(summary, (bytes, bytearray)):
            summary = summary_pb2.Summary.FromString(bytes(summary))
        elif not isinstance(summary, summary_pb2.Summary):
            summary = summary_pb2.Summary.FromString(summary.SerializeToString())
        for value in summary.value:
            if value.HasField("metadata"):
                if value.tag in self._seen_tags:
                    value.ClearField("metadata")
                else:
                    self._seen_tags.add(value.tag)
        self.add_event(proto("event").Event(summary=summary), step)

    def add_scalars(self, values: dict, step) -> None:
        """Write ``{tag: number}`` as one summary event at ``step`` (float32 simple values)."""
        summary_pb2 = proto("summary")
        items = [summary_pb2.Summary.Value(tag=str(tag), simple_value=float(v)) for tag, v in values.items()]
        self.add_summary(summary_pb2.Summary(value=items), step)

    def flush(self) -> None:
        """Push the buffered events to the file."""
        if not self.closed:
            self._writer.flush()
            self._pending, self._last_flush = 0, time.monotonic()

    def close(self) -> None:
        """Flush and close the file (a second close does nothing)."""
        if not self.closed:
            self._writer.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

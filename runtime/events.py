"""TensorBoard event files: the one home of Kiln's event writing (``kiln train``'s per-epoch
scalars, ``tf.summary.FileWriter``).

Events are ``Event`` protocol buffers (tensorboardX's proto definitions) in TFRecord
framing, written with tensorboardX's ``RecordWriter`` (tensorboardX needs only numpy and
protobuf; it is imported on first use, so ``import runtime`` stays fast).  A file starts
with the ``brain.Event:2`` version event and is named like TF's,
``events.out.tfevents.<time>.<host>``, plus ``.<pid>.<n>`` so two writers that open in the
same second in one directory never share a file; TensorBoard reads every ``*tfevents*``
file in a directory.

Writing is synchronous (no background thread, no queue): each event goes to the file's
buffer when it is added, and the buffer reaches the disk (flushed and fsynced) on
:meth:`EventWriter.flush`, on ``close``, and when an event is added ``flush_secs`` or more
after the last flush (TF's writer thread flushes every ``flush_secs`` too).
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

    def __init__(self, logdir, filename_suffix="", flush_secs=120):
        event_pb2 = proto("event")  # fail early, with the install hint, before creating anything
        from tensorboardX.record_writer import RecordWriter

        self.logdir = str(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        now = time.time()
        import socket  # here: importing it costs every compiler start ~4 ms

        name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_counter)}{filename_suffix or ''}")
        self.path = os.path.join(self.logdir, name)
        self._records = RecordWriter(self.path)
        self.flush_secs, self._last_flush = float(flush_secs), time.monotonic()
        self._seen_tags: set = set()
        self.closed = False
        self.add_event(event_pb2.Event(wall_time=now, file_version="brain.Event:2"))

    def add_event(self, event, step=None) -> None:
        """Write an ``Event`` proto with ``step`` (if given), stamped with the wall time
        unless it has one."""
        if self.closed:
            raise ValueError(f"the event file {self.path} is closed")
        if not event.wall_time:
            event.wall_time = time.time()
        if step is not None:
            event.step = int(step)
        self._records.write(event.SerializeToString())
        if time.monotonic() - self._last_flush >= self.flush_secs:
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
        """Push the buffered events to the disk (flush and fsync)."""
        if not self.closed:
            self._records.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close the file (a second close does nothing)."""
        if not self.closed:
            self.flush()
            self._records.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

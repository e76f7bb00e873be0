"""Reading a profiling build's events (``kiln compile --profile``; docs/performance.md).

A profiling library records, per kernel call, per step and per worker thread's chunk of a
parallel loop, ``(id, arg, start ns, end ns)`` into memory the runtime attaches
(``kiln_profile_attach``, runtime/abi_spec.py ``PROFILE_FUNCTIONS``); the manifest's
``"profile"`` record says which id is which step or kernel (name, op, source line, FLOPs
and bytes as polynomials in the batch size).

    rec = Recorder(artifact)          # attaches a buffer to the artifact's library
    ... run steps on any state of the artifact ...
    profile = rec.collect()           # a Profile: events + their meaning
    print(profile_table(profile))     # runtime/profile_report.py
    rec.close()

Never imports ``compiler``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .abi import _bind_optional
from .abi_spec import PROFILE_FUNCTIONS
from .manifest import ArtifactError

DEFAULT_CAPACITY = 1 << 20  # events (24 MiB)


class NotProfiledError(ArtifactError):
    """The artifact was built without profiling instrumentation."""


def profile_record(manifest: dict, where="artifact") -> dict:
    """The manifest's ``"profile"`` record; :class:`NotProfiledError` saying how to get one."""
    record = manifest.get("profile")
    if record is None:
        kind = manifest.get("target", {}).get("kind", "?")
        hint = ("rebuild it with profiling: kiln compile MODEL.py -o DIR --profile (or "
                "tf.Session with KILN_PROFILE=1)") if kind == "cpu" else \
            f"profiling is supported for CPU artifacts only (this one is {kind.upper()})"
        raise NotProfiledError(f"{where} was built without profiling instrumentation: {hint}")
    return record


def event_dtype(record: dict) -> np.dtype:
    """The numpy dtype of one recorded event, from the record's ``event_fields``."""
    return np.dtype([(name, kind) for name, kind in record["event_fields"]])


def _bind(lib, fn):
    """``fn`` of ``PROFILE_FUNCTIONS`` bound in ``lib``; :class:`NotProfiledError` when absent."""
    bound = _bind_optional(lib, fn)
    if bound is None:
        raise NotProfiledError(f"the library does not export {fn.name} (not a profiling build)")
    return bound


@dataclass
class Profile:
    """Recorded ``events`` (a structured array sorted by start) with the manifest ``record``
    naming their ids, and how many events did not fit (``dropped``)."""

    events: np.ndarray
    record: dict
    dropped: int = 0

    def meta(self, event_id: int) -> dict:
        """The record of event id ``event_id`` (kind, entry, name, op, source, flops, bytes);
        a chunk's id names the kernel call that ran it."""
        return self.record["events"][int(event_id) & ~self.record["chunk_flag"]]

    def is_chunk(self, event_id: int) -> bool:
        """Whether ``event_id`` is a worker thread's chunk of a parallel loop."""
        return bool(int(event_id) & self.record["chunk_flag"])


class Recorder:
    """Events of one artifact's library: attaches a buffer of ``capacity`` events, resets,
    collects.  The buffer is per library: every state of the artifact records into it."""

    def __init__(self, artifact, capacity: int = DEFAULT_CAPACITY):
        self.record = profile_record(artifact.manifest, str(artifact.path))
        lib = artifact.library.lib
        self._attach, self._count = (_bind(lib, fn) for fn in PROFILE_FUNCTIONS)
        self.buffer = np.zeros(int(capacity), event_dtype(self.record))
        self.reset()

    def reset(self) -> None:
        """Forget the events recorded so far (e.g. after warm-up steps)."""
        self._attach(self.buffer.ctypes.data, len(self.buffer))

    def collect(self) -> Profile:
        """The events recorded since the last reset, sorted by start time."""
        count = int(self._count())
        kept = self.buffer[:min(count, len(self.buffer))].copy()
        return Profile(np.sort(kept, order="start"), self.record, max(0, count - len(self.buffer)))

    def close(self) -> None:
        """Stop recording (the library forgets the buffer before it is freed)."""
        if self._attach is not None:
            self._attach(None, 0)
            self._attach = None


# ----------------------------------------------------------------------------- summary
def evaluate(poly, batch: int):
    """A polynomial in the batch size (coefficients by power; None: not countable) at ``batch``."""
    return None if poly is None else sum(c * batch ** i for i, c in enumerate(poly))


@dataclass
class Row:
    """One line of the table: a kernel (or an entry's time outside kernels)."""

    entry: str
    name: str
    op: str
    source: str
    calls: int
    total_ns: int
    step_ns: int  # the entry's total step time
    flops: float | None  # summed over calls (None: not countable)
    bytes: float | None

    @property
    def percent(self) -> float:
        return 100.0 * self.total_ns / self.step_ns if self.step_ns else 0.0

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.calls if self.calls else 0.0

    def rate(self, amount) -> float | None:
        """``amount`` per second in units of 1e9 (GFLOP/s, GB/s); None when not countable
        or nothing to count (a kernel that only moves data has no GFLOP/s)."""
        return None if not amount or not self.total_ns else amount / self.total_ns


def _step_batches(profile: Profile) -> tuple:
    """(start times, batch sizes) of the recorded steps, by start."""
    events = profile.events
    steps = events[[not profile.is_chunk(i) and profile.meta(i)["kind"] == "step" for i in events["id"]]] \
        if len(events) else events
    return steps["start"], steps["arg"]


def summarize(profile: Profile) -> tuple:
    """``(rows, steps)``: one :class:`Row` per kernel that ran (sorted by total time, largest
    first, with one ``(outside kernels)`` row per entry: copies, workspace, recording) and
    ``{entry: (steps, total ns, batch sizes)}``.  A kernel call's FLOPs and bytes use the
    batch size of the step it ran in."""
    starts, batches = _step_batches(profile)
    steps: dict = {}
    by_id: dict = {}
    for ev in profile.events:
        meta = profile.meta(int(ev["id"]))
        dur = int(ev["end"] - ev["start"])
        if meta["kind"] == "step":
            n, total, sizes = steps.get(meta["entry"], (0, 0, set()))
            steps[meta["entry"]] = (n + 1, total + dur, sizes | {int(ev["arg"])})
            continue
        if profile.is_chunk(ev["id"]):  # a thread's chunk of a parallel loop: in the trace only
            continue
        at = int(np.searchsorted(starts, ev["start"], side="right")) - 1
        batch = int(batches[at]) if at >= 0 else 1
        acc = by_id.setdefault(int(ev["id"]), [0, 0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += dur
        for k, key in ((2, "flops"), (3, "bytes")):
            amount = evaluate(meta[key], batch)
            acc[k] = None if amount is None or acc[k] is None else acc[k] + amount
    rows = []
    for event_id, (calls, total, flops, nbytes) in by_id.items():
        meta = profile.meta(event_id)
        step_ns = steps.get(meta["entry"], (0, 0, None))[1]
        rows.append(Row(meta["entry"], meta["name"], meta["op"], meta["source"], calls, total, step_ns,
                        flops, nbytes))
    for entry, (n, total, _) in steps.items():
        inside = sum(r.total_ns for r in rows if r.entry == entry)
        rows.append(Row(entry, "(outside kernels)", "copies, workspace, recording", "", n,
                        max(0, total - inside), total, None, None))
    rows.sort(key=lambda r: (-r.total_ns, r.name))
    return rows, steps

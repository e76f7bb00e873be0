"""What ``kiln profile`` and ``KILN_PROFILE=1`` print and write from a :class:`runtime.profiling.Profile`:
a plain-text table of kernels (``profile_table``) and a Chrome / Perfetto trace
(``chrome_trace``: the JSON object format of the Trace Event Format, ``"X"`` complete
events in microseconds and ``"M"`` thread-name metadata, one track per thread).
Never imports ``compiler``."""
from __future__ import annotations

import json
import os

from .files import atomic_write
from .profiling import Profile, summarize

COLUMNS = ("kernel", "op", "source", "calls", "total ms", "mean us", "% step", "GFLOP/s", "GB/s")
_MAX = {"kernel": 44, "op": 44, "source": 34}


def _cut(text: str, width: int) -> str:
    """``text`` shortened to ``width`` characters with a ``~`` in the middle (ASCII: the table
    may go to a file or a terminal of any encoding)."""
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return text[:half] + "~" + text[len(text) - (width - 1 - half):]


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _aligned(columns, cells, left: int) -> list:
    """Lines of a plain-text table: a header, a rule, the rows; the first ``left`` columns
    (text) left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(c) for c in col) for col in zip(columns, *cells)]
    fmt = lambda row: "  ".join(c.ljust(w) if i < left else c.rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return [fmt(columns), fmt(["-" * w for w in widths]), *map(fmt, cells)]


def profile_table(profile: Profile, limit: int | None = None) -> str:
    """The kernels sorted by total time (largest first), one block per entry point: calls,
    total and mean time, share of the entry's step time, GFLOP/s and GB/s where countable
    (the ``(outside kernels)`` row makes the shares add up to 100%)."""
    rows, steps = summarize(profile)
    if not steps:
        return "no steps were recorded (run at least one step of a profiling build)"
    out = []
    for entry, (n, total, batches) in steps.items():
        mine = [r for r in rows if r.entry == entry]
        shown = mine if limit is None else mine[:limit]
        sizes = ", ".join(str(b) for b in sorted(batches))
        out.append(f"entry {entry}: {n} step(s), batch {sizes}, mean step {total / n / 1e6:.3f} ms, "
                   f"{len(mine) - 1} kernel(s)" + (f" (top {len(shown)} shown)" if len(shown) < len(mine) else ""))
        cells = [[_cut(r.name, _MAX["kernel"]), _cut(r.op, _MAX["op"]), _cut(r.source, _MAX["source"]),
                  str(r.calls), _number(r.total_ns / 1e6, 3), _number(r.mean_ns / 1e3, 1),
                  _number(r.percent, 1), _number(r.rate(r.flops), 2), _number(r.rate(r.bytes), 2)]
                 for r in shown]
        out += [*_aligned(COLUMNS, cells, left=3), ""]
    if profile.dropped:
        out.append(f"warning: {profile.dropped} event(s) did not fit the buffer and are not counted")
    return "\n".join(out).rstrip() + "\n"


def thread_table(profile: Profile, limit: int | None = None) -> str:
    """Per kernel that ran parallel chunks (threaded loops, GEMMs), the share of its call time
    each thread spent inside its chunks: low everywhere means the team's fork/join (or a
    serial part of the kernel) costs more than the work; uneven means load imbalance."""
    calls: dict = {}
    busy: dict = {}
    for ev in profile.events:
        meta = profile.meta(ev["id"])
        if meta["kind"] != "kernel":
            continue
        key = (meta["entry"], meta["name"])
        dur = int(ev["end"] - ev["start"])
        if profile.is_chunk(ev["id"]):
            per = busy.setdefault(key, {})
            per[int(ev["arg"])] = per.get(int(ev["arg"]), 0) + dur
        else:
            calls[key] = calls.get(key, 0) + dur
    keys = sorted(busy, key=lambda k: -calls.get(k, 0))[:limit]
    if not keys:
        return "no kernel ran on a thread team\n"
    team = max(t for per in busy.values() for t in per) + 1
    columns = ("entry", "kernel", "total ms", *(f"t{t} %" for t in range(team)))
    cells = [[entry, _cut(name, _MAX["kernel"]), _number(calls.get((entry, name), 0) / 1e6, 3),
              *(_number(100 * busy[(entry, name)].get(t, 0) / max(calls.get((entry, name), 0), 1), 1)
                for t in range(team))] for entry, name in keys]
    return "\n".join(_aligned(columns, cells, left=2)) + "\n"


def _trace_events(profile: Profile, pid: int, origin: int) -> tuple:
    """(complete events, thread ids) of one profile as process ``pid``, times from ``origin`` ns."""
    events, tids = [], set()
    for ev in profile.events:
        meta, chunk = profile.meta(ev["id"]), profile.is_chunk(ev["id"])
        kind = "chunk" if chunk else meta["kind"]
        tid = 0 if kind == "step" else int(ev["arg"])
        tids.add(tid)
        args = {"entry": meta["entry"]}
        if kind == "step":
            args["batch"] = int(ev["arg"])
        else:
            args.update(op=meta["op"], source=meta["source"])
        events.append({"name": meta["name"], "cat": kind, "ph": "X", "pid": pid, "tid": tid,
                       "ts": (int(ev["start"]) - origin) / 1e3,
                       "dur": max(0, int(ev["end"] - ev["start"])) / 1e3, "args": args})
    return events, tids


def chrome_trace(profiles) -> dict:
    """The trace as a JSON-ready dict of one :class:`Profile` or ``[(label, Profile)]`` (one
    process each): a complete (``"X"``) event per step, kernel call and thread chunk (``ts``
    and ``dur`` in µs from the first event; ``tid`` 0 is the calling thread, ``tid`` t the
    t-th worker of libgomp's team), with ``process_name``/``thread_name`` metadata per track."""
    if isinstance(profiles, Profile):
        profiles = [("kiln", profiles)]
    starts = [int(p.events["start"].min()) for _, p in profiles if len(p.events)]
    origin = min(starts) if starts else 0
    meta_events, complete = [], []
    for pid, (label, profile) in enumerate(profiles, start=1):
        events, tids = _trace_events(profile, pid, origin)
        complete += events
        meta_events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": label}})
        meta_events += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": t,
                         "args": {"name": "thread 0 (caller)" if t == 0 else f"worker {t}"}}
                        for t in sorted(tids)]
    complete.sort(key=lambda e: (e["ts"], -e["dur"]))  # enclosing events first
    dropped = sum(p.dropped for _, p in profiles)
    return {"traceEvents": meta_events + complete, "displayTimeUnit": "ms",
            "otherData": {"clock": "CLOCK_MONOTONIC", "dropped_events": dropped}}


def write_trace(profiles, path) -> None:
    """Write :func:`chrome_trace` of ``profiles`` as JSON to ``path`` atomically (it opens
    in chrome://tracing and ui.perfetto.dev)."""
    atomic_write(os.fspath(path), json.dumps(chrome_trace(profiles)))

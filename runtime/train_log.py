"""What a training run leaves for the user to read: per-epoch metrics files, the training
curves and the progress bar (used by ``runtime.trainer``; see docs/trainer.md).

* ``metrics.jsonl`` is append-only: one JSON object per epoch, tagged with the run's id
  (``run``), so a second run (or a resumed one) never overwrites an earlier one's rows.
* ``metrics.csv`` is regenerated from ``metrics.jsonl`` (every run) after each epoch.
* ``curves.png`` (matplotlib, imported only when drawn) is drawn at the end of the run and,
  with ``plot_every=N``, every N epochs.
* ``events/<run id>/events.out.tfevents.*`` (``runtime.events``, tensorboardX) holds the
  rows written to ``metrics.jsonl`` with that run id (backfilled rows under their own) as
  TensorBoard scalars: one tag per metric (``loss``, ``val_accuracy``, ``time_s``, ... as
  named there) at step = the row's ``epoch`` (1-based); flushed after every epoch.  One
  folder per run id, so TensorBoard (``tensorboard --logdir RUN_DIR``) shows each run as its
  own run instead of purging an earlier run's points when a new run starts again at epoch 1.
* The tqdm bar is shown only on a terminal; a log file gets one line per epoch.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time

from .files import append_line, atomic_write

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
EVENTS = "events"  # run_dir/events/<run id>/: the TensorBoard event files
CURVES = "curves.png"
_FIXED = ("run", "epoch", "time_s")


def new_run_id() -> str:
    """A run id that sorts by start time: ``20261206-170512-4711`` (time and process id)."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


def read_rows(path) -> list:
    """The JSON rows of a ``metrics.jsonl`` (a partial last line left by a crash is skipped)."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def metric_keys(rows) -> list:
    """Column order: run, epoch, train metrics, ``val_*`` metrics, time_s."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    metrics = sorted(k for k in keys if k not in _FIXED and not k.startswith("val_"))
    return ["run", "epoch"] + metrics + sorted(k for k in keys if k.startswith("val_")) + ["time_s"]


class RunLog:
    """The metrics files and curves of one training run in ``run_dir`` (None: no files)."""

    def __init__(self, run_dir, run_id=None, plot_every=0):
        self.run_dir, self.run_id, self.plot_every = run_dir, run_id or new_run_id(), int(plot_every or 0)
        self._plot_note_shown = False
        self._events: dict = {}  # run id -> runtime.events.EventWriter (None: no tensorboardX)
        if run_dir:
            os.makedirs(run_dir, exist_ok=True)

    def backfill(self, history: list, run_ids: list) -> None:
        """Append the rows of a resumed run's earlier epochs (``run_ids``: the run of each,
        from the checkpoint) that this folder's ``metrics.jsonl`` lacks, so it stays complete
        when a run is resumed into another run folder."""
        if not self.run_dir or not history:
            return
        path = os.path.join(self.run_dir, METRICS_JSONL)
        have = {(r.get("run"), r.get("epoch")) for r in read_rows(path)}
        run_ids = list(run_ids) + [None] * (len(history) - len(run_ids))
        missing = [(rid, row) for rid, row in zip(run_ids, history) if (rid, row.get("epoch")) not in have]
        for rid, row in missing:
            append_line(path, json.dumps({"run": rid, **row}))
            self._write_event(row, rid or self.run_id)
        if missing:
            self._write_csv()
            self._flush_events()

    def add(self, row: dict, history: list) -> None:
        """Record one epoch's ``row``; ``history`` is the whole run so far (for the curves)."""
        if not self.run_dir:
            return
        append_line(os.path.join(self.run_dir, METRICS_JSONL), json.dumps({"run": self.run_id, **row}))
        self._write_csv()
        self._write_event(row, self.run_id)
        self._flush_events()
        if self._plot_due(row):
            self.plot(history)

    def _plot_due(self, row) -> bool:
        return bool(self.plot_every) and row.get("epoch", 0) % self.plot_every == 0

    def finish(self, history: list) -> None:
        """The end of the run: draw the curves unless the last epoch just did."""
        if history and not self._plot_due(history[-1]):
            self.plot(history)

    def close(self) -> None:
        """Close the event files (every row was flushed when it was added)."""
        for writer in self._events.values():
            if writer is not None:
                writer.close()

    def _write_event(self, row: dict, run_id: str) -> None:
        """``row``'s numbers as TensorBoard scalars at step ``row['epoch']`` in the event file
        of ``run_id`` (module doc)."""
        if run_id not in self._events:
            from .events import EventsUnavailable, EventWriter
            try:
                self._events[run_id] = EventWriter(os.path.join(self.run_dir, EVENTS, run_id))
            except EventsUnavailable as err:
                if not any(w is None for w in self._events.values()):
                    print(f"kiln: {err}: no TensorBoard event file", file=sys.stderr)
                self._events[run_id] = None
        writer = self._events[run_id]
        if writer is not None:
            scalars = {k: v for k, v in row.items() if k not in ("run", "epoch")
                       and isinstance(v, (int, float)) and not isinstance(v, bool)}
            writer.add_scalars(scalars, row.get("epoch", 0))

    def _flush_events(self) -> None:
        for writer in self._events.values():
            if writer is not None:
                writer.flush()

    def _write_csv(self) -> None:
        rows = read_rows(os.path.join(self.run_dir, METRICS_JSONL))
        keys = metric_keys(rows)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows({k: r.get(k) for k in keys} for r in rows)
        atomic_write(os.path.join(self.run_dir, METRICS_CSV), buf.getvalue())

    def plot(self, history: list) -> None:
        """Draw ``history``'s curves to ``curves.png`` (a one-time note without matplotlib)."""
        if not self.run_dir or not history:
            return
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            if not self._plot_note_shown:
                self._plot_note_shown = True
                print("kiln: matplotlib not installed: no training-curve plot", file=sys.stderr)
            return
        keys = metric_keys(history)
        metrics = [k for k in keys if k not in _FIXED and not k.startswith("val_")]
        fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 3.5),
                                 squeeze=False)
        epochs = [r["epoch"] for r in history]
        for ax, key in zip(axes[0], metrics):
            for k in (key, "val_" + key):
                if k in keys:
                    ax.plot(epochs, [r.get(k, float("nan")) for r in history], marker="o", label=k)
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        atomic_write(os.path.join(self.run_dir, CURVES), buf.getvalue())


def progress_bar(total, desc, enabled):
    """A tqdm bar when ``enabled``, stderr is a terminal and tqdm is installed; else None
    (a log file then gets only the one line per epoch)."""
    if not enabled or not getattr(sys.stderr, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="ex", leave=False, file=sys.stderr)

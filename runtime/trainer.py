"""The compiled trainer: run an artifact's ``train`` / ``eval`` / ``predict`` entry points
over a data source, with per-epoch metrics, checkpoints and exact resume.

    from runtime import trainer
    history = trainer.train("build/mlp", "digits", epochs=10, ckpt_dir="ckpts", run_dir="runs/mlp")
    metrics = trainer.evaluate("build/mlp", "digits", ckpt="ckpts")
    outputs = trainer.predict("build/mlp", "x.npy", ckpt="ckpts", out="pred.csv")

Entry feeds/fetches are found through the manifest's ``"model"`` record (fetch keys such as
``loss``); without one, the entry's feeds in manifest order (features, then labels) and the
fetches keyed by tensor name.  See docs/trainer.md.  Never imports ``compiler``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time

import numpy as np

from . import checkpoint as ck
from . import data as kdata
from .artifact import load_artifact
from .manifest import resolve_shape

__all__ = ["EntryInfo", "TrainerError", "entry_info", "evaluate", "predict", "train"]


class TrainerError(ValueError):
    """A user-facing trainer error (missing entry point, unusable data, bad output path)."""


# ----------------------------------------------------------------------------- entries
class EntryInfo:
    """One entry point: ``feeds`` (tensor names, features first), ``fetches`` (key -> tensor
    name) and ``specs`` (the manifest's feed specs, same order)."""

    def __init__(self, name, feeds, fetches, specs):
        self.name, self.feeds, self.fetches, self.specs = name, feeds, fetches, specs

    def example_shape(self, i=0):
        """Per-example shape of feed ``i`` (its dims after the batch dim)."""
        return resolve_shape(self.specs[i].shape, 1)[1:]


def entry_info(art, name) -> EntryInfo:
    """The :class:`EntryInfo` of entry ``name`` (``TrainerError`` when the artifact lacks it)."""
    if name not in art.entry_points:
        raise TrainerError(f"artifact {art.path} has no {name!r} entry point "
                           f"(it has: {', '.join(sorted(art.entry_points)) or 'none'})")
    spec = art.entry(name)
    record = art.manifest.get("model", {}).get("entries", {}).get(name)
    by_name = {s.name: s for s in spec.feeds}
    if record:
        feeds = list(record["feeds"])
        fetches = dict(record["fetches"])
    else:
        feeds = [s.name for s in spec.feeds]
        fetches = {f.name.removesuffix(":0"): f.name for f in spec.fetches}
    return EntryInfo(name, feeds, fetches, [by_name[f] for f in feeds])


def _feeds(info: EntryInfo, x, y, feature_shape):
    """The feed dict of one batch: features fitted and reshaped to the feed, labels as is."""
    if not info.feeds:
        raise TrainerError(f"entry {info.name!r} has no feeds: nothing to feed the data to")
    shape = info.example_shape(0)
    xs = kdata.fit_features(x, feature_shape, int(np.prod(shape, dtype=np.int64)))
    feeds = {info.feeds[0]: xs.reshape((len(xs),) + tuple(shape))}
    if len(info.feeds) > 1:
        if y is None:
            raise TrainerError(f"entry {info.name!r} feeds labels but the data has none")
        feeds[info.feeds[1]] = y
    if len(info.feeds) > 2:
        raise TrainerError(f"entry {info.name!r} has {len(info.feeds)} feeds; the trainer "
                           "feeds features and labels only")
    return feeds


class _Mean:
    """Example-weighted running means of scalar fetches."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, out: dict, info: EntryInfo, n: int):
        for key, tensor in info.fetches.items():
            value = np.asarray(out[tensor])
            if value.size == 1:
                self.sums[key] = self.sums.get(key, 0.0) + float(value) * n
        self.count += n

    def result(self, prefix=""):
        return {prefix + k: v / max(self.count, 1) for k, v in self.sums.items()}


# ----------------------------------------------------------------------------- helpers
def _open(spec, what="data"):
    try:
        return kdata.open_source(spec)
    except kdata.DataError:
        raise
    except (OSError, ValueError) as err:
        raise TrainerError(f"cannot open {what} {spec!r}: {err}") from None


def _load(artifact_dir, ckpt=None):
    """``(artifact, state)``; the state restored from ``ckpt`` (file or directory) if given."""
    art = load_artifact(artifact_dir)
    state = art.new_state()
    if ckpt is not None:
        if os.path.isdir(ckpt) and ck.latest_checkpoint(ckpt) is None:
            raise TrainerError(f"no complete checkpoint in {ckpt}")
        ck.restore_state(state, ckpt)
    return art, state


def _run_epoch(state, info, source, batch_size, mean, train_fn=None, **batch_args):
    """Run ``info`` over one epoch of ``source``; ``train_fn(n)`` is called per batch."""
    with kdata.batches(source, batch_size, **batch_args) as it:
        for x, y in it:
            out = state.run(info.name, _feeds(info, x, y, source.feature_shape))
            mean.add(out, info, len(x))
            if train_fn:
                train_fn(len(x), mean)


def _format(row) -> str:
    parts = [f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "time_s")]
    return "  ".join(parts)


def _write_metrics(run_dir, history, plot_note):
    """Atomically rewrite ``metrics.jsonl`` and ``metrics.csv`` (and the curve PNG)."""
    os.makedirs(run_dir, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in history)
    ck.atomic_write(os.path.join(run_dir, "metrics.jsonl"), lines.encode())
    keys = list(dict.fromkeys(k for r in history for k in r))
    keys = ["epoch"] + sorted(k for k in keys if k not in ("epoch", "time_s") and not k.startswith("val_")) \
        + sorted(k for k in keys if k.startswith("val_")) + ["time_s"]
    history = [{k: r.get(k) for k in keys} for r in history]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    ck.atomic_write(os.path.join(run_dir, "metrics.csv"), buf.getvalue().encode())
    _plot(run_dir, history, keys, plot_note)


def _plot(run_dir, history, keys, note):
    """Training curves to ``curves.png`` with matplotlib, or a one-time note without it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not note.get("shown"):
            note["shown"] = True
            print("kiln: matplotlib not installed: no training-curve plot", file=sys.stderr)
        return
    metrics = [k for k in keys if k not in ("epoch", "time_s") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 3.5))
    epochs = [r["epoch"] for r in history]
    for ax, key in zip(np.atleast_1d(axes), metrics):
        for k in (key, "val_" + key):
            if k in keys:
                ax.plot(epochs, [r.get(k, np.nan) for r in history], marker="o", label=k)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    ck.atomic_write(os.path.join(run_dir, "curves.png"), buf.getvalue())


def _progress(total, desc, enabled):
    """A tqdm bar when tqdm is installed and ``enabled``; else None."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="ex", leave=False, file=sys.stderr)


def _resume(state, ckpt_dir, seed):
    """Restore the latest checkpoint of ``ckpt_dir``: ``(start epoch, steps, history)``."""
    if not ckpt_dir or ck.latest_checkpoint(ckpt_dir) is None:
        return 0, 0, []
    step, meta = ck.restore_state(state, ckpt_dir)
    meta = meta or {}
    if meta.get("seed", seed) != seed:
        print(f"kiln: warning: checkpoint was trained with seed {meta['seed']}, resuming with "
              f"seed {seed}: the data order differs from the original run", file=sys.stderr)
    return int(meta.get("epoch", 0)), int(meta.get("steps", step or 0)), list(meta.get("history", []))


# ----------------------------------------------------------------------------- train
def train(artifact_dir, data, epochs=1, batch_size=32, val_split=0.1, val_data=None,
          ckpt_dir=None, resume=False, seed=0, run_dir=None, keep=5, progress=True,
          shuffle_buffer=10000, log=print):
    """Train the artifact's ``train`` entry for ``epochs`` epochs; returns the history.

    ``data``/``val_data``: data specs or Sources (docs/data.md).  Without ``val_data`` a
    seeded ``val_split`` fraction is held out (0 or None: no validation); validation runs
    the ``eval`` entry when the artifact has one.  A checkpoint is saved into ``ckpt_dir``
    after every epoch (metadata ``epoch``, ``seed``, ``steps``, ``history``); ``resume``
    restores its latest and continues at the next epoch with the same data order.  The
    history is a list of per-epoch dicts (``epoch``, train metrics, ``val_*``, ``time_s``),
    also written to ``run_dir``/metrics.jsonl and metrics.csv.
    """
    art, state = _load(artifact_dir)
    tinfo = entry_info(art, "train")
    einfo = entry_info(art, "eval") if "eval" in art.entry_points else None
    source = _open(data)
    if val_data is not None:
        val = _open(val_data, "validation data")
    elif val_split:
        source, val = kdata.split(source, float(val_split), seed=seed)
    else:
        val = None
    start, steps, history = _resume(state, ckpt_dir, seed) if resume else (0, 0, [])
    if resume and start:
        log(f"kiln: resumed from {ck.latest_checkpoint(ckpt_dir)} (epoch {start}, step {steps})")
    note = {}
    n_train = source.num_examples
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        bar = _progress(n_train, f"epoch {epoch + 1}/{epochs}", progress)
        mean = _Mean()

        def tick(n, m, bar=bar):
            if bar is not None:
                bar.update(n)
                bar.set_postfix_str(_format(m.result()), refresh=False)

        _run_epoch(state, tinfo, source, batch_size, mean, tick, epochs=1, seed=seed,
                   start_epoch=epoch, shuffle_buffer=shuffle_buffer)
        steps += -(-mean.count // batch_size)
        if bar is not None:
            bar.close()
        row = {"epoch": epoch + 1, **mean.result()}
        if val is not None and einfo is not None:
            vmean = _Mean()
            _run_epoch(state, einfo, val, batch_size, vmean, shuffle_buffer=0)
            row.update(vmean.result("val_"))
        row["time_s"] = round(time.perf_counter() - t0, 4)
        history.append(row)
        log(f"epoch {epoch + 1}/{epochs}  {_format(row)}  ({row['time_s']:.2f} s)")
        if run_dir:
            _write_metrics(run_dir, history, note)
        if ckpt_dir:
            ck.save_state(state, ckpt_dir, step=steps, keep=keep,
                          metadata={"epoch": epoch + 1, "seed": seed, "steps": steps,
                                    "batch_size": batch_size, "history": history})
    state.close()
    return history


# ----------------------------------------------------------------------------- eval / predict
def evaluate(artifact_dir, data, ckpt=None, batch_size=256):
    """Example-weighted mean of the ``eval`` entry's fetches over ``data`` (file order),
    with the variables of checkpoint ``ckpt`` (file, or directory: its latest) if given."""
    art, state = _load(artifact_dir, ckpt)
    info = entry_info(art, "eval")
    mean = _Mean()
    _run_epoch(state, info, _open(data), batch_size, mean, shuffle_buffer=0)
    state.close()
    return mean.result()


def _predict_batches(data, batch_size):
    """``(feature_shape, iterator of feature batches)`` of a spec, Source, array or ``.npy``."""
    if isinstance(data, np.ndarray) or (isinstance(data, (str, os.PathLike))
                                        and os.fspath(data).lower().endswith(".npy")):
        try:
            x = np.load(data, allow_pickle=False) if not isinstance(data, np.ndarray) else data
        except (OSError, ValueError) as err:
            raise TrainerError(f"cannot read features {data}: {err}") from None
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2:
            x = x.reshape(len(x), 1) if x.ndim == 1 else x.reshape(1, 1)
        return x.shape[1:], (x[s:s + batch_size] for s in range(0, len(x), batch_size))
    source = _open(data)
    gen = kdata.epoch_batches(source, batch_size, shuffle_buffer=0)
    return source.feature_shape, (bx for bx, _ in gen)


def predict(artifact_dir, data, ckpt=None, out=None, batch_size=256):
    """Run the ``predict`` entry over ``data`` (spec, Source, array or ``X.npy``) in order;
    returns ``{fetch key: array}``.  ``out``: ``.npy`` (the first fetch) or ``.csv`` (one row
    per example: every fetch flattened, plus ``class`` for a 2-D first fetch)."""
    if out is not None and not os.fspath(out).lower().endswith((".npy", ".csv")):
        raise TrainerError(f"--out must end in .npy or .csv, got {out}")
    art, state = _load(artifact_dir, ckpt)
    info = entry_info(art, "predict")
    shape, gen = _predict_batches(data, batch_size)
    parts = {k: [] for k in info.fetches}
    for x in gen:
        res = state.run(info.name, _feeds(info, x, None, shape))
        for key, tensor in info.fetches.items():
            parts[key].append(res[tensor])
    state.close()
    result = {k: np.concatenate(v) if v else np.empty((0,)) for k, v in parts.items()}
    if out is not None:
        _write_predictions(os.fspath(out), result)
    return result


def _write_predictions(path, result):
    """Write predictions atomically as ``.npy`` (first fetch) or ``.csv``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    first = next(iter(result))
    if path.lower().endswith(".npy"):
        buf = io.BytesIO()
        np.save(buf, result[first])
        ck.atomic_write(path, buf.getvalue())
        return
    cols, header = [], []
    for key, arr in result.items():
        flat = arr.reshape(len(arr), -1)
        cols.append(flat)
        header += [key] if flat.shape[1] == 1 else [f"{key}_{i}" for i in range(flat.shape[1])]
    if result[first].ndim == 2:
        cols.insert(0, result[first].argmax(axis=1)[:, None])
        header.insert(0, "class")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in np.concatenate([c.astype(np.float64) for c in cols], axis=1):
        w.writerow([f"{v:.6g}" for v in row])
    ck.atomic_write(path, buf.getvalue().encode())

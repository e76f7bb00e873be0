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
import os
import sys
import time

import numpy as np

from . import checkpoint as ck
from . import data as kdata
from .artifact import load_artifact
from .files import atomic_write
from .manifest import resolve_shape
from .train_log import RunLog, progress_bar

__all__ = ["EntryInfo", "TrainerError", "TrainingInterrupted", "entry_info", "evaluate", "predict",
           "train"]


class TrainerError(ValueError):
    """A user-facing trainer error (missing entry point, unusable data, bad output path)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: which epoch was running and the newest checkpoint this
    run can be resumed from (``checkpoint`` None when there is none)."""

    def __init__(self, epoch, epochs, checkpoint=None, checkpoint_epoch=None):
        super().__init__(epoch, epochs)
        self.epoch, self.epochs = epoch, epochs
        self.checkpoint, self.checkpoint_epoch = checkpoint, checkpoint_epoch

    def message(self) -> str:
        """One line for the user: where it stopped and how to continue."""
        where = f"interrupted in epoch {self.epoch}/{self.epochs}"
        if self.checkpoint is None:
            return f"{where}; no checkpoint of this run was saved yet (nothing to resume)"
        return (f"{where}; newest checkpoint {self.checkpoint} (epoch {self.checkpoint_epoch}); "
                "rerun with --resume to continue from it")


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


def check_features(info: EntryInfo, feature_shape, resize_images=False):
    """Check the data's features fit the entry's feature feed before any step runs.

    Equal value counts feed as is (reshaped); otherwise only with ``resize_images`` (square
    images resized bilinearly, ``data.fit_features``).  Returns a note to show when images
    will be resized, else None; raises :class:`TrainerError` when they do not fit."""
    shape = tuple(info.example_shape(0)) if info.feeds else ()
    want = int(np.prod(shape, dtype=np.int64))
    have = int(np.prod(feature_shape, dtype=np.int64))
    if not info.feeds or have == want:
        return None
    if not resize_images:
        raise TrainerError(f"the data has {have} features per example (shape {list(feature_shape)}), "
                           f"the model's input {info.feeds[0]} takes {want} (shape {list(shape)}); use "
                           f"data with {want} features, or pass --resize-images to resize square "
                           "images to fit (e.g. 8x8 digits to 28x28)")
    size = lambda dims: "x".join(map(str, dims if dims[2] > 1 else dims[:2]))
    src, dst = kdata.resize_plan(feature_shape, want)
    return f"resizing {size(src)} images to {size(dst)} for input {info.feeds[0]} (--resize-images)"


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


def data_key(spec):
    """A data spec as recorded in checkpoints, comparable across working folders: paths made
    absolute (``digits`` as is); None for in-memory sources."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    spec = os.fspath(spec)
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("mnist", "images", "csv", "npz"):
        return f"{kind}:{os.path.abspath(rest)}"
    return spec if spec == "digits" else os.path.abspath(spec)


def _load(artifact_dir, ckpt=None, log=None):
    """``(artifact, state, checkpoint metadata or None)``; the state restored from ``ckpt``
    (file, or directory: its newest) if given.  ``log`` gets one line saying which weights."""
    art = load_artifact(artifact_dir)
    state = art.new_state()
    meta = None
    try:
        if ckpt is not None:
            if os.path.isdir(ckpt) and ck.latest_checkpoint(ckpt) is None:
                raise TrainerError(f"no complete checkpoint in {ckpt}")
            file = ck.latest_checkpoint(ckpt) if os.path.isdir(ckpt) else ck.checkpoint_file(ckpt)
            step, meta = ck.restore_state(state, file)
            epoch = f", epoch {meta['epoch']}" if meta and "epoch" in meta else ""
            what = f"checkpoint {file} (step {step}{epoch})"
        else:
            what = "the initial (untrained) weights: no --ckpt-dir or --ckpt given"
    except BaseException:
        state.close()
        raise
    if log:
        log(f"kiln: using {what}")
    return art, state, meta


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


def _check_ckpt_dir(ckpt_dir, resume, overwrite):
    """Refuse to start a run that would replace or ignore earlier checkpoints by accident."""
    if resume and overwrite:
        raise TrainerError("--resume and --overwrite exclude each other")
    if (resume or overwrite) and not ckpt_dir:
        flag = "--resume" if resume else "--overwrite"
        raise TrainerError(f"{flag} needs --ckpt-dir DIR (the checkpoint folder of the run)")
    if ckpt_dir and not (resume or overwrite) and ck.has_checkpoints(ckpt_dir):
        latest = ck.latest_checkpoint(ckpt_dir, verify=False)
        newest = f" (newest: {os.path.basename(latest)})" if latest else ""
        raise TrainerError(f"{ckpt_dir} already holds checkpoints{newest}; pass --resume to continue "
                           "that run, --overwrite to start over and replace them, or choose another "
                           "--ckpt-dir")


def _resume(state, ckpt_dir, seed, data, log):
    """Restore the latest checkpoint of ``ckpt_dir``: ``(start epoch, steps, history, file,
    run id of each history row)``."""
    latest = ck.latest_checkpoint(ckpt_dir)
    if latest is None:
        log(f"kiln: no checkpoint in {ckpt_dir} yet: starting from the initial weights")
        return 0, 0, [], None, []
    step, meta = ck.restore_state(state, latest)
    meta = meta or {}
    if meta.get("seed", seed) != seed:
        print(f"kiln: warning: checkpoint was trained with seed {meta['seed']}, resuming with "
              f"seed {seed}: the data order differs from the original run", file=sys.stderr)
    if meta.get("data") and data_key(data) and meta["data"] != data_key(data):
        print(f"kiln: warning: checkpoint was trained on {meta['data']}, resuming on "
              f"{data_key(data)}", file=sys.stderr)
    start, steps = int(meta.get("epoch", 0)), int(meta.get("steps", step or 0))
    log(f"kiln: resumed from {latest} (epoch {start}, step {steps})")
    history = list(meta.get("history", []))
    return start, steps, history, latest, list(meta.get("history_runs", []))[:len(history)]


def _split_for_training(source, val_data, val_split, seed):
    """``(train source, validation source or None)``."""
    if val_data is not None:
        return source, _open(val_data, "validation data")
    if val_split:
        return kdata.split(source, float(val_split), seed=seed)
    return source, None


# ----------------------------------------------------------------------------- train
def train(artifact_dir, data, epochs=1, batch_size=32, val_split=0.1, val_data=None,
          ckpt_dir=None, resume=False, seed=0, run_dir=None, keep=5, progress=True,
          shuffle_buffer=10000, log=print, overwrite=False, resize_images=False, plot_every=0):
    """Train the artifact's ``train`` entry for ``epochs`` epochs; returns the history.

    ``data``/``val_data``: data specs or Sources (docs/data.md).  Without ``val_data`` a
    seeded ``val_split`` fraction is held out (0 or None: no validation); validation runs
    the ``eval`` entry when the artifact has one.  A checkpoint is saved into ``ckpt_dir``
    after every epoch (metadata ``epoch``, ``seed``, ``steps``, ``history`` and the data
    record ``data``/``val_split``/``val_data``/``resize_images``); ``resume`` restores its
    latest and continues at the next epoch with the same data order.  A ``ckpt_dir`` that
    already holds checkpoints needs ``resume`` or ``overwrite`` (:class:`TrainerError`).
    Features whose value count differs from the model's input are an error unless
    ``resize_images``.  The history is a list of per-epoch dicts (``epoch``, train metrics,
    ``val_*``, ``time_s``), appended to ``run_dir``/metrics.jsonl under a new run id;
    ``curves.png`` is drawn at the end (and every ``plot_every`` epochs).  Ctrl-C raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) naming the checkpoint to resume.
    """
    _check_ckpt_dir(ckpt_dir, resume, overwrite)
    art, state, _ = _load(artifact_dir)
    try:
        return _train_loop(art, state, data, epochs, batch_size, val_split, val_data, ckpt_dir,
                           resume, seed, RunLog(run_dir, plot_every=plot_every), keep, progress,
                           shuffle_buffer, log, overwrite, resize_images)
    finally:
        state.close()


def _train_loop(art, state, data, epochs, batch_size, val_split, val_data, ckpt_dir, resume, seed,
                run_log, keep, progress, shuffle_buffer, log, overwrite, resize_images):
    tinfo = entry_info(art, "train")
    einfo = entry_info(art, "eval") if "eval" in art.entry_points else None
    source, val = _split_for_training(_open(data), val_data, val_split, seed)
    note = check_features(tinfo, source.feature_shape, resize_images)
    if note:
        log(f"kiln: {note}")
    start, steps, history, saved, run_ids = _resume(state, ckpt_dir, seed, data, log) if resume \
        else (0, 0, [], None, [])
    run_log.backfill(history, run_ids)
    saved_epoch = start
    record = {"seed": seed, "batch_size": batch_size, "data": data_key(data),
              "val_split": 0.0 if val_data is not None else float(val_split or 0.0),
              "val_data": data_key(val_data), "resize_images": bool(resize_images)}
    if start >= epochs:
        log(f"kiln: the checkpoint already reached epoch {start}; nothing to train "
            f"(pass --epochs above {start} to train more)")
    epoch = start
    try:
        for epoch in range(start, epochs):
            row = _train_epoch(state, tinfo, einfo, source, val, epoch, epochs, batch_size, seed,
                               shuffle_buffer, progress)
            steps += row.pop("_steps")
            history.append(row)
            run_ids.append(run_log.run_id)
            log(f"epoch {epoch + 1}/{epochs}  {_format(row)}  ({row['time_s']:.2f} s)")
            run_log.add(row, history)
            if ckpt_dir:
                if overwrite and saved is None:
                    ck.remove_checkpoints(ckpt_dir)  # only now: an interrupted first epoch keeps them
                saved = ck.save_state(state, ckpt_dir, step=steps, keep=keep,
                                      metadata={"epoch": epoch + 1, "steps": steps, "history": history,
                                                "history_runs": run_ids, **record})
                saved_epoch = epoch + 1
    except KeyboardInterrupt:
        raise TrainingInterrupted(epoch + 1, epochs, saved, saved_epoch) from None
    if start < epochs:
        run_log.plot(history)
    return history


def _train_epoch(state, tinfo, einfo, source, val, epoch, epochs, batch_size, seed, shuffle_buffer,
                 progress) -> dict:
    """Train one epoch (and validate); the epoch's row, with ``_steps`` the batches run."""
    t0 = time.perf_counter()
    bar = progress_bar(source.num_examples, f"epoch {epoch + 1}/{epochs}", progress)
    mean = _Mean()

    def tick(n, m):
        if bar is not None:
            bar.update(n)
            bar.set_postfix_str(_format(m.result()), refresh=False)

    try:
        _run_epoch(state, tinfo, source, batch_size, mean, tick, epochs=1, seed=seed,
                   start_epoch=epoch, shuffle_buffer=shuffle_buffer)
    finally:
        if bar is not None:
            bar.close()
    row = {"epoch": epoch + 1, **mean.result()}
    if val is not None and einfo is not None:
        vmean = _Mean()
        _run_epoch(state, einfo, val, batch_size, vmean, shuffle_buffer=0)
        row.update(vmean.result("val_"))
    row["time_s"] = round(time.perf_counter() - t0, 4)
    row["_steps"] = -(-mean.count // batch_size)
    return row


# ----------------------------------------------------------------------------- eval / predict
EVAL_SPLITS = ("auto", "val", "all")


def _eval_examples(source, data, meta, split, val_split, seed):
    """The examples ``evaluate`` scores and a phrase saying which.

    ``split="all"``: every example.  ``"val"``: the held-out validation split (fraction and
    seed from the arguments, else from the checkpoint's training record, else 0.1 and 0).
    ``"auto"``: the held-out split when the checkpoint was trained on this same data with
    one, else every example (noting when those were all training examples)."""
    meta = meta or {}
    same_data = bool(meta.get("data")) and meta.get("data") == data_key(data)
    fraction = val_split if val_split is not None else (meta.get("val_split") if same_data else None)
    seed = seed if seed is not None else (meta.get("seed", 0) if same_data else 0)
    if split == "auto":
        split = "val" if (val_split is not None or (same_data and meta.get("val_split"))) else "all"
    n = source.count()
    if split == "all":
        used = " (all of them were training examples)" if same_data and not meta.get("val_split") else ""
        return source, f"all {n} examples of {source.name}{used}"
    fraction = 0.1 if fraction in (None, 0, 0.0) else float(fraction)
    _, held_out = kdata.split(source, fraction, seed=seed)
    return held_out, (f"the {held_out.count()} held-out examples of {source.name} (validation split "
                      f"{fraction:g}, seed {seed}; --split all scores all {n})")


def evaluate(artifact_dir, data, ckpt=None, batch_size=256, split="auto", val_split=None, seed=None,
             resize_images=None, log=print):
    """Example-weighted mean of the ``eval`` entry's fetches, with the variables of checkpoint
    ``ckpt`` (file, or directory: its latest) if given.  Which examples: see
    :func:`_eval_examples` (by default the held-out split of the checkpoint's training run
    when ``data`` is its training data).  ``resize_images`` None: as in the checkpoint's
    training run.  ``log`` gets a line naming the weights and the examples used."""
    if split not in EVAL_SPLITS:
        raise TrainerError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    art, state, meta = _load(artifact_dir, ckpt, log)
    try:
        info = entry_info(art, "eval")
        source, which = _eval_examples(_open(data), data, meta, split, val_split, seed)
        resize = (meta or {}).get("resize_images", False) if resize_images is None else resize_images
        note = check_features(info, source.feature_shape, resize)
        log(f"kiln: scoring {which}" + (f"; {note}" if note else ""))
        mean = _Mean()
        _run_epoch(state, info, source, batch_size, mean, shuffle_buffer=0)
    finally:
        state.close()
    return mean.result()


def _predict_batches(data, batch_size):
    """``(feature_shape, count, iterator of feature batches)`` of a spec, Source, array or
    ``.npy`` file."""
    if isinstance(data, np.ndarray) or (isinstance(data, (str, os.PathLike))
                                        and os.fspath(data).lower().endswith(".npy")):
        x = data if isinstance(data, np.ndarray) else kdata.load_array_file(data, "features")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2:
            x = x.reshape(len(x), 1) if x.ndim == 1 else x.reshape(1, 1)
        return x.shape[1:], len(x), (x[s:s + batch_size] for s in range(0, len(x), batch_size))
    source = _open(data)
    gen = kdata.epoch_batches(source, batch_size, shuffle_buffer=0)
    return source.feature_shape, source.count(), (bx for bx, _ in gen)


def predict(artifact_dir, data, ckpt=None, out=None, batch_size=256, resize_images=None, log=print):
    """Run the ``predict`` entry over ``data`` (spec, Source, array or ``X.npy``) in order;
    returns ``{fetch key: array}``.  ``out``: ``.npy`` (the first fetch) or ``.csv`` (one row
    per example: every fetch flattened, plus ``class`` for a 2-D first fetch).
    ``resize_images`` None: as in the checkpoint's training run."""
    if out is not None and not os.fspath(out).lower().endswith((".npy", ".csv")):
        raise TrainerError(f"--out must end in .npy or .csv, got {out}")
    art, state, meta = _load(artifact_dir, ckpt, log)
    try:
        info = entry_info(art, "predict")
        shape, count, gen = _predict_batches(data, batch_size)
        resize = (meta or {}).get("resize_images", False) if resize_images is None else resize_images
        note = check_features(info, shape, resize)
        log(f"kiln: predicting {count} examples" + (f"; {note}" if note else ""))
        parts = {k: [] for k in info.fetches}
        for x in gen:
            res = state.run(info.name, _feeds(info, x, None, shape))
            for key, tensor in info.fetches.items():
                parts[key].append(res[tensor])
    finally:
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
        atomic_write(path, buf.getvalue())
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
    atomic_write(path, buf.getvalue().encode())

"""``evaluate`` and ``predict``: run a (trained) artifact's ``eval`` / ``predict`` entry over
data with the weights of a checkpoint, saying which weights and which examples were used.

    from runtime import scoring
    metrics = scoring.evaluate("build/mlp", "digits", ckpt="build/mlp/ckpt")
    outputs = scoring.predict("build/mlp", "x.npy", ckpt="build/mlp/ckpt", out="pred.csv")

(also re-exported by ``runtime.trainer`` and ``runtime``).  See docs/trainer.md.
"""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from . import data as kdata
from .entries import (Mean, TrainerError, batch_feeds, check_features, data_key, entry_info, load_weights,
                      open_data, run_epoch)
from .files import atomic_write

__all__ = ["EVAL_SPLITS", "evaluate", "predict"]


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
    art, state, meta = load_weights(artifact_dir, ckpt, log)
    try:
        info = entry_info(art, "eval")
        source, which = _eval_examples(open_data(data), data, meta, split, val_split, seed)
        resize = (meta or {}).get("resize_images", False) if resize_images is None else resize_images
        note = check_features(info, source.feature_shape, resize)
        log(f"kiln: scoring {which}" + (f"; {note}" if note else ""))
        mean = Mean()
        run_epoch(state, info, source, batch_size, mean, shuffle_buffer=0)
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
    source = open_data(data)
    gen = kdata.epoch_batches(source, batch_size, shuffle_buffer=0)
    return source.feature_shape, source.count(), (bx for bx, _ in gen)


def predict(artifact_dir, data, ckpt=None, out=None, batch_size=256, resize_images=None, log=print):
    """Run the ``predict`` entry over ``data`` (spec, Source, array or ``X.npy``) in order;
    returns ``{fetch key: array}``.  ``out``: ``.npy`` (the first fetch) or ``.csv`` (one row
    per example: every fetch flattened, plus ``class`` for a 2-D first fetch).
    ``resize_images`` None: as in the checkpoint's training run."""
    if out is not None and not os.fspath(out).lower().endswith((".npy", ".csv")):
        raise TrainerError(f"--out must end in .npy or .csv, got {out}")
    art, state, meta = load_weights(artifact_dir, ckpt, log)
    try:
        info = entry_info(art, "predict")
        shape, count, gen = _predict_batches(data, batch_size)
        resize = (meta or {}).get("resize_images", False) if resize_images is None else resize_images
        note = check_features(info, shape, resize)
        log(f"kiln: predicting {count} examples" + (f"; {note}" if note else ""))
        parts = {k: [] for k in info.fetches}
        for x in gen:
            res = state.run(info.name, batch_feeds(info, x, None, shape))
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

"""Running an artifact's conventional entry points (``train`` / ``eval`` / ``predict``) over
data: which tensor takes the features and which the labels, fitting the features, loading
the weights of a checkpoint, one pass over a data source with example-weighted means.
Shared by ``runtime.trainer`` and ``runtime.scoring``.  Never imports ``compiler``.

Entry feeds/fetches are found through the manifest's ``"model"`` record (fetch keys such as
``loss``); without one, the entry's feeds in manifest order (features, then labels) and the
fetches keyed by tensor name.  See docs/trainer.md.
"""
from __future__ import annotations

import os

import numpy as np

from . import checkpoint as ck
from . import data as kdata
from .artifact import load_artifact
from .manifest import resolve_shape

__all__ = ["EntryInfo", "Mean", "TrainerError", "batch_feeds", "check_features", "data_key",
           "entry_info", "load_weights", "open_data", "run_epoch"]


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


def batch_feeds(info: EntryInfo, x, y, feature_shape):
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


class Mean:
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


def open_data(spec, what="data"):
    """``data.open_source(spec)``; unreadable input is a :class:`TrainerError` naming it."""
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


def load_weights(artifact_dir, ckpt=None, log=None):
    """``(artifact, state, checkpoint metadata or None)``; the state restored from ``ckpt``
    (file, or directory: its newest) if given.  ``log`` gets one line saying which weights."""
    art = load_artifact(artifact_dir)
    state = art.new_state()
    meta = None
    try:
        if ckpt is not None:
            file = ck.latest_checkpoint(ckpt) if os.path.isdir(ckpt) else ck.checkpoint_file(ckpt)
            if file is None:
                raise TrainerError(f"no complete checkpoint in {ckpt}")
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


def run_epoch(state, info, source, batch_size, mean, train_fn=None, **batch_args):
    """Run ``info`` over one epoch of ``source``; ``train_fn(n)`` is called per batch."""
    with kdata.batches(source, batch_size, **batch_args) as it:
        for x, y in it:
            out = state.run(info.name, batch_feeds(info, x, y, source.feature_shape))
            mean.add(out, info, len(x))
            if train_fn:
                train_fn(len(x), mean)

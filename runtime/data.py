"""Kiln data pipeline: open a data source, shuffle with a buffer, batch, repeat for epochs,
and prefetch batches on a background thread so loading overlaps the compiled step.

    from runtime import data
    src = data.open_source("digits")                  # or a .csv/.npz path, "mnist:DIR", ...
    train, val = data.split(src, 0.1, seed=0)
    with data.batches(train, 32, epochs=3, seed=1) as it:
        for x, y in it:                                # numpy float32 [32, 64], int64 [32]
            ...

Order is reproducible: the same seed gives the same batches every run; each epoch gets its
own shuffle (seeded by ``(seed, epoch)``).  See docs/data.md.
"""
from __future__ import annotations

import os
import queue
import threading

import numpy as np

from .closing import Closing
from .data_sources import (
    ArraySource,
    CsvSource,
    DataError,
    IdxSource,
    ImageFolderSource,
    Source,
    find_mnist_files,
    load_array_file,
    load_digits_source,
    load_npy_pair,
    load_npz_source,
)

__all__ = [
    "ArraySource", "BatchIterator", "CsvSource", "DataError", "IdxSource",
    "ImageFolderSource", "Source", "SubsetSource", "batches", "epoch_batches",
    "fit_features", "from_arrays", "load_array_file", "open_source", "resize_plan", "split",
]

DEFAULT_SHUFFLE_BUFFER = 10_000


def from_arrays(x, y, **options) -> ArraySource:
    """A source over in-memory numpy arrays (features float32; integer labels -> int64)."""
    return ArraySource(x, y, **options)


def open_source(spec, **options) -> Source:
    """Open a data source from a spec (see docs/data.md for the options of each kind).

    ``"digits"``; ``"mnist:DIR"`` (option ``split="train"|"test"``); ``"images:DIR"``;
    ``"csv:PATH"`` or ``PATH.csv``; ``PATH.npz``; a pair ``(images.idx3-ubyte[.gz],
    labels.idx1-ubyte[.gz])`` or ``(x.npy, y.npy)``; a directory (MNIST files if present,
    else an image folder); or a :class:`Source` (returned as is).
    """
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, (tuple, list)):
        return _open_pair(spec, options)
    spec = os.fspath(spec)
    if spec == "digits":
        return load_digits_source(**options)
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("mnist", "images", "csv", "npz"):
        return _open_kind(kind, rest, options)
    if not os.path.exists(spec):
        raise DataError(f"data source {spec!r}: no such file or directory (specs: 'digits', "
                        "'mnist:DIR', 'images:DIR', FILE.csv, FILE.npz, or a directory)")
    if os.path.isdir(spec):
        try:
            find_mnist_files(spec, options.get("split", "train"))
            return _open_kind("mnist", spec, options)
        except DataError:
            return _open_kind("images", spec, options)
    low = spec.lower()
    if low.endswith((".csv", ".csv.txt")):
        return _open_kind("csv", spec, options)
    if low.endswith(".npz"):
        return _open_kind("npz", spec, options)
    raise DataError(f"data source {spec!r}: unknown format (expected .csv, .npz, a directory, "
                    "'digits', 'mnist:DIR' or 'images:DIR')")


def _open_kind(kind, path, options):
    if kind == "mnist":
        opts = dict(options)
        images, labels = find_mnist_files(path, opts.pop("split", "train"))
        return IdxSource(images, labels, **opts)
    if kind == "images":
        return ImageFolderSource(path, **options)
    if kind == "csv":
        return CsvSource(path, **options)
    return load_npz_source(path, **options)


def _open_pair(spec, options):
    if len(spec) != 2:
        raise DataError(f"a data source pair needs 2 paths, got {len(spec)}")
    a, b = (os.fspath(p) for p in spec)
    if a.lower().endswith(".npy") and b.lower().endswith(".npy"):
        return load_npy_pair(a, b, **options)
    return IdxSource(a, b, **options)


class SubsetSource(Source):
    """The examples of ``base`` whose index is set in the boolean ``mask`` (file order)."""

    def __init__(self, base: Source, mask):
        self.base, self.mask = base, np.asarray(mask, dtype=bool)
        self.name = f"subset of {base.name}"
        self.feature_shape, self.num_classes = base.feature_shape, base.num_classes
        self.num_examples = int(self.mask.sum())

    def chunks(self):
        start = 0
        for x, y in self.base.chunks():
            m = self.mask[start:start + len(y)]
            start += len(y)
            if m.any():
                yield x[m], y[m]


def split(source: Source, val_fraction: float, seed: int = 0):
    """Split into ``(train, val)``: a seeded random ``val_fraction`` of the examples
    (rounded, at least one each side) goes to validation; both keep file order."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = source.count()
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} of {n} examples leaves an empty split")
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    if isinstance(source, ArraySource):
        return tuple(ArraySource(source.x[m], source.y[m], num_classes=source.num_classes,
                                 chunk_size=source.chunk_size, name=source.name)
                     for m in (~val, val))
    return SubsetSource(source, ~val), SubsetSource(source, val)


def _image_dims(shape, what):
    """``(H, W, C)`` of a per-example feature shape: ``[n]`` (square, 1 channel),
    ``[H, W]`` or ``[H, W, C]``; ``None`` for a flat count that is not a square."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:
        side = round(shape[0] ** 0.5)
        return (side, side, 1) if side * side == shape[0] else None
    if len(shape) == 2:
        return shape + (1,)
    if len(shape) == 3:
        return shape
    raise DataError(f"{what}: cannot treat feature shape {list(shape)} as an image")


def _resize_bilinear(x, out_h, out_w):
    """Bilinear resize of ``x`` ``[n, H, W, C]`` (half-pixel centers, as PIL/TF2)."""
    def axis(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    (y0, y1, fy), (x0, x1, fx) = axis(x.shape[1], out_h), axis(x.shape[2], out_w)
    fx = fx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bot = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    fy = fy[None, :, None, None]
    return top * (1 - fy) + bot * fy


def resize_plan(source_feature_shape, want_count: int):
    """``((h, w, c), (side, side, c))``: the image size of the data and the square size with
    ``want_count`` values it is resized to.  Raises :class:`DataError` when the data are not
    square images or ``want_count`` is not ``side*side*c``."""
    have = int(np.prod(source_feature_shape, dtype=np.int64))
    want_count = int(want_count)
    what = f"features {list(source_feature_shape)} ({have} values) for a model wanting {want_count}"
    dims = _image_dims(source_feature_shape, what)
    if dims is None:
        raise DataError(f"cannot fit {what}: {have} is not a square image size")
    h, w, c = dims
    side = round((want_count / c) ** 0.5) if want_count % c == 0 else 0
    if h != w or side * side * c != want_count:
        raise DataError(f"cannot fit {what}: need square images and a wanted count of "
                        f"side*side*{c} (the data is {h}x{w}x{c})")
    return (h, w, c), (side, side, c)


def fit_features(x, source_feature_shape, want_count: int):
    """Features ``x`` (``[n, *source_feature_shape]``) as ``[n, want_count]`` float32.

    Same count: a reshape.  Otherwise the examples are taken as square images (a flat
    ``[64]`` is 8x8x1, ``[H, W]`` or ``[H, W, C]`` as given) and resized bilinearly to the
    square size holding ``want_count`` values with the same channels (e.g. digits' 8x8 ->
    28x28 for a model wanting 784).  Raises :class:`DataError` when that is impossible."""
    x = np.asarray(x, dtype=np.float32)
    n, have = len(x), int(np.prod(source_feature_shape, dtype=np.int64))
    if have == int(want_count):
        return x.reshape(n, have)
    (h, w, c), (side, _, _) = resize_plan(source_feature_shape, want_count)
    return _resize_bilinear(x.reshape(n, h, w, c), side, side).reshape(n, int(want_count))


def _shuffled_pieces(source: Source, buffer_size, rng):
    """Yield ``(x, y)`` pieces of one epoch in shuffled order (``buffer_size`` 0: file order).

    In-memory sources with a buffer at least their size get a full permutation; otherwise a
    shuffle buffer as in tf.data: each incoming example replaces a random buffered one,
    which is emitted."""
    if not buffer_size:
        yield from source.chunks()
        return
    if isinstance(source, ArraySource) and buffer_size >= source.num_examples:
        perm = rng.permutation(source.num_examples)
        for s in range(0, len(perm), source.chunk_size):
            idx = perm[s:s + source.chunk_size]
            yield source.x[idx], source.y[idx]
        return
    bx = by = None
    fill = 0
    for x, y in source.chunks():
        if bx is None:
            bx = np.empty((buffer_size,) + x.shape[1:], x.dtype)
            by = np.empty((buffer_size,) + y.shape[1:], y.dtype)
        out = []
        js = rng.integers(0, buffer_size, size=len(y))
        for i in range(len(y)):
            if fill < buffer_size:
                bx[fill], by[fill] = x[i], y[i]
                fill += 1
                continue
            j = js[i]
            out.append((bx[j].copy(), by[j].copy()))
            bx[j], by[j] = x[i], y[i]
        if out:
            yield np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
    if fill:
        perm = rng.permutation(fill)
        yield bx[perm], by[perm]


def epoch_batches(source: Source, batch_size: int, epoch: int = 0, shuffle_buffer=None,
                  seed: int = 0, drop_remainder: bool = False):
    """Yield the ``(x, y)`` batches of one epoch, synchronously (no thread)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle_buffer is None:
        shuffle_buffer = DEFAULT_SHUFFLE_BUFFER
    rng = np.random.default_rng([int(seed), int(epoch)])
    px, py, have = [], [], 0
    for x, y in _shuffled_pieces(source, shuffle_buffer, rng):
        px.append(x)
        py.append(y)
        have += len(y)
        if have >= batch_size:
            cx, cy = np.concatenate(px), np.concatenate(py)
            n_full = have // batch_size * batch_size
            for s in range(0, n_full, batch_size):
                yield cx[s:s + batch_size], cy[s:s + batch_size]
            px, py, have = [cx[n_full:]], [cy[n_full:]], have - n_full
    if have and not drop_remainder:
        yield np.concatenate(px), np.concatenate(py)


def batches(source: Source, batch_size: int, epochs: int = 1, shuffle_buffer=None,
            seed: int = 0, drop_remainder: bool = False, prefetch: int = 2,
            start_epoch: int = 0) -> "BatchIterator":
    """Iterator of ``(x, y)`` batches over ``epochs`` epochs (``start_epoch`` for resume).

    ``shuffle_buffer``: None -> 10000, 0 -> no shuffling.  ``prefetch``: queue size of the
    background producer thread (0 -> no thread).  Use as a context manager or call
    ``close()`` when stopping early; the iterator's ``epoch`` is that of the last batch."""
    def generate():
        for epoch in range(start_epoch, start_epoch + epochs):
            for x, y in epoch_batches(source, batch_size, epoch, shuffle_buffer, seed,
                                      drop_remainder):
                yield epoch, x, y

    return BatchIterator(generate(), prefetch)


_END = object()


class _Failure:
    def __init__(self, exc):
        self.exc = exc


class BatchIterator(Closing):
    """Wraps a generator of ``(epoch, x, y)``; with ``prefetch > 0`` a daemon thread runs
    it ahead into a bounded queue.  Errors in the thread are re-raised by ``__next__``."""

    def __init__(self, gen, prefetch=2):
        self._gen, self.epoch, self._closed = gen, None, False
        self._thread = None
        if prefetch > 0:
            self._queue = queue.Queue(maxsize=int(prefetch))
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, name="kiln-prefetch",
                                            daemon=True)
            self._thread.start()

    def _put(self, item) -> bool:
        """Put unless closed; False when the consumer has gone away."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self):
        try:
            for item in self._gen:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(e))
        finally:
            self._gen.close()

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        if self._thread is None:
            try:
                item = next(self._gen)
            except StopIteration:
                self.close()
                raise
        else:
            item = self._queue.get()
            if item is _END:
                self.close()
                raise StopIteration
            if isinstance(item, _Failure):
                self.close()
                raise item.exc
        self.epoch, x, y = item
        return x, y

    def close(self):
        """Stop the producer thread (if any) and wait for it to exit."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            self._gen.close()
            return
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        """Whether the producer thread is still running."""
        return self._thread is not None and self._thread.is_alive()

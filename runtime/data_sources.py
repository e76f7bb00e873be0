"""Data sources for the Kiln runtime: numpy arrays, .npz/.npy, streamed CSV, MNIST IDX
(optionally gzipped), image folders and scikit-learn's bundled digits.

Every source is a :class:`Source`: it yields ``(features, labels)`` chunks (numpy arrays,
features float32, labels int64 for classification) and knows its ``feature_shape``,
``num_classes`` (or None) and ``num_examples`` when that is cheap (None otherwise; call
``count()`` to stream through and count).  Bad data raises :class:`DataError` naming the
file and the line (CSV) or example index (IDX).  See docs/data.md.
"""
from __future__ import annotations

import csv
import gzip
import os
import struct

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


class DataError(ValueError):
    """Bad or unreadable data; the message names the file and line/index."""


class Source:
    """Base class: a re-iterable stream of ``(features, labels)`` chunks."""

    feature_shape: tuple = ()
    num_classes: int | None = None
    num_examples: int | None = None
    name: str = "source"

    def chunks(self):
        """Yield ``(x, y)`` numpy chunks in file order (one pass; may be called again)."""
        raise NotImplementedError

    def examples(self):
        """Yield single ``(x, y)`` examples (convenience; batching uses :meth:`chunks`)."""
        for x, y in self.chunks():
            for i in range(len(y)):
                yield x[i], y[i]

    def count(self) -> int:
        """Number of examples: ``num_examples`` when known, else one streaming pass."""
        if self.num_examples is None:
            self.num_examples = sum(len(y) for _, y in self.chunks())
        return self.num_examples

    def __repr__(self):
        return (f"{type(self).__name__}({self.name!r}, feature_shape={self.feature_shape}, "
                f"num_classes={self.num_classes}, num_examples={self.num_examples})")


def _check_label_range(y, num_classes, where):
    """Raise DataError if an integer label is outside ``[0, num_classes)``."""
    if num_classes is None or y.dtype.kind not in "iu" or len(y) == 0:
        return
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{where(i)}: label {int(y[i])} out of range [0, {num_classes})")


class ArraySource(Source):
    """In-memory features/labels (also used for .npz, .npy and digits)."""

    def __init__(self, x, y, num_classes=None, chunk_size=1024, name="arrays"):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
            raise DataError(f"{name}: features and labels must have the same first dimension, "
                            f"got {x.shape} and {y.shape}")
        self.x = x.astype(np.float32, copy=False) if x.dtype.kind in "fiub" else x
        if y.dtype.kind in "iub":
            y = y.astype(np.int64, copy=False)
            if num_classes is None and len(y):
                num_classes = int(y.max()) + 1
        else:
            y = y.astype(np.float32, copy=False)
        self.y = y
        self.name = name
        _check_label_range(y, num_classes, lambda i: f"{name}: example {i}")
        self.feature_shape = tuple(x.shape[1:])
        self.num_classes = num_classes
        self.num_examples = len(y)
        self.chunk_size = int(chunk_size)

    def chunks(self):
        for start in range(0, self.num_examples, self.chunk_size):
            stop = start + self.chunk_size
            yield self.x[start:stop], self.y[start:stop]


def _digits_file():
    """scikit-learn's bundled ``digits.csv.gz`` (64 pixel columns + the label), found without
    importing scikit-learn (an import costs ~0.7 s; reading the file ~10 ms); None if absent."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    return None


def load_digits_source(**options) -> ArraySource:
    """scikit-learn's bundled 8x8 digits: x float32 [1797, 64] in [0, 1], y int64 in 0..9."""
    path = _digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        pixels, target = table[:, :-1], table[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError("the 'digits' data set needs scikit-learn: "
                              "pip install scikit-learn  (or pip install 'kiln[data]')") from e
        d = load_digits()
        pixels, target = d.data, d.target
    x = (pixels / 16.0).astype(np.float32)
    return ArraySource(x, target.astype(np.int64), num_classes=10, name="digits", **options)


def load_array_file(path, what="arrays"):
    """``np.load`` of a ``.npy``/``.npz`` file without pickle; a file that is not one (or
    holds pickled objects) is a :class:`DataError` naming it."""
    path = os.fspath(path)
    kind = ".npz archive (a zip of .npy arrays)" if path.lower().endswith(".npz") else ".npy array file"
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file ({what})") from None
    except (ValueError, OSError, EOFError) as err:
        if "pickle" in str(err):
            reason = "it is not a numpy file (or holds pickled Python objects, which Kiln never loads)"
        else:
            reason = str(err)
        raise DataError(f"{path}: cannot read {what}: not a valid {kind}: {reason}") from None


def load_npz_source(path, x_key=None, y_key=None, **options) -> ArraySource:
    """A .npz file with keys ``x``/``y`` or ``features``/``labels`` (or given keys)."""
    f = load_array_file(path, "a data set")
    if not hasattr(f, "files"):
        raise DataError(f"{path}: a single .npy array, not a .npz archive with features and labels")
    with f:
        keys = set(f.files)
        xk = x_key or next((k for k in ("x", "features") if k in keys), None)
        yk = y_key or next((k for k in ("y", "labels") if k in keys), None)
        for k, what, default in ((xk, "features", "x/features"), (yk, "labels", "y/labels")):
            if k is None or k not in keys:
                raise DataError(f"{path}: no {what} array (looked for {k or default}); "
                                f"file has {sorted(keys)}")
        try:
            x, y = f[xk], f[yk]
        except ValueError:  # object arrays need pickle
            raise DataError(f"{path}: arrays {xk!r}/{yk!r} hold Python objects (pickled), which "
                            "Kiln never loads: save numeric arrays") from None
        return ArraySource(x, y, name=str(path), **options)


def load_npy_pair(x_path, y_path, **options) -> ArraySource:
    """Two .npy files: features and labels."""
    x = load_array_file(x_path, "features")
    y = load_array_file(y_path, "labels")
    return ArraySource(x, y, name=f"{x_path},{y_path}", **options)


class CsvSource(Source):
    """A CSV file streamed in chunks of ``chunk_size`` rows (never loaded whole).

    ``label_column``: index (negative from the end; default -1) or header name.
    ``header``: True, False or "auto" (the first row is a header if a feature field of it
    is not a number).  ``label_dtype``: "int64" (classification) or "float32".
    """

    def __init__(self, path, label_column=-1, header="auto", chunk_size=1024,
                 num_classes=None, num_features=None, delimiter=",", label_dtype="int64"):
        self.path = self.name = str(path)
        self.chunk_size = int(chunk_size)
        self.num_classes = num_classes
        self.delimiter = delimiter
        self.label_dtype = np.dtype(label_dtype)
        first, line = self._first_row()
        self.header = None
        if header == "auto":
            header = not all(_is_number(v) for v in first)
        if header:
            self.header = [v.strip() for v in first]
        ncols = len(first)
        self.label_index = self._resolve_label(label_column, ncols)
        self.num_columns = ncols
        nfeat = ncols - 1
        if num_features is not None and nfeat != num_features:
            raise DataError(f"{self.path}:{line}: expected {num_features} features, "
                            f"got {nfeat}")
        self.feature_shape = (nfeat,)

    def _open(self):
        return open(self.path, newline="", encoding="utf-8")

    def _first_row(self):
        with self._open() as f:
            r = csv.reader(f, delimiter=self.delimiter)
            for row in r:
                if row and any(v.strip() for v in row):
                    return row, r.line_num
        raise DataError(f"{self.path}: empty CSV file")

    def _resolve_label(self, label_column, ncols):
        if isinstance(label_column, str):
            if not self.header or label_column not in self.header:
                raise DataError(f"{self.path}: no label column named {label_column!r} "
                                f"(header: {self.header})")
            return self.header.index(label_column)
        idx = int(label_column)
        if not -ncols <= idx < ncols:
            raise DataError(f"{self.path}: label column {idx} out of range for {ncols} columns")
        return idx % ncols

    def _parse_row(self, row, line):
        """One row -> (features list, label) with errors naming file:line."""
        if len(row) != self.num_columns:
            raise DataError(f"{self.path}:{line}: ragged row: {len(row)} fields, expected "
                            f"{self.num_columns} ({self.num_columns - 1} features + label)")
        try:
            vals = [float(v) for v in row]
        except ValueError:
            bad = next(v for v in row if not _is_number(v))
            raise DataError(f"{self.path}:{line}: non-numeric value {bad!r}") from None
        label = vals.pop(self.label_index)
        if self.label_dtype.kind in "iu":
            if label != int(label):
                raise DataError(f"{self.path}:{line}: label {label!r} is not an integer")
            label = int(label)
            if self.num_classes is not None and not 0 <= label < self.num_classes:
                raise DataError(f"{self.path}:{line}: label {label} out of range "
                                f"[0, {self.num_classes})")
        return vals, label

    def chunks(self):
        with self._open() as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            xs, ys = [], []
            skip_header = self.header is not None
            for row in reader:
                if not row or not any(v.strip() for v in row):
                    continue
                if skip_header:
                    skip_header = False
                    continue
                vals, label = self._parse_row(row, reader.line_num)
                xs.append(vals)
                ys.append(label)
                if len(ys) == self.chunk_size:
                    yield self._to_arrays(xs, ys)
                    xs, ys = [], []
            if ys:
                yield self._to_arrays(xs, ys)

    def _to_arrays(self, xs, ys):
        return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=self.label_dtype)


def _is_number(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim


def _open_maybe_gz(path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def _read_idx_header(f, path, magic, ndim):
    """Read and check an IDX header; returns the dims."""
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: too short for an IDX header")
    (got,) = struct.unpack(">I", head)
    if got != magic:
        raise DataError(f"{path}: bad IDX magic number 0x{got:08x}, expected 0x{magic:08x} "
                        f"({'images' if ndim == 3 else 'labels'} file, unsigned bytes)")
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    return struct.unpack(f">{ndim}I", raw)


class IdxSource(Source):
    """An MNIST-style IDX images file + labels file (``.gz`` read through gzip).

    Images are scaled to [0, 1] float32 and flattened to [n, rows*cols] (``flatten=False``
    gives [n, rows, cols, 1]).  Labels must be in ``[0, num_classes)`` (default 10).
    """

    def __init__(self, images_path, labels_path, num_classes=10, chunk_size=1024,
                 flatten=True):
        self.images_path, self.labels_path = str(images_path), str(labels_path)
        self.name = f"{self.images_path},{self.labels_path}"
        self.num_classes, self.chunk_size, self.flatten = num_classes, int(chunk_size), flatten
        with _open_maybe_gz(images_path) as f:
            n, self.rows, self.cols = _read_idx_header(f, images_path, IDX_IMAGES_MAGIC, 3)
        with _open_maybe_gz(labels_path) as f:
            (nl,) = _read_idx_header(f, labels_path, IDX_LABELS_MAGIC, 1)
        if n != nl:
            raise DataError(f"{self.images_path} has {n} images but {self.labels_path} has "
                            f"{nl} labels")
        self._check_size(images_path, 16 + n * self.rows * self.cols, f"{n} images")
        self._check_size(labels_path, 8 + n, f"{n} labels")
        self.num_examples = n
        npix = self.rows * self.cols
        self.feature_shape = (npix,) if flatten else (self.rows, self.cols, 1)

    @staticmethod
    def _check_size(path, expected, what):
        if str(path).endswith(".gz"):
            return  # checked while streaming
        size = os.path.getsize(path)
        if size != expected:
            raise DataError(f"{path}: file is {size} bytes, header says {what} "
                            f"({expected} bytes)")

    def chunks(self):
        npix = self.rows * self.cols
        with _open_maybe_gz(self.images_path) as fi, _open_maybe_gz(self.labels_path) as fl:
            fi.read(16)
            fl.read(8)
            for start in range(0, self.num_examples, self.chunk_size):
                k = min(self.chunk_size, self.num_examples - start)
                img = fi.read(k * npix)
                lab = fl.read(k)
                if len(img) != k * npix or len(lab) != k:
                    path = self.images_path if len(img) != k * npix else self.labels_path
                    raise DataError(f"{path}: truncated: header says {self.num_examples} "
                                    f"examples, data ends near example {start}")
                x = np.frombuffer(img, np.uint8).astype(np.float32) / np.float32(255.0)
                x = x.reshape((k,) + self.feature_shape)
                y = np.frombuffer(lab, np.uint8).astype(np.int64)
                _check_label_range(y, self.num_classes,
                                   lambda i: f"{self.labels_path}: example {start + i}")
                yield x, y


def find_mnist_files(directory, split="train"):
    """(images, labels) paths for ``split`` ("train" or "t10k"/"test") in ``directory``."""
    prefix = {"test": "t10k"}.get(split, split)
    names = sorted(os.listdir(directory))

    def pick(kind, ndim):
        for n in names:
            low = n.lower()
            if low.startswith(prefix) and kind in low and f"idx{ndim}" in low:
                return os.path.join(directory, n)
        raise DataError(f"{directory}: no MNIST {split} {kind} file "
                        f"(expected e.g. {prefix}-{kind}-idx{ndim}-ubyte[.gz])")

    return pick("images", 3), pick("labels", 1)


class ImageFolderSource(Source):
    """Images in ``DIR/<class>/*.png|jpg|...``; classes are sub-folders sorted by name.

    Each image is converted to grayscale (``channels=1``) or RGB (``channels=3``), resized
    to ``size`` (height, width) and scaled to [0, 1]; features are [H, W, C] float32
    (``flatten=True`` gives [H*W*C]).  Needs Pillow.
    """

    def __init__(self, directory, size=(28, 28), channels=1, chunk_size=256, flatten=False):
        _require_pillow()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.directory = self.name = str(directory)
        if not os.path.isdir(directory):
            raise DataError(f"{directory}: not a directory")
        self.class_names = sorted(d for d in os.listdir(directory)
                                  if os.path.isdir(os.path.join(directory, d)))
        if not self.class_names:
            raise DataError(f"{directory}: no class sub-folders")
        self.files = [(os.path.join(directory, c, f), label)
                      for label, c in enumerate(self.class_names)
                      for f in sorted(os.listdir(os.path.join(directory, c)))
                      if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not self.files:
            raise DataError(f"{directory}: no image files in the class sub-folders")
        self.size = (int(size[0]), int(size[1])) if not isinstance(size, int) else (size, size)
        self.channels, self.chunk_size, self.flatten = channels, int(chunk_size), flatten
        self.num_classes = len(self.class_names)
        self.num_examples = len(self.files)
        shape = self.size + (channels,)
        self.feature_shape = (int(np.prod(shape)),) if flatten else shape

    def _load(self, path):
        from PIL import Image
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                im = im.resize((self.size[1], self.size[0]))
                a = np.asarray(im, dtype=np.float32) / np.float32(255.0)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read image: {e}") from e
        return a.reshape(self.feature_shape)

    def chunks(self):
        for start in range(0, len(self.files), self.chunk_size):
            part = self.files[start:start + self.chunk_size]
            x = np.stack([self._load(p) for p, _ in part])
            yield x, np.array([label for _, label in part], dtype=np.int64)


def _require_pillow():
    try:
        import PIL  # noqa: F401
    except ImportError as e:
        raise ImportError("image folders need Pillow: pip install Pillow  "
                          "(or pip install 'kiln[data]')") from e

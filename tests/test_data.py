"""Data pipeline: sources (arrays, npz, npy, CSV, MNIST IDX, image folders, digits), bad-data
errors, shuffling, batching, epochs, prefetch thread, split."""
import gzip
import struct
import threading
import time

import numpy as np
import pytest

from runtime import data
from runtime.data import DataError


def _write_csv(path, rows):
    path.write_text("\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def _write_idx(tmp_path, images, labels, gz=False, img_magic=0x803, n_labels=None):
    n, r, c = images.shape
    op = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    ip = tmp_path / f"train-images-idx3-ubyte{suffix}"
    lp = tmp_path / f"train-labels-idx1-ubyte{suffix}"
    with op(ip, "wb") as f:
        f.write(struct.pack(">IIII", img_magic, n, r, c) + images.astype(np.uint8).tobytes())
    with op(lp, "wb") as f:
        nl = len(labels) if n_labels is None else n_labels
        f.write(struct.pack(">II", 0x801, nl) + labels.astype(np.uint8).tobytes())
    return ip, lp


def _collect(source):
    xs, ys = zip(*source.chunks())
    return np.concatenate(xs), np.concatenate(ys)


# ----------------------------------------------------------------------------- sources

def test_from_arrays_types_and_classes():
    src = data.from_arrays(np.arange(12, dtype=np.float64).reshape(6, 2), [0, 1, 2, 0, 1, 2])
    assert src.feature_shape == (2,) and src.num_classes == 3 and src.num_examples == 6
    x, y = _collect(src)
    assert x.dtype == np.float32 and y.dtype == np.int64
    with pytest.raises(DataError, match="same first dimension"):
        data.from_arrays(np.zeros((3, 2)), np.zeros(4, np.int64))
    with pytest.raises(DataError, match="example 1: label 5 out of range"):
        data.from_arrays(np.zeros((2, 2)), [0, 5], num_classes=3)


def test_digits():
    src = data.open_source("digits")
    x, y = _collect(src)
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert src.num_classes == 10


def test_npz_keys_and_errors(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, features=np.ones((5, 3)), labels=np.arange(5))
    src = data.open_source(p)
    assert src.feature_shape == (3,) and src.num_examples == 5
    q = tmp_path / "e.npz"
    np.savez(q, a=np.ones((4, 2)), b=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=r"e\.npz: no features array.*\['a', 'b'\]"):
        data.open_source(q)
    assert data.open_source(q, x_key="a", y_key="b").num_examples == 4


def test_npy_pair(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 2, 2)))
    np.save(tmp_path / "y.npy", np.array([1, 0, 1, 0]))
    src = data.open_source((tmp_path / "x.npy", tmp_path / "y.npy"))
    assert src.feature_shape == (2, 2) and src.num_classes == 2


def test_csv_header_label_column_and_values(tmp_path):
    p = _write_csv(tmp_path / "d.csv", [["a", "label", "b"], [1, 0, 2], [3, 1, 4.5]])
    src = data.open_source(p, label_column="label")
    x, y = _collect(src)
    np.testing.assert_array_equal(x, [[1, 2], [3, 4.5]])
    np.testing.assert_array_equal(y, [0, 1])
    assert src.header == ["a", "label", "b"] and src.feature_shape == (2,)
    q = _write_csv(tmp_path / "n.csv", [[1, 2, 0], [3, 4, 1]])  # no header, label last
    x, y = _collect(data.open_source(q))
    assert x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]


def test_csv_streamed_in_chunks(tmp_path):
    rows = [[i, i * 2, i % 3] for i in range(103)]
    src = data.open_source(_write_csv(tmp_path / "big.csv", [["f1", "f2", "y"]] + rows),
                           chunk_size=10)
    sizes = [len(y) for _, y in src.chunks()]
    assert sizes == [10] * 10 + [3]
    x, y = _collect(src)
    np.testing.assert_array_equal(x[:, 0], np.arange(103))
    np.testing.assert_array_equal(y, np.arange(103) % 3)
    assert src.num_examples is None and src.count() == 103


@pytest.mark.parametrize("rows, kwargs, msg", [
    ([[1, 2, 0], [3, 0]], {}, r"bad\.csv:2: ragged row: 2 fields, expected 3"),
    ([[1, 2, 0], [3, "x", 1]], {}, r"bad\.csv:2: non-numeric value 'x'"),
    ([[1, 2, 0], [3, 4, 7]], {"num_classes": 3}, r"bad\.csv:2: label 7 out of range \[0, 3\)"),
    ([[1, 2, 0], [3, 4, 0.5]], {}, r"bad\.csv:2: label 0\.5 is not an integer"),
])
def test_csv_bad_rows_name_file_and_line(tmp_path, rows, kwargs, msg):
    src = data.open_source(_write_csv(tmp_path / "bad.csv", rows), **kwargs)
    with pytest.raises(DataError, match=msg):
        _collect(src)


def test_csv_wrong_feature_count_and_header_line(tmp_path):
    p = _write_csv(tmp_path / "f.csv", [[1, 2, 3, 0]])
    with pytest.raises(DataError, match=r"f\.csv:1: expected 2 features, got 3"):
        data.open_source(p, num_features=2)
    q = _write_csv(tmp_path / "h.csv", [["a", "b", "y"], [1, 2, 0], [1, 2, 3, 4]])
    with pytest.raises(DataError, match=r"h\.csv:3: ragged"):  # line counts the header
        _collect(data.open_source(q))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(7, 28, 28))
    labels = np.array([0, 1, 2, 3, 4, 5, 9])
    _write_idx(tmp_path, imgs, labels, gz=gz)
    src = data.open_source(f"mnist:{tmp_path}", chunk_size=3)
    assert src.num_examples == 7 and src.feature_shape == (784,) and src.num_classes == 10
    assert [len(y) for _, y in src.chunks()] == [3, 3, 1]
    x, y = _collect(src)
    assert x.dtype == np.float32 and x.shape == (7, 784)
    np.testing.assert_allclose(x, imgs.reshape(7, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    assert data.open_source(tmp_path).num_examples == 7  # directory auto-detect


def test_mnist_idx_errors(tmp_path):
    imgs = np.zeros((3, 4, 4))
    ip, lp = _write_idx(tmp_path, imgs, np.array([0, 1, 2]), img_magic=0x801)
    with pytest.raises(DataError, match="bad IDX magic number 0x00000801, expected 0x00000803"):
        data.open_source((ip, lp))
    ip, lp = _write_idx(tmp_path, imgs, np.array([0, 1, 2]), n_labels=4)
    with pytest.raises(DataError, match="has 3 images but .* has 4 labels"):
        data.open_source((ip, lp))
    ip, lp = _write_idx(tmp_path, imgs, np.array([0, 1, 2]))
    ip.write_bytes(ip.read_bytes()[:-5])
    with pytest.raises(DataError, match="file is 59 bytes, header says 3 images"):
        data.open_source((ip, lp))
    ip, lp = _write_idx(tmp_path, imgs, np.array([0, 12, 2]))
    with pytest.raises(DataError, match=r"example 1: label 12 out of range \[0, 10\)"):
        _collect(data.open_source((ip, lp)))


def test_mnist_gz_truncated(tmp_path):
    ip, lp = _write_idx(tmp_path, np.zeros((3, 4, 4)), np.array([0, 1, 2]), gz=True)
    raw = gzip.decompress(ip.read_bytes())[:-20]
    ip.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="truncated: header says 3 examples"):
        _collect(data.open_source((ip, lp)))


def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for cls, value in (("cat", 255), ("dog", 0)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("L", (10, 6), color=value).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    src = data.open_source(f"images:{tmp_path}", size=(4, 5))
    assert src.class_names == ["cat", "dog"] and src.num_classes == 2
    assert src.num_examples == 4 and src.feature_shape == (4, 5, 1)
    x, y = _collect(src)
    assert x.shape == (4, 4, 5, 1) and y.tolist() == [0, 0, 1, 1]
    assert np.allclose(x[:2], 1.0) and np.allclose(x[2:], 0.0)
    rgb = data.open_source(f"images:{tmp_path}", size=3, channels=3, flatten=True)
    assert rgb.feature_shape == (27,)
    (tmp_path / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png: cannot read image"):
        _collect(data.open_source(f"images:{tmp_path}"))


def test_unknown_specs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.open_source(tmp_path / "missing.csv")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="unknown format"):
        data.open_source(tmp_path / "x.parquet")


# ----------------------------------------------------------------------------- pipeline

def _arange_source(n=50, chunk_size=7):
    return data.from_arrays(np.arange(n, dtype=np.float32)[:, None], np.arange(n) % 5,
                            chunk_size=chunk_size)


def _order(it):
    return [int(v) for x, _ in it for v in x[:, 0]]


@pytest.mark.parametrize("buffer", [None, 8])
def test_shuffle_reproducible_and_per_epoch(buffer):
    src = _arange_source()
    a = _order(data.batches(src, 8, epochs=2, shuffle_buffer=buffer, seed=3))
    b = _order(data.batches(src, 8, epochs=2, shuffle_buffer=buffer, seed=3))
    c = _order(data.batches(src, 8, epochs=2, shuffle_buffer=buffer, seed=4))
    assert a == b and a != c
    assert sorted(a[:50]) == list(range(50)) and sorted(a[50:]) == list(range(50))
    assert a[:50] != a[50:] and a[:50] != list(range(50))


def test_shuffle_buffer_on_streamed_csv(tmp_path):
    p = _write_csv(tmp_path / "s.csv", [[i, 0] for i in range(40)])
    order = _order(data.batches(data.open_source(p, chunk_size=6), 5, shuffle_buffer=10,
                                seed=1, prefetch=0))
    assert sorted(order) == list(range(40)) and order != list(range(40))


def test_no_shuffle_batches_epochs_and_drop_remainder():
    src = _arange_source(23)
    it = data.batches(src, 5, epochs=2, shuffle_buffer=0)
    sizes, epochs = [], []
    for x, y in it:
        sizes.append(len(x))
        epochs.append(it.epoch)
        assert x.shape[1:] == (1,) and len(y) == len(x)
    assert sizes == [5, 5, 5, 5, 3] * 2 and epochs == [0] * 5 + [1] * 5
    assert _order(data.batches(src, 5, shuffle_buffer=0)) == list(range(23))
    dropped = [len(x) for x, _ in data.batches(src, 5, epochs=2, drop_remainder=True)]
    assert dropped == [5] * 8


class _SlowSource(data.Source):
    """Counts the chunks produced; optionally fails after ``fail_after`` chunks."""

    def __init__(self, n_chunks=10, fail_after=None):
        self.produced, self.n_chunks, self.fail_after = 0, n_chunks, fail_after
        self.feature_shape, self.num_classes = (1,), 2

    def chunks(self):
        for i in range(self.n_chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise DataError("broken record in chunk %d" % i)
            self.produced += 1
            yield np.full((4, 1), i, np.float32), np.zeros(4, np.int64)


def _wait_for(cond, timeout=2.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_prefetch_runs_ahead():
    src = _SlowSource()
    with data.batches(src, 4, shuffle_buffer=0, prefetch=2) as it:
        next(it)
        # the consumer is busy; the producer fills the queue meanwhile
        assert _wait_for(lambda: src.produced >= 3)
    sync = _SlowSource()
    it = data.batches(sync, 4, shuffle_buffer=0, prefetch=0)
    next(it)
    time.sleep(0.05)
    assert sync.produced == 1
    it.close()


def test_prefetch_error_propagates():
    it = data.batches(_SlowSource(fail_after=2), 4, shuffle_buffer=0, prefetch=2)
    got = []
    with pytest.raises(DataError, match="broken record in chunk 2"):
        for x, _ in it:
            got.append(int(x[0, 0]))
    assert got == [0, 1] and not it.alive


def test_close_early_stops_thread():
    before = {t for t in threading.enumerate() if t.name == "kiln-prefetch"}
    it = data.batches(_SlowSource(n_chunks=1000), 4, epochs=100, prefetch=2)
    next(it)
    assert it.alive
    it.close()
    assert not it.alive
    assert {t for t in threading.enumerate() if t.name == "kiln-prefetch"} <= before
    with pytest.raises(StopIteration):
        next(it)


def test_split_deterministic_and_disjoint(tmp_path):
    src = _arange_source(40)
    tr, va = data.split(src, 0.25, seed=2)
    assert (tr.num_examples, va.num_examples) == (30, 10)
    xt, xv = _collect(tr)[0][:, 0], _collect(va)[0][:, 0]
    assert sorted(np.concatenate([xt, xv]).tolist()) == list(range(40))
    assert _collect(data.split(src, 0.25, seed=2)[1])[0][:, 0].tolist() == xv.tolist()
    csv = data.open_source(_write_csv(tmp_path / "c.csv", [[i, 0] for i in range(40)]),
                           chunk_size=6)
    ctr, cva = data.split(csv, 0.25, seed=2)
    assert _collect(cva)[0][:, 0].tolist() == xv.tolist() and ctr.num_examples == 30
    with pytest.raises(ValueError, match="val_fraction"):
        data.split(src, 1.5)


def test_digits_read_without_importing_sklearn_equal_load_digits():
    """The bundled CSV read directly (10 ms instead of ~0.7 s of imports) gives
    scikit-learn's load_digits() exactly."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits
    src = data.open_source("digits")
    ref = load_digits()
    np.testing.assert_array_equal(src.x, (ref.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(src.y, ref.target)
    probe = "import sys; from runtime import data; data.open_source('digits'); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_optional_dependencies_say_how_to_install(monkeypatch, tmp_path):
    import sys

    from runtime import data_sources
    monkeypatch.setattr(data_sources, "_digits_file", lambda: None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.open_source("digits")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="pip install Pillow"):
        data.open_source(f"images:{tmp_path}")

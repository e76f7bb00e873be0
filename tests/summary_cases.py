"""Summary cases built the same way with Kiln's ``tf`` and with TensorFlow's: the TF side
(tests/goldens/make_summary_goldens.py, run where TF is installed) records what TF's
kernels return in tests/goldens/summary_tf.json; tests/test_summary_goldens.py checks
Kiln against it.  Data comes from seeded ``np.random.RandomState`` (stable across numpy
versions)."""
import contextlib

import numpy as np


def _rs(seed):
    return np.random.RandomState(seed)


def _images():
    mixed = _rs(1).uniform(-1, 1, (2, 3, 4, 3)).astype(np.float32)
    mixed[0, 0, 0, 1] = np.nan  # a bad pixel: red, and left out of the range
    mixed[1, 2, 3, 0] = np.inf
    return {
        "mixed_rgb": mixed,
        "positive_gray": _rs(2).uniform(0, 0.7, (3, 2, 5, 1)).astype(np.float32),
        "zeros": np.zeros((1, 2, 2, 1), np.float32),
        "uint8_rgba": _rs(3).randint(0, 256, (2, 2, 3, 4)).astype(np.uint8),
        "float64_gray": _rs(4).normal(size=(1, 3, 3, 1)),
    }


def _histograms():
    edge = np.array([0.5, -1.0, 2.0, 0.0, 3.0, 1e-13, -2e-12, 7.0, 1e15, -3e19], np.float32)
    return {
        "normal": _rs(5).normal(size=(10, 10)).astype(np.float32),
        "edges": edge,
        "ints": _rs(6).randint(-50, 50, (40,)).astype(np.int32),
        "empty": np.zeros((0,), np.float32),
        "constant": np.full((7,), 0.25, np.float64),
    }


# (id, kind, name, value, options); options: scope, family, max_outputs
CASES = [
    ("scalar_f32", "scalar", "loss", np.float32(1.4375), {"scope": "train"}),
    ("scalar_i32", "scalar", "count", np.int32(-3), {"family": "stats"}),
    ("scalar_f64", "scalar", "rate", np.float64(0.1), {}),
    ("scalar_badname", "scalar", "bad name!", np.float32(2.5), {}),
    *[(f"histogram_{k}", "histogram", f"h_{k}", v, {"scope": "layer"}) for k, v in _histograms().items()],
    ("image_mixed", "image", "pic", _images()["mixed_rgb"], {"max_outputs": 3}),
    ("image_positive", "image", "gray", _images()["positive_gray"], {"max_outputs": 2, "family": "imgs"}),
    ("image_zeros", "image", "zeros", _images()["zeros"], {"max_outputs": 1}),
    ("image_uint8", "image", "rgba", _images()["uint8_rgba"], {}),
    ("image_f64", "image", "f64", _images()["float64_gray"], {}),
    ("text_list", "text", "note", ["hello", "world"], {}),
    ("text_scalar", "text", "one", "héllo ✓", {"scope": "notes"}),
    ("text_matrix", "text", "table", [["a", "b"], ["c", "d"]], {}),
]


def build(tf, case, text_as_tensor):
    """The summary tensor of ``case`` in the default graph of ``tf`` (TF needs a string
    tensor for text, Kiln takes the Python value: ``text_as_tensor``)."""
    _id, kind, name, value, opts = case
    scope = tf.name_scope(opts["scope"]) if "scope" in opts else contextlib.nullcontext()
    with scope:
        if kind == "text":
            return tf.summary.text(name, tf.constant(value) if text_as_tensor else value)
        tensor = tf.constant(value)
        if kind == "image":
            return tf.summary.image(name, tensor, max_outputs=opts.get("max_outputs", 3), family=opts.get("family"))
        return getattr(tf.summary, kind)(name, tensor, family=opts.get("family"))


def build_all(tf, text_as_tensor):
    """Every case's summary tensor (``{id: tensor}``) plus ``merged`` (tf.summary.merge_all)."""
    tensors = {case[0]: build(tf, case, text_as_tensor) for case in CASES}
    tensors["merged"] = tf.summary.merge_all()
    return tensors

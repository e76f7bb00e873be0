"""tf.summary against TensorFlow's own kernels: the Summary bytes Kiln's Session.run returns
equal TF's (tests/goldens/summary_tf.json, recorded by tests/goldens/make_summary_goldens.py
from tests/summary_cases.py); images are compared as decoded pixels (PNG bytes depend on
zlib settings)."""
import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image  # the test extra has Pillow and tensorboard
from tensorboard.compat.proto import summary_pb2

from compiler import tf
from tests.summary_cases import build_all


GOLDEN = os.path.join(os.path.dirname(__file__), "goldens", "summary_tf.json")


@pytest.fixture(scope="module")
def runs():
    """(golden, {case id: tensor name in Kiln}, {case id: Kiln's bytes})."""
    with open(GOLDEN) as f:
        golden = json.load(f)
    graph = tf.Graph()
    with graph.as_default():
        tensors = build_all(tf, text_as_tensor=False)
        with tf.Session() as sess:
            values = sess.run(tensors)
    return golden, {k: t.name for k, t in tensors.items()}, values


def _pixels(value):
    return np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string))).reshape(-1)


def test_names_and_tags_follow_tf(runs):
    golden, names, _ = runs
    assert names == golden["names"]


@pytest.mark.parametrize("case", ["scalar_f32", "scalar_i32", "scalar_f64", "scalar_badname",
                                  "histogram_normal", "histogram_edges", "histogram_ints",
                                  "histogram_empty", "histogram_constant",
                                  "text_list", "text_scalar", "text_matrix"])
def test_bytes_equal_tf(runs, case):
    golden, _, values = runs
    assert isinstance(values[case], bytes)
    want = base64.b64decode(golden["cases"][case]["bytes"])
    assert values[case] == want, (summary_pb2.Summary.FromString(values[case]), summary_pb2.Summary.FromString(want))


@pytest.mark.parametrize("case", ["image_mixed", "image_positive", "image_zeros", "image_uint8", "image_f64"])
def test_images_equal_tf(runs, case):
    golden, _, values = runs
    got = summary_pb2.Summary.FromString(values[case]).value
    want = golden["cases"][case]["images"]
    assert [v.tag for v in got] == [w["tag"] for w in want]
    for v, w in zip(got, want):
        assert (v.image.height, v.image.width, v.image.colorspace) == (w["height"], w["width"], w["colorspace"])
        np.testing.assert_array_equal(_pixels(v), np.array(w["pixels"], np.uint8))


def test_merge_all_equals_tf(runs):
    golden, _, values = runs
    got = summary_pb2.Summary.FromString(values["merged"]).value
    want = summary_pb2.Summary.FromString(base64.b64decode(golden["cases"]["merged"]["bytes"])).value
    assert [v.tag for v in got] == [v.tag for v in want]
    for g, w in zip(got, want):
        if w.HasField("image"):
            np.testing.assert_array_equal(_pixels(g), _pixels(w))
        else:
            assert g.SerializeToString() == w.SerializeToString()

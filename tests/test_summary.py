"""tf.summary ops, Session.run of summary tensors and tf.summary.FileWriter, read back with
TensorBoard's own reader; expected values computed with numpy from the fed data."""
import io
import os

import numpy as np
import pytest
from PIL import Image  # the test extra has Pillow and tensorboard
from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import summary_pb2

from compiler import tf



def accumulate(logdir):
    """An EventAccumulator over ``logdir`` that keeps every event."""
    ea = event_accumulator.EventAccumulator(str(logdir), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0, event_accumulator.IMAGES: 0,
        event_accumulator.TENSORS: 0})
    ea.Reload()
    return ea


def events_of(logdir):
    """Every event of every event file in ``logdir`` (file order, then event order)."""
    files = sorted(f for f in os.listdir(logdir) if "tfevents" in f)
    return [e for f in files for e in event_file_loader.LegacyEventFileLoader(os.path.join(logdir, f)).Load()]


def _model():
    """A tiny TF1 classifier with one summary of each kind and merge_all."""
    x = tf.placeholder(tf.float32, [None, 4], name="x")
    img = tf.placeholder(tf.float32, [None, 2, 2, 1], name="images")
    w = tf.Variable(np.full((4, 1), 0.5, np.float32), name="w")
    pred = tf.matmul(x, w)
    loss = tf.reduce_mean(tf.square(pred))
    train = tf.train.GradientDescentOptimizer(0.05).minimize(loss)
    with tf.name_scope("metrics"):
        tf.summary.scalar("loss", loss)
    tf.summary.histogram("pred", pred)
    tf.summary.image("img", img, max_outputs=2)
    tf.summary.text("notes", ["first", "second"])
    return x, img, w, pred, loss, train, tf.summary.merge_all()


def test_feed_dict_loop_writes_what_tensorboard_reads(tmp_path):
    x, img, w, pred, loss, train, merged = _model()
    rs = np.random.RandomState(0)
    batches = [(rs.normal(size=(3, 4)).astype(np.float32), rs.uniform(0, 1, (3, 2, 2, 1)).astype(np.float32))
               for _ in range(4)]
    w_np = np.full((4, 1), 0.5, np.float32)
    expect_loss, expect_pred = [], []
    for xb, _ in batches:  # plain numpy SGD on mean(square(x @ w))
        p = xb @ w_np
        expect_loss.append(float(np.mean(p * p)))
        expect_pred.append(p)
        w_np = w_np - 0.05 * (xb.T @ (2 * p / p.size))
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        writer = tf.summary.FileWriter(str(tmp_path), sess.graph)
        for step, (xb, ib) in enumerate(batches):
            summary, _ = sess.run([merged, train], feed_dict={x: xb, img: ib})
            writer.add_summary(summary, step * 10)
        writer.close()
    ea = accumulate(tmp_path)
    tags = ea.Tags()
    assert tags["scalars"] == ["metrics/loss"] and tags["histograms"] == ["pred"]
    assert tags["images"] == ["img/image/0", "img/image/1"] and tags["tensors"] == ["notes"]
    scalars = ea.Scalars("metrics/loss")
    assert [s.step for s in scalars] == [0, 10, 20, 30]
    np.testing.assert_allclose([s.value for s in scalars], expect_loss, rtol=1e-5)
    for h, p in zip(ea.Histograms("pred"), expect_pred):
        hv = h.histogram_value
        assert hv.num == p.size and sum(hv.bucket) == p.size
        np.testing.assert_allclose([hv.min, hv.max, hv.sum, hv.sum_squares],
                                   [p.min(), p.max(), p.sum(), (p.astype(np.float64) ** 2).sum()], rtol=1e-5)
    last = batches[-1][1]
    for i in range(2):
        event = ea.Images(f"img/image/{i}")[-1]
        pixels = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
        want = (last[i, :, :, 0] * np.float32(255 / last[i].max())).astype(np.uint8)
        assert event.step == 30 and (event.height, event.width) == (2, 2)
        np.testing.assert_array_equal(pixels, want)
    text = ea.Tensors("notes")[0].tensor_proto
    assert list(text.string_val) == [b"first", b"second"]
    assert ea.SummaryMetadata("notes").plugin_data.plugin_name == "text"
    graph = ea.Graph()
    ops = tf.get_default_graph().get_operations()
    assert [(n.name, n.op) for n in graph.node] == [(op.name, op.type) for op in ops]
    matmul = next(n for n in graph.node if n.name == pred.op.name)
    assert list(matmul.input) == ["x", "w"]
    assert [d.size for d in matmul.attr["_output_shapes"].list.shape[0].dim] == [-1, 1]


def test_run_returns_summary_bytes_in_any_fetch_structure():
    x = tf.placeholder(tf.float32, [None], name="x")
    mean = tf.reduce_mean(x)
    s = tf.summary.scalar("avg", mean)
    h = tf.summary.histogram("x", x)
    data = np.array([1.0, 2.0, 4.0], np.float32)
    with tf.Session() as sess:
        got_s, got_mean, got = sess.run([s, mean, {"h": h, "pair": (s, x)}], {x: data})
        alone = s.eval({x: data}, session=sess)
        by_name = sess.run("avg:0", {x: data})
    assert isinstance(got_s, bytes) and got_s == alone == by_name == got["pair"][0]
    assert got_mean == pytest.approx(7 / 3)
    np.testing.assert_array_equal(got["pair"][1], data)
    value, = summary_pb2.Summary.FromString(got_s).value
    assert value.tag == "avg" and value.simple_value == pytest.approx(np.float32(7 / 3))
    histo = summary_pb2.Summary.FromString(got["h"]).value[0].histo
    assert (histo.min, histo.max, histo.num, histo.sum, histo.sum_squares) == (1, 4, 3, 7, 21)


def test_summary_op_as_target_runs_its_inputs_and_control_deps():
    v = tf.Variable(0.0, name="v")
    bump = tf.assign_add(v, 1.0)
    with tf.control_dependencies([bump]):
        s = tf.summary.scalar("after", tf.constant(1.0))
    with tf.Session() as sess:
        sess.run(v.initializer)
        assert sess.run(s.op) is None
        sess.run(s)
        assert sess.run(v) == 2.0


def test_collections_family_and_merge():
    a = tf.summary.scalar("a", 1.0, collections=["mine"])
    b = tf.summary.scalar("b", 2.0, family="fam")
    assert tf.get_collection(tf.GraphKeys.SUMMARIES) == [b]
    assert tf.get_collection("mine") == [a]
    assert b.op.name == "fam/b" and tf.summary.merge_all(key="nothing") is None
    merged = tf.summary.merge([a, b], name="both")
    assert merged.op.name == "both/both" and tf.get_collection(tf.GraphKeys.SUMMARIES) == [b]
    mine = tf.summary.merge_all(key="mine")
    with tf.Session() as sess:
        values = summary_pb2.Summary.FromString(sess.run(merged)).value
        assert [(v.tag, v.simple_value) for v in values] == [("a", 1.0), ("fam/fam/b", 2.0)]
        assert summary_pb2.Summary.FromString(sess.run(mine)).value[0].tag == "a"


def test_graph_time_errors():
    with pytest.raises(ValueError, match=r"tags and values are not the same shape: \[\] != \[2\]"):
        tf.summary.scalar("v", tf.constant([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"4-D with last dim 1, 3, or 4, not \[1,2,3,2\]"):
        tf.summary.image("i", tf.zeros([1, 2, 3, 2]))
    with pytest.raises(TypeError, match="DataType bool"):
        tf.summary.histogram("b", tf.constant([True]))
    with pytest.raises(ValueError, match="Kiln has no string tensors"):
        tf.summary.text("t", tf.constant(1.0))
    with pytest.raises(ValueError, match="takes str or bytes"):
        tf.summary.text("t", [1, 2])
    with pytest.raises(TypeError, match="summary tensors"):
        tf.summary.merge([tf.constant(1.0)])
    with pytest.raises(ValueError, match="at least minimum 1"):
        tf.summary.merge([])


def test_run_time_errors():
    x = tf.placeholder(tf.float32, [None])
    h = tf.summary.histogram("h", x)
    s = tf.summary.scalar("s", tf.reduce_sum(x))
    dup = tf.summary.merge([s, s])
    with tf.Session() as sess:
        with pytest.raises(tf.errors.InvalidArgumentError, match="Nan in summary histogram for: h"):
            sess.run(h, {x: [1.0, np.nan]})
        with pytest.raises(tf.errors.InvalidArgumentError, match="Infinity in Histogram for: h"):
            sess.run(h, {x: [np.inf]})
        with pytest.raises(tf.errors.InvalidArgumentError, match="Duplicate tag s found"):
            sess.run(dup, {x: [1.0]})
        with pytest.raises(TypeError, match="Cannot feed s:0"):
            sess.run(h, {x: [1.0], s: b""})
        with pytest.raises(tf.errors.InvalidArgumentError, match="no op can consume it"):
            sess.run(tf.identity(s), {x: [1.0]})


def test_file_writer_api(tmp_path):
    summary = tf.Summary(value=[tf.Summary.Value(tag="manual", simple_value=3.0)])
    assert isinstance(summary, tf.Summary)
    text = tf.summary.text("t", "hi")
    with tf.Session() as sess:
        text_bytes = sess.run(text)
    with tf.summary.FileWriter(str(tmp_path / "a"), filename_suffix=".mine") as writer:
        assert writer.get_logdir() == str(tmp_path / "a")
        writer.add_summary(summary, 7)
        writer.add_summary(text_bytes, 1)
        writer.add_summary(text_bytes, 2)
        writer.add_run_metadata(tf.RunMetadata(), "step1", 1)
        with pytest.raises(ValueError, match="tag was already used"):
            writer.add_run_metadata(tf.RunMetadata(), "step1", 2)
        writer.add_event(tf.Event(step=9, wall_time=5.0, file_version="x"))
    writer.add_summary(summary, 8)  # ignored after close, as in TF
    writer.reopen()
    writer.add_summary(summary, 9)
    writer.close()
    files = sorted(os.listdir(tmp_path / "a"))
    assert len(files) == 2 and files[0].endswith(".mine")
    events = events_of(tmp_path / "a")
    steps = [(e.step, e.WhichOneof("what")) for e in events]
    assert steps == [(0, "file_version"), (7, "summary"), (1, "summary"), (2, "summary"),
                     (1, "tagged_run_metadata"), (9, "file_version"),
                     (0, "file_version"), (9, "summary")]
    assert events[5].wall_time == 5.0 and events[4].tagged_run_metadata.tag == "step1"
    first_text, second_text = events[2].summary.value[0], events[3].summary.value[0]
    assert first_text.metadata.plugin_data.plugin_name == "text"  # only the first keeps it (TF)
    assert not second_text.HasField("metadata") and second_text.tensor.string_val == [b"hi"]


def test_file_writer_cache_and_graph_def(tmp_path):
    total = tf.add(tf.constant(1.0, name="one"), tf.constant(2.0, name="two"), name="sum")
    first = tf.summary.FileWriterCache.get(str(tmp_path))
    assert tf.summary.FileWriterCache.get(str(tmp_path)) is first
    tf.summary.FileWriterCache.clear()
    graph_events = [e for e in events_of(tmp_path) if e.WhichOneof("what") == "graph_def"]
    assert len(graph_events) == 1
    graph_def = tf.get_default_graph().as_graph_def()
    assert graph_events[0].graph_def == graph_def.SerializeToString()
    node = {n.name: n for n in graph_def.node}["sum"]
    assert node.op == "add" and list(node.input) == ["one", "two"] and total.op.name == "sum"
    with pytest.raises(ValueError, match="not both"):
        tf.summary.FileWriter(str(tmp_path), graph=tf.get_default_graph(), graph_def=graph_def)
    with pytest.raises(NotImplementedError, match="session="):
        tf.summary.FileWriter(str(tmp_path), session=object())


def test_summaries_with_the_compiled_backend():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    y = tf.nn.relu(x) * 2.0
    s = tf.summary.histogram("y", y)
    data = np.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]], np.float32)
    with tf.Session(config={"backend": "compiled"}) as sess:
        got, y_val = sess.run([s, y], {x: data})
    expect = np.maximum(data, 0) * 2
    np.testing.assert_array_equal(y_val, expect)
    histo = summary_pb2.Summary.FromString(got).value[0].histo
    assert (histo.num, histo.sum, histo.max) == (6, expect.sum(), expect.max())


def test_importing_tf_does_not_load_protobuf():
    """tensorboardX/protobuf are imported on the first summary fetch or writer, not by
    ``from compiler import tf`` (nor by the runtime's trainer modules)."""
    import subprocess
    import sys
    code = ("import sys; from compiler import tf; import runtime.trainer, runtime.events; "
            "print(sorted(m for m in sys.modules if m.startswith(('tensorboard', 'google.protobuf'))))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": root}).stdout
    assert out.strip() == "[]"

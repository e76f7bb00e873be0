"""tf.reverse_sequence (IR kind ``reverse_sequence``): values and gradients against TF's
goldens (tests/goldens/record_reverse_sequence.py) and an independent numpy loop, on the
interpreter, the LLVM CPU backend and the CUDA backend (host emulator; nvcc compile); inf
and NaN stay where they are; TF's length errors at run time and shape errors at build time."""
import os

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.ir.from_graph import lower_graph
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from tests.cuda_kit import HAVE_GPU, compile_cuda, needs_emulator, race_checking
from tests.emu_kit import needs_nvcc
from tests.helpers import check_gradients

GOLDENS = np.load(os.path.join(os.path.dirname(__file__), "goldens", "reverse_sequence.npz"))
CASES = sorted({key.split("/")[0] for key in GOLDENS.files})
INTERPRETER, COMPILED = {"backend": "interpreter"}, {"backend": "compiled"}
CUDA_EMULATED = {"backend": "cuda", "cuda_emulate": True}
CUDA_DEVICE = {"backend": "cuda", "cuda_emulate": False}
BACKENDS = pytest.mark.parametrize("config", [
    INTERPRETER, COMPILED, pytest.param(CUDA_EMULATED, marks=needs_emulator),
    pytest.param(CUDA_DEVICE, marks=pytest.mark.skipif(not HAVE_GPU, reason="no usable GPU"))],
    ids=["interpreter", "llvm", "cuda_emulated", "cuda_device"])


def reference(x, lengths, seq_axis, batch_axis):
    """out[b, t] = x[b, len_b - 1 - t] for t < len_b, else x[b, t]: an element-by-element loop."""
    out = x.copy()
    for b, n in enumerate(lengths):
        for t in range(n):
            dst, src = [slice(None)] * x.ndim, [slice(None)] * x.ndim
            dst[batch_axis] = src[batch_axis] = b
            dst[seq_axis], src[seq_axis] = t, n - 1 - t
            out[tuple(dst)] = x[tuple(src)]
    return out


def golden(name):
    seq_axis, batch_axis = (int(a) for a in GOLDENS[f"{name}/axes"])
    return GOLDENS[f"{name}/x"], GOLDENS[f"{name}/lengths"], seq_axis, batch_axis


def test_goldens_are_the_reference_semantics():
    """TF's recorded outputs are what the numpy loop computes (inf/NaN in place, not spread)."""
    for name in CASES:
        x, lengths, seq_axis, batch_axis = golden(name)
        np.testing.assert_array_equal(reference(x, lengths, seq_axis, batch_axis), GOLDENS[f"{name}/out"], err_msg=name)
    assert np.isnan(GOLDENS["nonfinite/out"]).sum() == 1 and np.isinf(GOLDENS["nonfinite/out"]).sum() == 2


def _golden_graph():
    """Every golden case (feeding x and lengths) and, where TF recorded one, its gradient."""
    feeds, fetches = {}, {}
    for name in CASES:
        x, lengths, seq_axis, batch_axis = golden(name)
        xp = tf.placeholder(tf.as_dtype(x.dtype), x.shape, name=f"{name}_x")
        lp = tf.placeholder(tf.as_dtype(lengths.dtype), lengths.shape, name=f"{name}_len")
        y = tf.reverse_sequence(xp, lp, seq_axis=seq_axis, batch_axis=batch_axis)
        feeds.update({xp: x, lp: lengths})
        fetches[name] = y
        if f"{name}/grad" in GOLDENS:
            fetches[f"{name}/grad"] = tf.gradients(tf.reduce_sum(y * GOLDENS[f"{name}/w"]), xp)[0]
    return feeds, fetches


@BACKENDS
def test_matches_tf_goldens(config):
    with tf.Graph().as_default():
        feeds, fetches = _golden_graph()
        with race_checking(), tf.Session(config=config) as sess:
            got = sess.run(fetches, feeds)
    for name in CASES:
        assert got[name].dtype == GOLDENS[f"{name}/out"].dtype, name
        np.testing.assert_array_equal(got[name], GOLDENS[f"{name}/out"], err_msg=name)
        if f"{name}/grad" in GOLDENS:
            np.testing.assert_allclose(got[f"{name}/grad"], GOLDENS[f"{name}/grad"], rtol=1e-6, err_msg=name)


def _batch_graph():
    """reverse_sequence with the batch dim N on the batch axis (batch- and time-major) and on
    the sequence axis; returns (placeholders, fetches, make(batch) -> feed)."""
    x = tf.placeholder(tf.float32, [None, 5, 2], name="x")
    lengths = tf.placeholder(tf.int64, [None], name="lengths")
    steps = tf.placeholder(tf.float32, [None, 3], name="steps")  # transposed: N time steps
    fetches = {"batch_major": tf.reverse_sequence(x, lengths, seq_axis=1),
               "time_major": tf.reverse_sequence(tf.transpose(x, [1, 0, 2]), lengths, seq_dim=0, batch_dim=1),
               "seq_is_batch": tf.reverse_sequence(tf.transpose(steps), [0, 1, 1], seq_axis=1, batch_axis=0)}

    def make(batch):
        rng = np.random.default_rng(batch)
        xv = rng.standard_normal((batch, 5, 2)).astype(np.float32)
        xv[0, 1, 1] = np.nan
        return {x: xv, lengths: rng.integers(0, 6, batch), steps: rng.standard_normal((batch, 3)).astype(np.float32)}

    return (x, lengths, steps), fetches, make


@pytest.mark.parametrize("config", [INTERPRETER, COMPILED], ids=["interpreter", "llvm"])
def test_symbolic_batch_dims(config):
    with tf.Graph().as_default():
        (x, lengths, steps), fetches, make = _batch_graph()
        with tf.Session(config=config) as sess:
            for batch in (1, 4):
                feed = make(batch)
                feed[lengths][:2] = [0, 5][:batch]  # an empty and a full row
                got = sess.run(fetches, feed)
                want = {"batch_major": reference(feed[x], feed[lengths], 1, 0),
                        "time_major": reference(feed[x].transpose(1, 0, 2), feed[lengths], 0, 1),
                        "seq_is_batch": reference(feed[steps].T, [0, 1, 1], 1, 0)}
                for key in want:
                    np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} at N={batch}")


def test_gradient_matches_finite_differences():
    x = np.random.default_rng(0).standard_normal((3, 4, 2))
    check_gradients(lambda v: tf.reverse_sequence(v, [2, 0, 4], seq_axis=1, batch_axis=0), x)
    check_gradients(lambda v: tf.reverse_sequence(v, np.array([3, 1], np.int64), seq_axis=0, batch_axis=2),
                    np.ascontiguousarray(x.transpose(1, 2, 0)[:, :, :2]))


def test_second_derivative_is_reversed_too():
    """d/dx of (d/dx sum(rs(x)^3 * w)) through the gradient's own reverse_sequence."""
    check_gradients(lambda v: tf.gradients(tf.reduce_sum(tf.reverse_sequence(v, [3, 1], seq_axis=1) ** 3), v)[0],
                    np.random.default_rng(1).standard_normal((2, 3)))


def _length_error_graph():
    x = tf.placeholder(tf.float32, [None, 4], name="x")
    lengths = tf.placeholder(tf.int32, [None], name="lengths")
    return x, lengths, tf.reverse_sequence(x, lengths, seq_axis=1, name="rs")


@BACKENDS
def test_lengths_out_of_range_fail_with_tfs_message(config):
    with tf.Graph().as_default():
        x, lengths, y = _length_error_graph()
        with tf.Session(config=config) as sess:
            xv = np.zeros((3, 4), np.float32)
            for bad, message in (([4, 5, 9], r"seq_lens\(1\) > input.dims\(1\)"), ([1, 4, -1], r"seq_lens\(2\) < 0")):
                with pytest.raises(tf.errors.InvalidArgumentError, match=r"reverse_sequence \(rs\) failed: " + message):
                    sess.run(y, {x: xv, lengths: np.array(bad, np.int32)})
            np.testing.assert_array_equal(sess.run(y, {x: xv + 1, lengths: [4, 0, 2]}), np.ones((3, 4)))


@pytest.mark.parametrize("build, message", [
    (lambda x: tf.reverse_sequence(x, [1, 2], seq_axis=1),
     r"seq_lengths \[2\] must be a vector of input.dims\(batch_axis\) = 3 entries for input \[3,4,2\]"),
    (lambda x: tf.reverse_sequence(x, [[1, 2, 3]], seq_axis=1), r"seq_lengths \[1,3\] must be a vector"),
    (lambda x: tf.reverse_sequence(x, [1, 2, 3], seq_axis=0, batch_axis=0),
     r"seq_axis \(0\) and batch_axis \(0\) must differ"),
    (lambda x: tf.reverse_sequence(x, [1, 2, 3], seq_axis=3), r"seq_axis 3 is out of range for a tensor of rank 3"),
    (lambda x: tf.reverse_sequence(x, tf.constant([1.0, 2.0, 3.0]), seq_axis=1),
     r"seq_lengths must be int32 or int64, got float32"),
    (lambda x: tf.reverse_sequence(x, [1, 2, 3]), r"seq_axis \(seq_dim\) must be given"),
    (lambda x: tf.reverse_sequence(x[0, 0], [1, 2, 3], seq_axis=0), r"input must have rank >= 2"),
])
def test_bad_shapes_fail_at_build_time(build, message):
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=message):
            build(tf.placeholder(tf.float32, [3, 4, 2], name="x"))


def test_ir_text_round_trip():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3, 4])
        lengths = tf.placeholder(tf.int64, [None])
        y = tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)
        outs = [y, tf.reverse_sequence(tf.transpose(x, [1, 0, 2]), lengths, seq_axis=0, batch_axis=1)]
        outs += tf.gradients(tf.reduce_sum(y * y), x)
        text = print_function(lower_graph(outs, feed_tensors=[x, lengths]))
    assert text.count("reverse_sequence(") == 3 and "seq_axis=0" in text.replace(" ", "")
    assert print_function(parse_function(text)) == text


@needs_nvcc
def test_cuda_source_compiles_with_nvcc(tmp_path):
    """The CUDA module of a forward + backward reverse_sequence builds for a real GPU (sm_90)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 5, 2], name="x")
        lengths = tf.placeholder(tf.int32, [None], name="lengths")
        y = tf.reverse_sequence(x, lengths, seq_axis=1)
        (g,) = tf.gradients(tf.reduce_sum(y * y), x)
    out = compile_cuda(graph, {"step": ([y, g], [], [x, lengths])}, tmp_path / "cuda", mode="device")
    m = runtime.manifest.read_manifest(out)
    assert m["target"]["emulated"] is False and "reverse_sequence" in (out / "src" / "model.cu").read_text()
    assert (out / "lib" / "model.so").stat().st_size > 0

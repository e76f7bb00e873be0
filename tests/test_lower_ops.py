"""Lowering of fused contraction groups (compiler/lower/contraction.py, conv_lowering.py) and of
the plain kinds (plain_ops.py, plain_nn.py, pools.py): tiny graphs go through the whole pipeline and
``lower_function``; the kernel-IR reference evaluator must give the IR interpreter's numbers at
batch 1 and 3.  Each test also asserts that the kinds it is about really reached lowering."""
import numpy as np
import pytest

from compiler import tf
from compiler.ir.from_graph import RNG_STATE, lower_graph
from compiler.ir.interpreter import InterpreterError, run_function
from compiler.ir.ops.random import random_bits
from compiler.lower.kernel_interp import KernelCheckError, KernelError, run_program
from compiler.lower.kernel_ir import BufferDecl, Const, Gemm, Kernel, Program, Random, Store
from compiler.lower.kernel_walk import iter_stmts
from compiler.lower.program import lower_function
from compiler.passes.fusion_rules import region_parts
from compiler.passes.manager import PIPELINE, run_pipeline

BATCHES = (1, 3)


# ----------------------------------------------------------------------------- harness
def compile_graph(fetches, feeds, targets=(), passes=None):
    """Lower the default graph's ``fetches`` (+ ``targets``) over ``feeds`` and run the pipeline;
    returns (optimized fn, program, initial state)."""
    fn = lower_graph(list(fetches), list(targets), list(feeds))
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        state = {p.key: np.int64(3) if p.key == RNG_STATE else sess.variable_value(p.key) for p in fn.state_in()}
    opt = run_pipeline(fn, passes=passes).fn
    return opt, lower_function(opt), state


def check(fetches, feeds, targets=(), passes=None, rtol=1e-5, atol=1e-5):
    """Compile, then compare run_program with run_function at each batch size.

    ``feeds`` maps placeholders to ``make(batch) -> array``.  Returns (fn, program)."""
    fn, program, state = compile_graph(fetches, feeds, targets, passes)
    for batch in BATCHES:
        values = {ph.name: make(batch) for ph, make in feeds.items()}
        want_state, want = run_function(fn, dict(state), values)
        got_state, got = run_program(program, dict(state), values, batch)
        assert got.keys() == want.keys() and got_state.keys() == want_state.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=f"{key} at N={batch}")
        for key in want_state:
            np.testing.assert_allclose(got_state[key], want_state[key], rtol=rtol, atol=atol,
                                       err_msg=f"state {key} at N={batch}")
    return fn, program


def kinds(fn) -> set:
    """Plain kinds of the body, contraction anchors, and "prologue" when a matmul has one."""
    out = set()
    for ins in fn.body:
        if ins.kind != "fused":
            out.add(ins.kind)
        elif ins.attrs["pattern"] == "contraction":
            parts = region_parts(ins)
            out |= {sub.kind for sub, part in parts.items() if part == "anchor"}
            out |= {"prologue" for part in parts.values() if part.startswith("pro")}
    return out


def gemms(program) -> list:
    """The Gemm statements of the program's kernels (a convolution's sits beside its im2col)."""
    return [s for k in program.kernels for s in iter_stmts(k.body) if isinstance(s, Gemm)]


def floats(*shape, seed=0, integers=False):
    """make(batch): random float32 of ``shape`` with None replaced by the batch size."""
    def make(batch):
        rng = np.random.default_rng(seed + batch)
        dims = [batch if d is None else d for d in shape]
        if integers:  # small integers: ties for max/argmax
            return rng.integers(-2, 3, dims).astype(np.float32)
        return rng.standard_normal(dims).astype(np.float32)

    return make


def ints(*shape, high, low=0, dtype=np.int32, seed=0):
    def make(batch):
        rng = np.random.default_rng(seed + batch)
        return rng.integers(low, high, [batch if d is None else d for d in shape]).astype(dtype)

    return make


def weight(*shape, seed=1, name=None):
    return tf.Variable(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name=name)


def sum_sq(*ys):
    return tf.add_n([tf.reduce_sum(tf.square(y)) for y in ys])


# ----------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("padding, stride, dilation", [
    ("SAME", 1, 1), ("SAME", 2, 1), ("VALID", 1, 1), ("VALID", 2, 1), ("SAME", 1, 2),
    ([[0, 0], [1, 0], [0, 2], [0, 0]], 2, 1)])
@pytest.mark.parametrize("c_in", [2, 6])  # 3*2*2 taps: the direct forward; 3*2*6 > DIRECT_MAX_TAPS: GEMM
def test_conv2d_and_both_gradients(padding, stride, dilation, c_in):
    x = tf.placeholder(tf.float32, [None, 5, 6, c_in], name="x")
    w = weight(3, 2, c_in, 3, name="w")
    y = tf.nn.conv2d(x, w, [1, stride, stride, 1], padding, dilations=[1, dilation, dilation, 1])
    gx, gw = tf.gradients(sum_sq(y), [x, w])
    fn, program = check([y, gx, gw], {x: floats(None, 5, 6, c_in)}, rtol=1e-4, atol=1e-4)  # sums of ~200 terms
    assert {"conv2d", "conv2d_backprop_input", "conv2d_backprop_filter"} <= kinds(fn)
    assert len(gemms(program)) == (2 if c_in == 2 else 3)


@pytest.mark.parametrize("c_in, ksize, padding, stride", [(1, 5, "SAME", 1), (1, 3, "VALID", 2),
                                                         (3, 3, "SAME", 2), (2, 4, "SAME", 1)])
def test_direct_conv_for_few_input_elements_per_window(c_in, ksize, padding, stride):
    """KH*KW*C_in <= DIRECT_MAX_TAPS: a direct nest with the bias + relu epilogue, no im2col;
    the gradients keep the GEMM lowering."""
    x = tf.placeholder(tf.float32, [None, 7, 6, c_in], name="x")
    w = weight(ksize, ksize, c_in, 5, name="w")
    b = tf.Variable(np.linspace(-0.2, 0.2, 5).astype(np.float32), name="b")
    y = tf.nn.relu(tf.nn.conv2d(x, w, [1, stride, stride, 1], padding) + b)
    gx, gw = tf.gradients(sum_sq(y), [x, w])
    fn, program = check([y, gx, gw], {x: floats(None, 7, 6, c_in)})
    assert "conv2d" in kinds(fn)
    names = [k.name for k in program.kernels]
    assert any(n.startswith("direct_conv2d") for n in names), names
    assert not any(n.startswith("conv_conv2d_Conv2D") for n in names), names
    assert len(gemms(program)) == 2  # backprop input and filter


@pytest.mark.parametrize("window", [(5, 5), (8, 7)])  # col2im taps unrolled / (56 > 49) a taps loop
def test_conv2d_backprop_input_col2im(window):
    x = tf.placeholder(tf.float32, [None, 5, 4, 2], name="x")
    w = weight(*window, 2, 6, name="w")
    y = tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME")
    (gx,) = tf.gradients(sum_sq(y), [x])
    fn, program = check([gx], {x: floats(None, 5, 4, 2)}, rtol=1e-4, atol=1e-3)
    assert "conv2d_backprop_input" in kinds(fn)
    conv = [k for k in program.kernels if k.name.startswith("conv_conv2d_backprop_input")]
    assert len(conv) == 1
    gemm, col2im = conv[0].body.body  # dy · Wᵀ into cols, then the col2im nest
    assert isinstance(gemm, Gemm) and gemm.split.kind == "rows" and gemm.split.item == col2im.var.name
    assert ("vectorize=True" in repr(col2im)) == (window == (5, 5))


def test_pointwise_conv_needs_no_im2col():
    x = tf.placeholder(tf.float32, [None, 3, 3, 4], name="x")
    w = weight(1, 1, 4, 2, name="w")
    y = tf.nn.conv2d(x, w, [1, 1, 1, 1], "VALID")
    gx, gw = tf.gradients(sum_sq(y), [x, w])
    fn, program = check([y, gx, gw], {x: floats(None, 3, 3, 4)})
    assert {"conv2d", "conv2d_backprop_input", "conv2d_backprop_filter"} <= kinds(fn)
    assert len(gemms(program)) == 3 and not [g for g in gemms(program) if g.split is not None]
    assert not [name for name in program.buffers if name.startswith("cols")]


def test_conv_bias_relu_epilogue_and_adam_in_filter_gradient():
    x = tf.placeholder(tf.float32, [None, 5, 5, 2], name="x")
    w, b = weight(3, 3, 2, 4, name="w"), tf.Variable(np.full(4, 0.1, np.float32), name="b")
    y = tf.nn.relu(tf.nn.conv2d(x, w, [1, 2, 2, 1], "SAME") + b)
    loss = sum_sq(tf.nn.max_pool(y, [1, 2, 2, 1], [1, 1, 1, 1], "VALID"))
    train = tf.train.AdamOptimizer(0.01).minimize(loss)
    _, program = check([loss], {x: floats(None, 5, 5, 2)}, targets=[train])
    assert any(g.epilogue is not None and "state_w" in str(g.epilogue) for g in gemms(program))


def test_dense_layer_with_adam_fused_into_weight_gradient():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    y = tf.layers.dense(x, 4, activation=tf.nn.relu, name="fc")
    loss = tf.reduce_mean(tf.square(y))
    train = tf.train.AdamOptimizer(0.1).minimize(loss)
    _, program = check([loss, y], {x: floats(None, 3)}, targets=[train])
    epilogues = [str(g.epilogue) for g in gemms(program) if g.epilogue is not None]
    assert any("relu" in e for e in epilogues)  # dense + bias + relu
    assert any("state_fc_kernel_Adam" in e for e in epilogues)  # the Adam update of the kernel


@pytest.mark.parametrize("padding, stride", [("SAME", 1), ("VALID", 2), ("SAME", 2)])
def test_depthwise_conv2d_and_gradients(padding, stride):
    x = tf.placeholder(tf.float32, [None, 5, 5, 2], name="x")
    w = weight(3, 3, 2, 2, name="w")
    y = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], padding)
    gx, gw = tf.gradients(sum_sq(tf.nn.relu(y)), [x, w])
    fn, _ = check([y, gx, gw], {x: floats(None, 5, 5, 2)})
    assert {"depthwise_conv2d", "depthwise_conv2d_backprop_input", "depthwise_conv2d_backprop_filter"} <= kinds(fn)


# ----------------------------------------------------------------------------- pools
@pytest.mark.parametrize("pool", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("padding, ksize, stride", [("SAME", 2, 2), ("VALID", 3, 1), ("SAME", 3, 2)])
def test_pools_and_gradients(pool, padding, ksize, stride):
    x = tf.placeholder(tf.float32, [None, 5, 4, 2], name="x")
    y = getattr(tf.nn, pool)(x, [1, ksize, ksize, 1], [1, stride, stride, 1], padding)
    (gx,) = tf.gradients(sum_sq(y), [x])
    fn, _ = check([y, gx], {x: floats(None, 5, 4, 2, integers=True)})  # ties: the first max wins
    assert {pool, pool + "_grad"} <= kinds(fn)


def _nan_images(*shape):
    """make(batch): small integers (ties) with a NaN in some windows."""
    base = floats(*shape, integers=True)

    def make(batch):
        a = base(batch)
        a[:, 0, 1, 0] = np.nan
        a[:, -1, -1, -1] = np.nan
        return a

    return make


@pytest.mark.parametrize("shape, ksize, padding, make", [
    ((4, 6, 3), 2, "VALID", floats(None, 4, 6, 3, integers=True)),
    ((4, 6, 3), 2, "SAME", _nan_images(None, 4, 6, 3)),   # even plane: SAME pads nothing
    ((6, 3, 5), 3, "VALID", floats(None, 6, 3, 5, integers=True))])
def test_max_pool_grad_of_tiling_windows(shape, ksize, padding, make):
    """Windows that tile the input (stride = window): one nest writing every tap, no zeroing
    pass and no scatter; ties and NaNs go to the first max like the interpreter's."""
    x = tf.placeholder(tf.float32, [None, *shape], name="x")
    y = tf.nn.max_pool(x, [1, ksize, ksize, 1], [1, ksize, ksize, 1], padding)
    (gx,) = tf.gradients(sum_sq(y), [x])
    fn, program = check([y, gx], {x: make})
    assert "max_pool_grad" in kinds(fn)
    grads = [k for k in program.kernels if k.name.startswith("max_pool_grad")]
    assert len(grads) == 1 and "If(" not in repr(grads[0].body), grads


# ----------------------------------------------------------------------------- array kinds
def test_transpose_slices_reverse_concat_and_gradients():
    x = tf.placeholder(tf.float32, [None, 3, 4], name="x")
    ys = [tf.transpose(x, [0, 2, 1]), x[:, 1:3, ::-2], tf.slice(x, [0, 1, 0], [-1, 2, 3]),
          tf.reverse(x, [0]), tf.concat([x, 2 * x], axis=2), tf.concat([x, x[:, :1]], axis=1)]
    (gx,) = tf.gradients(sum_sq(*ys), [x])
    fn, _ = check(ys + [gx], {x: floats(None, 3, 4)})
    assert {"transpose", "slice", "concat", "strided_slice_grad"} <= kinds(fn)


@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT", "SYMMETRIC"])
def test_pad_modes_and_gradients(mode):
    x = tf.placeholder(tf.float32, [None, 3, 4], name="x")
    kwargs = {"constant_values": 1.5} if mode == "CONSTANT" else {}
    y = tf.pad(x, [[0, 0], [2, 1], [1, 3]], mode=mode, **kwargs)
    (gx,) = tf.gradients(sum_sq(y * y), [x])
    fn, _ = check([y, gx], {x: floats(None, 3, 4)})
    assert "pad" in kinds(fn)
    assert mode == "CONSTANT" or "pad_grad" in kinds(fn)


def test_tile_and_its_gradient():
    x = tf.placeholder(tf.float32, [None, 2, 3], name="x")
    y = tf.tile(x, [2, 3, 1])
    (gx,) = tf.gradients(sum_sq(y * tf.range(3, dtype=tf.float32)), [x])
    fn, _ = check([y, gx], {x: floats(None, 2, 3)})
    assert "tile" in kinds(fn)


def test_shape_with_batch_one_hot_argmax_argmin():
    x = tf.placeholder(tf.float32, [None, 4], name="x")
    labels = tf.placeholder(tf.int32, [None], name="labels")
    outs = [tf.shape(x), tf.shape(x, out_type=tf.int64), tf.argmax(x, 1), tf.argmin(x, 0, output_type=tf.int32),
            tf.one_hot(labels, 5), tf.argmax(tf.one_hot(labels, 5), 1)]

    def with_nan(batch):
        values = floats(None, 4, integers=True)(batch)
        values[0, 2] = np.nan
        return values

    fn, _ = check(outs, {x: with_nan, labels: ints(None, high=5)})
    assert {"shape", "argmax", "argmin"} <= kinds(fn)


# ----------------------------------------------------------------------------- gathers and scatters
def test_gathers_embedding_lookup_and_their_gradients():
    params = weight(6, 3, name="params")
    ids = tf.placeholder(tf.int32, [None, 2], name="ids")
    nd = tf.placeholder(tf.int64, [None, 2], name="nd")
    ys = [tf.gather(params, ids), tf.gather(params, ids[:, 0] % 3, axis=1),
          tf.nn.embedding_lookup(params, ids), tf.gather_nd(params, nd)]
    (gp,) = tf.gradients(sum_sq(*ys), [params])
    fn, _ = check(ys + [gp], {ids: ints(None, 2, high=6), nd: ints(None, 2, high=3, dtype=np.int64)})
    assert {"gather", "gather_nd", "unsorted_segment_sum", "scatter_nd"} <= kinds(fn)


def test_scatter_nd_and_segment_sum_with_duplicates_and_dropped_ids():
    data = tf.placeholder(tf.float32, [None, 3], name="data")
    ids = tf.placeholder(tf.int32, [None], name="ids")
    idx = tf.placeholder(tf.int32, [None, 1], name="idx")
    ys = [tf.unsorted_segment_sum(data, ids, 4), tf.scatter_nd(idx, data, [5, 3])]
    fn, _ = check(ys, {data: floats(None, 3), ids: ints(None, low=-1, high=4), idx: ints(None, 1, high=2)})
    assert {"unsorted_segment_sum", "scatter_nd"} <= kinds(fn)


def _fails_like_interpreter(fetches, feeds, values):
    """Both the interpreter and the lowered program reject ``values``, with one message."""
    fn, program, state = compile_graph(fetches, feeds)
    with pytest.raises(InterpreterError) as want:
        run_function(fn, state, values)
    with pytest.raises(KernelCheckError) as got:
        run_program(program, state, values, 2)
    assert str(got.value) == str(want.value)


def test_gather_out_of_range_index_fails_the_check():
    params = weight(4, 2, name="params")
    ids = tf.placeholder(tf.int32, [None], name="ids")
    y = tf.gather(params, ids)
    _fails_like_interpreter([y], [ids], {"ids:0": np.array([1, 7], np.int32)})


def test_check_range_of_labels():
    logits = tf.placeholder(tf.float32, [None, 3], name="logits")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    fn, _ = check([loss], {logits: floats(None, 3), labels: ints(None, high=3, dtype=np.int64)})
    assert "check_range" in kinds(fn)
    bad = {"logits:0": np.zeros((2, 3), np.float32), "labels:0": np.array([0, 3], np.int64)}
    _fails_like_interpreter([loss], [logits, labels], bad)


def _philox_bits_supported() -> bool:
    """Does the kernel IR have the raw Philox word random_shuffle sorts by?  (A one-store probe.)"""
    out = BufferDecl("out", tf.int64, (1,), "fetch", key="out", index=0)
    draw = Random("bits", 1, 2, Const(5, tf.int64), Const(3, tf.int64), tf.int64)
    probe = Program("probe", {"out": out}, [Kernel("probe", [], ["out"], Store("out", Const(0, tf.int64), draw))])
    try:
        value = run_program(probe, {}, {}, 1)[1]["out"][0]
    except (KernelError, ValueError, TypeError, KeyError):
        return False
    return int(value) == int(random_bits(6, 1, 2, 3)[5])


@pytest.mark.xfail(not _philox_bits_supported(), reason="needs Random dist 'bits' (raw Philox word) in the kernel IR")
def test_random_shuffle_is_the_interpreters_permutation():
    x = tf.placeholder(tf.float32, [None, 2], name="x")
    y = tf.random_shuffle(x, seed=5)
    fn, program, state = compile_graph([y], [x])
    assert "random_shuffle" in kinds(fn)
    for rows in (1, 7, 16):
        values = {"x:0": np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)}
        got = run_program(program, dict(state), values, rows)[1]
        want = run_function(fn, dict(state), values)[1]
        np.testing.assert_array_equal(got["RandomShuffle:0"], want["RandomShuffle:0"])
        assert sorted(got["RandomShuffle:0"][:, 0]) == list(values["x:0"][:, 0])


# ----------------------------------------------------------------------------- matmul
def test_batched_matmul_with_broadcasting_and_transposes():
    a = tf.placeholder(tf.float32, [None, 2, 3], name="a")
    b = tf.placeholder(tf.float32, [None, 3, 4], name="b")
    c = tf.placeholder(tf.float32, [None, 1, 2, 3], name="c")
    w, v = weight(3, 4, name="w"), weight(2, 3, 4, name="v")
    ys = [tf.matmul(a, b), tf.matmul(a, w), tf.matmul(c, v), tf.matmul(w, a, transpose_a=True, transpose_b=True),
          tf.matmul(b, a, transpose_a=True, transpose_b=True)]
    ga, gb, gc = tf.gradients(sum_sq(*ys), [a, b, c])
    fn, program = check(ys + [ga, gb, gc], {a: floats(None, 2, 3), b: floats(None, 3, 4, seed=7),
                                           c: floats(None, 1, 2, 3, seed=9)})
    assert "matmul" in kinds(fn)
    assert any(g.batch is not None for g in gemms(program))
    assert any(g.batch is None and "Batch" in repr(g.m) for g in gemms(program))  # [N,2,3] x [3,4] folded


def test_dense_bias_relu_is_one_gemm_with_its_epilogue():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w, b = weight(3, 5, name="w"), weight(5, name="b")
    y = tf.nn.relu(tf.matmul(x, w) + b)
    _, program = check([y], {x: floats(None, 3)})
    assert len(program.kernels) == 1
    (g,) = gemms(program)
    assert "relu" in str(g.epilogue) and "state_b" in str(g.epilogue)


def test_epilogue_with_a_copied_constant_and_a_random_draw():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    h = tf.matmul(x, weight(3, 5, name="w")) + tf.constant(np.arange(5, dtype=np.float32))
    y = tf.nn.dropout(h, keep_prob=0.5, seed=4)
    _, program = check([h, y], {x: floats(None, 3)})
    (g,) = gemms(program)
    assert "Random" in str(g.epilogue) and "const" in str(g.epilogue)


def test_matmul_prologue_runs_before_the_gemm():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w = weight(3, 2, name="w")
    y = tf.matmul(tf.nn.relu(x) * 2.0, w)
    fn, program = check([y], {x: floats(None, 3)})
    assert "prologue" in kinds(fn)
    assert [k.name.split("_")[0] for k in program.kernels] == ["prologue", "gemm"]


def test_unfused_kinds_lower_as_groups_of_one():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w = weight(3, 3, name="w")
    y = tf.reduce_sum(tf.nn.relu(tf.matmul(x, w) + tf.broadcast_to(tf.constant([1.0, 2.0, 3.0]), [2, 3])[0]),
                      axis=1)
    fn, _ = check([y], {x: floats(None, 3)}, passes=[p for p in PIPELINE if p != "fusion"])
    assert "fused" not in {ins.kind for ins in fn.body}
    assert {"matmul", "reduce_sum", "relu"} <= kinds(fn)

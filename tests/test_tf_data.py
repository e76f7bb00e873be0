"""tf.data on TF1 graphs: sources and transformations (iterators: test_tf_data_iterators.py).

Pipelines in tests/tf_data_cases.py are compared with real TF's output recorded in
tests/goldens/tf_data.json; the other expectations come from numpy, and element specs and
error types are those TF 2.21 (tf.compat.v1) reports for the same calls.  Shuffle orders cannot match TF's (a
different RNG), so the buffer semantics are tested structurally and statistically.
"""
import collections
import json
import pathlib

import numpy as np
import pytest

from compiler import tf
from tests.tf_data_cases import CASES, run
from tests.tf_data_kit import drain, elements, scalars

GOLDENS = json.loads((pathlib.Path(__file__).parent / "goldens" / "tf_data.json").read_text())["cases"]


# ----------------------------------------------------------------------------- vs TensorFlow
def test_goldens_cover_every_case():
    assert sorted(GOLDENS) == sorted(CASES)  # else rerun tests/goldens/make_tf_data.py


@pytest.mark.parametrize("name", sorted(CASES))
def test_pipeline_matches_tensorflow(name):
    """Specs and every element equal what TF 2.21 produced for the same pipeline."""
    want, got = GOLDENS[name], run(tf, CASES[name](tf))
    assert got["types"] == want["types"] and got["shapes"] == want["shapes"]
    assert len(got["elements"]) == len(want["elements"])
    for g_el, w_el in zip(got["elements"], want["elements"]):
        for g, w in zip(g_el, w_el):
            assert (g["dtype"], g["shape"]) == (w["dtype"], w["shape"])
            np.testing.assert_allclose(g["value"], w["value"], rtol=1e-6)


# ----------------------------------------------------------------------------- sources
def test_from_tensor_slices_tuple_specs_and_rows():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    y = np.arange(5)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    assert ds.output_types == (tf.float32, tf.int64)
    assert ds.output_shapes == (tf.TensorShape([2]), tf.TensorShape([]))
    assert ds.element_spec == (tf.TensorSpec([2], tf.float32), tf.TensorSpec([], tf.int64))
    got = elements(ds)
    assert len(got) == 5
    for i, (xi, yi) in enumerate(got):
        np.testing.assert_array_equal(xi, x[i])
        assert yi == y[i] and xi.dtype == np.float32


def test_from_tensor_slices_dict_and_python_lists():
    ds = tf.data.Dataset.from_tensor_slices({"b": [1, 2, 3], "a": [[1.5], [2.5], [3.5]]})
    assert ds.output_types == {"a": tf.float32, "b": tf.int32}  # TF's defaults for Python values
    assert ds.output_shapes == {"a": tf.TensorShape([1]), "b": tf.TensorShape([])}
    got = elements(ds)
    assert [int(e["b"]) for e in got] == [1, 2, 3]
    assert [float(e["a"][0]) for e in got] == [1.5, 2.5, 3.5]


def test_from_tensor_slices_bad_inputs():
    with pytest.raises(ValueError, match="Dimensions 3 and 4 are not compatible"):
        tf.data.Dataset.from_tensor_slices((np.zeros(3), np.zeros(4)))
    with pytest.raises(ValueError, match="rank >= 1"):
        tf.data.Dataset.from_tensor_slices(1.0)


def test_from_tensor_slices_copies_its_input():
    x = np.arange(3)
    ds = tf.data.Dataset.from_tensor_slices(x)
    x[:] = 7
    assert scalars(ds) == [0, 1, 2]


def test_from_tensors_range_zip():
    x = np.arange(6).reshape(3, 2)
    ds = tf.data.Dataset.from_tensors(x)
    assert ds.output_shapes == tf.TensorShape([3, 2])
    got = elements(ds)
    assert len(got) == 1 and np.array_equal(got[0], x)
    assert tf.data.Dataset.range(5).output_types == tf.int64
    assert scalars(tf.data.Dataset.range(5)) == list(range(5))
    assert scalars(tf.data.Dataset.range(2, 10, 3)) == [2, 5, 8]
    assert scalars(tf.data.Dataset.range(5, 0, -2)) == [5, 3, 1]
    z = tf.data.Dataset.zip((tf.data.Dataset.range(3), tf.data.Dataset.from_tensor_slices(x[:, 0] * 10).repeat()))
    assert z.output_shapes == (tf.TensorShape([]), tf.TensorShape([]))
    assert [(int(a), int(b)) for a, b in elements(z)] == [(0, 0), (1, 20), (2, 40)]  # the shortest ends it
    d = tf.data.Dataset.zip({"i": tf.data.Dataset.range(2), "s": tf.data.Dataset.range(10, 12)})
    assert [(int(e["i"]), int(e["s"])) for e in elements(d)] == [(0, 10), (1, 11)]


def test_from_generator():
    def gen():
        for i in range(4):
            yield i, np.full(2, i, np.float32)
    ds = tf.data.Dataset.from_generator(gen, (tf.int64, tf.float32), (tf.TensorShape([]), tf.TensorShape([2])))
    got = elements(ds.repeat(2))  # the generator is called anew for each pass
    assert [int(a) for a, _ in got] == [0, 1, 2, 3] * 2
    assert got[3][1].tolist() == [3.0, 3.0]
    bad = tf.data.Dataset.from_generator(lambda: iter([[1, 2], [3]]), tf.int32, tf.TensorShape([2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="shape"):
        elements(bad)


# ----------------------------------------------------------------------------- map / filter
def test_map_cast_one_hot_matches_numpy():
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4)).astype(np.uint8)
    labels = np.array([0, 3, 9, 1, 1, 5])
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.one_hot(y, 10)), num_parallel_calls=tf.data.AUTOTUNE)
    assert ds.output_types == (tf.float32, tf.float32)
    assert ds.output_shapes == (tf.TensorShape([4, 4]), tf.TensorShape([10]))
    got = elements(ds)
    for i, (x, y) in enumerate(got):
        np.testing.assert_allclose(x, images[i].astype(np.float32) / np.float32(255.0), rtol=1e-6)
        np.testing.assert_array_equal(y, np.eye(10, dtype=np.float32)[labels[i]])


def test_map_structures_dict_list_and_after_batch():
    ds = tf.data.Dataset.from_tensor_slices({"a": np.arange(4), "b": np.arange(4) * 10})
    got = elements(ds.map(lambda d: [d["a"] + d["b"], d["a"] * 2]))  # a list result becomes a tuple
    assert [tuple(int(v) for v in e) for e in got] == [(0, 0), (11, 2), (22, 4), (33, 6)]
    batched = tf.data.Dataset.range(5).batch(2).map(lambda v: tf.reduce_sum(v))  # per batch
    assert scalars(batched) == [1, 5, 4]


def test_map_random_op_draws_new_values_repeatable_under_a_graph_seed():
    def draws():
        tf.set_random_seed(3)
        return [tuple(v) for v in elements(tf.data.Dataset.range(4).map(lambda v: tf.random_uniform([3])))]
    with tf.Graph().as_default():
        first = draws()
    with tf.Graph().as_default():
        again = draws()
    assert len(set(first)) == 4 and first == again


def test_map_using_an_outer_tensor_is_a_clear_error():
    outer = tf.constant(3, tf.int64)
    with pytest.raises(ValueError, match="graph of their own"):
        tf.data.Dataset.range(3).map(lambda v: v + outer)


def test_filter():
    ds = tf.data.Dataset.range(10).filter(lambda v: tf.equal(v % 3, 0))
    assert scalars(ds) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="must return a `tf.bool` scalar"):
        tf.data.Dataset.range(3).filter(lambda v: v)


# ----------------------------------------------------------------------------- batch / unbatch
def test_batch_shapes_and_partial_last_batch():
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(7)))
    assert ds.batch(3).output_shapes == (tf.TensorShape([None, 2]), tf.TensorShape([None]))
    assert ds.batch(3, drop_remainder=True).output_shapes == (tf.TensorShape([3, 2]), tf.TensorShape([3]))
    nxt = ds.batch(3).make_one_shot_iterator().get_next()
    assert nxt[0].shape.as_list() == [None, 2]
    got = drain(nxt)
    assert [b[0].shape for b in got] == [(3, 2), (3, 2), (1, 2)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x)
    assert [len(b[1]) for b in elements(ds.batch(3, drop_remainder=True))] == [3, 3]
    nested = ds.batch(2, drop_remainder=True).batch(2)
    assert nested.output_shapes[0] == tf.TensorShape([None, 2, 2])
    assert [e[0].shape for e in elements(nested)] == [(2, 2, 2), (1, 2, 2)]


def test_batch_errors():
    with pytest.raises(tf.errors.InvalidArgumentError, match="Batch size must be greater than zero"):
        tf.data.Dataset.range(3).batch(0)
    ragged = tf.data.Dataset.from_generator(lambda: iter([[1, 2], [3]]), tf.int32, tf.TensorShape([None]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Cannot batch tensors with different shapes in component 0"):
        elements(ragged.batch(2).unbatch())  # (batch(2) alone has no Kiln get_next: shape (?, ?))
    with pytest.raises(ValueError, match="only the leading dim"):
        tf.data.Dataset.range(8).batch(2).batch(2).make_one_shot_iterator().get_next()


def test_padded_batch_and_interleave_errors():
    ragged = tf.data.Dataset.from_generator(lambda: iter([[1, 2, 3]]), tf.int32, tf.TensorShape([None]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="pad to a smaller size"):
        elements(ragged.padded_batch(1, padded_shapes=[2]))
    with pytest.raises(ValueError, match="not compatible with the shape"):
        ragged.padded_batch(1, padded_shapes=[2, 2])
    with pytest.raises(ValueError, match="only the leading dim"):  # padded to the longest: (?, ?)
        ragged.padded_batch(2).make_one_shot_iterator().get_next()
    with pytest.raises(TypeError, match="must return a `Dataset`"):
        tf.data.Dataset.range(3).flat_map(lambda v: v)
    outer = tf.constant([1, 2], tf.int64)
    with pytest.raises(ValueError, match="enclosing graph"):
        tf.data.Dataset.range(3).flat_map(lambda v: tf.data.Dataset.from_tensor_slices(outer))


def test_unbatch_inverts_batch():
    assert scalars(tf.data.Dataset.range(7).batch(3).unbatch()) == list(range(7))


# ----------------------------------------------------------------------------- repeat ... cache
def test_repeat_take_skip_shard_concatenate_enumerate_prefetch():
    r = tf.data.Dataset.range
    assert scalars(r(3).repeat(2)) == [0, 1, 2, 0, 1, 2]
    assert scalars(r(3).repeat().take(7)) == [0, 1, 2, 0, 1, 2, 0]
    assert scalars(r(3).repeat(0)) == []
    assert scalars(r(0).repeat()) == []  # an empty input ends an endless repeat
    assert scalars(r(5).take(2)) == [0, 1] and scalars(r(5).take(-1)) == list(range(5))
    assert scalars(r(5).skip(3)) == [3, 4] and scalars(r(5).skip(-1)) == []
    assert scalars(r(10).shard(3, 1)) == [1, 4, 7]
    assert scalars(r(2).concatenate(r(5, 7))) == [0, 1, 5, 6]
    assert [(int(i), int(v)) for i, v in elements(r(10, 12).enumerate(start=1))] == [(1, 10), (2, 11)]
    assert scalars(r(4).prefetch(tf.data.experimental.AUTOTUNE)) == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="Incompatible"):
        r(2).concatenate(tf.data.Dataset.from_tensor_slices(np.zeros(2, np.float32)))


def test_experimental_transformations_through_apply():
    got = scalars(tf.data.Dataset.range(6).apply(tf.data.experimental.shuffle_and_repeat(3, count=2, seed=1)))
    assert sorted(got[:6]) == sorted(got[6:]) == list(range(6))
    batches = elements(tf.data.Dataset.range(5).apply(tf.data.experimental.map_and_batch(lambda v: v * 2, 2)))
    assert [b.tolist() for b in batches] == [[0, 2], [4, 6], [8]]


def test_cache_replays_the_first_pass():
    calls = []

    def gen():
        calls.append(1)
        yield from range(3)
    ds = tf.data.Dataset.from_generator(gen, tf.int64, tf.TensorShape([])).cache().repeat(3)
    assert scalars(ds) == [0, 1, 2] * 3
    assert len(calls) == 1
    calls.clear()
    uncached = tf.data.Dataset.from_generator(gen, tf.int64, tf.TensorShape([])).repeat(3)
    assert scalars(uncached) == [0, 1, 2] * 3 and len(calls) == 3


# ----------------------------------------------------------------------------- shuffle
def test_shuffle_is_a_permutation_per_epoch_and_reshuffles():
    ds = tf.data.Dataset.range(20).shuffle(5, seed=3).repeat(3)
    got = scalars(ds)
    epochs = [got[i * 20:(i + 1) * 20] for i in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(20))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    same = scalars(tf.data.Dataset.range(20).shuffle(5, seed=3, reshuffle_each_iteration=False).repeat(2))
    assert same[:20] == same[20:] and same[:20] != list(range(20))


def test_shuffle_buffer_of_one_keeps_order_and_seeds_repeat():
    assert scalars(tf.data.Dataset.range(10).shuffle(1)) == list(range(10))
    first = scalars(tf.data.Dataset.range(30).shuffle(8, seed=42))
    with tf.Graph().as_default():
        again = scalars(tf.data.Dataset.range(30).shuffle(8, seed=42))
    with tf.Graph().as_default():
        tf.set_random_seed(7)  # a graph seed alone also makes the order repeatable
        g1 = scalars(tf.data.Dataset.range(30).shuffle(8))
    with tf.Graph().as_default():
        tf.set_random_seed(7)
        g2 = scalars(tf.data.Dataset.range(30).shuffle(8))
    assert first == again and g1 == g2
    assert first != list(range(30))


def test_shuffle_is_a_buffer_not_a_full_permutation():
    """With buffer k, output position p holds an element of index <= p + k - 1, and the
    first output is uniform over the first k elements."""
    k, n = 4, 40
    firsts = collections.Counter()
    for seed in range(200):
        with tf.Graph().as_default():
            order = scalars(tf.data.Dataset.range(n).shuffle(k, seed=seed))
        assert sorted(order) == list(range(n))
        assert all(v <= p + k - 1 for p, v in enumerate(order))
        firsts[order[0]] += 1
    assert set(firsts) == set(range(k))
    assert all(30 <= c <= 70 for c in firsts.values())  # 50 expected each


def test_shuffle_with_full_buffer_spreads_elements():
    order = scalars(tf.data.Dataset.range(100).shuffle(100, seed=0))
    assert max(order[:10]) > 50  # a full buffer draws from the whole dataset at once

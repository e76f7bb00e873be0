"""tf.data pipelines written once against the TF1 API, run by real TensorFlow to record
goldens (tests/goldens/make_tf_data.py -> tests/goldens/tf_data.json) and by Kiln in
tests/test_tf_data.py.  Each case maps a ``tf`` module to a Dataset; no shuffling (TF's
order comes from another RNG), every element deterministic."""
import numpy as np

X = np.arange(24, dtype=np.float32).reshape(12, 2) / 4
Y = np.arange(12) % 5
U8 = (np.arange(6 * 9).reshape(6, 3, 3) * 7 % 256).astype(np.uint8)


def _ragged():
    for n in (1, 3, 2, 4, 2):
        yield [n] * n


CASES = {
    "slices_batch": lambda tf: tf.data.Dataset.from_tensor_slices((X, Y)).batch(5),
    "python_lists": lambda tf: tf.data.Dataset.from_tensor_slices(([1.5, 2.5], [1, 2])),
    "dict_map": lambda tf: tf.data.Dataset.from_tensor_slices({"a": Y, "b": Y * 3}).map(
        lambda d: {"s": d["a"] + d["b"], "p": d["a"] * 2}),
    "cast_one_hot": lambda tf: tf.data.Dataset.from_tensor_slices((U8, Y[:6])).map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.one_hot(y, 10))).batch(4),
    "map_list_result": lambda tf: tf.data.Dataset.range(3).map(lambda v: [v, v + 1]),
    "batch_then_map": lambda tf: tf.data.Dataset.range(7).batch(3).map(lambda v: tf.reduce_sum(v)),
    "filter_skip_take": lambda tf: tf.data.Dataset.range(20).filter(lambda v: tf.equal(v % 3, 0)).skip(1).take(4),
    "range_negative_step": lambda tf: tf.data.Dataset.range(10, 0, -3),
    "repeat_shard_enumerate": lambda tf: tf.data.Dataset.range(5).repeat(3).shard(4, 1).enumerate(10),
    "zip_concatenate": lambda tf: tf.data.Dataset.zip((tf.data.Dataset.range(4), tf.data.Dataset.range(10, 20)))
    .concatenate(tf.data.Dataset.zip((tf.data.Dataset.range(100, 102), tf.data.Dataset.range(200, 202)))),
    "drop_remainder_unbatch": lambda tf: tf.data.Dataset.range(11).batch(3, drop_remainder=True).unbatch().batch(4),
    "from_tensors_dict": lambda tf: tf.data.Dataset.from_tensors({"m": X[:3], "n": 7}).repeat(2),
    "padded_batch": lambda tf: tf.data.Dataset.from_generator(_ragged, tf.int32, tf.TensorShape([None]))
    .padded_batch(2, padded_shapes=[5], padding_values=-1),
    "padded_batch_tuple": lambda tf: tf.data.Dataset.zip((
        tf.data.Dataset.from_generator(_ragged, tf.int32, tf.TensorShape([None])), tf.data.Dataset.range(5)))
    .padded_batch(3, padded_shapes=([4], []), drop_remainder=True),
    "interleave": lambda tf: tf.data.Dataset.range(1, 6).interleave(
        lambda v: tf.data.Dataset.from_tensor_slices(tf.stack([v, v * 10, v * 100])), cycle_length=2, block_length=2),
    "flat_map": lambda tf: tf.data.Dataset.range(3).flat_map(lambda v: tf.data.Dataset.from_tensors(v * 2).repeat(2)),
    "cache_repeat": lambda tf: tf.data.Dataset.range(4).map(lambda v: v * v).cache().repeat(2),
    "shuffle_buffer_one": lambda tf: tf.data.Dataset.range(6).shuffle(1).batch(4),
}


def _flatten(value) -> list:
    """tf.nest.flatten for tuples and dicts (sorted keys); ``tf`` may lack tf.nest."""
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in _flatten(value[k])]
    if isinstance(value, tuple):
        return [x for v in value for x in _flatten(v)]
    return [value]


def run(tf, dataset) -> dict:
    """The element specs and every element of ``dataset`` (flattened, JSON-ready)."""
    flat_types = _flatten(tf.data.get_output_types(dataset))
    flat_shapes = _flatten(tf.data.get_output_shapes(dataset))
    nxt = _flatten(tf.data.make_one_shot_iterator(dataset).get_next())
    elements = []
    with tf.Session() as sess:
        while True:
            try:
                values = sess.run(nxt)
            except tf.errors.OutOfRangeError:
                break
            elements.append([{"dtype": np.asarray(v).dtype.name, "shape": list(np.shape(v)),
                              "value": np.asarray(v).ravel().tolist()} for v in values])
    return {"types": [t.name for t in flat_types], "shapes": [s.as_list() for s in flat_shapes],
            "elements": elements}

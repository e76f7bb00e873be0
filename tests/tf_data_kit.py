"""Helpers of the tf.data tests: read an iterator or a dataset to its end."""
from compiler import tf


def drain(tensors, sess=None, feed=None, limit=10_000):
    """Every value ``tensors`` takes until the iterator ends (OutOfRangeError)."""
    sess = sess or tf.Session()
    out = []
    for _ in range(limit):
        try:
            out.append(sess.run(tensors, feed))
        except tf.errors.OutOfRangeError:
            return out
    raise AssertionError("the iterator did not end")


def elements(dataset):
    """Every element of ``dataset`` (through a one-shot iterator)."""
    return drain(dataset.make_one_shot_iterator().get_next())


def scalars(dataset):
    """Every element of a dataset of scalars, as Python ints."""
    return [int(v) for v in elements(dataset)]

"""tf.data.Dataset (TF1 graph mode): a description of a host pipeline, read through iterators.

Every method returns a new Dataset over a pipeline node (sources.py, transforms.py); no
element is produced until a Session pulls from an iterator (iterators.py).
"""
from __future__ import annotations

import os

from ...ir.types import int64
from ..graph import get_default_graph
from . import iterators, sources, transforms
from .functions import TracedDatasetFunction, TracedFunction
from .structure import (TensorSpec, check_same_structure, flatten, is_nested, map_structure, output_classes,
                        output_shapes, output_types, pack, specs_from)

AUTOTUNE = -1  # tf.data.AUTOTUNE / tf.data.experimental.AUTOTUNE: accepted, Kiln runs one pipeline thread


def _most_specific(x, y) -> TensorSpec:
    """The spec both ``x`` and ``y`` satisfy (dims that differ become unknown)."""
    if len(x.dims) != len(y.dims):
        raise TypeError(f"Incompatible dataset elements: {x!r} vs. {y!r} (different ranks)")
    return TensorSpec(tuple(a if a == b else None for a, b in zip(x.dims, y.dims)), x.dtype)


class Dataset:
    """tf.data.Dataset: a pipeline of elements (nested tuples/dicts of arrays) run on the host."""

    def __init__(self, node):
        self._node = node

    # --- sources --------------------------------------------------------------------------
    @staticmethod
    def from_tensor_slices(tensors, name=None):
        """A dataset of the rows of ``tensors`` (arrays, tensors or a tuple/dict of them)."""
        return Dataset(sources.TensorSlices(tensors))

    @staticmethod
    def from_tensors(tensors, name=None):
        """A dataset with ``tensors`` as its single element."""
        return Dataset(sources.Tensors(tensors))

    @staticmethod
    def range(*args, output_type=int64, name=None):
        """Scalars ``range(start, stop, step)`` (int64 by default)."""
        return Dataset(sources.Range(args, output_type))

    @staticmethod
    def zip(datasets, name=None):
        """Elements combining one element of each dataset (a tuple or dict of datasets)."""
        if isinstance(datasets, Dataset):
            datasets = (datasets,)
        if not is_nested(datasets) or not all(isinstance(d, Dataset) for d in flatten(datasets)):
            raise TypeError(f"Dataset.zip expects a (nested) tuple or dict of datasets, got {datasets!r}")
        return Dataset(sources.Zip(map_structure(lambda d: d._node, datasets)))

    @staticmethod
    def from_generator(generator, output_types=None, output_shapes=None, args=None, output_signature=None,
                       name=None):
        """Elements yielded by ``generator(*args)`` (called anew for every pass), converted
        to ``output_types`` and checked against ``output_shapes`` (required by Kiln)."""
        if output_signature is not None:
            structure = output_signature
        else:
            if output_types is None:
                raise TypeError("from_generator needs `output_types` (or `output_signature`)")
            structure = specs_from(output_types, output_shapes)
        return Dataset(sources.Generator(generator, structure, args))

    # --- structure (TF1 attributes and element_spec) --------------------------------------
    @property
    def element_spec(self):
        """The nested TensorSpecs of an element."""
        return self._node.structure

    @property
    def output_types(self):
        return output_types(self._node.structure)

    @property
    def output_shapes(self):
        return output_shapes(self._node.structure)

    @property
    def output_classes(self):
        return output_classes(self._node.structure)

    # --- transformations ------------------------------------------------------------------
    def map(self, map_func, num_parallel_calls=None, deterministic=None, name=None):
        """Apply ``map_func`` (traced once into graph ops) to every element."""
        fn = TracedFunction(map_func, self._node.structure, "Dataset.map")
        return Dataset(transforms.Map(self._node, fn))

    def filter(self, predicate, name=None):
        """Keep the elements where ``predicate`` (a scalar tf.bool function) is true."""
        fn = TracedFunction(predicate, self._node.structure, "Dataset.filter")
        return Dataset(transforms.Filter(self._node, fn))

    def flat_map(self, map_func, name=None):
        """The elements of the datasets ``map_func`` returns for each element, in order."""
        return self.interleave(map_func, cycle_length=1, block_length=1)

    def interleave(self, map_func, cycle_length=None, block_length=None, num_parallel_calls=None,
                   deterministic=None, name=None):
        """Read the datasets ``map_func`` returns ``cycle_length`` at a time, round robin,
        ``block_length`` elements each (cycle_length None or AUTOTUNE: the CPU count, as TF)."""
        if cycle_length is None or cycle_length == AUTOTUNE:
            cycle_length = os.cpu_count() or 1
        fn = TracedDatasetFunction(map_func, self._node.structure, "Dataset.interleave")
        return Dataset(transforms.Interleave(self._node, fn, cycle_length, 1 if block_length is None else block_length))

    def batch(self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None, name=None):
        """Stack ``batch_size`` consecutive elements (leading dim None unless drop_remainder)."""
        return Dataset(transforms.Batch(self._node, batch_size, drop_remainder))

    def padded_batch(self, batch_size, padded_shapes=None, padding_values=None, drop_remainder=False, name=None):
        """Batch, padding each component to ``padded_shapes`` (None/-1 dims: the batch's
        largest; Kiln's get_next needs every dim but the batch dim known)."""
        return Dataset(transforms.PaddedBatch(self._node, batch_size, padded_shapes, padding_values, drop_remainder))

    def unbatch(self, name=None):
        """Split each element along its first dim."""
        return Dataset(transforms.Unbatch(self._node))

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=None, name=None):
        """Shuffle through a buffer of ``buffer_size`` elements (TF's buffer semantics)."""
        return Dataset(transforms.Shuffle(self._node, buffer_size, seed, reshuffle_each_iteration))

    def repeat(self, count=None, name=None):
        """Repeat the dataset ``count`` times (None or -1: forever)."""
        return Dataset(transforms.Repeat(self._node, count))

    def take(self, count, name=None):
        """The first ``count`` elements (-1: all)."""
        return Dataset(transforms.Take(self._node, count))

    def skip(self, count, name=None):
        """All but the first ``count`` elements (-1: none)."""
        return Dataset(transforms.Skip(self._node, count))

    def shard(self, num_shards, index, name=None):
        """Every ``num_shards``-th element starting at ``index``."""
        return Dataset(transforms.Shard(self._node, num_shards, index))

    def cache(self, filename="", name=None):
        """Keep the first complete pass in memory and replay it (in-memory only)."""
        if filename:
            raise NotImplementedError("Dataset.cache: Kiln caches in memory only; call cache() "
                                      f"without a filename (got {filename!r})")
        return Dataset(transforms.Cache(self._node))

    def prefetch(self, buffer_size, name=None):
        """Accepted for compatibility: the pipeline produces each element when it is needed."""
        return Dataset(self._node)

    def concatenate(self, dataset, name=None):
        """This dataset's elements followed by ``dataset``'s (same structure and dtypes)."""
        mine, theirs = self._node.structure, dataset._node.structure
        check_same_structure(mine, theirs)
        if output_types(mine) != output_types(theirs):
            raise TypeError(f"Incompatible dataset elements: {mine!r} vs. {theirs!r}")
        merged = [_most_specific(x, y) for x, y in zip(flatten(mine), flatten(theirs))]
        return Dataset(transforms.Concatenate(self._node, dataset._node, pack(mine, merged)))

    def enumerate(self, start=0, name=None):
        """Elements ``(index, element)`` with int64 indices from ``start``."""
        count = Dataset(sources.Range((start, 2 ** 63 - 1), int64))
        return Dataset.zip((count, self))

    def apply(self, transformation_func):
        """``transformation_func(self)``, which must return a Dataset."""
        result = transformation_func(self)
        if not isinstance(result, Dataset):
            raise TypeError("`transformation_func` must return a Dataset.")
        return result

    # --- iterators ------------------------------------------------------------------------
    def make_one_shot_iterator(self):
        """An iterator that starts by itself on first use (no captured placeholders)."""
        return iterators.Iterator.one_shot(self._node, get_default_graph())

    def make_initializable_iterator(self, shared_name=None):
        """An iterator started (or restarted) by running its ``initializer``."""
        return iterators.Iterator.initializable(self._node, get_default_graph())

    def __iter__(self):
        raise RuntimeError("`tf.data.Dataset` only supports Python-style iteration in eager mode or "
                           "within tf.function; in a TF1 graph use an iterator (make_one_shot_iterator)")

    def __repr__(self):
        return f"<Dataset element_spec={self.element_spec!r}>"


def shuffle_and_repeat(buffer_size, count=None, seed=None):
    """tf.data.experimental.shuffle_and_repeat: for ``dataset.apply``; shuffle (anew each
    epoch), then repeat."""
    return lambda dataset: dataset.shuffle(buffer_size, seed).repeat(count)


def map_and_batch(map_func, batch_size, num_parallel_batches=None, drop_remainder=False, num_parallel_calls=None):
    """tf.data.experimental.map_and_batch: for ``dataset.apply``; map, then batch."""
    return lambda dataset: dataset.map(map_func).batch(batch_size, drop_remainder)


TF_API = {
    "tf": {"TensorSpec": TensorSpec},
    "tf.data": {
        "Dataset": Dataset, "Iterator": iterators.Iterator, "AUTOTUNE": AUTOTUNE,
        "make_one_shot_iterator": iterators.make_one_shot_iterator,
        "make_initializable_iterator": iterators.make_initializable_iterator,
        "get_output_types": iterators.get_output_types, "get_output_shapes": iterators.get_output_shapes,
        "get_output_classes": iterators.get_output_classes,
    },
    "tf.data.experimental": {"AUTOTUNE": AUTOTUNE, "shuffle_and_repeat": shuffle_and_repeat,
                             "map_and_batch": map_and_batch},
}

"""Pipeline transformations: map, interleave/flat_map, filter, batch, padded_batch, unbatch,
shuffle, repeat, take, skip, shard, concatenate, cache.  Each is a :class:`Node` over its
input's elements (tuples of arrays)."""
from __future__ import annotations

import numpy as np

from .. import errors
from ..graph import get_default_graph
from ..ops.random_ops import get_seed
from .pipeline import Context, Node
from .structure import TensorSpec, flatten_up_to, map_structure, pack


def _positive(value, what: str) -> int:
    """``value`` as an int; zero or less is TF's InvalidArgumentError naming ``what``."""
    value = int(value)
    if value <= 0:
        raise errors.InvalidArgumentError(None, None, f"{what} must be greater than zero.")
    return value


class Map(Node):
    """Apply a traced function to every element."""

    def __init__(self, node, fn):
        self.fn = fn
        super().__init__(fn.structure, (node,))

    def elements(self, ctx):
        for element in self.inputs[0].elements(ctx):
            yield tuple(self.fn(element))


class Interleave(Node):
    """``interleave``/``flat_map``: each input element opens the dataset ``fn`` returns for
    it; ``cycle_length`` of them are read round robin, ``block_length`` elements at a time,
    and a finished one's slot takes the next input element (TF's order exactly)."""

    def __init__(self, node, fn, cycle_length, block_length):
        self.fn = fn
        self.cycle_length = _positive(cycle_length, "cycle_length")
        self.block_length = _positive(block_length, "block_length")
        super().__init__(fn.structure, (node,))

    def elements(self, ctx):
        source = self.inputs[0].elements(ctx)
        slots = [None] * self.cycle_length
        cycle = block = 0
        end_of_input = False
        while not end_of_input or any(s is not None for s in slots):
            if slots[cycle] is not None:
                element = next(slots[cycle], None)
                if element is not None:
                    block += 1
                    if block == self.block_length:
                        cycle, block = (cycle + 1) % self.cycle_length, 0
                    yield element
                    continue
                slots[cycle] = None
            elif not end_of_input:
                element = next(source, None)
                if element is None:
                    end_of_input = True
                else:
                    slots[cycle] = iter(self.fn.node.elements(Context(self.fn(element))))
                continue
            cycle, block = (cycle + 1) % self.cycle_length, 0


class Filter(Node):
    """Keep the elements for which a traced predicate (a scalar bool) is true."""

    def __init__(self, node, predicate):
        spec = predicate.structure
        if not isinstance(spec, TensorSpec) or spec.dims != () or spec.dtype.name != "bool":
            raise ValueError("Invalid `predicate`. `predicate` must return a `tf.bool` scalar tensor, "
                             f"but its return type is {spec!r}.")
        self.predicate = predicate
        super().__init__(node.structure, (node,))

    def elements(self, ctx):
        for element in self.inputs[0].elements(ctx):
            if self.predicate(element)[0]:
                yield element


def _stack(rows):
    """Stack one component of a batch: (array, None), or (None, (index, shape)) of the
    first element whose shape differs from the first one's."""
    first = rows[0].shape
    for i, row in enumerate(rows):
        if row.shape != first:
            return None, (i, row.shape)
    return np.stack(rows), None


class Batch(Node):
    """Group consecutive elements; the last batch may be short unless ``drop_remainder``."""

    def __init__(self, node, batch_size, drop_remainder, element_structure=None):
        self.batch_size = _positive(batch_size, "Batch size")
        self.drop_remainder = bool(drop_remainder)
        lead = self.batch_size if self.drop_remainder else None
        element = node.structure if element_structure is None else element_structure
        super().__init__(map_structure(lambda s: TensorSpec((lead,) + s.dims, s.dtype), element), (node,))

    def elements(self, ctx):
        rows = []
        for element in self.inputs[0].elements(ctx):
            rows.append(element)
            if len(rows) == self.batch_size:
                yield self._batch(rows)
                rows = []
        if rows and not self.drop_remainder:
            yield self._batch(rows)

    def _batch(self, rows):
        """Stack ``rows`` into one array per component."""
        out = []
        for c in range(len(rows[0])):
            stacked, bad = _stack([r[c] for r in rows])
            if bad is not None:
                raise errors.InvalidArgumentError(
                    None, None, f"Cannot batch tensors with different shapes in component {c}. First element "
                                f"had shape {list(rows[0][c].shape)} and element {bad[0]} had shape {list(bad[1])}.")
            out.append(stacked)
        return tuple(out)


class PaddedBatch(Batch):
    """``padded_batch``: like Batch, each component padded with its padding value up to
    ``padded_shapes`` (a None/-1 dim: the batch's largest)."""

    def __init__(self, node, batch_size, padded_shapes, padding_values, drop_remainder):
        specs = node.specs
        shapes = [s.dims for s in specs] if padded_shapes is None else flatten_up_to(node.structure, padded_shapes)
        self.targets = [self._target(spec, shape, i) for i, (spec, shape) in enumerate(zip(specs, shapes))]
        values = [0] * len(specs) if padding_values is None else flatten_up_to(node.structure, padding_values)
        self.padding = [np.asarray(v, spec.dtype.np) for v, spec in zip(values, specs)]
        padded = pack(node.structure, [TensorSpec(t, s.dtype) for t, s in zip(self.targets, specs)])
        super().__init__(node, batch_size, drop_remainder, padded)

    @staticmethod
    def _target(spec, shape, index):
        """Component ``index``'s padded dims (None: the batch's largest), rank checked."""
        dims = tuple(None if d is None or (isinstance(d, int) and d < 0) else int(d)
                     for d in (shape.dims if hasattr(shape, "dims") else shape))
        if len(dims) != len(spec.dims):
            raise ValueError(f"The padded shape {list(dims)} is not compatible with the shape {list(spec.dims)} "
                             f"of component {index} of the input.")
        return dims

    def _batch(self, rows):
        """Stack ``rows`` into padded arrays, one per component."""
        out = []
        for c, (target, pad) in enumerate(zip(self.targets, self.padding)):
            parts = [r[c] for r in rows]
            size = tuple(max(p.shape[d] for p in parts) if t is None else t for d, t in enumerate(target))
            batch = np.full((len(parts),) + size, pad, dtype=pad.dtype)
            for i, p in enumerate(parts):
                if any(a > b for a, b in zip(p.shape, size)):
                    raise errors.InvalidArgumentError(
                        None, None, f"Attempted to pad to a smaller size than the input element (component {c}: "
                                    f"element shape {list(p.shape)}, padded shape {list(size)}).")
                batch[(i,) + tuple(slice(0, n) for n in p.shape)] = p
            out.append(batch)
        return tuple(out)


class Unbatch(Node):
    """Split every element along its first dim into that many elements."""

    def __init__(self, node):
        for s in node.specs:
            if not s.dims:
                raise ValueError("Cannot unbatch an input with scalar components.")
        super().__init__(map_structure(lambda s: TensorSpec(s.dims[1:], s.dtype), node.structure), (node,))

    def elements(self, ctx):
        for element in self.inputs[0].elements(ctx):
            sizes = {len(c) for c in element}
            if len(sizes) > 1:
                raise errors.InvalidArgumentError(None, None, "Input element must have the same batch "
                                                  f"size in each component, got {sorted(sizes)}")
            for i in range(sizes.pop()):
                yield tuple(c[i] for c in element)


class Shuffle(Node):
    """TF's shuffle buffer: hold ``buffer_size`` elements, emit a random one and put the next
    input element in its slot; when the input ends, emit the rest in random order.

    Seeds follow TF1 (``get_seed``: an op seed, or the graph seed); the order depends on
    (seeds, epoch) when ``reshuffle_each_iteration`` and on the seeds alone otherwise.
    Without any seed each iterator initialization draws fresh entropy.
    """

    def __init__(self, node, buffer_size, seed, reshuffle):
        self.buffer_size = _positive(buffer_size, "buffer_size")
        seeded = seed is not None or get_default_graph().seed is not None
        self.seeds = get_seed(seed) if seeded else None
        self.reshuffle = True if reshuffle is None else bool(reshuffle)
        super().__init__(node.structure, (node,))

    def _rng(self, ctx):
        """The generator of the next epoch of this pass (counts the epochs)."""
        epoch = ctx.state.get(self, 0)
        ctx.state[self] = epoch + 1
        base = list(self.seeds) if self.seeds is not None else [ctx.entropy(self)]
        return np.random.default_rng(base + ([epoch] if self.reshuffle else []))

    def elements(self, ctx):
        rng, buffer = self._rng(ctx), []
        for element in self.inputs[0].elements(ctx):
            if len(buffer) < self.buffer_size:
                buffer.append(element)
                continue
            i = int(rng.integers(len(buffer)))
            yield buffer[i]
            buffer[i] = element
        while buffer:
            i = int(rng.integers(len(buffer)))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()


class Repeat(Node):
    """Run the input ``count`` times (``None`` or -1: forever; an empty input ends it)."""

    def __init__(self, node, count):
        self.count = -1 if count is None else int(count)
        super().__init__(node.structure, (node,))

    def elements(self, ctx):
        epoch = 0
        while self.count < 0 or epoch < self.count:
            produced = False
            for element in self.inputs[0].elements(ctx):
                produced = True
                yield element
            epoch += 1
            if not produced:
                return


class Take(Node):
    """The first ``count`` elements (-1: all)."""

    def __init__(self, node, count):
        self.count = int(count)
        super().__init__(node.structure, (node,))

    def elements(self, ctx):
        if self.count == 0:
            return
        for i, element in enumerate(self.inputs[0].elements(ctx)):
            yield element
            if i + 1 == self.count:
                return


class Skip(Node):
    """All but the first ``count`` elements (-1: skip everything)."""

    def __init__(self, node, count):
        self.count = int(count)
        super().__init__(node.structure, (node,))

    def elements(self, ctx):
        for i, element in enumerate(self.inputs[0].elements(ctx)):
            if 0 <= self.count <= i:
                yield element


class Shard(Node):
    """Every ``num_shards``-th element, starting at ``index``."""

    def __init__(self, node, num_shards, index):
        self.num_shards = _positive(num_shards, "Number of shards")
        self.index = int(index)
        if not 0 <= self.index < self.num_shards:
            raise errors.InvalidArgumentError(None, None, f"Index must be between 0 and {self.num_shards - 1} "
                                              f"(currently index = {self.index}).")
        super().__init__(node.structure, (node,))

    def elements(self, ctx):
        for i, element in enumerate(self.inputs[0].elements(ctx)):
            if i % self.num_shards == self.index:
                yield element


class Concatenate(Node):
    """The elements of one dataset, then those of another (same structure and dtypes)."""

    def __init__(self, first, second, structure):
        super().__init__(structure, (first, second))

    def elements(self, ctx):
        for node in self.inputs:
            yield from node.elements(ctx)


class Cache(Node):
    """Keep the elements of the first complete pass in memory and replay them afterwards
    (for the life of the iterator initialization, as TF's in-memory cache; an unfinished
    pass is not kept)."""

    def __init__(self, node):
        super().__init__(node.structure, (node,))

    def elements(self, ctx):
        cached = ctx.state.get(self)
        if cached is not None:
            yield from cached
            return
        seen = []
        for element in self.inputs[0].elements(ctx):
            seen.append(element)
            yield element
        ctx.state[self] = seen

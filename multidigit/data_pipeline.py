"""Feed canvases to Keras: a numpy generator encodes grid targets per batch, tf.data prefetches ahead.

Targets are encoded per batch rather than once for the whole split: 20 000 stage-3 canvases would hold
~300 MB of (25, 25, 1, 6) float32 targets, while one batch costs well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from multidigit.boxes import TARGET_CHANNELS, encode_targets, grid_size
from multidigit.canvas import Canvases
from multidigit.constants import CANVAS_SIZE
from multidigit.preprocess import to_model_input


def batches(
    canvases: Canvases,
    batch_size: int,
    stride: int,
    boxes_per_cell: int,
    rng: np.random.Generator | None = None,
    neighbours: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One pass over the canvases in batches; shuffled when `rng` is given.

    Args:
        canvases: images (N, 100, 100) uint8, boxes (N, K, 4), labels (N, K).
        batch_size: canvases per batch (the last batch may be smaller).
        stride: pixels per grid cell.
        boxes_per_cell: anchor slots per cell.
        rng: draws a new order per pass; None keeps the file order.
        neighbours: `boxes.encode_targets`' neighbour-cell assignment.
    Yields:
        (x float32 (B, 100, 100, 1) in [0, 1], targets float32 (B, G, G, A, 6)).
    """
    order = rng.permutation(len(canvases)) if rng is not None else np.arange(len(canvases))
    for start in range(0, len(order), batch_size):
        idx = np.sort(order[start : start + batch_size])  # sorted: contiguous reads are faster
        x = to_model_input(canvases.images[idx])
        yield x, encode_targets(canvases.boxes[idx], canvases.labels[idx], stride, boxes_per_cell, neighbours)


def _signature(stride: int, boxes_per_cell: int) -> tuple:
    """The (x, targets) TensorSpecs of a batch."""
    import tensorflow as tf

    g = grid_size(stride)
    return (
        tf.TensorSpec((None, CANVAS_SIZE, CANVAS_SIZE, 1), tf.float32),
        tf.TensorSpec((None, g, g, boxes_per_cell, TARGET_CHANNELS), tf.float32),
    )


def make_dataset(
    canvases: Canvases,
    batch_size: int,
    stride: int,
    boxes_per_cell: int,
    prefetch: int,
    neighbours: bool = False,
):
    """A tf.data.Dataset over `batches` in file order, one pass per iteration (validation's feed).

    Args:
        canvases: the split to feed.
        batch_size: canvases per batch.
        stride: pixels per grid cell.
        boxes_per_cell: anchor slots per cell.
        prefetch: batches the generator runs ahead of the consumer.
        neighbours: `boxes.encode_targets`' neighbour-cell assignment.
    Returns:
        A dataset of (x, targets) batches; each iteration is one pass.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_generator(
        lambda: batches(canvases, batch_size, stride, boxes_per_cell, None, neighbours),
        output_signature=_signature(stride, boxes_per_cell),
    )
    # A known length gives Keras' progress bar its total (from_generator's cardinality is unknown).
    steps = -(-len(canvases) // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(prefetch)


def stream_batches(
    chunks: Iterator[Canvases],
    batch_size: int,
    stride: int,
    boxes_per_cell: int,
    rng: np.random.Generator,
    neighbours: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches over a stream of canvas chunks, each shuffled; a chunk's remainder opens the next batch,
    so an epoch of n canvases gives ceil(n / batch_size) batches whatever the chunk sizes."""
    pending = None
    for chunk in chunks:
        order = rng.permutation(len(chunk))
        parts = [chunk.images[order], chunk.boxes[order], chunk.labels[order]]
        if pending is not None:
            parts = [np.concatenate([a, b]) for a, b in zip(pending, parts, strict=True)]
        full = len(parts[0]) // batch_size * batch_size
        for start in range(0, full, batch_size):
            images, boxes, labels = (a[start : start + batch_size] for a in parts)
            yield to_model_input(images), encode_targets(boxes, labels, stride, boxes_per_cell, neighbours)
        pending = [a[full:] for a in parts]
    if pending is not None and len(pending[0]):
        yield (
            to_model_input(pending[0]),
            encode_targets(pending[1], pending[2], stride, boxes_per_cell, neighbours),
        )


def training_dataset(
    first: Canvases,
    feed,
    batch_size: int,
    stride: int,
    boxes_per_cell: int,
    prefetch: int,
    seed: int,
    epochs: int,
    neighbours: bool = False,
):
    """The training feed: one tf.data.Dataset of passes 0 .. epochs - 1, end to end, that `fit` reads
    with `steps_per_epoch` (the second value returned).

    Pass 0 is `first` shuffled as a whole, as `batches` does; pass e >= 1 reads epoch e's chunks from a
    `fresh.FreshFeed` when `feed` is given, else `first` reshuffled. Each pass has ceil(len(first) /
    batch_size) batches. One iterator serves the whole fit: given a finite dataset, Keras opens a new
    iterator every epoch, and on the 2-core machine that stalled 18-23 s before the first step of some
    epochs (2026-12-06, stage 3: 0-2 stalls in 3-4 epochs of ~60 s).

    Returns:
        (dataset of (x, targets) batches, batches per pass).
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def one_pass(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if epoch == 0 or feed is None:
            return batches(first, batch_size, stride, boxes_per_cell, rng, neighbours)
        return stream_batches(feed.chunks(epoch), batch_size, stride, boxes_per_cell, rng, neighbours)

    def every_pass() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for epoch in range(epochs):
            yield from one_pass(epoch)

    dataset = tf.data.Dataset.from_generator(every_pass, output_signature=_signature(stride, boxes_per_cell))
    return dataset.prefetch(prefetch), -(-len(first) // batch_size)


def subset(canvases: Canvases, limit: int) -> Canvases:
    """The first `limit` canvases (all when limit is 0 or exceeds the split)."""
    if limit <= 0 or limit >= len(canvases):
        return canvases
    return Canvases(canvases.images[:limit], canvases.boxes[:limit], canvases.labels[:limit])

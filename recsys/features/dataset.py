"""The training input pipeline: encoded feature files streamed through tf.data in bounded memory.

Examples are read from Parquet in chunks of :data:`CHUNK_ROWS`, shuffled within a chunk (the shuffle of
an epoch is a pure function of the seed and the epoch), and batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys import tasks as task_spec
from recsys.features.spec import FeatureSpec
from recsys.tasks import Task

CHUNK_ROWS = 65_536


def _columns(spec: FeatureSpec) -> list[str]:
    return [f"x_{n}" for n in spec.categorical] + ["x_title", "x_numeric", "x_position"]


def batch_to_arrays(
    table, spec: FeatureSpec, tasks: Sequence[Task] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A pyarrow table/record batch of encoded examples -> (inputs, labels) arrays."""
    x = {n: table.column(f"x_{n}").to_numpy().astype(np.int32) for n in spec.categorical}
    x["title"] = table.column("x_title").flatten().to_numpy().astype(np.int32).reshape(-1, spec.title_len)
    x["numeric"] = (
        table.column("x_numeric").flatten().to_numpy().astype(np.float32).reshape(-1, spec.n_numeric)
    )
    x["position"] = table.column("x_position").to_numpy().astype(np.int32)
    y = {t: table.column(t).to_numpy(zero_copy_only=False).astype(np.float32) for t in task_spec.names(tasks)}
    return x, y


class ShuffleEpoch:
    """The epoch a training dataset is serving; :meth:`callback` keeps it in step with ``fit``."""

    def __init__(self) -> None:
        self.value = 0

    def callback(self):
        import keras

        holder = self

        class Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                holder.value = int(epoch)

        return Cb()


def parquet_dataset(
    path: Path,
    spec: FeatureSpec,
    batch_size: int,
    *,
    seed: int | None = None,
    epoch: ShuffleEpoch | None = None,
    tasks: Sequence[Task] | None = None,
):
    """A tf.data pipeline over an encoded feature file; shuffles within chunks when ``seed`` is given.

    The shuffle of epoch ``e`` is a pure function of ``(seed, e)``. With ``epoch`` (set by its callback at
    the start of each epoch) the generator knows which epoch it serves, so a resumed fit shuffles epoch
    ``k+1`` as an uninterrupted one would; without it, epochs are counted from 0 per dataset object.
    """
    import tensorflow as tf

    tasks = task_spec.current(tasks)
    labels = task_spec.names(tasks)
    cols = _columns(spec) + list(labels)
    counter = [0]

    def gen():
        e = epoch.value if epoch is not None else counter[0]
        counter[0] += 1
        rng = np.random.default_rng(None if seed is None else [seed, e])
        for rb in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=cols):
            x, y = batch_to_arrays(rb, spec, tasks)
            if seed is not None:
                order = rng.permutation(rb.num_rows)
                x, y = {k: v[order] for k, v in x.items()}, {k: v[order] for k, v in y.items()}
            yield x, y  # one shuffled chunk; tf.data cuts it into batches (below)

    sig_x = {n: tf.TensorSpec([None], tf.int32) for n in spec.categorical}
    sig_x["title"] = tf.TensorSpec([None, spec.title_len], tf.int32)
    sig_x["numeric"] = tf.TensorSpec([None, spec.n_numeric], tf.float32)
    sig_x["position"] = tf.TensorSpec([None], tf.int32)
    sig_y = {t: tf.TensorSpec([None], tf.float32) for t in labels}

    # The generator hands over whole chunks and tf.data slices them into batches in C++: the same batches
    # in the same order as slicing each batch in Python (a batch never spans two chunks, the last one of a
    # chunk may be short), without a Python call and a numpy -> tensor copy per batch: one epoch of the 1M
    # day's 700k rows at batch 256 took 0.9 CPU s instead of 2.5 (docs/scaling.md).
    # (Slices of the chunk tensor per batch: ``from_tensor_slices(chunk).batch`` would build every row as
    # its own element first, which cost more than the Python loop it replaces.)
    def batches(x, y):
        starts = tf.range(0, tf.shape(x["position"])[0], batch_size)

        def cut(s):
            return tf.nest.map_structure(lambda v: v[s : s + batch_size], (x, y))

        return tf.data.Dataset.from_tensor_slices(starts).map(cut)

    chunks = tf.data.Dataset.from_generator(gen, output_signature=(sig_x, sig_y))
    return chunks.flat_map(batches).prefetch(2)

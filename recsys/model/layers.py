"""Input layers: feature embeddings, masked title pooling and the shared shallow tower.

Every layer takes an optional integer ``seed``; with one, the initial weights are a pure function of it
(each weight gets its own derived seed, since a Keras initializer seeded with an int repeats itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

register = keras.saving.register_keras_serializable(package="recsys")


def derived_seed(seed: int | None, salt: int) -> int | None:
    """A distinct, reproducible seed for the ``salt``-th weight of a layer (None stays None)."""
    return None if seed is None else (seed * 1_000_003 + salt) % (2**31 - 1)


def glorot(seed: int | None, salt: int) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(seed=derived_seed(seed, salt))


def safe_index(ids, size: int):
    """Cast to int32 and send anything outside ``[0, size)`` to 0, the unknown bucket."""
    ids = ops.cast(ids, "int32")
    return ops.where(ops.logical_and(ids >= 0, ids < size), ids, 0)


@register
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of token embeddings over the non-padding tokens (id 0 is padding).

    The out-of-vocabulary token (id 1) counts as a token. A row that is all padding pools to zeros.
    """

    def call(self, embeddings, token_ids):
        mask = ops.expand_dims(ops.cast(ops.not_equal(token_ids, 0), embeddings.dtype), -1)
        total = ops.sum(embeddings * mask, axis=1)
        count = ops.sum(mask, axis=1)
        return ops.divide_no_nan(total, count)


@register
class FeatureEmbedding(keras.layers.Layer):
    """Turns the input dict into one dense vector per row.

    Output, concatenated in this order: one ``embedding_dim`` embedding per categorical input (in
    ``categorical`` order), the masked mean of the title token embeddings, then the numeric inputs as
    they are (they arrive normalized). ``position`` is not used here: it only feeds the bias tower.
    """

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        title_vocab_size: int,
        embedding_dim: int,
        categorical: Sequence[str],
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_sizes = {name: int(vocab_sizes[name]) for name in categorical}
        self.title_vocab_size = int(title_vocab_size)
        self.embedding_dim = int(embedding_dim)
        self.categorical = tuple(categorical)
        self.seed = seed
        self.embeddings = [
            keras.layers.Embedding(
                self.vocab_sizes[name],
                embedding_dim,
                embeddings_initializer=keras.initializers.RandomUniform(
                    -0.05, 0.05, seed=derived_seed(seed, i)
                ),
                name=f"embedding_{name}",
            )
            for i, name in enumerate(self.categorical)
        ]
        self.title_embedding = keras.layers.Embedding(
            self.title_vocab_size,
            embedding_dim,
            embeddings_initializer=keras.initializers.RandomUniform(
                -0.05, 0.05, seed=derived_seed(seed, len(self.categorical))
            ),
            name="embedding_title",
        )
        self.pooling = MaskedMeanPooling(name="title_pooling")

    def embed_categorical(self, name: str, ids):
        """``[B]`` vocabulary indices of input ``name`` -> ``[B, embedding_dim]`` (unknown -> index 0)."""
        layer = self.embeddings[self.categorical.index(name)]
        return layer(safe_index(ids, self.vocab_sizes[name]))

    def embed_title(self, token_ids):
        """``[B, title_len]`` token ids -> the masked mean of their embeddings, ``[B, embedding_dim]``."""
        title = safe_index(token_ids, self.title_vocab_size)
        return self.pooling(self.title_embedding(title), title)

    def call(self, inputs):
        parts = [self.embed_categorical(name, inputs[name]) for name in self.categorical]
        parts.append(self.embed_title(inputs["title"]))
        parts.append(ops.cast(inputs["numeric"], self.compute_dtype))
        return ops.concatenate(parts, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_sizes": self.vocab_sizes,
            "title_vocab_size": self.title_vocab_size,
            "embedding_dim": self.embedding_dim,
            "categorical": list(self.categorical),
            "seed": self.seed,
        }


@register
class ShallowTower(keras.layers.Layer):
    """The shared input tower: a stack of ReLU dense layers over the concatenated features."""

    def __init__(self, units: Sequence[int], seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.seed = seed
        self.dense_layers = [
            keras.layers.Dense(u, activation="relu", kernel_initializer=glorot(seed, i), name=f"dense_{i}")
            for i, u in enumerate(self.units)
        ]

    def call(self, x):
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "units": list(self.units), "seed": self.seed}


def build_shallow_tower(
    input_shape: int, units: Sequence[int] | None = None, *, seed: int | None = None
) -> keras.Model:
    """The seed's shallow tower: the ranker's shared input tower (:class:`ShallowTower`, the layer the
    multi-task model uses) over a dense input vector of ``input_shape`` features.

    Args:
        input_shape: width of the input vector, e.g. text embeddings + scaled numeric features.
        units: the dense layers' widths (default ``settings.model.shallow_units``, (64,)).
        seed: initial weights as a pure function of it (default ``settings.seed``).

    Returns:
        A built ``keras.Model`` ``[B, input_shape] -> [B, units[-1]]`` (``output_shape[1] == units[-1]``).
    """
    from recsys.defaults import settings_or_default

    if units is None or seed is None:
        s = settings_or_default()
        units = s.model.shallow_units if units is None else units
        seed = s.seed if seed is None else seed
    inputs = keras.Input((int(input_shape),), name="shallow_input")
    tower = ShallowTower(units, seed=seed, name="shallow_tower")
    return keras.Model(inputs, tower(inputs), name="shallow_tower_model")

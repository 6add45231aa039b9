"""The two-tower retrieval model (Keras 3): a user tower and an item tower whose dot product scores a pair.

Trained with the in-batch sampled softmax of YouTube's candidate generation and of Yi et al. 2019
("Sampling-bias-corrected neural modeling"): each engagement's video is the positive of its row, the
other rows' videos are its negatives, and the logits are corrected by ``-log Q`` (the video's sampling
probability, its share of the engagements) with ``keras_rs.layers.SamplingProbabilityCorrection``, so
popular videos are not pushed down just because they are sampled as negatives more often. A video that
appears twice in a batch is not its own negative (``keras_rs.layers.RemoveAccidentalHits``).

Both towers end in an L2-normalized embedding; the softmax divides the dot product by a temperature.
The item embeddings are exported once per model version (:mod:`recsys.retrieval.index`); serving runs
the user tower only.
"""

from __future__ import annotations

import keras
from keras import ops

from recsys.model.layers import MaskedMeanPooling, derived_seed, safe_index

register = keras.saving.register_keras_serializable(package="recsys")


def _embedding(
    size: int, dim: int, seed: int | None, salt: int, name: str, l2: float = 0.0
) -> keras.layers.Embedding:
    init = keras.initializers.RandomNormal(stddev=0.05, seed=derived_seed(seed, salt))
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    return keras.layers.Embedding(
        size, dim, embeddings_initializer=init, embeddings_regularizer=reg, name=name
    )


def _mlp(units: tuple[int, ...], out: int, seed: int | None, salt: int, name: str) -> keras.Sequential:
    layers = [
        keras.layers.Dense(
            u,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=derived_seed(seed, salt + i)),
        )
        for i, u in enumerate(units)
    ]
    layers.append(
        keras.layers.Dense(
            out, kernel_initializer=keras.initializers.GlorotUniform(seed=derived_seed(seed, salt + 99))
        )
    )
    return keras.Sequential(layers, name=name)


@register
class TwoTowerModel(keras.Model):
    """``call`` returns ``{"query": [B, d], "candidate": [B, d]}`` (both unit-norm).

    Inputs (see :mod:`recsys.retrieval.features`): user side ``user``, ``hist_video``/``hist_category``/
    ``hist_author`` [B, history_len] (0 = padding), ``hour``, ``device``; item side ``video``,
    ``category``, ``author``, ``tags`` [B, tags_len], ``title`` [B, title_len], ``age`` and
    ``popularity`` [B, 1]; training
    only ``item_prob`` (the in-batch sampling probability of the row's video).
    """

    def __init__(
        self,
        n_users: int,
        n_videos: int,
        n_authors: int,
        n_categories: int,
        n_devices: int,
        n_tags: int,
        n_title_tokens: int,
        history_len: int = 20,
        tags_len: int = 4,
        title_len: int = 8,
        embedding_dim: int = 32,
        output_dim: int = 32,
        units: tuple[int, ...] | list[int] = (64,),
        temperature: float = 0.1,
        logq_correction: bool = True,
        user_id: bool = True,
        id_l2: float = 0.0,
        item_bias: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sizes = {
            "n_users": n_users,
            "n_videos": n_videos,
            "n_authors": n_authors,
            "n_categories": n_categories,
            "n_devices": n_devices,
            "n_tags": n_tags,
            "n_title_tokens": n_title_tokens,
        }
        self.history_len, self.tags_len, self.title_len = history_len, tags_len, title_len
        self.embedding_dim, self.output_dim = embedding_dim, output_dim
        self.units, self.temperature, self.seed = tuple(units), float(temperature), seed
        self.logq_correction = bool(logq_correction)
        self.user_id, self.id_l2, self.item_bias = bool(user_id), float(id_l2), bool(item_bias)
        d = embedding_dim
        # shared by the towers: a video, category or author means the same in a history and as a candidate
        self.video_emb = _embedding(n_videos, d, seed, 1, "video_embedding", self.id_l2)
        self.category_emb = _embedding(n_categories, d, seed, 2, "category_embedding")
        self.author_emb = _embedding(n_authors, d, seed, 3, "author_embedding")
        if self.user_id:  # else the model holds no per-user parameter (the history stands for the user)
            self.user_emb = _embedding(n_users, d, seed, 4, "user_embedding", self.id_l2)
        self.hour_emb = _embedding(25, 8, seed, 5, "hour_embedding")
        self.device_emb = _embedding(n_devices, 8, seed, 6, "device_embedding")
        self.tag_emb = _embedding(n_tags, d, seed, 7, "tag_embedding")
        self.title_emb = _embedding(n_title_tokens, d, seed, 8, "title_embedding")
        self.pool = MaskedMeanPooling()
        self.user_mlp = _mlp(self.units, output_dim, seed, 100, "user_tower")
        self.item_mlp = _mlp(self.units, output_dim, seed, 200, "item_tower")
        if self.item_bias:
            self.bias_layer = keras.layers.Dense(
                1, kernel_initializer=keras.initializers.Zeros(), name="item_bias"
            )

    # ------------------------------------------------------------------ towers
    def _pooled(self, emb, ids, size: int):
        ids = safe_index(ids, size)
        return self.pool(emb(ids), ids)

    def query(self, x):
        s = self.sizes
        parts = [
            self._pooled(self.video_emb, x["hist_video"], s["n_videos"]),
            self._pooled(self.category_emb, x["hist_category"], s["n_categories"]),
            self._pooled(self.author_emb, x["hist_author"], s["n_authors"]),
            self.hour_emb(safe_index(x["hour"], 25)),
            self.device_emb(safe_index(x["device"], s["n_devices"])),
        ]
        if self.user_id:
            parts.insert(0, self.user_emb(safe_index(x["user"], s["n_users"])))
        return ops.normalize(self.user_mlp(ops.concatenate(parts, axis=-1)), axis=-1)

    def candidate(self, x):
        return self._candidate(x)[0]

    def _candidate(self, x):
        """(unit-norm item embedding [B, d], item bias [B, 1] or None)."""
        s = self.sizes
        parts = [
            self.video_emb(safe_index(x["video"], s["n_videos"])),
            self.category_emb(safe_index(x["category"], s["n_categories"])),
            self.author_emb(safe_index(x["author"], s["n_authors"])),
            self._pooled(self.tag_emb, x["tags"], s["n_tags"]),
            self._pooled(self.title_emb, x["title"], s["n_title_tokens"]),
            ops.cast(ops.reshape(x["age"], (-1, 1)), "float32"),
            ops.cast(ops.reshape(x["popularity"], (-1, 1)), "float32"),
        ]
        h = ops.concatenate(parts, axis=-1)
        bias = self.bias_layer(h) if self.item_bias else None
        return ops.normalize(self.item_mlp(h), axis=-1), bias

    # ------------------------------------------------------------------ the index's vector space
    def query_vectors(self, x):
        """What the index is searched with: the query, and a 1 for the item bias when there is one."""
        q = self.query(x)
        return ops.concatenate([q, ops.ones_like(q[:, :1])], axis=-1) if self.item_bias else q

    def candidate_vectors(self, x):
        """What the index holds: with an item bias, [embedding / temperature, bias], so the inner
        product with :meth:`query_vectors` is the training logit; else the unit-norm embedding."""
        c, bias = self._candidate(x)
        return ops.concatenate([c / self.temperature, bias], axis=-1) if self.item_bias else c

    def call(self, inputs, training=False):
        c, bias = self._candidate(inputs)
        out = {"query": self.query(inputs), "candidate": c}
        if bias is not None:
            out["bias"] = bias
        return out

    # ------------------------------------------------------------------ the loss (keras-rs layers)
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        import keras_rs

        q, c = y_pred["query"], y_pred["candidate"]
        logits = ops.matmul(q, ops.transpose(c)) / self.temperature
        if self.item_bias:  # a learned prior per candidate: the same for every query
            logits = logits + ops.reshape(y_pred["bias"], (1, -1))
        if self.logq_correction:
            prob = ops.broadcast_to(
                ops.reshape(ops.cast(x["item_prob"], "float32"), (1, -1)), ops.shape(logits)
            )
            logits = keras_rs.layers.SamplingProbabilityCorrection()(logits, prob)
        n = ops.shape(logits)[0]
        labels = ops.eye(n, dtype="float32")
        logits = keras_rs.layers.RemoveAccidentalHits()(logits, labels, ops.cast(x["video"], "int32"))
        loss = ops.mean(keras.losses.categorical_crossentropy(labels, logits, from_logits=True))
        return loss + ops.sum(self.losses) if self.losses else loss

    # ------------------------------------------------------------------ serialization
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **self.sizes,
                "history_len": self.history_len,
                "tags_len": self.tags_len,
                "title_len": self.title_len,
                "embedding_dim": self.embedding_dim,
                "output_dim": self.output_dim,
                "units": list(self.units),
                "temperature": self.temperature,
                "logq_correction": self.logq_correction,
                "user_id": self.user_id,
                "id_l2": self.id_l2,
                "item_bias": self.item_bias,
                "seed": self.seed,
            }
        )
        return config

    def get_build_config(self):
        return {"dummy_batch": 2}

    def build_from_config(self, config):
        """Create the weights by one call on zeros, so ``load_model`` can restore them."""
        self(self.dummy_inputs(int(config.get("dummy_batch", 2))))

    def dummy_inputs(self, n: int = 2) -> dict:
        """Zero inputs of the right shapes (builds the model before loading weights or saving)."""
        import numpy as np

        z = np.zeros(n, dtype=np.int32)
        return {
            "user": z,
            "hist_video": np.zeros((n, self.history_len), np.int32),
            "hist_category": np.zeros((n, self.history_len), np.int32),
            "hist_author": np.zeros((n, self.history_len), np.int32),
            "hour": z,
            "device": z,
            "video": z,
            "category": z,
            "author": z,
            "tags": np.zeros((n, self.tags_len), np.int32),
            "title": np.zeros((n, self.title_len), np.int32),
            "age": np.zeros((n, 1), np.float32),
            "popularity": np.zeros((n, 1), np.float32),
        }

"""Inputs of the two-tower retrieval model, built from the ranker's fitted transform.

The retrieval model reuses the vocabularies the features stage fitted on the training split (users,
videos, authors, categories, devices, title words: :class:`recsys.features.transform.Transform`), so an
id means the same thing to both stages. What only retrieval needs is fitted here and saved beside it
(:class:`RetrievalFeatures`): a tag vocabulary and the normalizer of the video's age.

User side (the query): the user id, the last ``history_len`` engaged videos with their categories and
authors (pooled in the model: YouTube's "watch history" input, and with it the user's category and author
affinities), and the context (hour, device). Item side (the candidate): video id, category, author, tags,
title tokens, the upload age and the training-window popularity. Every function is vectorized over
rows; none loops over users.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.features.keys import _lookup
from recsys.features.transform import Transform

USER_INPUTS = ("user", "hist_video", "hist_category", "hist_author", "hour", "device")
ITEM_INPUTS = ("video", "category", "author", "tags", "title", "age", "popularity")


def _tags(col: pd.Series) -> list[list[str]]:
    return [[t for t in str(v).lower().split("|") if t] if isinstance(v, str) else [] for v in col]


def _age_days(ts, upload_ts) -> np.ndarray:
    ts = pd.to_datetime(pd.Series(ts), utc=True).reset_index(drop=True)
    up = pd.to_datetime(pd.Series(upload_ts), utc=True).reset_index(drop=True)
    age = (ts - up).dt.total_seconds().to_numpy(float) / 86400.0
    return np.log1p(np.clip(np.nan_to_num(age, nan=0.0), 0.0, None))


def last_n(
    codes: np.ndarray, group: np.ndarray, n: int, *, include_self: bool, rows: np.ndarray | None = None
) -> np.ndarray:
    """For rows sorted by group (then time): the ``n`` most recent codes of the same group, newest first.

    ``include_self=False``: the rows strictly before each row (training: the history before an
    engagement, never the engagement itself); True: up to and including it (serving: the whole history,
    read at each user's last row). ``rows``: compute only for these rows (default all). Padding is 0.
    """
    m = len(codes)
    pos = np.arange(m) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(pos), n), dtype=np.int32)
    if m == 0 or not len(pos):
        return out
    start = np.r_[0, np.flatnonzero(group[1:] != group[:-1]) + 1]
    first = np.repeat(start, np.diff(np.r_[start, m]))[pos]
    shift = 0 if include_self else 1
    for t in range(n):  # n is small (the history length): a loop over columns, not users
        src = pos - shift - t
        ok = src >= first
        out[ok, t] = codes[src[ok]]
    return out


@dataclass
class RetrievalFeatures:
    """What retrieval fits beyond the ranker's transform; saved as ``retrieval_features.json``."""

    tag_vocab: dict[str, int]
    age_mean: float
    age_std: float
    history_len: int = 20
    tags_len: int = 4
    transform: Transform | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(
        cls, transform: Transform, videos: pd.DataFrame, engagements: pd.DataFrame, history_len: int = 20
    ):
        """Tags of the catalog (content metadata, no label in it); age statistics of the engagements."""
        counts = Counter(t for tags in _tags(videos.get("tags", pd.Series(dtype=object))) for t in tags)
        vocab = {t: i + 1 for i, (t, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}
        age = _age_days(engagements["ts"], engagements["upload_ts"]) if len(engagements) else np.zeros(1)
        return cls(vocab, float(age.mean()), float(age.std() or 1.0), history_len, transform=transform)

    # ------------------------------------------------------------------ sizes the model is built with
    def sizes(self) -> dict[str, int]:
        t = self.transform
        return {
            "n_users": len(t.vocabs["user"]) + 1,
            "n_videos": len(t.vocabs["video"]) + 1,
            "n_authors": len(t.vocabs["author"]) + 1,
            "n_categories": len(t.vocabs["category"]) + 1,
            "n_devices": len(t.vocabs["device"]) + 1,
            "n_tags": len(self.tag_vocab) + 1,
            "n_title_tokens": len(t.title_vocab) + 2,
            "history_len": self.history_len,
            "tags_len": self.tags_len,
            "title_len": t.title_len,
        }

    # ------------------------------------------------------------------ item side
    def items(self, videos: pd.DataFrame, at) -> dict[str, np.ndarray]:
        """Item-tower inputs for catalog rows (video_id, author_id, category, tags, title, upload_ts);
        ``at``: a time for the age (a scalar) or one per row."""
        t = self.transform
        v = videos.reset_index(drop=True)
        tags = np.zeros((len(v), self.tags_len), dtype=np.int32)
        for i, row in enumerate(_tags(v["tags"]) if "tags" in v else [[]] * len(v)):
            ids = [self.tag_vocab.get(x, 0) for x in row][: self.tags_len]
            tags[i, : len(ids)] = ids
        at_col = at if np.ndim(at) else np.repeat(pd.Timestamp(at), len(v))
        return {
            "video": _lookup(v["video_id"], t.vocabs["video"]),
            "category": _lookup(v["category"], t.vocabs["category"]),
            "author": _lookup(v["author_id"], t.vocabs["author"]),
            "tags": tags,
            "title": t._titles(v["title"]),
            "age": ((_age_days(at_col, v["upload_ts"]) - self.age_mean) / self.age_std)
            .astype(np.float32)
            .reshape(-1, 1),
            "popularity": self.popularity(v["video_id"]).reshape(-1, 1),
        }

    def popularity(self, video_ids: pd.Series) -> np.ndarray:
        """The ranker's normalized ``video_popularity`` (log clicks in the training split; 0 clicks for a
        video it never saw): with the logQ correction taking popularity out of the softmax, the item
        tower still knows what most users click."""
        t = self.transform
        raw = video_ids.astype("int64").astype(str).map(t.video_clicks).fillna(0.0).to_numpy(float)
        if "video_popularity" in t.numeric_mean:
            return t.normalize("video_popularity", raw)
        return raw.astype(np.float32)

    # ------------------------------------------------------------------ user side
    def history_codes(self, clicks: pd.DataFrame) -> dict[str, np.ndarray]:
        """Vocabulary ids of the clicked videos and of their categories and authors (rows as given)."""
        t = self.transform
        return {
            "hist_video": _lookup(clicks["video_id"], t.vocabs["video"]),
            "hist_category": _lookup(clicks["category"], t.vocabs["category"]),
            "hist_author": _lookup(clicks["author_id"], t.vocabs["author"]),
        }

    def training_inputs(self, engagements: pd.DataFrame, videos: pd.DataFrame) -> dict[str, np.ndarray]:
        """Both towers' inputs for engagement rows (clicked examples of the training split), each with
        the history strictly before it, plus ``item_prob``: the video's share of the engagements, the
        in-batch sampling probability the logQ correction subtracts."""
        e = engagements.sort_values(["user_key", "ts", "event_id"], kind="stable").reset_index(drop=True)
        if "tags" not in e.columns:
            tags = videos.drop_duplicates("video_id", keep="last").set_index("video_id")["tags"]
            e["tags"] = e["video_id"].map(tags)
        group = pd.factorize(e["user_key"])[0]
        x = self.query_inputs_for_rows(e, group, include_self=False)
        x.update(self.items(e, e["ts"].to_numpy()))
        freq = e["video_id"].map(e["video_id"].value_counts(normalize=True)).to_numpy(float)
        x["item_prob"] = freq.astype(np.float32)
        return x

    def query_inputs_for_rows(self, rows: pd.DataFrame, group: np.ndarray, include_self: bool) -> dict:
        t = self.transform
        codes = self.history_codes(rows)
        x = {k: last_n(v, group, self.history_len, include_self=include_self) for k, v in codes.items()}
        ts = pd.to_datetime(rows["ts"], utc=True)
        x["user"] = _lookup(rows["user_key"], t.vocabs["user"])
        x["hour"] = (ts.dt.hour.to_numpy() + 1).astype(np.int32)
        x["device"] = _lookup(rows["device"], t.vocabs["device"])
        return x

    def serving_queries(
        self, user_keys, clicks: pd.DataFrame, users: pd.DataFrame, at
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Query inputs for ``user_keys`` at serving time ``at`` from their recent clicks (user_key,
        video_id, category, author_id, ts). Returns the inputs and a mask of the users with history."""
        keys = pd.Index(np.asarray(user_keys, dtype=object))
        c = clicks[clicks["user_key"].isin(keys)].sort_values(["user_key", "ts"], kind="stable")
        c = c.reset_index(drop=True)
        group = pd.factorize(c["user_key"])[0]
        last_row = np.r_[np.flatnonzero(group[1:] != group[:-1]), len(c) - 1] if len(c) else np.zeros(0, int)
        pos = keys.get_indexer(c["user_key"].iloc[last_row]) if len(c) else np.zeros(0, int)
        x = {}
        for k, v in self.history_codes(c).items():
            x[k] = np.zeros((len(keys), self.history_len), dtype=np.int32)
            x[k][pos] = last_n(v, group, self.history_len, include_self=True, rows=last_row)
        has_history = np.zeros(len(keys), dtype=bool)
        has_history[pos] = True
        dev = users.drop_duplicates("user_key", keep="last").set_index("user_key")["device"]
        x["user"] = _lookup(pd.Series(keys, dtype=object), self.transform.vocabs["user"])
        x["device"] = _lookup(pd.Series(keys.map(dev), dtype=object), self.transform.vocabs["device"])
        x["hour"] = np.full(len(keys), pd.Timestamp(at).hour + 1, dtype=np.int32)
        return x, has_history

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> Path:
        names = ("tag_vocab", "age_mean", "age_std", "history_len", "tags_len")
        d = {k: getattr(self, k) for k in names}
        Path(path).write_text(json.dumps(d, sort_keys=True))
        return Path(path)

    @classmethod
    def load(cls, path: Path, transform: Transform) -> RetrievalFeatures:
        return cls(**json.loads(Path(path).read_text()), transform=transform)

"""The fitted feature transform: vocabularies, text vocabulary, normalizers, popularity tables.

Fitted on the training split only (so nothing from the validation or test days leaks into it), saved as
JSON next to the model, and applied by the same :meth:`Transform.apply` on the training path and the
serving path, so the same row always becomes the same tensors.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.features.spec import CATEGORICAL, NUMERIC, FeatureSpec

_TOKEN = re.compile(r"[a-z0-9]+")
MAX_POSITION = 20
# categorical feature -> source column in an example frame
SOURCE_COLUMN = {
    "user": "user_key",
    "video": "video_id",
    "author": "author_id",
    "category": "category",
    "device": "device",
    "region": "region",
    "age_band": "age_band",
    "activity": "activity",
}


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(str(text).lower()) if isinstance(text, str) else []


def _key(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    return str(v)


def _factorize(col: pd.Series) -> tuple[np.ndarray, list]:
    """Codes and distinct values of ``col``; -1 marks missing values (None, NaN, NA)."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return np.asarray(codes), list(uniques)


def _lookup(col: pd.Series, vocab: dict[str, int]) -> np.ndarray:
    """``vocab.get(_key(v), 0)`` for every value, computed once per distinct value.

    Exactly the per-row result: hashing may only merge values that ``str`` spells the same, so an object
    column holding anything but strings (1 and 1.0 would merge) takes the per-row path.
    """
    if col.dtype == object:
        sample = col.dropna().unique()
        if not all(type(v) is str for v in sample):
            return np.fromiter((vocab.get(_key(v), 0) for v in col), dtype=np.int32, count=len(col))
    codes, uniques = _factorize(col)
    table = np.fromiter((vocab.get(_key(v), 0) for v in uniques), dtype=np.int32, count=len(uniques))
    out = np.zeros(len(col), dtype=np.int32)
    ok = codes >= 0
    out[ok] = table[codes[ok]]
    if not ok.all():  # missing values: _key decides (NaT, for one, has a spelling)
        values = col.to_numpy(dtype=object)
        out[~ok] = [vocab.get(_key(v), 0) for v in values[~ok]]
    return out


@dataclass
class Transform:
    """Everything learned from the training window that turns rows into model inputs."""

    vocabs: dict[str, dict[str, int]]
    title_vocab: dict[str, int]
    title_len: int
    numeric_mean: dict[str, float]
    numeric_std: dict[str, float]
    video_clicks: dict[str, float] = field(default_factory=dict)
    user_impressions: dict[str, float] = field(default_factory=dict)
    version: int = 1

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls, train: pd.DataFrame, *, title_len: int = 8, title_vocab_size: int = 2000, min_count: int = 1
    ) -> Transform:
        """Learn the transform from training examples (see :func:`recsys.features.build.build_examples`)."""
        vocabs = {}
        for name, col in SOURCE_COLUMN.items():
            counts = Counter(_key(v) for v in train[col])
            counts.pop("", None)
            kept = [k for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
            vocabs[name] = {k: i + 1 for i, k in enumerate(kept)}
        words = Counter(t for title in train["title"] for t in tokenize(title))
        top = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:title_vocab_size]
        title_vocab = {w: i + 2 for i, (w, _) in enumerate(top)}
        video_clicks = train.groupby(train["video_id"].astype(str))["click"].sum()
        user_imps = train.groupby(train["user_key"].astype(str)).size()
        t = cls(
            vocabs,
            title_vocab,
            title_len,
            {},
            {},
            {k: float(np.log1p(v)) for k, v in video_clicks.items()},
            {k: float(np.log1p(v)) for k, v in user_imps.items()},
        )
        raw = t._raw_numeric(train)
        t.numeric_mean = {n: float(np.mean(raw[:, i])) for i, n in enumerate(NUMERIC)}
        t.numeric_std = {n: float(np.std(raw[:, i]) or 1.0) for i, n in enumerate(NUMERIC)}
        return t

    # ------------------------------------------------------------------ applying
    def _raw_numeric(self, df: pd.DataFrame) -> np.ndarray:
        ts = pd.to_datetime(df["ts"], utc=True)
        age = (ts - pd.to_datetime(df["upload_ts"], utc=True)).dt.total_seconds().to_numpy(float) / 86400.0
        cols = [
            np.log1p(pd.to_numeric(df["duration_seconds"], errors="coerce").fillna(0).to_numpy(float)),
            np.clip(np.nan_to_num(age, nan=0.0), 0, None),
            df["video_id"].astype(str).map(self.video_clicks).fillna(0.0).to_numpy(float),
            df["user_key"].astype(str).map(self.user_impressions).fillna(0.0).to_numpy(float),
        ]
        return np.stack(cols, axis=1)

    def apply(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Model inputs for the rows of ``df`` (names and shapes as in :mod:`recsys.features.spec`)."""
        out: dict[str, np.ndarray] = {}
        for name, col in SOURCE_COLUMN.items():
            out[name] = _lookup(df[col], self.vocabs[name])
        ts = pd.to_datetime(df["ts"], utc=True)
        out["hour"] = (ts.dt.hour.to_numpy() + 1).astype(np.int32)
        out["dow"] = (ts.dt.dayofweek.to_numpy() + 1).astype(np.int32)
        out["title"] = self._titles(df["title"])
        raw = self._raw_numeric(df)
        mean = np.array([self.numeric_mean[n] for n in NUMERIC])
        std = np.array([self.numeric_std[n] for n in NUMERIC])
        out["numeric"] = ((raw - mean) / std).astype(np.float32)
        if "position" in df.columns:
            pos = pd.to_numeric(df["position"], errors="coerce").fillna(0).to_numpy()
            out["position"] = np.clip(pos, 0, MAX_POSITION).astype(np.int32)
        else:
            out["position"] = np.zeros(len(df), dtype=np.int32)
        return out

    def _titles(self, col: pd.Series) -> np.ndarray:
        """Token ids per row; each distinct title is tokenized once (rows share titles: one per video)."""
        codes, uniques = _factorize(col)
        table = np.zeros((len(uniques) + 1, self.title_len), dtype=np.int32)  # last row: missing title
        for i, title in enumerate(uniques):
            toks = [self.title_vocab.get(t, 1) for t in tokenize(title)][: self.title_len]
            table[i, : len(toks)] = toks
        return table[np.where(codes < 0, len(uniques), codes)]

    def spec(self) -> FeatureSpec:
        sizes = {name: len(v) + 1 for name, v in self.vocabs.items()}
        sizes.update({"hour": 25, "dow": 8})
        return FeatureSpec(
            vocab_sizes={n: sizes[n] for n in CATEGORICAL},
            title_vocab_size=len(self.title_vocab) + 2,
            title_len=self.title_len,
            n_positions=MAX_POSITION + 1,
        )

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "vocabs": self.vocabs,
            "title_vocab": self.title_vocab,
            "title_len": self.title_len,
            "numeric_mean": self.numeric_mean,
            "numeric_std": self.numeric_std,
            "video_clicks": self.video_clicks,
            "user_impressions": self.user_impressions,
        }

    def save(self, path: Path) -> Path:
        from recsys.data.lake import atomic_write_bytes

        return atomic_write_bytes(Path(path), json.dumps(self.to_dict(), sort_keys=True).encode())

    @classmethod
    def load(cls, path: Path) -> Transform:
        return cls(**json.loads(Path(path).read_text()))

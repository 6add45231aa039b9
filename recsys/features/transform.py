"""The fitted feature transform: vocabularies, text vocabulary, normalizers, popularity and affinity tables.

Fitted on the training split only (so nothing from the validation or test days leaks into it), saved as
JSON next to the model, and applied by the same :meth:`Transform.apply` on the training path and the
serving path, so the same row always becomes the same tensors.

Affinity features (``user_category_affinity``, ``user_author_affinity``) are the user's click-through
rate on the video's category (author), smoothed toward that category's (author's) rate and expressed as
a log-odds lift over it: 0 means "no evidence", positive "clicks this category more than others do".
The validation and test splits the features stage encodes read them from the whole training split; the
transform a trained model is logged with (what the gate's test-day figures and the served lists use) has
the users' evidence (affinity tables, co-engagement histories) refreshed with the validation rows too
(:meth:`Transform.refreshed`), so they see every day before the test day. On the
training rows themselves they are *ordered* statistics (CatBoost's remedy for target leakage): each row
sees only the impressions before it, never its own label, so the model does not learn to trust a
feature that contains its answer. ``video_popularity`` (log1p of the video's clicks) is leave-one-out on
training rows (the row's own click is not counted); at serving it counts every training click.
``user_video_coengagement`` (the video's item-item co-engagement with the user's engaged videos, what
item-kNN ranks by) leaves the row's user out on training rows (:mod:`recsys.features.coengagement`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.features.affinity_table import AffinityTable, object_hook
from recsys.features.coengagement import NAME as COENGAGEMENT
from recsys.features.coengagement import CoEngagement, engaged_rows
from recsys.features.keys import _factorize, _key_counts, _keys, _lookup, tokenize
from recsys.features.pair_counts import PairCounts
from recsys.features.spec import AFFINITY, CATEGORICAL, NUMERIC, FeatureSpec

MAX_POSITION = 20
AFFINITY_STRENGTH = 3.0  # the prior's weight in a smoothed affinity rate, in impressions
V1_NUMERIC = ("log_duration", "upload_age_days", "video_popularity", "user_activity")  # transforms before 2
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


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def affinity_lift(
    clicks: np.ndarray, impressions: np.ndarray, prior: np.ndarray, strength: float
) -> np.ndarray:
    """Log-odds of the smoothed rate ``(clicks + strength * prior) / (impressions + strength)`` minus the
    prior's: 0 without evidence. One function for every path, so they agree to the bit."""
    clicks, impressions = np.asarray(clicks, float), np.asarray(impressions, float)
    rate = (clicks + strength * prior) / (impressions + strength)
    return np.where(impressions > 0, _logit(rate) - _logit(prior), 0.0)


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
    # affinity feature -> user key -> side value (category, author) -> [clicks, impressions], held as
    # arrays (recsys.features.affinity_table; a nested dict given is converted)
    affinity: dict[str, AffinityTable] = field(default_factory=dict)
    # affinity feature -> side value -> smoothed click-through rate of that side value; "" = all rows
    affinity_prior: dict[str, dict[str, float]] = field(default_factory=dict)
    affinity_strength: float = AFFINITY_STRENGTH
    numeric: list[str] = field(default_factory=lambda: list(V1_NUMERIC))
    version: int = 1
    # > 0: trained on sampled negatives drawn with p ~ (engagements + 1) ** power (recsys.features.negatives)
    sampled_negatives_power: float = 0.0
    # item-item co-engagement and the users' engaged videos (recsys.features.coengagement)
    coengagement: dict = field(default_factory=dict)
    # rows the normalization statistics were computed over (0: unknown, a transform saved before it)
    numeric_count: float = 0.0
    _tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.affinity = {name: AffinityTable.from_nested(t) for name, t in self.affinity.items()}

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        *,
        title_len: int = 8,
        title_vocab_size: int = 2000,
        min_count: int = 1,
        affinity_strength: float = AFFINITY_STRENGTH,
        coengagement: bool = False,
    ) -> Transform:
        """Learn the transform from training examples (see :func:`recsys.features.build.build_examples`).
        ``coengagement``: add the ``user_video_coengagement`` input (:func:`use_coengagement` decides)."""
        stats = FitStats(coengagement=coengagement)
        stats.add(train)
        t = stats.transform(
            title_len=title_len,
            title_vocab_size=title_vocab_size,
            min_count=min_count,
            affinity_strength=affinity_strength,
        )
        # normalized with the statistics of what the model trains on: ordered affinities on train rows
        raw = t._raw_numeric(train, ordered=True)
        t.set_normalization(lambda: iter((raw,)))
        return t

    def set_normalization(self, raw_chunks) -> None:
        """``numeric_mean``/``numeric_std``/``numeric_count`` from the training rows' raw numerics:
        ``raw_chunks()`` gives them (in row order, in chunks of any size) and is called twice (the mean,
        then the squared deviations from it). The sums are taken over fixed blocks of rows
        (:class:`ColumnSums`), so the figures do not depend on how the rows were chunked."""
        k = len(self.numeric)
        first = ColumnSums(k)
        for raw in raw_chunks():
            first.add(raw)
        n = first.rows
        mean = first.totals() / n if n else np.full(k, np.nan)
        second = ColumnSums(k)
        for raw in raw_chunks():
            second.add((raw - mean) ** 2)
        std = np.sqrt(second.totals() / n) if n else np.full(k, np.nan)
        self.numeric_mean = {name: float(mean[i]) for i, name in enumerate(self.numeric)}
        self.numeric_std = {name: float(std[i] or 1.0) for i, name in enumerate(self.numeric)}
        self.numeric_count = float(n)

    def refreshed(self, rows: pd.DataFrame | Callable[[], Iterable[pd.DataFrame]]) -> Transform:
        """This transform with the users' evidence recomputed from ``rows``: the affinity tables and
        priors and the co-engagement histories. Everything else stays as fitted: the vocabularies, the
        normalization statistics, and the two count inputs (``video_popularity``, ``user_activity``), whose
        scale is the training split's (more rows would shift them against the statistics the model was
        trained with) and whose video counts are those the sampled negatives were drawn with (the logQ
        correction of :func:`recsys.features.negatives.ranking_scores` must subtract what was sampled).

        Why: the transform is fitted on the training split (nothing of the validation days may leak into
        what the model learns from), but a list served after the validation days should see the user's
        engagements of those days too, as each training row saw every impression before it. ``rows`` are
        the training and validation examples (with their sampled negatives, as the training rows had).

        ``rows`` is a frame, or a function giving the frame's chunks in row order (called again, for one
        frame of all the chunks, only when click labels are not whole numbers): the evidence is counts
        (:class:`FitStats`) and the engaged rows, so the chunks give the transform of their concatenation,
        to the byte of :meth:`save`, with one chunk's memory (plus the tables it grows)."""
        import dataclasses

        from recsys.features.refresh import AffinityCounts

        whole = isinstance(rows, pd.DataFrame)
        chunks = (lambda: iter((rows,))) if whole else rows
        t = dataclasses.replace(self, affinity={}, affinity_prior={}, coengagement={})
        affinity = any(name in self.numeric for name in AFFINITY)  # a version-1 transform has none
        coengagement = COENGAGEMENT in self.numeric
        # one frame: FitStats, as the fit; chunks: integer-keyed counts (FitStats' string-keyed partial
        # sums peaked at 4.4 GB over the 8.5M rows of a 10M-interaction day), the same for whole labels
        stats = FitStats(affinity_only=True) if whole else AffinityCounts()
        engaged: list[pd.DataFrame] = []
        for chunk in chunks() if affinity or coengagement else ():
            if affinity:
                stats.add(chunk)
            if coengagement:
                engaged.append(engaged_rows(chunk))
        if affinity and not whole and not stats.integral:
            # sums of fractional labels depend on how the rows were chunked: the rows as one frame
            return self.refreshed(pd.concat(list(chunks()), ignore_index=True))
        if affinity and whole:
            stats.fit_affinity(t)
        elif affinity:
            stats.fit(t)
        if coengagement:
            rows = (
                pd.concat(engaged, ignore_index=True)
                if engaged
                else pd.DataFrame({"user_key": [], "video_id": [], "ts": []})
            )
            t.coengagement = CoEngagement.fit(rows).to_dict()
        return t

    # ------------------------------------------------------------------ affinity look-ups
    def prior(self, name: str, sides: np.ndarray) -> np.ndarray:
        """The smoothed rate of each side value (the affinity's prior); the overall rate for unknown ones."""
        prior = self.affinity_prior.get(name, {})
        base = prior.get("", 0.5)
        codes, uniques = pd.factorize(pd.Series(sides, dtype=object))
        table = np.array([prior.get(v, base) for v in uniques] + [base], dtype=float)
        return table[np.where(codes < 0, len(uniques), codes)]

    def affinity_table(self, name: str) -> tuple[pd.MultiIndex, np.ndarray, np.ndarray]:
        """(user, side) index with clicks and impressions; built once per transform."""
        if name not in self._tables:
            table = self.affinity.get(name) or AffinityTable.from_pairs([], [], [], [])
            self._tables[name] = table.pair_index()
        return self._tables[name]

    def pair_positions(self, name: str, users, sides) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's (user, side) pair position in the fitted table (-1: not in it), and the table's
        clicks and impressions."""
        table = self.affinity.get(name) or AffinityTable.from_pairs([], [], [], [])
        return table.positions(users, sides), table.clicks, table.imps

    def _affinity_raw(self, df: pd.DataFrame, name: str, ordered: bool, state=None) -> np.ndarray:
        users, sides = _keys(df["user_key"]), _keys(df[AFFINITY[name]])
        prior = self.prior(name, sides)
        if ordered and state is not None:  # a chunk of the training rows: counts carried from before it
            c, n = state.affinity_before(self, name, users, sides, df["click"])
        elif ordered:  # training rows: only the impressions before each row (rows are in time order)
            clicks = pd.to_numeric(df["click"], errors="coerce").fillna(0).to_numpy(float)
            frame = pd.DataFrame({"user": users, "side": sides, "click": clicks})
            group = frame.groupby(["user", "side"], sort=False)["click"]
            c, n = (group.cumsum() - frame["click"]).to_numpy(float), group.cumcount().to_numpy(float)
        else:
            pos, tc, tn = self.pair_positions(name, users, sides)
            c, n = np.zeros(len(df)), np.zeros(len(df))
            hit = pos >= 0
            c[hit], n[hit] = tc[pos[hit]], tn[pos[hit]]
        known = (users != "") & (sides != "")
        return np.where(known, affinity_lift(c, n, prior, self.affinity_strength), 0.0)

    def _popularity_raw(self, df: pd.DataFrame, ordered: bool, state=None) -> np.ndarray:
        """log1p(the video's training clicks); on training rows (``ordered``) leave-one-out: the video's
        training clicks minus the row's own, so a row never counts its own click (flipping its label
        leaves its value as it is), and the scale is the serving one (every training click), where
        ordered counts (the clicks before the row) start every video at 0.

        Known caveat: within one video a clicked row reads one click less than an unclicked one, so a
        model that has learnt the video's total (its id embedding can) could read the label back. The
        held-out test day, which gets the full count, is where that would show; measured there on the
        suite's 300x300 world (tests/integration/test_gate.py, seeds 42 and 1), the model's click AUC was
        0.561/0.578 leave-one-out, 0.558/0.575 out-of-fold (5 folds, the same caveat diluted) and
        0.544/0.563 ordered (no caveat)."""
        videos = df["video_id"].astype(str)
        if not ordered:
            return videos.map(self.video_clicks).fillna(0.0).to_numpy(float)
        clicks = pd.to_numeric(df["click"], errors="coerce").fillna(0).to_numpy(float)
        if state is not None:  # a chunk of the training rows: the video's total over the whole split
            total = videos.map(state.video_totals).fillna(0.0).to_numpy(float)
        else:
            total = pd.Series(clicks).groupby(videos.to_numpy(), sort=False).transform("sum").to_numpy(float)
        return np.log1p(total - clicks)

    def coengagement_table(self):
        """The fitted :class:`~recsys.features.coengagement.CoEngagement` (built once per transform)."""
        if "coengagement" not in self._tables:
            d = self.coengagement or {"videos": [], "engagers": [], "neighbours": [], "co": [], "history": {}}
            self._tables["coengagement"] = CoEngagement.from_dict(d)
        return self._tables["coengagement"]

    # ------------------------------------------------------------------ applying
    def _raw_numeric(self, df: pd.DataFrame, ordered: bool = False, state=None) -> np.ndarray:
        """Raw (unnormalized) numeric inputs, one column per ``self.numeric``. ``state``
        (:class:`OrderedState`): ``df`` is one chunk of the training rows in time order, and the ordered
        statistics continue from the chunks before it (the result is the whole split's, chunk by chunk)."""
        cols = []
        for name in self.numeric:
            if name == "log_duration":
                dur = pd.to_numeric(df["duration_seconds"], errors="coerce").fillna(0).to_numpy(float)
                cols.append(np.log1p(dur))
            elif name == "upload_age_days":
                ts = pd.to_datetime(df["ts"], utc=True)
                upload = pd.to_datetime(df["upload_ts"], utc=True)
                age = (ts - upload).dt.total_seconds().to_numpy(float) / 86400.0
                cols.append(np.clip(np.nan_to_num(age, nan=0.0), 0, None))
            elif name == "video_popularity":
                cols.append(self._popularity_raw(df, ordered, state))
            elif name == "user_activity":
                cols.append(df["user_key"].astype(str).map(self.user_impressions).fillna(0.0).to_numpy(float))
            elif name in AFFINITY:
                cols.append(self._affinity_raw(df, name, ordered, state))
            elif name == COENGAGEMENT:
                cols.append(self.coengagement_table().raw(df["user_key"], df["video_id"], loo=ordered))
            else:
                raise ValueError(f"unknown numeric feature {name!r} in the transform")
        return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))

    def normalize(self, name: str, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.numeric_mean[name]) / self.numeric_std[name]).astype(np.float32)

    def apply(
        self, df: pd.DataFrame, ordered: bool = False, raw: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Model inputs for the rows of ``df`` (names and shapes as in :mod:`recsys.features.spec`).

        ``ordered``: the rows are the training split in time order, with their ``click`` labels; the
        affinity features then use only the impressions before each row (see the module docstring).
        Everywhere else (validation, test, serving) they use the fitted tables. ``raw``: the rows' raw
        numerics already computed (:meth:`_raw_numeric`; the chunked features stage keeps them from the fit).
        """
        out: dict[str, np.ndarray] = {}
        for name, col in SOURCE_COLUMN.items():
            out[name] = _lookup(df[col], self.vocabs[name])
        ts = pd.to_datetime(df["ts"], utc=True)
        out["hour"] = (ts.dt.hour.to_numpy() + 1).astype(np.int32)
        out["dow"] = (ts.dt.dayofweek.to_numpy() + 1).astype(np.int32)
        out["title"] = self._titles(df["title"])
        raw = self._raw_numeric(df, ordered) if raw is None else raw
        mean = np.array([self.numeric_mean[n] for n in self.numeric])
        std = np.array([self.numeric_std[n] for n in self.numeric])
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
            n_numeric=len(self.numeric),
            n_positions=MAX_POSITION + 1,
        )

    # ------------------------------------------------------------------ persistence
    def to_dict(self, affinity: bool = True) -> dict:
        """The saved fields as JSON values (``affinity=False``: without the affinity tables)."""
        tables = {name: t.to_json_value() for name, t in self.affinity.items()} if affinity else None
        return {
            "version": self.version,
            "vocabs": self.vocabs,
            "title_vocab": self.title_vocab,
            "title_len": self.title_len,
            "numeric_mean": self.numeric_mean,
            "numeric_std": self.numeric_std,
            "video_clicks": self.video_clicks,
            "user_impressions": self.user_impressions,
            **({"affinity": tables} if affinity else {}),
            "affinity_prior": self.affinity_prior,
            "affinity_strength": self.affinity_strength,
            "numeric": list(self.numeric),
            "sampled_negatives_power": self.sampled_negatives_power,
            "numeric_count": self.numeric_count,
            # only when fitted: a transform without it stays loadable by code that predates it
            **({"coengagement": self.coengagement} if self.coengagement else {}),
        }

    def save(self, path: Path) -> Path:
        """``json.dumps(self.to_dict(), sort_keys=True)``, written with the affinity tables streamed from
        their arrays a field at a time (hundreds of megabytes at 10M interactions a day), atomically."""

        from recsys.data.lake import temp_name
        from recsys.features.affinity_table import _encode

        rest = self.to_dict(affinity=False)
        assert min(rest, default="b") > "affinity"  # sorted keys: the affinity tables come first
        text = json.dumps(rest, sort_keys=True)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(temp_name(path.name))
        with open(tmp, "w", encoding="ascii") as f:
            f.write('{"affinity": {')
            for i, name in enumerate(sorted(self.affinity)):
                f.write(("" if i == 0 else ", ") + _encode(name) + ": ")
                self.affinity[name].write_json(f.write)
            f.write("}" + (", " + text[1:] if rest else "}"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Transform:
        return cls(**json.loads(Path(path).read_text(), object_pairs_hook=object_hook()))


class ColumnSums:
    """Per-column sums of float rows fed in chunks of any size, summed over fixed blocks of ``BLOCK`` rows
    (pairwise within a block, the block sums then with :func:`math.fsum`): the same rows give the same
    sums to the bit however they were chunked, which the features stage's chunked and whole-frame paths
    rely on (they must write the same normalization)."""

    BLOCK = 1 << 15

    def __init__(self, k: int):
        self.k, self.rows = k, 0
        self._held: list[np.ndarray] = []
        self._n_held = 0
        self._blocks: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.k)
        self.rows += len(rows)
        self._held.append(rows)
        self._n_held += len(rows)
        if self._n_held >= self.BLOCK:
            held = np.concatenate(self._held)
            whole = len(held) // self.BLOCK * self.BLOCK
            for lo in range(0, whole, self.BLOCK):
                self._sum_block(held[lo : lo + self.BLOCK])
            self._held, self._n_held = [held[whole:]], len(held) - whole

    def _sum_block(self, block: np.ndarray) -> None:
        self._blocks.append(np.ascontiguousarray(block.T).sum(axis=1))

    def totals(self) -> np.ndarray:
        import math

        if self._n_held:
            self._sum_block(np.concatenate(self._held))
            self._held, self._n_held = [], 0
        return np.array([math.fsum(b[i] for b in self._blocks) for i in range(self.k)], dtype=np.float64)


def _summed(parts: list[pd.Series]) -> pd.Series:
    if len(parts) == 1:
        return parts[0]
    both = pd.concat(parts)
    return both.groupby(level=list(range(both.index.nlevels)), sort=True).sum()


class _Sums:
    """Per-key sums of pandas Series added chunk by chunk (partial sums compacted as they pile up)."""

    def __init__(self):
        self.parts: list[pd.Series] = []
        self._n = 0
        self._compacted = 0

    def add(self, part: pd.Series) -> None:
        self.parts.append(part)
        self._n += len(part)
        if self._n > 2 * self._compacted + 200_000:
            self.parts = [_summed(self.parts)]
            self._n = self._compacted = len(self.parts[0])

    def total(self, empty: pd.Series) -> pd.Series:
        return _summed(self.parts) if self.parts else empty


class FitStats:
    """What :meth:`Transform.fit` learns from the training rows, accumulated chunk by chunk (rows in time
    order): counts and sums only, so the transform of the chunks equals the transform of their
    concatenation. Sums of the click label are exact when the labels are whole numbers (``integral``);
    the chunked features stage checks that before it trusts a chunked fit."""

    def __init__(self, coengagement: bool = False, affinity_only: bool = False, compact: bool = False):
        """``compact``: the (user, side) pairs in arrays (:class:`PairCounts`; the chunked stage, whose
        click labels are checked to be whole numbers), the fitted transform holding them so."""
        self.affinity_only, self.coengagement, self.compact = affinity_only, coengagement, compact
        self.vocab = {name: Counter() for name in SOURCE_COLUMN}
        self.words: Counter = Counter()
        self.video_clicks, self.user_imps, self.video_totals = _Sums(), _Sums(), _Sums()
        self.click_sum, self.rows, self.integral = 0.0, 0, True
        self.side = {name: _Sums() for name in AFFINITY}
        self.pairs = {name: PairCounts() if compact else _Sums() for name in AFFINITY}
        self.engaged: list[pd.DataFrame] = []

    def add(self, train: pd.DataFrame) -> None:
        clicks = pd.to_numeric(train["click"], errors="coerce").fillna(0).to_numpy(float)
        self.integral &= bool(np.all(clicks == np.round(clicks)))
        self.rows += len(clicks)
        self.click_sum += float(clicks.sum())
        users = _keys(train["user_key"])
        for name, col in AFFINITY.items():
            frame = pd.DataFrame({"user": users, "side": _keys(train[col]), "click": clicks})
            frame = frame[(frame["user"] != "") & (frame["side"] != "")]
            self.side[name].add(frame.groupby("side")["click"].agg(["sum", "size"]).stack())
            if self.compact:
                self.pairs[name].add(
                    frame["user"].to_numpy(object),
                    frame["side"].to_numpy(object),
                    frame["click"].to_numpy(float),
                )
            else:
                self.pairs[name].add(frame.groupby(["user", "side"])["click"].agg(["sum", "size"]).stack())
        if self.affinity_only:
            return
        for name, col in SOURCE_COLUMN.items():
            self.vocab[name].update(_key_counts(train[col]))
        codes, titles = _factorize(train["title"])  # a title per video: each tokenized once
        for title, n in zip(titles, np.bincount(codes[codes >= 0], minlength=len(titles)), strict=True):
            for t in tokenize(title):
                self.words[t] += int(n)
        videos = train["video_id"].astype(str)
        self.video_clicks.add(train.groupby(videos)["click"].sum())
        self.user_imps.add(train.groupby(train["user_key"].astype(str)).size())
        self.video_totals.add(pd.Series(clicks).groupby(videos.to_numpy()).sum())
        if self.coengagement:
            engaged = clicks > 0
            if "sampled" in train.columns:
                engaged &= ~train["sampled"].fillna(False).astype(bool).to_numpy()
            self.engaged.append(train.loc[engaged, ["user_key", "video_id", "ts"]])

    @staticmethod
    def _agg(sums: _Sums) -> pd.DataFrame:
        """(sum, size) per key of the stacked partial aggregates."""
        total = sums.total(pd.Series(dtype=float))
        if total.empty:
            return pd.DataFrame({"sum": pd.Series(dtype=float), "size": pd.Series(dtype="int64")})
        return total.unstack()

    def fit_affinity(self, t: Transform) -> None:
        """The affinity priors and (user, side) tables of ``t`` from the rows added."""
        base = float(np.clip(self.click_sum / self.rows if self.rows else 0.5, 1e-4, 1 - 1e-4))
        m = t.affinity_strength
        for name in AFFINITY:
            side = self._agg(self.side[name])
            prior = (side["sum"] + m * base) / (side["size"] + m)
            t.affinity_prior[name] = {"": base, **{k: float(v) for k, v in prior.items()}}
            if self.compact:
                t.affinity[name] = self.pairs[name].table()
                continue
            pairs = self._agg(self.pairs[name])
            t.affinity[name] = AffinityTable.from_pairs(
                pairs.index.get_level_values(0) if len(pairs) else [],
                pairs.index.get_level_values(1) if len(pairs) else [],
                pairs["sum"].to_numpy(np.float64),
                pairs["size"].to_numpy(np.float64),
            )

    def transform(
        self,
        *,
        title_len: int = 8,
        title_vocab_size: int = 2000,
        min_count: int = 1,
        affinity_strength: float = AFFINITY_STRENGTH,
    ) -> Transform:
        """The fitted transform, without its normalization (:meth:`Transform.set_normalization`)."""
        vocabs = {}
        for name, counts in self.vocab.items():
            counts = Counter(counts)
            counts.pop("", None)
            kept = [k for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
            vocabs[name] = {k: i + 1 for i, k in enumerate(kept)}
        top = sorted(self.words.items(), key=lambda kv: (-kv[1], kv[0]))[:title_vocab_size]
        title_vocab = {w: i + 2 for i, (w, _) in enumerate(top)}
        video_clicks = self.video_clicks.total(pd.Series(dtype=np.float32))
        user_imps = self.user_imps.total(pd.Series(dtype="int64"))
        t = Transform(
            vocabs,
            title_vocab,
            title_len,
            {},
            {},
            {k: float(np.log1p(v)) for k, v in video_clicks.items()},
            {k: float(np.log1p(v)) for k, v in user_imps.items()},
            affinity_strength=float(affinity_strength),
            numeric=[n for n in NUMERIC if self.coengagement or n != COENGAGEMENT],
            version=2,
        )
        self.fit_affinity(t)
        if self.coengagement:
            engaged = pd.concat(self.engaged, ignore_index=True) if self.engaged else None
            t.coengagement = (
                CoEngagement.fit(engaged).to_dict()
                if engaged is not None
                else CoEngagement.fit(pd.DataFrame({"user_key": [], "video_id": [], "ts": []})).to_dict()
            )
        return t

    def ordered_state(self) -> OrderedState:
        return OrderedState(self.video_totals.total(pd.Series(dtype=float)).to_dict())


class OrderedState:
    """The ordered statistics of the training rows carried from chunk to chunk (rows in time order): per
    (user, side) pair the clicks and impressions seen so far; per video its clicks over the whole split
    (``video_popularity`` is leave-one-out of that total)."""

    def __init__(self, video_totals: dict[str, float]):
        self.video_totals = video_totals
        self._clicks: dict[str, np.ndarray] = {}
        self._imps: dict[str, np.ndarray] = {}

    def affinity_before(self, t: Transform, name: str, users, sides, click) -> tuple[np.ndarray, np.ndarray]:
        """(clicks, impressions) of each row's (user, side) pair before the row; the pairs are the fitted
        table's (every training row's known pair is in it); 0 for a row without a known pair."""
        pos, table_clicks, _ = t.pair_positions(name, users, sides)
        if name not in self._clicks:
            self._clicks[name], self._imps[name] = np.zeros(len(table_clicks)), np.zeros(len(table_clicks))
        clicks = pd.to_numeric(click, errors="coerce").fillna(0).to_numpy(float)
        ok = pos >= 0
        c, n = np.zeros(len(pos)), np.zeros(len(pos))
        frame = pd.DataFrame({"pos": pos[ok], "click": clicks[ok]})
        group = frame.groupby("pos", sort=False)["click"]
        c[ok] = self._clicks[name][pos[ok]] + group.cumsum().to_numpy(float) - clicks[ok]
        n[ok] = self._imps[name][pos[ok]] + group.cumcount().to_numpy(float)
        np.add.at(self._clicks[name], pos[ok], clicks[ok])
        np.add.at(self._imps[name], pos[ok], 1.0)
        return c, n

"""Non-learned baselines, fitted on the training window and scored on the same test rows as the model.

Each baseline has the small interface the evaluation needs:

* ``fit(history)`` with the earlier examples (``user_key, video_id, category, ts, click``), or
  ``fit_summary(summary)`` with what they read of them (:class:`recsys.eval_data.HistorySummary`: the
  evaluate stage reads the training window in chunks); ``fit`` is ``fit_summary`` of the frame's summary;
* ``score(rows)``: one ranking score per (user, video) row (higher = show first);
* ``predict_tasks(rows)``: the score as a per-task "prediction", so the classification metrics (AUC, GAUC)
  of a baseline sit next to the model's. Only :class:`GlobalPopularity` is a calibrated click probability;
  the others are rank scores (``calibrated = False``), so their log loss and calibration are not reported.

Nothing here looks at the test day's labels: ``fit`` sees history only, ``score`` sees (user, video) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys import tasks as task_spec
from recsys.eval_data import HistorySummary


def _keys(s: pd.Series) -> np.ndarray:
    return s.astype(str).to_numpy()


def _tasks(p: np.ndarray) -> dict[str, np.ndarray]:
    """The score as every binary task's prediction; a baseline predicts no regression target (NaN)."""
    out = {t.name: p for t in task_spec.binary()}
    return out | {t.name: np.full(len(p), np.nan) for t in task_spec.regression()}


@dataclass
class GlobalPopularity:
    """Each video's click rate over the training window, smoothed toward the global rate."""

    name: str = "popularity"
    smoothing: float = 10.0
    calibrated: bool = True
    rate: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    prior: float = 0.0

    def fit(self, history: pd.DataFrame) -> GlobalPopularity:
        return self.fit_summary(HistorySummary.of(history))

    def fit_summary(self, s: HistorySummary) -> GlobalPopularity:
        # the mean click over labelled rows (NaN when none is); a sum of 0/1 labels is exact
        self.prior = (s.clicks / s.labelled if s.labelled else float("nan")) if s.rows else 0.0
        self.rate = (s.video_clicks + self.smoothing * self.prior) / (s.video_labels + self.smoothing)
        return self

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return pd.Series(_keys(rows["video_id"])).map(self.rate).fillna(self.prior).to_numpy(float)

    def predict_tasks(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        return _tasks(self.score(rows))


@dataclass
class RecentCategoryPopularity:
    """Recent popularity within the categories the user clicks.

    ``score(u, v) = P_u(category(v)) * recent_clicks(v)``: the video's clicks over the last ``days`` of the
    history (smoothed by a tiny all-window term so older videos still order), times the user's smoothed
    share of clicks in the video's category (the global category share for a user without clicks).
    """

    name: str = "recent_category"
    days: int = 2
    alpha: float = 2.0
    calibrated: bool = False
    recent: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    cat_global: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    user_cat: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    user_clicks: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))

    def fit(self, history: pd.DataFrame) -> RecentCategoryPopularity:
        return self.fit_summary(HistorySummary.of(history))

    def fit_summary(self, s: HistorySummary) -> RecentCategoryPopularity:
        # only clicked rows add to a click sum: the engaged rows give the recent sums of all rows
        h = s.engaged[["user_key", "video_id", "category", "ts", "click"]].copy()
        h["user_key"], h["video_id"], h["category"] = (
            _keys(h["user_key"]),
            _keys(h["video_id"]),
            _keys(h["category"]),
        )
        h["click"] = h["click"].astype(float)
        ts = pd.to_datetime(h["ts"], utc=True)
        since = s.ts_max.normalize() - pd.Timedelta(days=self.days - 1) if s.rows else s.ts_max
        recent = h.loc[(ts >= since).to_numpy()].groupby("video_id")["click"].sum()
        total = s.video_clicks
        self.recent = recent.reindex(total.index, fill_value=0.0) + 0.01 * total + 1e-3
        clicks = h
        n_cat = max(s.categories, 1)
        self.cat_global = (clicks.groupby("category").size() + 1.0) / (len(clicks) + n_cat)
        self.user_cat = clicks.groupby(["user_key", "category"]).size().astype(float)
        self.user_clicks = clicks.groupby("user_key").size().astype(float)
        return self

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        u, v, c = _keys(rows["user_key"]), _keys(rows["video_id"]), _keys(rows["category"])
        prior = (
            pd.Series(c)
            .map(self.cat_global)
            .fillna(float(self.cat_global.min()) if len(self.cat_global) else 1.0)
            .to_numpy(float)
        )
        mine = self.user_cat.reindex(pd.MultiIndex.from_arrays([u, c])).fillna(0.0).to_numpy(float)
        n = pd.Series(u).map(self.user_clicks).fillna(0.0).to_numpy(float)
        share = (mine + self.alpha * prior) / (n + self.alpha)
        pop = pd.Series(v).map(self.recent).fillna(1e-3).to_numpy(float)
        return share * pop

    def predict_tasks(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        s = self.score(rows)
        return _tasks(s / (1.0 + s))  # monotone squash into (0, 1); a rank score, not a probability


@dataclass
class CoVisitation:
    """Item-item co-visitation: ``score(u, v) = sum over v' the user clicked earlier of co_clicks(v, v')``.

    ``co_clicks(v, v')`` counts users of the training window who clicked both. Users without history (or
    videos without co-clicks) fall back to a small popularity term, which also breaks ties.
    """

    name: str = "covisitation"
    calibrated: bool = False
    tie_break: float = 1e-3
    _users: dict = field(default_factory=dict)
    _videos: dict = field(default_factory=dict)
    _x: object = None  # users x videos binary click matrix (sparse)
    _c: object = None  # videos x videos co-click counts (sparse, zero diagonal)
    _pop: GlobalPopularity = field(default_factory=GlobalPopularity)

    def fit(self, history: pd.DataFrame) -> CoVisitation:
        return self.fit_summary(HistorySummary.of(history))

    def fit_summary(self, s: HistorySummary) -> CoVisitation:
        from scipy import sparse

        self._pop = GlobalPopularity().fit_summary(s)
        clicks = s.engaged[["user_key", "video_id"]]
        u, v = _keys(clicks["user_key"]), _keys(clicks["video_id"])
        self._users = {k: i for i, k in enumerate(pd.unique(u))}
        self._videos = {k: i for i, k in enumerate(pd.unique(v))}
        ui = np.array([self._users[k] for k in u], dtype=np.int64)
        vi = np.array([self._videos[k] for k in v], dtype=np.int64)
        x = sparse.csr_matrix((np.ones(len(ui)), (ui, vi)), shape=(len(self._users), len(self._videos)))
        x.data[:] = 1.0  # duplicates were summed by the constructor: a user clicked a video or not
        c = (x.T @ x).tocsr()
        c = (c - sparse.diags(c.diagonal())).tocsr()
        c.eliminate_zeros()
        self._x, self._c = x.tocsr(), c
        return self

    def co_counts(self, rows: pd.DataFrame) -> np.ndarray:
        u = pd.Series(_keys(rows["user_key"])).map(self._users)
        v = pd.Series(_keys(rows["video_id"])).map(self._videos)
        ok = (u.notna() & v.notna()).to_numpy()
        out = np.zeros(len(rows))
        if ok.any() and self._x is not None:
            ui, vi = u[ok].astype(int).to_numpy(), v[ok].astype(int).to_numpy()
            # (X @ C)[u, v] for the needed pairs only: the sum of C[v, v'] over the videos v' user u
            # clicked (X is binary). Looked up pair by pair (a few clicks a user): slicing whole rows of C
            # (thousands of co-clicked videos each) took 2.5 GB and 110 s for 1.5M rows at 10M a day.
            # The counts are whole numbers: their float sum is exact in any order.
            x = self._x
            lens = x.indptr[ui + 1] - x.indptr[ui]
            row = np.repeat(np.arange(len(ui)), lens)
            first = np.repeat(x.indptr[ui] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
            clicked = x.indices[first + np.arange(len(row))]
            co = np.asarray(self._c[vi[row], clicked], dtype=float).reshape(-1)
            out[ok] = np.bincount(row, weights=co, minlength=len(ui))
        return out

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return self.co_counts(rows) + self.tie_break * self._pop.score(rows)

    def predict_tasks(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        s = self.score(rows)
        return _tasks(s / (1.0 + s))


def fit_baselines(history: pd.DataFrame | HistorySummary) -> dict[str, object]:
    """All baselines fitted on ``history`` (the train + valid examples, or their summary), by name."""
    s = history if isinstance(history, HistorySummary) else HistorySummary.of(history)
    return {
        b.name: b.fit_summary(s) for b in (GlobalPopularity(), RecentCategoryPopularity(), CoVisitation())
    }


def popularity_scores(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Global popularity baseline as per-task predictions for ``test`` (kept for callers of the old API)."""
    return GlobalPopularity().fit(train).predict_tasks(test)

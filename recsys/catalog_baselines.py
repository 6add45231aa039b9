"""The baselines a team would otherwise ship, as catalog scorers (issue 13, point 4).

Each is fitted on the engagements of the training window only (``user_key, video_id, ts``; no held-out
row) and scores any (user, video) pair of the catalog:

* ``popularity``: engagements per video over the whole training window;
* ``recent_popularity``: engagements per video over the last ``days`` (7) days of the window (ties broken
  by the whole window's count);
* ``item_knn``: item-item cosine neighbours (``implicit.nearest_neighbours.CosineRecommender``, the K most
  similar videos of each); a user's score for a video sums its similarity to the videos the user engaged
  with;
* ``als``: matrix factorization of the binary user x video engagement matrix, ``implicit``'s
  ``AlternatingLeastSquares`` (Hu, Koren and Volinsky 2008), scores = user factors . video factors.

The personal baselines serve the users they have seen; :mod:`recsys.catalog_eval` gives the others the
popularity fallback, as production does. ``implicit`` runs its BLAS single-threaded (``threadpoolctl``):
it warns that a multi-threaded OpenBLAS slows it down, and the machine is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.catalog_eval import Scorer, engagements


@dataclass
class _Interactions:
    """Engagements as a binary CSR user x video matrix with the key -> row/column maps."""

    users: dict[str, int]
    videos: dict[int, int]
    matrix: object  # scipy.sparse.csr_matrix

    @classmethod
    def of(cls, train: pd.DataFrame) -> _Interactions:
        from scipy import sparse

        pos = engagements(train)
        u = pos["user_key"].astype(str).to_numpy()
        v = pos["video_id"].astype("int64").to_numpy()
        ucode, ukeys = pd.factorize(u, sort=True)
        vcode, vkeys = pd.factorize(v, sort=True)
        x = sparse.csr_matrix(
            (np.ones(len(u), dtype=np.float32), (ucode, vcode)), shape=(len(ukeys), len(vkeys))
        )
        x.data[:] = 1.0  # repeated engagements count once
        return cls({k: i for i, k in enumerate(ukeys)}, {int(k): i for i, k in enumerate(vkeys)}, x)

    def columns(self, catalog: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(catalog positions that are known videos, their column indices)."""
        col = np.array([self.videos.get(int(v), -1) for v in catalog])
        ok = np.flatnonzero(col >= 0)
        return ok, col[ok]

    def serves(self, keys: list[str]) -> np.ndarray:
        return np.array([k in self.users for k in keys], dtype=bool)


def _counts(pos: pd.DataFrame) -> pd.Series:
    return pos.groupby(pos["video_id"].astype("int64")).size().astype(float)


@dataclass
class Popularity:
    """Engagements per video over the training window; the same list for every user."""

    name: str = "popularity"
    counts: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))

    def fit(self, train: pd.DataFrame) -> Popularity:
        self.counts = _counts(engagements(train))
        return self

    def score(self, users: list[str], catalog: np.ndarray) -> np.ndarray:
        row = pd.Series(catalog).map(self.counts).fillna(0.0).to_numpy(float)
        return np.broadcast_to(row, (len(users), len(catalog)))

    def scorer(self) -> Scorer:
        return Scorer(self.name, self.score, lambda keys: np.ones(len(keys), dtype=bool))


@dataclass
class RecentPopularity(Popularity):
    """Engagements per video over the last ``days`` days of the window (+ 1e-6 x the whole window's)."""

    name: str = "recent_popularity"
    days: int = 7

    def fit(self, train: pd.DataFrame) -> RecentPopularity:
        pos = engagements(train)
        ts = pd.to_datetime(pos["ts"], utc=True)
        since = ts.max().normalize() - pd.Timedelta(days=self.days - 1) if len(pos) else ts.max()
        total = _counts(pos)
        recent = _counts(pos[ts >= since]).reindex(total.index, fill_value=0.0)
        self.counts = recent + 1e-6 * total
        return self


@dataclass
class ItemKNN:
    """Item-item cosine neighbours from ``implicit`` (K per video); score = sum of similarities to the
    user's engaged videos."""

    name: str = "item_knn"
    neighbours: int = 100
    data: _Interactions | None = None
    model: object = None

    def fit(self, train: pd.DataFrame) -> ItemKNN:
        from implicit.nearest_neighbours import CosineRecommender
        from threadpoolctl import threadpool_limits

        self.data = _Interactions.of(train)
        self.model = CosineRecommender(K=self.neighbours)
        with threadpool_limits(1):
            self.model.fit(self.data.matrix, show_progress=False)
        return self

    def score(self, users: list[str], catalog: np.ndarray) -> np.ndarray:
        rows = [self.data.users[u] for u in users]
        ok, cols = self.data.columns(catalog)
        sim = self.model.similarity  # videos x videos (sparse, K per row)
        s = (self.data.matrix[rows] @ sim).toarray()  # [users, known videos]
        out = np.zeros((len(users), len(catalog)))
        out[:, ok] = s[:, cols]
        return out

    def scorer(self) -> Scorer:
        return Scorer(self.name, self.score, self.data.serves)


@dataclass
class ALS:
    """``implicit`` ALS on the binary engagement matrix (confidence 1 + alpha for an engagement)."""

    name: str = "als"
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 20
    seed: int = 0
    data: _Interactions | None = None
    model: object = None

    def fit(self, train: pd.DataFrame) -> ALS:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.data = _Interactions.of(train)
        with threadpool_limits(1, "blas"):  # implicit checks (and warns about) BLAS threads as it starts
            self.model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=1,
            )
            self.model.fit(self.data.matrix, show_progress=False)
        return self

    def score(self, users: list[str], catalog: np.ndarray) -> np.ndarray:
        rows = [self.data.users[u] for u in users]
        ok, cols = self.data.columns(catalog)
        s = self.model.user_factors[rows] @ self.model.item_factors[cols].T
        out = np.full((len(users), len(catalog)), -np.finfo(np.float32).max / 2)
        out[:, ok] = s
        return out

    def scorer(self) -> Scorer:
        return Scorer(self.name, self.score, self.data.serves)


def fit_catalog_baselines(train: pd.DataFrame, seed: int = 0, recent_days: int = 7) -> dict[str, Scorer]:
    """Every baseline fitted on ``train`` (the training window), as scorers by name."""
    return {
        "popularity": Popularity().fit(train).scorer(),
        "recent_popularity": RecentPopularity(days=recent_days).fit(train).scorer(),
        "item_knn": ItemKNN().fit(train).scorer(),
        "als": ALS(seed=seed).fit(train).scorer(),
    }

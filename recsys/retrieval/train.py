"""Fitting the two-tower model, exporting its index, and the candidate-recall gate.

Pure functions over frames: the stage (:mod:`recsys.retrieval.pipeline`) reads the lake and writes MLflow.
The model learns from the *engagements* (clicked impressions) of the training split only; validation and
test days never reach it. Its gate is candidate Recall@K of the test day's engagements: a new model may
not recall fewer of them than the champion does (``max_recall_regression``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.retrieval.features import ITEM_INPUTS, USER_INPUTS, RetrievalFeatures
from recsys.retrieval.index import ItemIndex, choose_backend
from recsys.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)
BATCH = 8_192  # rows per tower call: a query batch holds [BATCH, history_len, dim] pooled floats
CHUNK_USERS = 20_000  # users embedded and searched at a time by retrieve()


@dataclass
class RetrievalBundle:
    """A trained two-tower model, its feature vocabularies and its exported item index."""

    model: object
    features: RetrievalFeatures
    index: ItemIndex
    version: str = "unregistered"
    prior: float = 0.0  # the popularity prior folded into the index's bias column

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model.keras")
        transform = self.features.transform
        if transform.coengagement:  # the ranker's per-user histories: retrieval never reads them
            transform = dataclasses.replace(transform, coengagement={})
        transform.save(path / "transform.json")
        self.features.save(path / "retrieval_features.json")
        self.index.save(path / "index.npz")
        (path / "retrieval.json").write_text(json.dumps({"format": 1, "popularity_prior": self.prior}))
        return path

    @classmethod
    def load(cls, path: Path, settings: RetrievalSettings, version: str = "local") -> RetrievalBundle:
        import keras

        import recsys.retrieval.model  # noqa: F401  registers TwoTowerModel
        from recsys.features.transform import Transform

        path = Path(path)
        transform = Transform.load(path / "transform.json")
        index = ItemIndex.load(path / "index.npz", hnsw_m=settings.hnsw_m, ef_search=settings.ef_search)
        index.backend = choose_backend(len(index), settings.exact_max_items)
        meta = json.loads((path / "retrieval.json").read_text())
        return cls(
            keras.saving.load_model(path / "model.keras", compile=False),
            RetrievalFeatures.load(path / "retrieval_features.json", transform),
            index,
            version,
            float(meta.get("popularity_prior", 0.0)),
        )


def _batched(fn, x: dict[str, np.ndarray], n: int) -> np.ndarray:
    parts = [np.asarray(fn({k: v[s : s + BATCH] for k, v in x.items()})) for s in range(0, n, BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def fit_retrieval(
    train: pd.DataFrame,
    videos: pd.DataFrame,
    transform,
    settings: RetrievalSettings,
    *,
    seed: int,
    index_at,
    valid: pd.DataFrame | None = None,
) -> tuple[RetrievalBundle, dict]:
    """Train on the clicked rows of ``train`` and export the index of the catalog visible at ``index_at``.

    ``valid``: the validation days' rows (same columns), on which ``popularity_prior="auto"`` is chosen
    (without them, or without a new engagement in them, the prior is 0). Returns the bundle and the
    history: the per-epoch ``loss``, and ``prior_recall`` (the validation recall of each prior tried).
    """
    import keras

    from recsys.retrieval.model import TwoTowerModel

    engagements = train[pd.to_numeric(train["click"], errors="coerce").fillna(0) > 0]
    if engagements.empty:
        raise ValueError("no engagements in the training split: nothing to train the retrieval model on")
    features = RetrievalFeatures.fit(transform, videos, engagements, settings.history_len)
    x = features.training_inputs(engagements, videos)
    keras.utils.set_random_seed(seed)
    model = TwoTowerModel(
        **features.sizes(),
        embedding_dim=settings.embedding_dim,
        output_dim=settings.output_dim,
        units=settings.units,
        temperature=settings.temperature,
        logq_correction=settings.logq_correction,
        user_id=settings.user_id,
        id_l2=settings.id_l2,
        item_bias=settings.item_bias,
        seed=seed,
    )
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate))
    batch = min(settings.batch_size, len(engagements))
    hist = model.fit(x, epochs=settings.epochs, batch_size=batch, shuffle=True, verbose=0)
    clicks = engagements["video_id"].astype("int64").value_counts()
    bundle = RetrievalBundle(model, features, export_index(model, features, videos, index_at, settings))
    history: dict = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    prior, history["prior_recall"] = settings.popularity_prior, {}
    if prior == "auto":
        prior, history["prior_recall"] = choose_prior(
            bundle, clicks, engagements, valid, videos, settings, seed
        )
    bundle.prior, bundle.index = float(prior), with_prior(bundle.index, model, clicks, float(prior))
    return bundle, history


def with_prior(index: ItemIndex, model, clicks: pd.Series, prior: float) -> ItemIndex:
    """``index`` with ``prior x log(1 + clicks)`` added to its bias column (``clicks``: video_id -> the
    training engagements); the index itself when the prior is 0."""
    if not prior or not len(index):
        return index
    if not getattr(model, "item_bias", False):
        raise ValueError("retrieval.popularity_prior needs retrieval.item_bias (the index's bias column)")
    n = pd.Series(index.video_ids).map(clicks).fillna(0).to_numpy(float)
    emb = index.embeddings.copy()
    emb[:, -1] += np.float32(prior) * np.log1p(n).astype(np.float32)
    return dataclasses.replace(index, embeddings=emb)


def choose_prior(
    bundle: RetrievalBundle, clicks, engagements, valid, videos, settings: RetrievalSettings, seed: int
) -> tuple[float, dict[str, float]]:
    """The prior of ``settings.prior_grid`` whose pool recalls the most of the validation days' new
    engagements at ``eval_k`` (the smallest on a tie; 0 without validation engagements or item bias)."""
    from recsys.serving.candidates import generate_candidates

    if valid is None or not getattr(bundle.model, "item_bias", False):
        return 0.0, {}
    v = valid[pd.to_numeric(valid["click"], errors="coerce").fillna(0) > 0]
    hist = engagements.assign(clicked=1, session_key=engagements["user_key"].astype(str))
    held = held_out_engagements(hist, v)
    if held.empty:
        return 0.0, {}
    keys = np.sort(held["user_key"].astype(str).unique())
    if len(keys) > settings.prior_users:
        keys = np.sort(np.random.default_rng(seed).choice(keys, settings.prior_users, replace=False))
        held = held[held["user_key"].isin(keys)]
    at = pd.to_datetime(v["ts"], utc=True).min().floor("D")
    users = v[["user_key", "device"]].drop_duplicates("user_key", keep="last")
    k, recall = settings.eval_k, {}
    exact = dataclasses.replace(bundle.index, backend="exact")  # no HNSW graph built per prior
    for prior in sorted(settings.prior_grid):
        b = dataclasses.replace(bundle, index=with_prior(exact, bundle.model, clicks, prior))
        pool = retrieve(b, keys, hist, videos, users, at, k)
        prev = (at - pd.Timedelta(days=1)).date()
        cands = generate_candidates(hist, videos, list(keys), prev, k, retrieved=pool, pools=("two_tower",))
        recall[str(prior)] = recall_at_k(cands, held)
    best = max(recall, key=lambda p: (recall[p], -float(p)))
    log.info("retrieval popularity prior %s (validation recall@%d by prior: %s)", best, k, recall)
    return float(best), recall


def export_index(
    model,
    features: RetrievalFeatures,
    videos: pd.DataFrame,
    at,
    settings: RetrievalSettings,
):
    """Item embeddings of the visible videos uploaded before ``at``: the index of this model version
    (with an item bias, its last column holds the bias: :func:`with_prior` adds the prior to it)."""
    at = pd.Timestamp(at)
    at = at.tz_localize("UTC") if at.tzinfo is None else at
    v = videos[videos["visible"].astype(bool)].drop_duplicates("video_id", keep="last")
    v = v[pd.to_datetime(v["upload_ts"], utc=True) < at].sort_values("video_id")
    x = features.items(v, at)
    emb = _batched(lambda b: model.candidate_vectors({k: b[k] for k in ITEM_INPUTS}), x, len(v))
    dim = model.output_dim + int(getattr(model, "item_bias", False))
    emb = emb.reshape(len(v), -1) if len(v) else np.zeros((0, dim), np.float32)
    return ItemIndex(
        v["video_id"].to_numpy(np.int64),
        emb,
        built_at=at.isoformat(),
        backend=choose_backend(len(v), settings.exact_max_items),
        hnsw_m=settings.hnsw_m,
        ef_search=settings.ef_search,
    )


def with_video_columns(clicks: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """Clicks with the clicked video's category and author (what the history inputs need)."""
    v = videos.drop_duplicates("video_id", keep="last")[["video_id", "category", "author_id"]]
    c = clicks.drop(columns=[col for col in ("category", "author_id") if col in clicks.columns])
    c = c.assign(video_id=c["video_id"].astype("int64"))
    return c.merge(v.assign(video_id=v["video_id"].astype("int64")), on="video_id", how="left")


def retrieve(
    bundle: RetrievalBundle | None,
    user_keys,
    clicks: pd.DataFrame,
    videos: pd.DataFrame,
    users: pd.DataFrame,
    at,
    k: int,
    *,
    chunk_users: int = CHUNK_USERS,
    seen_max: int | None = None,
):
    """The two-tower pool (:class:`recsys.serving.candidates.Retrieved`) for the users with history.

    ``clicks``: the recent engagements (user_key, video_id, ts). Users without any get no two-tower pool
    (their tower has nothing of theirs to go on; the fallback pools serve them). None when there is no
    model or its index is empty. The search asks for ``k`` plus the longest history so that removing
    seen videos still leaves ``k``. Users are embedded and searched ``chunk_users`` at a time, which
    bounds memory whatever their number. ``seen_max``: the longest history to allow for (default: of
    these users); serving in shards passes the day's, so a user's pool does not depend on the shard.
    """
    from recsys.serving.candidates import Retrieved

    if bundle is None or len(bundle.index) == 0 or k <= 0:
        return None
    keys = np.asarray(list(user_keys), dtype=object)
    owner = pd.Index(keys).get_indexer(clicks["user_key"]) if len(keys) else np.zeros(len(clicks), int)
    mine = owner >= 0
    c, owner = clicks.loc[mine, ["user_key", "video_id", "ts"]], owner[mine]  # what the tower reads
    order = np.argsort(owner, kind="stable")  # by user, so a chunk of users is a slice of clicks
    c, owner = c.iloc[order], owner[order]
    if seen_max is None:
        seen_max = int(np.bincount(owner).max()) if len(owner) else 0
    width = k + min(seen_max, k)
    out_keys, out_ids = [], []
    for lo in range(0, len(keys), chunk_users):  # bounds the history frames and tower inputs
        hi = min(len(keys), lo + chunk_users)
        a, b = np.searchsorted(owner, [lo, hi])
        x, has = bundle.features.serving_queries(
            keys[lo:hi], with_video_columns(c.iloc[a:b], videos), users, at
        )
        if not has.any():
            continue
        xq = {name: x[name][has] for name in USER_INPUTS}
        q = _batched(lambda b: bundle.model.query_vectors(b), xq, int(has.sum())).reshape(int(has.sum()), -1)
        out_keys.append(keys[lo:hi][has])
        out_ids.append(bundle.index.search(q, width)[0])
    if not out_keys:
        return None
    return Retrieved(np.concatenate(out_keys), np.concatenate(out_ids), k)


def recall_at_k(candidates, held_out: pd.DataFrame) -> float:
    """Share of the held-out (user_key, video_id) engagements found in the users' candidate lists."""
    if held_out.empty:
        return float("nan")
    sizes = candidates.sizes()
    users = np.repeat(np.asarray(candidates.user_keys, dtype=object), sizes)
    have = pd.MultiIndex.from_arrays([users, candidates.video_ids])
    want = pd.MultiIndex.from_arrays(
        [held_out["user_key"].astype(object).to_numpy(), held_out["video_id"].astype("int64").to_numpy()]
    )
    return float(want.isin(have).mean())


def held_out_engagements(history_clicks: pd.DataFrame, test_clicks: pd.DataFrame) -> pd.DataFrame:
    """Distinct (user, video) engagements of the test day on videos the user had not clicked before."""
    t = test_clicks[["user_key", "video_id"]].astype({"video_id": "int64"}).drop_duplicates()
    h = history_clicks[["user_key", "video_id"]].astype({"video_id": "int64"}).drop_duplicates()
    m = t.merge(h, on=["user_key", "video_id"], how="left", indicator=True)
    return m[m["_merge"] == "left_only"][["user_key", "video_id"]].reset_index(drop=True)


def gate(candidate: float, champion: float | None, settings: RetrievalSettings) -> dict:
    """Promote unless candidate recall falls more than ``max_recall_regression`` below the champion's."""
    if not np.isfinite(candidate):
        return {"passed": False, "reason": "candidate recall undefined (no held-out engagements)"}
    if champion is None or not np.isfinite(champion):
        return {"passed": True, "reason": f"no champion to compare with; recall {candidate:.4f}"}
    floor = champion - settings.max_recall_regression
    ok = candidate >= floor
    verb = "holds" if ok else "regresses"
    return {
        "passed": bool(ok),
        "reason": f"recall@{settings.eval_k} {candidate:.4f} {verb} against the champion's {champion:.4f}"
        f" (floor {floor:.4f})",
    }

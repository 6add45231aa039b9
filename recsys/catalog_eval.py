"""Ranking evaluation over the whole catalog, the same for every source (issue 13, point 4).

Why: AUC on logged impressions says nothing when a source logs positives only (every row is a click),
and ranking a user's own impressions of a day rewards whatever the logging policy showed. The question a
team asks is simpler: *of what each user engaged with next, how much did our list contain?* So:

* the **held-out engagements** are the engaged rows (``click == 1``, never a ``sampled`` negative) of the
  held-out day(s); the **evaluation users** are the users with at least one;
* each evaluation user gets a list ranked over the **visible catalog** (visible videos uploaded before the
  end of the held-out period) **minus what that user engaged with before** (in the training window);
* a scorer (the model or a baseline) gives a score per (user, video); its top 50 per user give Recall@10,
  Recall@50, NDCG@10 (binary gains), MAP@10 and coverage@10 (distinct videos in the top 10s over the
  catalog size);
* a scorer *serves* a user when it knows the user (an engagement in its training window); any other user
  gets the popularity fallback list, as in production, and ``model_share`` is the share of evaluation users
  it served.

:func:`ranking_check` is the gate's check: the candidate's Recall@10 must beat the best baseline's by a
relative margin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

KS = (10, 50)


@dataclass(frozen=True)
class Holdout:
    """The evaluation set: users, their held-out videos, what they engaged with before, the catalog."""

    users: list[str]  # evaluation user keys, sorted
    truth: list[np.ndarray]  # per user: held-out engaged video ids
    seen: list[np.ndarray]  # per user: video ids engaged in the training window (excluded from the list)
    catalog: np.ndarray  # visible video ids (int64, sorted)

    @property
    def n_users(self) -> int:
        return len(self.users)


def engagements(rows: pd.DataFrame) -> pd.DataFrame:
    """The engaged rows of ``rows`` (clicked, not a sampled negative)."""
    mask = pd.to_numeric(rows["click"], errors="coerce").fillna(0).to_numpy(float) > 0
    if "sampled" in rows.columns:
        mask &= ~rows["sampled"].fillna(False).astype(bool).to_numpy()
    return rows.loc[mask]


def visible_catalog(videos: pd.DataFrame, until: pd.Timestamp) -> np.ndarray:
    """Video ids visible and uploaded before ``until`` (sorted)."""
    v = videos.drop_duplicates("video_id", keep="last")
    ok = np.array(v["visible"].fillna(True).astype(bool), dtype=bool)
    upload = pd.to_datetime(v["upload_ts"], utc=True)
    ok &= (upload.isna() | (upload < until)).to_numpy()
    return np.sort(v.loc[ok, "video_id"].astype("int64").unique())


def make_holdout(
    train: pd.DataFrame, test: pd.DataFrame, videos: pd.DataFrame, max_users: int = 0
) -> Holdout:
    """The holdout of ``test`` (held-out rows) given the earlier ``train`` rows and the video table.

    ``max_users`` > 0 keeps a fixed, seedless sample of that many users (every k-th by key) to bound cost.
    """
    return holdout_of(engagements(train), train["video_id"].to_numpy(), test, videos, max_users)


def holdout_users(test: pd.DataFrame, max_users: int = 0) -> list[str]:
    """The evaluation users of the held-out rows ``test`` (sorted keys; every k-th of them when there are
    more than ``max_users`` > 0)."""
    users = sorted(pd.unique(engagements(test)["user_key"].astype(str)))
    if max_users and len(users) > max_users:
        users = users[:: int(np.ceil(len(users) / max_users))]
    return users


def holdout_of(
    train_engaged: pd.DataFrame,
    train_videos: np.ndarray,
    test: pd.DataFrame,
    videos: pd.DataFrame,
    max_users: int = 0,
) -> Holdout:
    """:func:`make_holdout` from what it reads of the training rows: their engaged rows and video ids."""
    test_pos = engagements(test)
    until = pd.to_datetime(test["ts"], utc=True).max().normalize() + pd.Timedelta(days=1)
    # a video some row logged was visible then, whatever its recorded upload time (KuaiRand's sample
    # records uploads after its log day)
    logged = pd.concat([pd.Series(train_videos), test["video_id"]]).dropna().astype("int64").unique()
    hidden = videos.loc[~videos["visible"].fillna(True).astype(bool), "video_id"].astype("int64")
    catalog = np.union1d(visible_catalog(videos, until), np.setdiff1d(logged, hidden.to_numpy()))
    users = holdout_users(test, max_users)
    truth = _videos_by_user(test_pos, users)
    seen_by = _videos_by_user(engagements(train_engaged), users)
    empty = np.zeros(0, dtype=np.int64)
    return Holdout(users, [truth[u] for u in users], [seen_by.get(u, empty) for u in users], catalog)


def _videos_by_user(rows: pd.DataFrame, users: list[str]) -> dict[str, np.ndarray]:
    """Each of ``users``' distinct video ids in ``rows`` (sorted int64), for those with a row."""
    keys = rows["user_key"].astype(str)
    mine = keys.isin(users).to_numpy()
    pairs = pd.DataFrame({"u": keys.to_numpy()[mine], "v": rows["video_id"].to_numpy()[mine].astype("int64")})
    pairs = pairs.drop_duplicates().sort_values(["u", "v"])
    u, v = pairs["u"].to_numpy(), pairs["v"].to_numpy()
    cuts = np.flatnonzero(u[1:] != u[:-1]) + 1
    return {
        group[0]: videos
        for group, videos in zip(np.split(u, cuts), np.split(v, cuts), strict=True)
        if len(group)
    }


# A scorer: (user keys, catalog video ids) -> [users, videos] scores, and which users it serves.
ScoreFn = Callable[[list[str], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Scorer:
    name: str
    score: ScoreFn
    serves: Callable[[list[str]], np.ndarray]  # bool per user: the scorer knows the user


def top_lists(scores: np.ndarray, catalog: np.ndarray, seen: list[np.ndarray], k: int) -> np.ndarray:
    """[users, k] video ids of each user's top k by score (ties: smaller video id first), seen removed."""
    s = np.array(scores, dtype=np.float64, copy=True)
    if len(catalog) == 0:
        return np.zeros((s.shape[0], 0), dtype=np.int64)
    for j, vids in enumerate(seen):
        if len(vids):
            pos = np.searchsorted(catalog, vids)
            pos = pos[(pos < len(catalog)) & (catalog[np.minimum(pos, len(catalog) - 1)] == vids)]
            s[j, pos] = -np.inf
    k = min(k, s.shape[1])
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]  # catalog is sorted: ties keep id order
    out = catalog[order]
    out[np.take_along_axis(s, order, axis=1) == -np.inf] = -1
    return out


def list_metrics(lists: np.ndarray, truth: list[np.ndarray], catalog_size: int) -> dict[str, float]:
    """Recall@10/@50, NDCG@10, MAP@10, coverage@10 of per-user lists against the held-out videos."""
    disc = 1.0 / np.log2(np.arange(2, 12))
    rec = {k: [] for k in KS}
    nd, ap = [], []
    for row, t in zip(lists, truth, strict=True):
        hit = np.isin(row, t)
        for k in KS:
            rec[k].append(hit[:k].sum() / len(t))
        h10 = hit[:10].astype(float)
        idcg = disc[: min(len(t), 10)].sum()
        nd.append(float((h10 * disc[: len(h10)]).sum() / idcg))
        prec = np.cumsum(h10) / np.arange(1, len(h10) + 1)
        ap.append(float((prec * h10).sum() / min(len(t), 10)))
    top10 = lists[:, :10]
    covered = len(np.unique(top10[top10 >= 0]))
    out = {f"recall_{k}": float(np.mean(v)) if v else float("nan") for k, v in rec.items()}
    out.update(
        {
            "ndcg_10": float(np.mean(nd)) if nd else float("nan"),
            "map_10": float(np.mean(ap)) if ap else float("nan"),
            "coverage_10": covered / catalog_size if catalog_size else float("nan"),
        }
    )
    return out


PAIRS_PER_CHUNK = 1 << 17  # (user, catalog video) pairs scored at a time: ~30 users of a 4,400-video catalog


def chunk_users(catalog_size: int, pairs: int | None = None) -> int:
    """Users per scoring chunk so that a chunk holds about ``pairs`` (default :data:`PAIRS_PER_CHUNK`)
    (user, video) pairs whatever the catalog size (the model's pair frame of a chunk is the evaluation's
    largest allocation)."""
    return max(1, (pairs or PAIRS_PER_CHUNK) // max(1, catalog_size))


def scorer_lists(
    scorer: Scorer, holdout: Holdout, fallback: Scorer, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """([users, 50] lists, bool served per user) of one scorer; users it does not serve get ``fallback``'s.
    ``chunk``: users scored at a time (default :func:`chunk_users`; the lists do not depend on it)."""
    chunk = chunk or chunk_users(len(holdout.catalog))
    k = max(KS)
    lists = np.full((holdout.n_users, k), -1, dtype=np.int64)
    served = np.asarray(scorer.serves(holdout.users), dtype=bool)
    width = min(k, len(holdout.catalog))
    for start in range(0, holdout.n_users, chunk):
        stop = min(start + chunk, holdout.n_users)
        users, seen = holdout.users[start:stop], holdout.seen[start:stop]
        mine = served[start:stop]
        for who, idx in ((scorer, np.flatnonzero(mine)), (fallback, np.flatnonzero(~mine))):
            if len(idx):
                scores = who.score([users[i] for i in idx], holdout.catalog)
                lists[start + idx, :width] = top_lists(scores, holdout.catalog, [seen[i] for i in idx], k)
    return lists, served


def evaluate_scorer(
    scorer: Scorer, holdout: Holdout, fallback: Scorer, chunk: int | None = None
) -> dict[str, float]:
    """The figures of one scorer on ``holdout``; users it does not serve get ``fallback``'s lists."""
    lists, served = scorer_lists(scorer, holdout, fallback, chunk)
    out = list_metrics(lists, holdout.truth, len(holdout.catalog))
    out["model_share"] = float(served.mean()) if len(served) else float("nan")
    out["users"] = float(holdout.n_users)
    return out


def ranking_check(candidate: dict, baselines: dict[str, dict], margin: float) -> dict:
    """The gate's ranking check: candidate Recall@10 >= (1 + margin) x the best baseline's Recall@10."""
    finite = {n: m["recall_10"] for n, m in baselines.items() if np.isfinite(m.get("recall_10", np.nan))}
    best = max(finite, key=finite.get) if finite else None
    need = (1.0 + margin) * finite[best] if best else float("nan")
    value = candidate.get("recall_10", float("nan"))
    ok = bool(best is None or (np.isfinite(value) and value >= need))
    detail = (
        f"Recall@10 {value:.4f} vs best baseline {best} {finite[best]:.4f} x (1 + {margin:.2f}) = {need:.4f}"
        if best
        else "no baseline to compare with"
    )
    return {
        "check": "ranking_over_best_baseline",
        "passed": ok,
        "value": float(value),
        "threshold": float(need) if best else 0.0,
        "shortfall": float(need - value) if best and np.isfinite(value) else (0.0 if ok else float("inf")),
        "detail": detail,
    }


# ------------------------------------------------------------------------------- the model as a scorer
def model_scorer(
    ranker, users: pd.DataFrame, videos: pd.DataFrame, at: pd.Timestamp, name: str = "model"
) -> Scorer:
    """The ranker as a :class:`Scorer`: every (user, catalog video) pair scored at serving time ``at`` with
    the serving score (:func:`recsys.serving.rank.predict_scores`, logQ-corrected for a model trained on
    sampled negatives).

    It serves the users in its user vocabulary (an engagement in its training window); others would get the
    fallback in production, and get it here.
    """
    from recsys.features.negatives import ranking_scores
    from recsys.serving.rank import BATCH_SIZE, SideTables, run_model

    known = set(getattr(ranker.transform, "vocabs", {}).get("user", {}))
    cache: dict[str, object] = {}  # the side tables of every user in ``users`` and the last catalog

    def tables(user_keys: list[str], catalog: np.ndarray) -> tuple[SideTables, np.ndarray]:
        """Side tables holding ``user_keys`` and ``catalog``, each side encoded once per scorer (not once
        per chunk of users: most of the cost of a chunk was encoding the same catalog again)."""
        sides = cache.get("sides")
        if sides is None or not np.array_equal(sides.video_ids, catalog):
            keys = pd.unique(pd.concat([users["user_key"].astype(str), pd.Series(user_keys, dtype=str)]))
            cache["sides"] = sides = SideTables(ranker.transform, keys, catalog, users, videos, at)
            cache["index"] = pd.Index(sides.user_keys)
        rows = cache["index"].get_indexer(pd.Index(list(user_keys), dtype=object))
        if (rows < 0).any():  # a user the tables lack: tables of these users alone
            sides = SideTables(ranker.transform, list(user_keys), catalog, users, videos, at)
            rows = np.arange(len(user_keys))
        return sides, rows

    def score(user_keys: list[str], catalog: np.ndarray) -> np.ndarray:
        catalog = np.asarray(catalog, dtype=np.int64)
        n_videos = len(catalog)
        if not len(user_keys) or not n_videos:
            return np.zeros((len(user_keys), n_videos), dtype=np.float64)
        sides, rows = tables(user_keys, catalog)
        # user order then catalog order, as the scoring frame of these users and the catalog
        inputs = sides.inputs(np.repeat(rows, n_videos), np.tile(np.arange(n_videos), len(rows)))
        preds = run_model(ranker.model, inputs.batch, inputs.n, BATCH_SIZE)
        s = ranking_scores(ranker, preds, np.tile(catalog, len(rows)))
        return np.asarray(s, dtype=np.float64).reshape(len(user_keys), n_videos)

    return Scorer(name, score, lambda keys: np.array([k in known for k in keys], dtype=bool))


# ------------------------------------------------------------------------------- in the daily pipeline
USER_ATTRIBUTES = ["user_key", "device", "region", "age_band", "activity"]


def latest_user_attributes(history: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Each user's attributes on their latest row of ``history`` then ``test`` (by ``ts``; of rows at the
    same time, the last). Only those columns are concatenated: the test split's other columns would be
    copied, NaN-filled, for every history row. The sort is stable, so the rows of any subset of the users
    give those users' same attributes (the evaluate stage keeps only the ranked users' rows)."""
    have = [c for c in ["ts", *USER_ATTRIBUTES] if c in history.columns or c in test.columns]
    parts = [f[[c for c in have if c in f.columns]] for f in (history, test)]
    rows = pd.concat(parts, ignore_index=True)
    latest = rows.sort_values("ts", kind="stable").drop_duplicates("user_key", keep="last")
    return latest[[c for c in USER_ATTRIBUTES if c in rows]]


def pipeline_ranking(
    rankers: dict[str, object],
    history: pd.DataFrame,
    test: pd.DataFrame,
    videos: pd.DataFrame,
    margin: float,
    seed: int = 0,
    max_users: int = 0,
) -> dict:
    """Catalog ranking figures of ``rankers`` (name -> ranker: candidate, champion) and of every baseline
    on the held-out rows ``test``, baselines fitted on ``history`` (the training window); the gate's check.

    Lists are computed as of the start of the held-out period, over the catalog of ``videos``, for at most
    ``max_users`` held-out users (:func:`make_holdout`; 0: all).
    """
    from recsys.eval_data import HistorySummary

    summary = HistorySummary.of(history)
    return _ranking_figures(rankers, _prepare(summary, test, videos, seed, max_users), videos, margin)


def _prepare(history, test: pd.DataFrame, videos: pd.DataFrame, seed: int, max_users: int):
    """What the figures need of the history (a :class:`recsys.eval_data.HistorySummary` whose attribute
    rows hold at least the evaluation users'): (holdout, users' attributes, list time, fitted baselines),
    or the holdout alone when there is nothing to rank. Every catalog baseline reads engaged rows only."""
    from recsys.catalog_baselines import fit_catalog_baselines

    holdout = holdout_of(history.engaged, history.video_ids, test, videos, max_users=max_users)
    if holdout.n_users == 0 or len(holdout.catalog) == 0:  # nothing to rank for, or nothing to rank
        return holdout, None, None, None
    mine = set(holdout.users)
    users = latest_user_attributes(
        history.attributes, test[test["user_key"].astype(str).isin(mine).to_numpy()]
    )
    at = pd.to_datetime(test["ts"], utc=True).min().normalize()
    return holdout, users, at, fit_catalog_baselines(history.engaged, seed=seed)


def _ranking_figures(rankers: dict[str, object], prepared, videos: pd.DataFrame, margin: float) -> dict:
    holdout, users, at, baselines = prepared
    if baselines is None:
        return {"figures": {}, "check": None, "users": holdout.n_users, "catalog": len(holdout.catalog)}
    figures = {
        name: evaluate_scorer(model_scorer(r, users, videos, at, name), holdout, baselines["popularity"])
        for name, r in rankers.items()
        if r is not None
    }
    base = {
        f"baseline_{n}": evaluate_scorer(s, holdout, baselines["popularity"]) for n, s in baselines.items()
    }
    figures.update(base)
    check = ranking_check(
        figures.get("candidate", {}), {n.removeprefix("baseline_"): m for n, m in base.items()}, margin
    )
    return {"figures": figures, "check": check, "users": holdout.n_users, "catalog": len(holdout.catalog)}


def pipeline_ranking_of_run(
    ranker, champion, features_dir, test: pd.DataFrame, cfg, seed: int = 0, history=None
) -> tuple[dict | None, bool]:
    """(catalog ranking figures or None, whether the test day's rows are logged exposures) for the
    evaluate stage, on the partition's ``catalog.parquet`` (absent in partitions built before it existed:
    no ranking figures then). ``history``: the partition's train + valid rows as a
    :class:`recsys.eval_data.HistorySummary` holding at least the evaluation users' attribute rows (read
    here, in chunks, when None)."""
    from pathlib import Path

    from recsys.eval_data import HistorySummary

    features_dir = Path(features_dir)
    sampled = "sampled" in test.columns and bool(test["sampled"].fillna(False).astype(bool).any())
    logged = not sampled
    if not (features_dir / "catalog.parquet").exists():
        return None, logged
    if history is None:
        paths = [features_dir / f"{part}.parquet" for part in ("train", "valid")]
        history = HistorySummary.read(paths, holdout_users(test, cfg.ranking_users), cfg.chunk_rows)
    videos = pd.read_parquet(features_dir / "catalog.parquet")
    prepared = _prepare(history, test, videos, seed, cfg.ranking_users)
    rankers = {"candidate": ranker, "champion": champion}
    return _ranking_figures(rankers, prepared, videos, cfg.ranking_margin), logged

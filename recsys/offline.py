"""One offline quality experiment on a source's history: model vs every baseline, catalog ranking figures.

Why: the question "do our lists beat what a team would otherwise ship?" must be answerable on any history
(the simulator, a MovieLens-format folder, KuaiRand) without running the whole daily pipeline over months
of days. This module runs the same pieces the pipeline runs (:func:`~recsys.features.build.build_examples`,
sampled negatives for a positive-only source, the fitted :class:`~recsys.features.transform.Transform`,
:func:`~recsys.train.fit_model`, the ranker's batch scoring) and the same evaluation
(:mod:`recsys.catalog_eval`), skipping only the lake and the privacy stages (the history is read straight
from the source; the user key is the source's user id, which stays in this process: only aggregates leave).

Split by time: the last ``holdout_days`` days are held out; everything before is the training window
(the whole history: point 2's default for a history source). The model trains on its older 85% and stops
early on the latest 15%; the baselines are fitted on all of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class History:
    """A source's history in the clean shapes: events (``user_key``), videos, users (``user_key``)."""

    name: str
    events: pd.DataFrame
    videos: pd.DataFrame
    users: pd.DataFrame
    world: object = None  # the simulator's world, when the truth is known
    # the truth as a catalog scorer (recsys.catalog_eval.Scorer), when known: the ceiling of every figure
    oracle: object = None


def _keyed(events: pd.DataFrame, users: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ev = events.rename(columns={"user_id": "user_key", "session_id": "session_key"})
    us = users.rename(columns={"user_id": "user_key"})
    return ev, us


def movielens_history(path: Path) -> History:
    """Every day of the MovieLens release at ``path`` (any format :mod:`recsys.data.movielens` reads)."""
    from recsys.data import movielens

    ml = movielens.load(path)
    days = movielens.days(path)
    events = pd.concat([movielens.events_for_day(ml, d) for d in days], ignore_index=True)
    ev, us = _keyed(events, ml.users)
    return History("movielens", ev, ml.videos.copy(), us)


def generated_movielens_oracle(seed: int):
    """The truth behind a history written by :func:`recsys.sim.movielens_gen.generate_movielens` (default
    arguments, ``seed``) as a scorer: each user's unrated movies ranked by the logits the ratings were drawn
    with. No recommender can expect more on that history; the bench reports every scorer against it."""
    from recsys.catalog_eval import Scorer
    from recsys.sim.movielens_gen import choice_logits

    logits = choice_logits(seed)

    def score(user_keys: list[str], catalog: np.ndarray) -> np.ndarray:
        rows = np.asarray([int(k) for k in user_keys], dtype=np.int64) - 1  # user ids are the file's
        return logits[np.ix_(rows, np.asarray(catalog, dtype=np.int64) - 1)]

    return Scorer("oracle", score, lambda keys: np.ones(len(keys), dtype=bool))


def simulator_history(days: int, seed: int, start: date = date(2026, 1, 1), settings=None) -> History:
    """``days`` simulated days without a live list (popular/random slates with exploration)."""
    from recsys.config import SimulatorSettings
    from recsys.sim.simulate import simulate_day
    from recsys.sim.world import build_world

    world = build_world(settings or SimulatorSettings(), seed, start)
    events = pd.concat(
        [simulate_day(world, start + timedelta(days=i)) for i in range(days)], ignore_index=True
    )
    ev, us = _keyed(events, world.users)
    return History("simulator", ev, world.videos.copy(), us, world)


def kuairand_history(path: Path) -> History:
    """The KuaiRand tables at ``path`` (the shared sample has one day)."""
    from recsys.data import kuairand

    logs = kuairand.read_log(path)
    days = kuairand.days(path)
    events = pd.concat([kuairand.events_for_day(logs, d) for d in days], ignore_index=True)
    ev, us = _keyed(events, kuairand.read_users(path, logs))
    return History("kuairand", ev, kuairand.read_videos(path, logs), us)


def split_holdout(examples: pd.DataFrame, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training window, held-out rows): the last ``holdout_days`` days are held out; a one-day history
    is split at its 70% time point instead."""
    ts = pd.to_datetime(examples["ts"], utc=True)
    last = ts.max().normalize()
    cut = last - pd.Timedelta(days=holdout_days - 1)
    if (ts < cut).sum() == 0:
        cut = ts.sort_values().iloc[int(len(ts) * 0.7)]
    return examples[ts < cut].reset_index(drop=True), examples[ts >= cut].reset_index(drop=True)


def user_table(history: History, events: pd.DataFrame) -> pd.DataFrame:
    """The user columns serving reads: attributes plus each user's last device and region."""
    last = events.sort_values("ts").drop_duplicates("user_key", keep="last")[["user_key", "device", "region"]]
    us = history.users.drop(columns=[c for c in ("device", "region") if c in history.users], errors="ignore")
    return last.merge(us, on="user_key", how="left")


def run_quality(
    history: History, settings, work_dir: Path, holdout_days: int = 7, max_users: int = 0
) -> dict:
    """Train the model on ``history``'s training window and evaluate it and every baseline on the holdout."""
    from recsys.catalog_baselines import fit_catalog_baselines
    from recsys.catalog_eval import evaluate_scorer, make_holdout, model_scorer
    from recsys.features.build import build_examples, encode
    from recsys.features.coengagement import use_coengagement
    from recsys.features.negatives import is_positive_only, sample_negatives
    from recsys.features.transform import Transform
    from recsys.registry import Ranker
    from recsys.train import fit_model

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    fs = settings.features
    examples = build_examples(history.events, history.videos, history.users)
    window, held = split_holdout(examples, holdout_days)
    positive_only = is_positive_only(window)
    # split, then sample each split's negatives from its own counts, as the features stage does
    # (recsys.features.partition.split_and_fit): the logQ correction is the train split's
    window = window.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)
    cut = int(len(window) * (1 - fs.valid_fraction))
    parts = (window.iloc[:cut], window.iloc[cut:])
    train, valid = (
        sample_negatives(p, history.videos, fs.negatives_per_positive, settings.seed + i)
        if positive_only
        else p.assign(sampled=False)
        for i, p in enumerate(parts)
    )
    rows = pd.concat([train, valid], ignore_index=True)
    transform = Transform.fit(
        train,
        title_len=fs.title_max_tokens,
        title_vocab_size=fs.title_vocab_size,
        min_count=fs.min_count,
        affinity_strength=fs.affinity_strength,
        coengagement=use_coengagement(fs.coengagement, positive_only),
    )
    if positive_only:
        from recsys.features.negatives import POWER

        transform.sampled_negatives_power = POWER
    feats = work_dir / "features"
    feats.mkdir(exist_ok=True)
    encode(train, transform, ordered=True).to_parquet(feats / "train.parquet", index=False)
    encode(valid, transform).to_parquet(feats / "valid.parquet", index=False)
    transform.save(feats / "transform.json")
    fit = fit_model(feats, settings, work_dir / "fit")
    # lists are served after the validation days: the serving state sees them (Transform.refreshed)
    serving = transform.refreshed(rows)
    ranker = Ranker(fit.model, serving, settings.model.score_weights, "offline")

    holdout = make_holdout(window, held, history.videos, max_users)
    at = pd.to_datetime(held["ts"], utc=True).min().normalize()
    users = user_table(history, window)
    baselines = fit_catalog_baselines(window, seed=settings.seed)
    fallback = baselines["popularity"]
    scorers = {"model": model_scorer(ranker, users, history.videos, at), **baselines}
    if history.oracle is not None:
        scorers["oracle"] = history.oracle
    if positive_only:  # the same model ranked without the logQ correction: what the correction is worth
        plain = Ranker(fit.model, _without_correction(serving), settings.model.score_weights, "offline")
        scorers["model_uncorrected"] = model_scorer(plain, users, history.videos, at, "model_uncorrected")
    # the same model with the state of the training split only: what the refreshed state is worth
    stale = Ranker(fit.model, transform, settings.model.score_weights, "offline")
    scorers["model_train_state"] = model_scorer(stale, users, history.videos, at, "model_train_state")
    figures = {name: evaluate_scorer(s, holdout, fallback) for name, s in scorers.items()}
    if history.world is not None:
        from recsys.offline_truth import true_ndcg_of_scorers

        for name, extra in true_ndcg_of_scorers(history.world, holdout, scorers, fallback, at.date()).items():
            figures[name].update(extra)
    return {
        "source": history.name,
        "positive_only": positive_only,
        "sampled_negatives_per_positive": fs.negatives_per_positive if positive_only else 0,
        "events": len(history.events),
        "training_rows": len(rows),
        "train_engagements": int((window["click"] > 0).sum()),
        "holdout_days": holdout_days,
        "holdout_users": holdout.n_users,
        "catalog": len(holdout.catalog),
        "epochs_run": len(fit.history.get("loss", [])),
        "best_val_loss": fit.best_val_loss,
        "figures": figures,
        "best_baseline": max(
            (n for n in figures if not n.startswith("model") and n != "oracle"),
            key=lambda n: np.nan_to_num(figures[n]["recall_10"]),
        ),
    }


def _without_correction(transform):
    import dataclasses

    return dataclasses.replace(transform, sampled_negatives_power=0.0)

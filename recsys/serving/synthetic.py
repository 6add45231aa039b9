"""A synthetic serving world (users, videos, candidates, a fitted transform, an untrained ranker) for the
scoring tests and ``bench/score.py``. Nothing here is used in production."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import tasks

WORDS = (
    "live",
    "guitar",
    "song",
    "remix",
    "beat",
    "news",
    "breaking",
    "cat",
    "dog",
    "funny",
    "cook",
    "pasta",
    "game",
    "goal",
    "travel",
    "city",
    "dance",
    "tutorial",
    "review",
    "vlog",
)
AT = pd.Timestamp("2026-01-02T18:00", tz="UTC")


@dataclass
class World:
    users: pd.DataFrame
    videos: pd.DataFrame
    examples: pd.DataFrame


def make_world(
    n_users: int = 200,
    n_videos: int = 300,
    n_examples: int = 5000,
    seed: int = 0,
    n_categories: int = 12,
    n_authors: int = 80,
) -> World:
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            "user_key": [f"u{i:06d}" for i in range(n_users)],
            "device": rng.choice(["ios", "android", "web", "tv"], n_users),
            "region": rng.choice(["EU-DE", "EU-FR", "US-CA", "US-NY"], n_users),
            "age_band": rng.choice(["18-24", "25-34", "35-44", "45+"], n_users),
            "activity": rng.choice(["low", "mid", "high"], n_users),
        }
    )
    titles = [" ".join(rng.choice(WORDS, rng.integers(1, 6))) for _ in range(n_videos)]
    videos = pd.DataFrame(
        {
            "video_id": np.arange(1, n_videos + 1, dtype=np.int64),
            "author_id": rng.integers(1, n_authors + 1, n_videos).astype(np.int64),
            "category": [f"c{int(c)}" for c in rng.integers(0, n_categories, n_videos)],
            "title": titles,
            "duration_seconds": rng.uniform(5, 900, n_videos).round(1),
            "upload_ts": AT - pd.to_timedelta(rng.uniform(0, 60, n_videos), unit="D"),
            "visible": np.ones(n_videos, dtype=bool),
        }
    )
    ex = pd.DataFrame(
        {
            "user_key": users["user_key"].to_numpy()[rng.integers(0, n_users, n_examples)],
            "video_id": videos["video_id"].to_numpy()[rng.integers(0, n_videos, n_examples)],
        }
    )
    ex = ex.merge(users, on="user_key").merge(videos.drop(columns="visible"), on="video_id")
    ex["ts"] = AT - pd.to_timedelta(rng.uniform(1, 7 * 24, len(ex)), unit="h")
    ex["click"] = rng.integers(0, 2, len(ex)).astype(float)
    return World(users, videos, ex)


def candidates_for(world: World, user_keys: list[str], n: int, seed: int = 1) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    vids = world.videos["video_id"].to_numpy()
    n = min(n, len(vids))
    return {u: rng.choice(vids, n, replace=False).tolist() for u in user_keys}


def make_ranker(world: World, seed: int = 0, model_settings=None, version: str = "synthetic"):
    """An untrained (seeded) multi-task ranker on a transform fitted to the world's examples."""
    from recsys.config import ModelSettings
    from recsys.features.transform import Transform
    from recsys.model import build_multi_task_model
    from recsys.registry import Ranker

    ms = model_settings or ModelSettings()
    transform = Transform.fit(world.examples)
    model = build_multi_task_model(transform.spec(), ms, seed=seed)
    return Ranker(model, transform, tasks.score_weights(ms.score_weights, tasks.of_model(model)), version)


def save_ranker(ranker, path: Path) -> Path:
    """The folder layout :func:`recsys.registry.load_ranker_dir` reads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ranker.model.save(path / "model.keras")
    ranker.transform.save(path / "transform.json")
    (path / "ranker.json").write_text(json.dumps({"score_weights": ranker.score_weights}))
    return path

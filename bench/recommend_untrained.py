"""recommend's memory on a kept bench folder without a registered model (the 10M day stops after train):
the features folder's transform with a seeded untrained model of its spec (the sizes of a trained one),
every active user's list computed shard by shard as the stage does, nothing written, retrieval off (the
bench has no two-tower model). Prints RSS and peak RSS as it goes.

    .venv/bin/python bench/recommend_untrained.py <kept folder, e.g. /work/k10m/10000000> [ds, 2026-01-05]
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date
from pathlib import Path

from meta import peak, rss


def main(folder: Path, ds: date) -> None:
    os.environ.update(json.loads((folder / "env.json").read_text()))
    os.environ["RECSYS_RETRIEVAL__ENABLED"] = "false"
    t0 = time.perf_counter()

    def report(what: str) -> None:
        print(
            f"{what:12s} rss {rss():6.0f} peak {peak():6.0f} MiB {time.perf_counter() - t0:6.1f}s", flush=True
        )

    from recsys import tasks
    from recsys.catalog import Catalog
    from recsys.config import load_settings
    from recsys.features.transform import Transform
    from recsys.model import build_multi_task_model
    from recsys.registry import Ranker
    from recsys.serving import recommendation_shards

    settings = load_settings()
    lake = Catalog.from_settings(settings).lake
    report("imports")
    transform = Transform.load(Path(lake.partition("features", "examples", ds)) / "transform.json")
    model = build_multi_task_model(transform.spec(), settings.model, seed=0)
    weights = tasks.score_weights(settings.model.score_weights, tasks.of_model(model))
    ranker = Ranker(model, transform, weights, "bench")
    report("ranker")
    rows, info = 0, {}
    for i, recs in enumerate(recommendation_shards(lake, ds, settings, ranker=ranker, info=info)):
        rows += len(recs)
        if i % 20 == 0:
            report(f"shard {i}")
    report("done")
    print(f"rows {rows} users {info.get('users')}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), date.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else date(2026, 1, 5))

"""Counterfactual replay: a day played again in the simulator with another model's lists.

``python -m recsys.sim.replay DS VERSION`` prints the result as JSON (the closed-loop driver runs it in the
DAG runs' environment).
"""

from __future__ import annotations

import json
import sys
from datetime import date, timedelta

import pandas as pd

from recsys.catalog import Catalog
from recsys.config import load_settings
from recsys.sim import world_for

MARKER = "@@REPLAY@@"


def replay_ctr(ds: date, version: str, settings=None) -> dict:
    """Simulator only: the recommended-impression CTR the registered model ``version`` would have earned on
    ``ds``, next to the live lists' CTR, both drawn by the simulator for the same day.

    The live lists are the version users saw on ``ds`` (published for ``ds - 1``). The replayed lists are
    what that model ranks for the same users from the same history (clean zone through ``ds - 1``).
    The simulator then plays day ``ds`` once with each set of lists; the day's random stream is seeded by
    the day, so the same users come with the same sessions and exploration and the comparison is paired:
    the difference is the lists'. This is how the closed loop shows the retrain paid off against the model
    it replaced on the same days, not only against an earlier (different) day.
    """
    from recsys.monitoring.model_figures import online_model_figures
    from recsys.registry import load_ranker
    from recsys.serving import batch_recommendations
    from recsys.serving.publish import FALLBACK_KEY, engine_for, read_for_ds

    settings = settings or load_settings()
    world = world_for(settings)
    if world is None:
        raise ValueError("a replay needs the simulator (it draws what users would have done)")
    catalog = Catalog.from_settings(settings, world=world)
    day_before = ds - timedelta(days=1)
    live = read_for_ds(engine_for(catalog.db_url), str(day_before))
    if live.empty:
        raise LookupError(f"no list version for {day_before} is kept: nothing was live on {ds}")
    users = sorted(set(live["user_key"].astype(str)) - {FALLBACK_KEY})
    ranker = load_ranker(settings, version=version)
    other, _info = batch_recommendations(catalog.lake, day_before, settings, user_keys=users, ranker=ranker)
    raw_of = world.user_of_key

    def slates(frame: pd.DataFrame) -> dict[str, list[int]]:
        mine = frame[frame["user_key"].astype(str) != FALLBACK_KEY].sort_values(["user_key", "rank"])
        lists = mine.groupby("user_key")["video_id"].apply(list)
        return {raw_of[k]: [int(v) for v in vids] for k, vids in lists.items() if k in raw_of}

    result = {"ds": str(ds), "model_version": ranker.version}
    for name, frame, version in (
        ("live", live, str(live["version"].iloc[0])),
        ("replay", other, f"replay-{ranker.version}"),
    ):
        events = world.simulate(ds, slates(frame), version)
        shown = events[events["rec_version"].notna()]
        result[f"ctr_{name}"] = float(pd.to_numeric(shown["clicked"]).mean()) if len(shown) else None
        result[f"impressions_{name}"] = len(shown)
    # the demoted model on the impressions users really saw on ds: its click AUC on the exploration ones
    # (videos neither model chose), next to the live model's on the same rows
    lake = catalog.lake
    logged = lake.read_frame("clean", "interactions", ds)
    for name, model in (("live", None), ("replay", ranker)):
        figures = online_model_figures(
            lake, settings, ds, logged, str(live["model_version"].iloc[0]), ranker=model
        )
        result[f"exploration_auc_{name}"] = figures.get("exploration_click_auc")
        result[f"exploration_gauc_{name}"] = figures.get("exploration_click_gauc")
    return result


def main(argv: list[str] | None = None) -> int:
    ds, version = (argv if argv is not None else sys.argv[1:])[:2]
    print(MARKER + json.dumps(replay_ctr(date.fromisoformat(ds), version)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

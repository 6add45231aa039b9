"""The world adapter: the one door between the pipeline and the simulated world.

The pipeline never builds the world itself. The entry point asks :func:`recsys.sim.world_for` for an
adapter (``None`` unless the source is the simulator) and puts it in the catalog; a stage that has a
world lands the day's traffic through it, the monitor asks it for the served lists' regret, and the
evaluation for the true-utility sample. The world and the map from pseudonyms to the world's users are
built once per adapter, on first use.
"""

from __future__ import annotations

import functools
import logging
from datetime import date, timedelta

import pandas as pd

from recsys.config import Settings
from recsys.data.jsonl import to_jsonl
from recsys.data.lake import Lake
from recsys.sim import simulate as sim
from recsys.sim.truth import TruthSample, truth_sample
from recsys.sim.world import World, build_world

log = logging.getLogger(__name__)


class SimulatedWorld:
    """The simulated platform behind the catalog's ``world`` resource."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @functools.cached_property
    def world(self) -> World:
        return build_world(self.settings.simulator, self.settings.seed)

    @functools.cached_property
    def _key(self) -> bytes:
        from recsys.privacy.pseudonymize import load_pseudonym_key

        return load_pseudonym_key(self.settings)

    @functools.cached_property
    def user_of_key(self) -> dict[str, str]:
        """Keyed pseudonym -> raw user id of the world's users."""
        from recsys.privacy.pseudonymize import pseudonym

        return {pseudonym(u, self._key): u for u in self.world.users["user_id"]}

    @functools.cached_property
    def index_of_key(self) -> dict[str, int]:
        """Keyed pseudonym -> the world's user index."""
        index = self.world.user_index()
        return {k: index[u] for k, u in self.user_of_key.items()}

    def land(self, ds: date, lake: Lake, db_url: str) -> dict:
        """Simulate ``ds`` into landing; users see the lists published at the end of ``ds - 1`` (if that
        version is still kept in the recommendations DB at ``db_url``)."""
        live = _lists_for(db_url, ds - timedelta(days=1))
        slates, version = None, None
        if not live.empty:
            by_key = live.groupby("user_key")["video_id"].apply(list).to_dict()
            # in the world's user order, as the simulator draws sessions
            slates = {u: by_key[k] for k, u in self.user_of_key.items() if k in by_key}
            version = str(live["version"].iloc[0])
        events = sim.simulate_day(self.world, ds, slates, version)
        frames = (("events", events), ("videos", sim.catalog_on(self.world, ds)), ("users", self.world.users))
        for dataset, frame in frames:
            # a rerun replaces the day's delivery, sealed or not, in one commit
            lake.write_bytes(
                "landing", dataset, ds, "part-0.jsonl", to_jsonl(frame), drop=("part-0.jsonl.enc",)
            )
        return {"events_rows": len(events), "rec_version": version}

    def regret(self, ds: date, db_url: str) -> dict:
        """The served lists' shortfall against the oracle's on ``ds`` (see
        :func:`recsys.sim.simulate.regret_against_oracle`); {} when there were no lists or it cannot tell."""
        try:
            live = _lists_for(db_url, ds - timedelta(days=1))
            if live.empty:
                return {}
            uidx, vidx = self.index_of_key, self.world.video_index()
            lists = {
                uidx[k]: [vidx.get(int(v), -1) for v in g.sort_values("rank")["video_id"]]
                for k, g in live.groupby("user_key")
                if k in uidx
            }
            return sim.regret_against_oracle(self.world, ds, lists)
        except Exception as exc:  # a figure for the simulator only: never fail the monitor over it
            log.warning("monitor ds=%s: no regret against the oracle: %s", ds, exc)
            return {}

    def truth_sample(
        self, ds: date, test: pd.DataFrame, k: int, max_users: int, max_candidates: int
    ) -> TruthSample | None:
        """Ground truth for the evaluation (:func:`recsys.sim.truth.truth_sample`)."""
        return truth_sample(
            self.world, self.index_of_key, self.settings.seed, ds, test, k, max_users, max_candidates
        )

    def simulate(self, ds: date, slates: dict[str, list[int]], version: str) -> pd.DataFrame:
        """Play ``ds`` with the given lists (raw user id -> video ids): a counterfactual replay."""
        return sim.simulate_day(self.world, ds, slates, version)


def _lists_for(db_url: str, day: date) -> pd.DataFrame:
    from recsys.serving.publish import engine_for, read_for_ds

    return read_for_ds(engine_for(db_url), str(day))

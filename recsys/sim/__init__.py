"""The simulated platform, kept out of production code: the world, a day of traffic, the ground truth,
the world adapter the catalog carries, and the closed-loop driver that runs the DAGs day after day.

Production modules never ask which source is configured: they use ``catalog.world`` when it is there.
:func:`world_for` is the one place that decides, from the settings, whether there is a world.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.data.jsonl import to_jsonl, write_landing
from recsys.sim.simulate import (
    catalog_on,
    distinct_draws,
    examine_prob,
    regret_against_oracle,
    simulate_day,
)
from recsys.sim.world import World, build_world

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.sim.adapter import SimulatedWorld

__all__ = [
    "World",
    "build_world",
    "catalog_on",
    "distinct_draws",
    "examine_prob",
    "regret_against_oracle",
    "simulate_day",
    "to_jsonl",
    "world_for",
    "write_landing",
]


def world_for(settings: Settings) -> SimulatedWorld | None:
    """The world adapter when the configured source is the simulator, else None."""
    if settings.source != "simulator":
        return None
    from recsys.sim.adapter import SimulatedWorld

    return SimulatedWorld(settings)

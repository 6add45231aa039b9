"""What the monitor observes about a day, read through the catalog: the day's figures before any decision.

The clean interactions of the day and of the trailing window, the catalog of videos, the model behind the
lists users saw (from the recommendations DB), that model's online figures, and, when the catalog has a
simulated world, the served lists' regret against the oracle. :mod:`recsys.monitoring.assess` turns
these into the decision.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import pandas as pd

from recsys.catalog import Catalog
from recsys.data.lake import Lake
from recsys.monitoring.assess import day_figures, served_model
from recsys.monitoring.rules import FALLBACK_MODEL

log = logging.getLogger(__name__)


def observe_day(cat: Catalog, ds: date) -> dict[str, Any]:
    """The monitor's figures of ``ds`` (see the module docstring); nothing is written."""
    from recsys.monitoring.model_figures import online_model_figures
    from recsys.serving.publish import engine_for

    events = cat.lake.read_frame("clean", "interactions", ds)
    past = past_window(cat.lake, ds, cat.settings.features.window_days, events)
    day = day_figures(events, cat.lake.read_frame("clean", "videos", ds), past)
    served = served_model(models_serving(engine_for(cat.db_url), events, ds))
    day |= {"served_model": served}
    if served is not None and served != FALLBACK_MODEL:
        day |= online_model_figures(cat.lake, cat.settings, ds, events, served)
    if cat.world is not None:
        day |= cat.world.regret(ds, cat.db_url)
    return day


def past_window(lake: Lake, ds: date, days: int, empty_like: pd.DataFrame) -> pd.DataFrame:
    """The clean interactions of the ``days`` days before ``ds`` (none yet: an empty frame)."""
    try:
        return lake.read_window("clean", "interactions", ds - timedelta(days=days), ds - timedelta(days=1))
    except FileNotFoundError:
        return empty_like.iloc[:0]


def models_serving(engine, events: pd.DataFrame, ds: date) -> set[str]:
    """The models behind the list versions users saw on ``ds`` (empty when that cannot be read)."""
    from recsys.serving.publish import models_of_versions

    try:
        return models_of_versions(engine, sorted(set(events["rec_version"].dropna().astype(str))))
    except Exception as exc:  # the figures still count without the model's name
        log.warning("monitor ds=%s: cannot read the list versions' models: %s", ds, exc)
        return set()

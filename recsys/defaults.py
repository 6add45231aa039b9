"""Defaults of the public (seed) API: the configured settings, lake, latest day and champion.

The seed's functions (``collect_user_interactions()``, ``create_text_embeddings(titles)``, ...) take no
lake, day or model: they read them here, from the same settings the pipeline runs with. Each helper
returns what the caller passed when it passed something, so an explicit argument always wins.
Nothing heavy is imported at module level.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from recsys.config import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from recsys.data.lake import Lake
    from recsys.registry import Ranker


def settings_or_default(settings: Settings | None = None) -> Settings:
    """``settings``, or the configured ones (``RECSYS_*`` environment, optional YAML file)."""
    return settings if settings is not None else load_settings()


def lake_or_default(lake: Lake | None = None, settings: Settings | None = None) -> Lake:
    """``lake``, or the configured lake (``settings.data_dir``) opened with the configured keys."""
    if lake is not None:
        return lake
    from recsys.catalog import Catalog

    return Catalog.from_settings(settings_or_default(settings)).lake


def latest_ds(lake: Lake, zone: str = "clean", dataset: str = "interactions") -> date:
    """The latest logical day with a ``zone/dataset`` partition (LookupError when there is none)."""
    days = lake.list_ds(zone, dataset)
    if not days:
        raise LookupError(
            f"no {zone}/{dataset} partition under {lake.root}: run the pipeline first "
            "(make demo, or recsys run ... for a day)"
        )
    return days[-1]


def ds_or_latest(ds, lake: Lake, zone: str = "clean", dataset: str = "interactions") -> date:
    """``ds`` as a date, or the latest day of ``zone/dataset``."""
    from recsys.data.lake import as_date

    return as_date(ds) if ds is not None else latest_ds(lake, zone, dataset)


def champion_ranker(settings: Settings | None = None) -> Ranker:
    """The champion ranker (Keras model + fitted transform), cached per process like real-time serving.

    Raises :class:`recsys.registry.NoChampionError` when no model has been promoted yet.
    """
    from recsys.serving import _champion

    return _champion(settings_or_default(settings))

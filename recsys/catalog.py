"""The catalog: every dataset recsys reads or writes, named once, and the resources a stage is given.

One frozen object built from :class:`~recsys.config.Settings` at the entry point (a stage, the CLI, the
demo). Code that needs a location asks the catalog instead of joining ``data_dir`` with folder names, so
a location changes in one place:

=====================  ==================================================================
``lake``               the zones (landing, raw, quarantine, clean, features, recs) by ``ds``
``runs``               run records: each stage's summary of a day, ``reports/runs/ds=D/<stage>.json``
``retrain_log``        the days the monitor fired a retrain, ``reports/monitoring/retrains.jsonl``
``quality_snapshot``   the latest quality figures the exporter serves (``monitoring.quality_snapshot_path``)
``db_url``             the recommendations database
``model_name``         the registered ranker in the MLflow registry
``pushgateway_url``    where stage health goes (None: not exported)
``world``              the simulated world (a :class:`WorldAdapter`); None outside the simulator
=====================  ==================================================================

Run records are a dataset like the others: a stage's wiring writes its record through
:class:`RunRecords`, and later stages, the demo and the closed loop read it back through the same class.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from recsys.config import Settings
from recsys.data.lake import Lake, as_date, atomic_write_bytes
from recsys.data.object_lake import open_lake
from recsys.privacy.crypto import Cipher


class WorldAdapter(Protocol):
    """What the pipeline may ask of a simulated world (see :mod:`recsys.sim.world`)."""

    def land(self, ds: date, lake: Lake, db_url: str) -> dict: ...

    def regret(self, ds: date, db_url: str) -> dict: ...

    def truth_sample(self, ds: date, test: Any, k: int, max_users: int, max_candidates: int) -> Any: ...


@dataclass(frozen=True)
class RunRecords:
    """Each stage's JSON summary of a day: ``<root>/ds=D/<stage>.json`` (what ``recsys summary`` shows)."""

    root: Path

    def path(self, ds: date | str, stage: str) -> Path:
        return self.root / f"ds={as_date(ds)}" / f"{stage}.json"

    def write(self, ds: date | str, stage: str, record: dict) -> Path:
        """Replace the record of ``stage`` for ``ds`` atomically."""
        return atomic_write_bytes(self.path(ds, stage), json.dumps(record, indent=2, default=str).encode())

    def exists(self, ds: date | str, stage: str) -> bool:
        return self.path(ds, stage).exists()

    def read(self, ds: date | str, stage: str) -> dict:
        """The record of ``stage`` for ``ds``; ``{}`` when the stage has not run (successfully) that day."""
        p = self.path(ds, stage)
        return json.loads(p.read_text()) if p.exists() else {}

    def of_day(self, ds: date | str) -> dict[str, dict]:
        """Every stage's record of ``ds``, by stage name."""
        base = self.root / f"ds={as_date(ds)}"
        return (
            {p.stem: json.loads(p.read_text()) for p in sorted(base.glob("*.json"))} if base.exists() else {}
        )

    def days(self) -> list[date]:
        """The days with at least one record, in order."""
        return (
            sorted(date.fromisoformat(p.name[3:]) for p in self.root.glob("ds=*"))
            if self.root.exists()
            else []
        )

    def history(self, stage: str, before: date) -> list[tuple[date, dict]]:
        """``(day, record)`` of ``stage`` for every day before ``before``, in order."""
        out = []
        for p in sorted(self.root.glob(f"ds=*/{stage}.json")):
            d = date.fromisoformat(p.parent.name[3:])
            if d < before:
                out.append((d, json.loads(p.read_text())))
        return out

    def last_day(self, stage: str, before: date) -> date | None:
        """The latest day before ``before`` on which ``stage`` recorded a run."""
        days = [
            d for d in (date.fromisoformat(p.parent.name[3:]) for p in self.root.glob(f"ds=*/{stage}.json"))
        ]
        return max((d for d in days if d < before), default=None)


@dataclass(frozen=True)
class RetrainLog:
    """The monitor's retrain decisions, one JSON line per day that fired (a rerun of a day replaces it)."""

    path: Path

    def entries(self) -> list[dict]:
        return (
            [json.loads(ln) for ln in self.path.read_text().splitlines() if ln] if self.path.exists() else []
        )

    def last_before(self, before: date) -> date | None:
        days = [date.fromisoformat(e["ds"]) for e in self.entries()]
        return max((d for d in days if d < before), default=None)

    def record(self, ds: date, reasons: list[str], window_days: int | None) -> Path:
        lines = [json.dumps(e) for e in self.entries() if e["ds"] != str(ds)]
        lines.append(json.dumps({"ds": str(ds), "reasons": reasons, "window_days": window_days}))
        return atomic_write_bytes(self.path, ("\n".join(lines) + "\n").encode())


@dataclass(frozen=True)
class Catalog:
    """Every dataset's location and the injected resources; build it with :meth:`from_settings`."""

    settings: Settings
    data_dir: Path
    runs: RunRecords
    retrain_log: RetrainLog
    quality_snapshot: Path
    db_url: str
    model_name: str
    pushgateway_url: str | None
    cipher: Any = None  # the lake's Cipher for the raw-identifier zones (None: from the configured keys)
    world: WorldAdapter | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, cipher: Any = None, world: WorldAdapter | None = None):
        """The catalog of ``settings``; ``cipher`` and ``world`` are resources the entry point injects."""
        root = Path(settings.data_dir)
        mon = settings.monitoring
        return cls(
            settings=settings,
            data_dir=root,
            runs=RunRecords(root / "reports" / "runs"),
            retrain_log=RetrainLog(root / "reports" / "monitoring" / "retrains.jsonl"),
            quality_snapshot=Path(mon.quality_snapshot_path or root / "monitoring" / "quality.json"),
            db_url=settings.resolved_db_url,
            model_name=settings.model_name,
            pushgateway_url=mon.pushgateway_url,
            cipher=cipher,
            world=world,
        )

    @functools.cached_property
    def lake(self) -> Lake:
        """The lake, encrypting the raw-identifier zones (keys read on first use, so a catalog is cheap)."""
        cipher = self.cipher if self.cipher is not None else Cipher.from_settings(self.settings)
        return open_lake(self.settings, self.data_dir, cipher)

    @functools.cached_property
    def plain_lake(self) -> Lake:
        """The lake without a cipher: enough to write or check the landing zone."""
        return open_lake(self.settings, self.data_dir)

    # lake partitions and folders outside the zones
    def features_dir(self, ds: date | str) -> Path:
        return self.plain_lake.local_dir("features", "examples", as_date(ds))

    @property
    def validation_reports(self) -> Path:
        """The one Great Expectations project of every day: one Data Docs site whose index lists each
        day's validation runs (``run_name`` ``ds=D``) of the events and the reference tables."""
        return self.data_dir / "reports" / "validation"

    def checkpoints(self, ds: date | str) -> Path:
        return self.data_dir / "checkpoints" / f"ds={as_date(ds)}"

    @property
    def closed_loop_report(self) -> Path:
        return self.data_dir / "reports" / "closed_loop.json"

    @property
    def closed_loop_plot(self) -> Path:
        return self.data_dir / "reports" / "closed_loop.png"

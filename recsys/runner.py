"""How a stage runs: build its catalog, time it, record its summary, export its health.

:func:`stage` wraps a wiring function ``fn(ds, catalog, **kwargs) -> dict`` into the public stage
signature ``(ds, settings=None, **kwargs) -> dict`` that the DAGs and the CLI call. The summary goes to
XCom (the return value) and, on success, into the catalog's run records, written here and nowhere else.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import date
from typing import Any

from recsys.catalog import Catalog
from recsys.config import Settings, load_settings
from recsys.data.lake import as_date
from recsys.data.locks import stage_lock

log = logging.getLogger("recsys.stages")


def catalog_for(settings: Settings) -> Catalog:
    """The catalog of ``settings`` with its resources: the simulated world when the source is one."""
    from recsys.sim import world_for

    return Catalog.from_settings(settings, world=world_for(settings))


def stage(name: str):
    """Time the stage, record its summary, and export its health metrics (when a Pushgateway is set)."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(ds: str | date, settings: Settings | None = None, **kwargs) -> dict[str, Any]:
            catalog = catalog_for(settings or load_settings())
            ds = as_date(ds)
            t0 = time.monotonic()
            ok = False
            result: dict[str, Any] = {}
            try:
                with stage_lock(catalog.settings, name, ds):  # one run per (stage, ds); cleans dead temps
                    result = json_safe(fn(ds, catalog, **kwargs) or {})
                ok = True
                return result
            finally:
                elapsed = time.monotonic() - t0
                _export(name, ds, catalog, ok, elapsed, result)
                if ok:
                    result["seconds"] = round(elapsed, 3)
                    catalog.runs.write(ds, name, result)
                    log.info(
                        "stage %s ds=%s done in %.1fs: %s",
                        name,
                        ds,
                        elapsed,
                        result,
                        extra={
                            "ds": str(ds),
                            "stage": name,
                            "run_id": result.get("run_id"),
                            "model_version": result.get("model_version"),
                        },
                    )
                else:
                    log.error(
                        "stage %s ds=%s failed after %.1fs",
                        name,
                        ds,
                        elapsed,
                        extra={"ds": str(ds), "stage": name},
                    )

        run.stage_name = name
        return run

    return wrap


def json_safe(obj):
    """NaN/inf -> None (an undefined metric, e.g. AUC on one-class labels): XCom and JSON refuse them."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def _export(name: str, ds: date, catalog: Catalog, ok: bool, seconds: float, result: dict) -> None:
    if not catalog.pushgateway_url:
        return
    try:
        from recsys.monitoring.metrics import push_stage_metrics

        rows = {k: int(v) for k, v in result.items() if k.endswith("rows") and isinstance(v, int | float)}
        push_stage_metrics(
            name,
            str(ds),
            success=ok,
            duration_seconds=seconds,
            rows=rows,
            pushgateway_url=catalog.pushgateway_url,
        )
    except Exception as exc:  # monitoring must never fail the pipeline
        log.warning("could not push metrics for %s: %s", name, exc)

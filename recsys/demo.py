"""The demo: ``recsys_daily`` run by Airflow itself for consecutive simulated days, then a summary.

Each day is one ``airflow dags test recsys_daily <date>`` (a real DAG run in the embedded Airflow home,
all tasks executed by Airflow in one process). The summary reads the stages' run records (the catalog's
``runs``) plus the registry and the recommendations table. ``recsys demo drift`` runs the closed loop
(:mod:`recsys.sim.loop`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from recsys.catalog import Catalog
from recsys.config import Settings, load_settings


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def run_day(ds: date, conf: dict | None = None) -> int:
    """One Airflow run of recsys_daily for ``ds``; returns the exit code (logs go to the terminal)."""
    cmd = [_airflow(), "dags", "test", "recsys_daily", ds.isoformat()]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    return subprocess.run(cmd).returncode


def dag_run_state(ds: date) -> str:
    """The state Airflow recorded for the run of ``ds`` (``airflow dags test`` exits 0 even on failure)."""
    out = subprocess.run(
        [_airflow(), "dags", "list-runs", "recsys_daily", "-o", "json"],
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]  # warnings may precede the JSON
    try:
        runs = json.loads(lines[-1]) if lines else []
    except json.JSONDecodeError:
        return "unknown"
    mine = [r for r in runs if str(r.get("logical_date", "")).startswith(ds.isoformat())]
    if not mine:
        return "missing"
    return str(max(mine, key=lambda r: str(r.get("run_after", "")))["state"])


def run_demo(start: date, days: int) -> int:
    settings = load_settings()
    runs = Catalog.from_settings(settings).runs
    t0 = time.monotonic()
    for i in range(days):
        ds = start + timedelta(days=i)
        print(f"\n=== recsys_daily {ds} (day {i + 1}/{days}) ===", flush=True)
        rc = run_day(ds)
        state = dag_run_state(ds)
        if rc != 0 or state != "success":
            print(
                f"recsys_daily {ds} did not succeed (exit {rc}, state {state}); see the log above", flush=True
            )
            return 1
        # a run can end "success" with nothing executed (e.g. a logical date before the DAG's start_date)
        if not runs.exists(ds, "publish"):
            print(f"recsys_daily {ds} ended without publishing anything; see the log above", flush=True)
            return 1
    print_summary(
        settings, elapsed=time.monotonic() - t0, days=[start + timedelta(days=i) for i in range(days)]
    )
    return 0


def print_summary(settings: Settings, elapsed: float | None = None, days: list[date] | None = None) -> None:
    from recsys.registry import champion_version
    from recsys.serving.publish import engine_for, read_live

    catalog = Catalog.from_settings(settings)
    if days is None:
        days = catalog.runs.days()
    print("\n" + "=" * 78)
    print("recsys demo summary" + (f" ({elapsed / 60:.1f} min)" if elapsed else ""))
    print("=" * 78)
    print(
        f"{'day':<12}{'ingested':>10}{'quarantined':>13}{'clean':>8}{'trained':>9}{'blessed':>9}{'published':>11}"
    )
    last_eval = None
    for ds in days:
        r = catalog.runs.of_day(ds)
        v = r.get("validate", {})
        ev = r.get("evaluate")
        last_eval = ev or last_eval
        print(
            f"{ds!s:<12}{v.get('input_rows', '-'):>10}{v.get('quarantined_rows', '-'):>13}"
            f"{r.get('anonymize', {}).get('interactions_rows', '-'):>8}{'yes' if 'train' in r else 'no':>9}"
            f"{('yes' if ev and ev['blessed'] else 'no') if ev else '-':>9}"
            f"{r.get('publish', {}).get('rows', '-'):>11}"
        )
    if last_eval:
        m = last_eval["metrics"]
        print("\nOffline metrics of the last trained model (held-out day):")

        def f(key: str) -> str:  # undefined metrics (e.g. AUC on one-class labels) are recorded as None
            v = m.get(key)
            return "  n/a " if v is None else f"{v:.4f}"

        for t in ("click", "like", "share"):
            print(f"  {t:<6} AUC {f(f'{t}_auc')}   GAUC {f(f'{t}_gauc')}   logloss {f(f'{t}_logloss')}")
        print(f"  watch  RMSE(log1p s) {f('watch_rmse')}")
        from recsys.catalog_report import summary_lines

        print("\n".join(summary_lines(last_eval.get("ranking"))))
        print(
            f"  gate: {'BLESSED' if last_eval['blessed'] else 'NOT BLESSED'}: "
            f"{'; '.join(last_eval['reasons'])}"
        )
    print(
        f"\nMLflow registry: model {catalog.model_name!r}, champion = version {champion_version(settings)}, "
        f"previous = {champion_version(settings, 'previous')}"
    )
    eng = engine_for(catalog.db_url)
    live = read_live(eng)
    print(
        f"Recommendations table: {catalog.db_url} (view live_recommendations, "
        f"{len(live)} live rows, {live['user_key'].nunique() if len(live) else 0} user keys, "
        f"version {live['version'].iloc[0] if len(live) else '-'})"
    )
    if len(live):
        user = sorted(k for k in live["user_key"].unique() if not k.startswith("__"))[0]
        print(f"\nTop list for user_key {user}:")
        print(live[live["user_key"] == user][["rank", "video_id", "score"]].to_string(index=False))
    print("\nOpen the UIs:")
    print("  make airflow   -> Airflow on http://localhost:8080 (login printed; stop with make airflow-stop)")
    print("  make mlflow    -> MLflow on http://localhost:5000")
    print("  .venv/bin/recsys recommend <user_id>   -> what an app reads for a user")


# ------------------------------------------------------------------------------------- the drift demo
def run_drift_demo(start: date, days: int, plot: str | None = None, verbose: bool = False) -> int:
    """The closed loop (:mod:`recsys.sim.loop`): daily -> monitor -> retrain when fired, then the timeline.

    Configure the drift with ``RECSYS_SIMULATOR__DRIFT`` and set ``RECSYS_TRAIN__TRAIN_EVERY_DAYS`` large,
    so only the first day and the monitor's retrain train (``make demo-drift`` does both).
    """
    from recsys.sim.loop import run_closed_loop

    return run_closed_loop(start, days, plot, verbose)

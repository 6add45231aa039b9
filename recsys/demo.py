"""The demo: ``recsys_daily`` run by a real Airflow scheduler for consecutive simulated days, then a summary.

``recsys demo`` starts an api-server and a LocalExecutor scheduler in the embedded Airflow home
(:mod:`recsys.sim.local_airflow`) and, per day, triggers ``recsys_daily`` and then ``recsys_monitor``
for that logical date (:mod:`recsys.sim.days`), printing one line per task with its duration and key
figure. Task logs stay in their files under ``$AIRFLOW_HOME/logs``; the Airflow UI then shows every run
with its true start and duration. The summary reads the stages' run records (the catalog's ``runs``),
the registry and the recommendations table, and ends with where to look: the evaluation report, the
learning curves, the Data Docs and the MLflow run. ``recsys demo drift`` runs the closed loop
(:mod:`recsys.sim.loop`).
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from rich.console import Console
from rich.markup import escape

from recsys.catalog import Catalog
from recsys.config import Settings, environment, load_settings

AIRFLOW_UI = "http://localhost:8080"  # `make airflow`


def run_demo(start: date, days: int, console: Console | None = None) -> int:
    from recsys.sim.days import run_days

    console = console or Console(highlight=False, soft_wrap=True)
    settings = load_settings()
    t0 = time.monotonic()
    rc = run_days(start, days, Catalog.from_settings(settings), console, environment())
    if rc == 0:
        print_summary(
            settings,
            elapsed=time.monotonic() - t0,
            days=[start + timedelta(days=i) for i in range(days)],
            console=console,
        )
    return rc


def _fmt(v) -> str:  # undefined metrics (e.g. AUC on one-class labels) are recorded as None
    return "n/a" if v is None else f"{v:.4f}"


def _artifact_dir(settings: Settings, run_id: str) -> tuple[Path | None, str | None]:
    """The local folder of the run's artifacts (None on a remote store) and its experiment id."""
    try:
        import mlflow

        from recsys.tracking import configure

        configure(settings)
        info = mlflow.get_run(run_id).info
    except Exception:  # the summary never fails the demo
        return None, None
    uri = urlparse(info.artifact_uri)
    local = Path(unquote(uri.path)) if uri.scheme in ("", "file") else None
    return local, info.experiment_id


def links(settings: Settings, catalog: Catalog, days: list[date]) -> list[tuple[str, str]]:
    """Where to look after the demo: report.html, learning curves, Data Docs, the MLflow run, Airflow."""
    out: list[tuple[str, str]] = []
    runs = [catalog.runs.of_day(ds) for ds in days]
    ev = next((r["evaluate"] for r in reversed(runs) if "evaluate" in r), None)
    if ev:
        art, exp = _artifact_dir(settings, ev["run_id"])
        if art is not None:
            out.append(("evaluation report", str(art / ev.get("report", "evaluation/report.html"))))
            out.append(("learning curves", str(art / "training" / "learning_curves.png")))
        if exp is not None:
            out.append(
                (
                    "MLflow run",
                    f"{settings.mlflow_ui_url}/#/experiments/{exp}/runs/{ev['run_id']}  (make mlflow)",
                )
            )
    docs = next((r["validate"].get("data_docs") for r in reversed(runs) if r.get("validate")), None)
    if docs:
        out.append(("Data Docs", str(docs)))
    out.append(("Airflow runs", f"{AIRFLOW_UI}/dags/recsys_daily  (make airflow)"))
    return out


def print_summary(
    settings: Settings,
    elapsed: float | None = None,
    days: list[date] | None = None,
    console: Console | None = None,
) -> None:
    from recsys.registry import champion_version
    from recsys.serving.publish import engine_for, read_live

    console = console or Console(highlight=False, soft_wrap=True)
    catalog = Catalog.from_settings(settings)
    if days is None:
        days = catalog.runs.days()
    took = f" in {elapsed / 60:.1f} min" if elapsed else ""
    console.rule(f"[bold]recsys demo: {len(days)} day(s){took}[/]", align="left")
    ev = next(
        (catalog.runs.read(ds, "evaluate") for ds in reversed(days) if catalog.runs.exists(ds, "evaluate")),
        None,
    )
    if ev:
        m = ev["metrics"]
        console.print(
            "last trained model, held-out day: "
            + "  ".join(f"{t} AUC {_fmt(m.get(f'{t}_auc'))}" for t in ("click", "like", "share"))
            + f"  click GAUC {_fmt(m.get('click_gauc'))}  watch RMSE {_fmt(m.get('watch_rmse'))}"
        )
        from recsys.catalog_report import summary_lines

        for line in summary_lines(ev.get("ranking")):  # the model against every baseline (issue 13)
            console.print(escape(line))
        verdict = "[green]BLESSED[/]" if ev["blessed"] else "[yellow]NOT BLESSED[/]"
        reasons = "; ".join(ev["reasons"])
        reasons = reasons if len(reasons) <= 100 else reasons[:99] + "…"  # the report has them all
        console.print(f"gate: {verdict}: {escape(reasons)}")
    console.print(
        f"registry {catalog.model_name!r}: champion = version {champion_version(settings) or 'none yet'}, "
        f"previous = {champion_version(settings, 'previous') or 'none'}"
    )
    live = read_live(engine_for(catalog.db_url))
    console.print(
        f"live table (view live_recommendations in {escape(catalog.db_url)}): {len(live):,} rows, "
        f"{live['user_key'].nunique() if len(live) else 0} user keys, "
        f"version {live['version'].iloc[0] if len(live) else '-'}"
    )
    if len(live):
        user = sorted(k for k in live["user_key"].unique() if not k.startswith("__"))[0]
        top = live[live["user_key"] == user].sort_values("rank").head(5)
        items = ", ".join(f"{v} ({s:.2f})" for v, s in zip(top["video_id"], top["score"], strict=True))
        console.print(f"top videos (score) for user_key {user[:8]}…: {items}")
    for name, where in links(settings, catalog, days):
        console.print(f"  {name:<19}{escape(where)}", overflow="ignore", no_wrap=True, soft_wrap=True)


# ------------------------------------------------------------------------------------- the drift demo
def run_drift_demo(start: date, days: int, plot: str | None = None, verbose: bool = False) -> int:
    """The closed loop (:mod:`recsys.sim.loop`): daily -> monitor -> retrain when fired, then the timeline.

    Configure the drift with ``RECSYS_SIMULATOR__DRIFT`` and set ``RECSYS_TRAIN__TRAIN_EVERY_DAYS`` large,
    so only the first day and the monitor's retrain train (``make demo-drift`` does both).
    """
    from recsys.sim.loop import run_closed_loop

    return run_closed_loop(start, days, plot, verbose)

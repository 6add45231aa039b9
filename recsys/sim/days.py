"""The demo's days under a real scheduler: recsys_daily, then recsys_monitor, per logical date.

For each day the driver triggers ``recsys_daily`` for that logical date through the local Airflow's
REST API (:mod:`recsys.sim.local_airflow`), prints one line per finished task as the scheduler runs
them (:mod:`recsys.sim.progress`), then triggers ``recsys_monitor`` for the same date, as the
closed-loop driver does (asset scheduling would start it too, but once per asset event and with no
logical date). A retrain the monitor fires is a ``recsys_retrain`` run the scheduler executes; the
driver waits for it and reports its tasks too. Task logs stay in their files under the Airflow home;
a failed task prints its log's tail and its path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import date, timedelta

from rich.console import Console
from rich.markup import escape

from recsys.catalog import Catalog
from recsys.sim.local_airflow import TERMINAL_RUN, LocalAirflow, log_tail
from recsys.sim.progress import stage_of, task_line

DAGS = ("recsys_daily", "recsys_monitor", "recsys_retrain")
QUIET = {"retrain_needed"}  # a short circuit: the monitor's line already says whether it fired


class DayFailed(RuntimeError):
    pass


def _seconds(ti: dict) -> float | None:
    d = ti.get("duration")
    return float(d) if isinstance(d, int | float) else None


def follow_run(
    af: LocalAirflow,
    catalog: Catalog,
    console: Console,
    dag_id: str,
    run_id: str,
    ds: date,
    poll: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Wait for the run to end, printing each task's line as it finishes; returns the run's state."""
    printed: set[tuple[str, int]] = set()
    status = console.status(f"{dag_id} {ds}", spinner="dots") if console.is_terminal else nullcontext()
    with status:
        while True:
            state = str(af.run(dag_id, run_id)["state"])
            tis = sorted(af.task_instances(dag_id, run_id), key=lambda t: t.get("end_date") or "~")
            for ti in tis:
                key = (ti["task_id"], int(ti.get("try_number") or 0))
                if key in printed:
                    continue
                if ti["state"] == "up_for_retry":
                    printed.add(key)
                    path = af.task_log_path(dag_id, run_id, ti["task_id"])
                    console.print(
                        f"  {ti['task_id']:<22}[yellow]attempt {key[1]} failed, retrying[/] (log: {path})"
                    )
                elif ti["state"] == "success" and ti["task_id"].rsplit(".", 1)[-1] not in QUIET:
                    printed.add(key)
                    record = catalog.runs.read(ds, stage_of(ti["task_id"]))
                    line = task_line(ti["task_id"], "success", _seconds(ti), record)
                    console.print(escape(line))
                elif ti["state"] == "failed":
                    printed.add(key)
                    console.print(task_line(ti["task_id"], "failed", _seconds(ti), None))
                    path = af.task_log_path(dag_id, run_id, ti["task_id"])
                    if path is not None:
                        console.print(f"[dim]  last lines of {path}:[/]")
                        for text in log_tail(path):
                            console.print(f"    {escape(text)}", highlight=False, soft_wrap=True)
            running = [t["task_id"] for t in tis if t["state"] == "running"]
            if console.is_terminal and running:
                status.update(f"{dag_id} {ds}: {', '.join(running)}")  # type: ignore[union-attr]
            if state in TERMINAL_RUN:
                return state
            sleep(poll)


def run_day(af: LocalAirflow, catalog: Catalog, console: Console, ds: date, label: str) -> None:
    console.rule(f"[bold]{ds}[/] {label}", align="left")
    run_id = af.trigger("recsys_daily", ds)
    state = follow_run(af, catalog, console, "recsys_daily", run_id, ds)
    if state != "success":
        raise DayFailed(f"recsys_daily {ds} ended {state}")
    if not catalog.runs.exists(ds, "publish"):  # e.g. a logical date before the DAG's start_date
        raise DayFailed(f"recsys_daily {ds} ended without publishing anything")
    run_id = af.trigger("recsys_monitor", ds)
    started = str(af.run("recsys_monitor", run_id)["run_after"])
    state = follow_run(af, catalog, console, "recsys_monitor", run_id, ds)
    if state != "success":
        raise DayFailed(f"recsys_monitor {ds} ended {state}")
    # a retrain this monitor run fired (not one left by an earlier demo): the scheduler runs it
    fired = [r for r in af.runs_of_day("recsys_retrain", ds) if str(r["run_after"]) >= started]
    for run in fired:
        state = follow_run(af, catalog, console, "recsys_retrain", run["dag_run_id"], ds)
        if state != "success":
            raise DayFailed(f"recsys_retrain {ds} ended {state}")


def run_days(start: date, days: int, catalog: Catalog, console: Console, env: dict[str, str]) -> int:
    """Run the days under a local scheduler; 0 on success, 1 when a day failed (its task log was shown)."""
    t0 = time.monotonic()
    with (
        console.status("starting Airflow (api-server + LocalExecutor scheduler)")
        if console.is_terminal
        else nullcontext()
    ):
        af = LocalAirflow.start(env)
    with af:
        console.print(
            f"Airflow scheduler + api-server started in {time.monotonic() - t0:.0f}s; "
            f"task logs under {af.log_dir}"
        )
        for dag_id in DAGS:
            af.set_paused(dag_id, False)
        for i in range(days):
            ds = start + timedelta(days=i)
            try:
                run_day(af, catalog, console, ds, f"day {i + 1}/{days}")
            except DayFailed as exc:
                console.print(f"[bold red]{exc}[/]; the Airflow UI (make airflow) shows the run")
                return 1
    return 0

"""The closed loop under real Airflow: daily pipeline -> monitor -> (retrain) -> next day, for several days.

Per simulated day ``D``:

1. ``airflow dags test recsys_daily D``: ingest the day (users saw the lists published at the end of D-1),
   features, train only when due, recommend, publish.
2. ``airflow dags test recsys_monitor D``: online metrics of D, drift, the retrain rules. Asset scheduling
   does not fire under ``dags test``, so the driver runs the monitor itself. When the rules fire, the
   monitor's ``TriggerDagRunOperator`` creates a *queued* ``recsys_retrain`` run whose logical date is D
   and whose conf holds the reasons.
3. If such a queued run exists (read from the Airflow metadata DB, with its conf, by
   :mod:`recsys.sim.airflow_runs`):
   ``airflow dags test recsys_retrain D --conf '<its conf>'``. ``dags test`` has no option to execute an
   existing run (Airflow 3.3: no ``--run-id``), but it replaces the run of the same logical date with its
   own, so the queued run is executed in place (same logical date, same conf) and nothing stays queued.

``recsys demo drift --start 2026-01-01 --days 8`` (or ``make demo-drift``) runs it with the
environment as configured (``RECSYS_SIMULATOR__DRIFT`` for the drift, ``RECSYS_TRAIN__TRAIN_EVERY_DAYS``
large so only the first day and the monitor-triggered retrain train), then prints the timeline and saves
a plot. The figures come from the stages' run records (``catalog.runs``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

from recsys.catalog import Catalog
from recsys.config import environment, settings_from_env
from recsys.sim import airflow_runs, replay
from recsys.sim.timeline import DayRecord, _f, format_timeline, plot_timeline


class LoopError(RuntimeError):
    pass


class AirflowLoop:
    """Runs the loop's DAGs with ``airflow dags test`` in the given environment."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        echo: Callable[[str], None] | None = print,
        capture: bool = True,
    ):
        self.env = dict(env) if env is not None else environment()
        self.catalog = Catalog.from_settings(settings_from_env(self.env))
        self.cwd = str(cwd) if cwd else None
        self.echo = echo or (lambda _s: None)
        self.capture = capture
        self.logs: dict[str, str] = {}
        self.airflow_bin = str(Path(sys.executable).with_name("airflow"))

    @property
    def data_dir(self) -> Path:
        return self.catalog.data_dir

    # -- Airflow ---------------------------------------------------------------------------------
    def airflow(self, *args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [self.airflow_bin, *args], env=self.env, cwd=self.cwd, text=True, capture_output=self.capture
        )
        if self.capture:
            self.logs[" ".join(args[:4])] = (out.stdout or "") + (out.stderr or "")
        return out

    def runs(self, *dag_ids: str) -> list[dict]:
        """The DAG runs of ``dag_ids`` with their conf (``list-runs`` does not show the conf)."""
        args = ["-m", "recsys.sim.airflow_runs", *dag_ids]
        return self._python_json(args, airflow_runs.MARKER, "could not read DAG runs")

    def _python_json(self, args: list[str], marker: str, what: str):
        """Run ``python <args>`` in the loop's environment; the JSON it printed after ``marker``."""
        out = subprocess.run(
            [sys.executable, *args], env=self.env, cwd=self.cwd, text=True, capture_output=True
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith(marker)), None)
        if line is None:
            raise LoopError(f"{what}: {out.stderr[-3000:]}")
        return json.loads(line[len(marker) :])

    @staticmethod
    def _of_day(runs: list[dict], dag_id: str, ds: date) -> list[dict]:
        return [
            r
            for r in runs
            if r["dag_id"] == dag_id and str(r["logical_date"] or "").startswith(ds.isoformat())
        ]

    def state(self, dag_id: str, ds: date, runs: list[dict] | None = None) -> str:
        mine = self._of_day(runs if runs is not None else self.runs(dag_id), dag_id, ds)
        return str(max(mine, key=lambda r: r["run_after"] or "")["state"]) if mine else "missing"

    def test(self, dag_id: str, ds: date, conf: dict | None = None) -> None:
        args = ["dags", "test", dag_id, ds.isoformat()]
        if conf:
            args += ["--conf", json.dumps(conf)]
        self.airflow(*args)

    def _tail(self, dag_id: str) -> str:
        text = next((v for k, v in reversed(self.logs.items()) if dag_id in k), "")
        return text[-4000:]

    # -- one day ---------------------------------------------------------------------------------
    def run_day(self, ds: date) -> DayRecord:
        t0 = time.monotonic()
        rec = DayRecord(ds=str(ds))
        self.echo(f"--- {ds}: recsys_daily")
        self.test("recsys_daily", ds)
        self.echo(f"--- {ds}: recsys_monitor")
        self.test("recsys_monitor", ds)
        runs = self.runs("recsys_daily", "recsys_monitor", "recsys_retrain")
        rec.daily_state = self.state("recsys_daily", ds, runs)
        if rec.daily_state != "success":
            raise LoopError(f"recsys_daily {ds} ended {rec.daily_state}:\n{self._tail('recsys_daily')}")
        rec.monitor_state = self.state("recsys_monitor", ds, runs)
        if rec.monitor_state != "success":
            raise LoopError(f"recsys_monitor {ds} ended {rec.monitor_state}:\n{self._tail('recsys_monitor')}")
        queued = [r for r in self._of_day(runs, "recsys_retrain", ds) if r["state"] == "queued"]
        if queued:
            conf = {k: v for k, v in queued[0]["conf"].items() if not k.startswith("openlineage")}
            rec.retrain_fired, rec.retrain_conf = True, conf
            self.echo(f"--- {ds}: recsys_retrain (queued run {queued[0]['run_id']}, conf {json.dumps(conf)})")
            self.test("recsys_retrain", ds, conf)
            rec.retrain_state = self.state("recsys_retrain", ds)
            if rec.retrain_state != "success":
                raise LoopError(
                    f"recsys_retrain {ds} ended {rec.retrain_state}:\n{self._tail('recsys_retrain')}"
                )
        self._fill(rec, ds)
        rec.seconds = round(time.monotonic() - t0, 1)
        return rec

    def _report(self, ds: date, stage: str) -> dict:
        return self.catalog.runs.read(ds, stage)

    def _fill(self, rec: DayRecord, ds: date) -> None:
        mon = self._report(ds, "monitor")
        m = mon.get("metrics", {})
        rec.ctr, rec.ctr_exploration = m.get("ctr"), m.get("ctr_exploration")
        rec.recommended_impressions = int(m.get("recommended_impressions") or 0)
        rec.regret_ratio = m.get("regret_ratio")
        rec.pred_obs_ratio = m.get("pred_obs_ratio")
        rec.exploration_auc = m.get("exploration_click_auc")
        rec.exploration_gauc = m.get("exploration_click_gauc")
        rec.reasons = list(mon.get("reasons", []))
        if rec.retrain_fired and not rec.reasons:
            rec.reasons = list((rec.retrain_conf or {}).get("reasons", []))
        rec.served_model = self._report(ds - timedelta(days=1), "recommend").get("model_version")
        rec.champion = self._report(ds, "recommend").get("model_version")
        # a model the daily run trained *and registered* (train.json alone is not proof: see the report)
        rec.trained = bool(self._report(ds, "register")) and not rec.retrain_fired
        if rec.retrain_fired:
            rec.retrain_blessed = self._report(ds, "evaluate").get("blessed")

    def replay(self, ds: date, version: str) -> dict:
        """:func:`replay_ctr` for ``ds`` in this loop's environment (a subprocess, like the DAG runs)."""
        args = ["-m", "recsys.sim.replay", ds.isoformat(), str(version)]
        return self._python_json(args, replay.MARKER, f"replay of {ds} failed")

    def run(
        self, start: date, days: int, replay: bool = True, days_after_retrain: int | None = None
    ) -> list[DayRecord]:
        """Run ``days`` days from ``start``; with ``days_after_retrain``, stop that many days after the
        first retrain instead (if one fires). Then, with ``replay``, replay each day served by a model a
        retrain promoted with the model it replaced (:func:`replay_ctr`)."""
        out = []
        for i in range(days):
            out.append(self.run_day(start + timedelta(days=i)))
            r = out[-1]
            self.echo(
                f"    ctr rec {_f(r.ctr)}  exploration {_f(r.ctr_exploration)}  retrain "
                f"{'FIRED' if r.retrain_fired else 'no'}  champion {r.champion}  ({r.seconds:.0f}s)"
            )
            fired = [date.fromisoformat(x.ds) for x in out if x.retrain_fired]
            if (
                days_after_retrain is not None
                and fired
                and (start + timedelta(days=i) - fired[0]).days >= (days_after_retrain)
            ):
                break
        if replay:
            promoted = [r for r in out if r.retrain_fired and r.retrain_blessed]
            for r in out:
                if promoted and r.ds > promoted[0].ds and r.served_model == promoted[0].champion:
                    demoted = promoted[0].served_model
                    r.replay = self.replay(date.fromisoformat(r.ds), demoted)
                    self.echo(
                        f"--- {r.ds}: replayed with model {demoted}: ctr "
                        f"{_f(r.replay['ctr_replay'])} vs live {_f(r.replay['ctr_live'])}"
                    )
        return out


def run_closed_loop(start: date, days: int, plot: str | Path | None = None, verbose: bool = False) -> int:
    """Run the loop for ``days`` days from ``start`` in this environment; print the timeline, save it as
    JSON and a plot (default ``catalog.closed_loop_plot``). Returns the exit code."""
    loop = AirflowLoop(capture=not verbose)
    drift = [str(e.day) for e in loop.catalog.settings.simulator.drift]
    t0 = time.monotonic()
    try:
        records = loop.run(start, days)
    except LoopError as exc:
        print(f"closed loop stopped: {exc}", file=sys.stderr)
        return 1
    print("\n" + "=" * 90)
    print(f"closed loop ({(time.monotonic() - t0) / 60:.1f} min), drift on {', '.join(drift) or 'no day'}")
    print("=" * 90)
    print(format_timeline(records, drift))
    out = loop.catalog.closed_loop_report
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in records], indent=2))
    png = plot_timeline(records, plot or loop.catalog.closed_loop_plot, drift)
    print(f"\ntimeline: {out}\nplot:     {png}")
    return 0

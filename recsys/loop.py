"""The closed loop under real Airflow: daily pipeline -> monitor -> (retrain) -> next day, for several days.

Per simulated day ``D``:

1. ``airflow dags test recsys_daily D``: ingest the day (users saw the lists published at the end of D-1),
   features, train only when due, recommend, publish.
2. ``airflow dags test recsys_monitor D``: online metrics of D, drift, the retrain rules. Asset scheduling
   does not fire under ``dags test``, so the driver runs the monitor itself. When the rules fire, the
   monitor's ``TriggerDagRunOperator`` creates a *queued* ``recsys_retrain`` run whose logical date is D
   and whose conf holds the reasons.
3. If such a queued run exists (read from the Airflow metadata DB, with its conf):
   ``airflow dags test recsys_retrain D --conf '<its conf>'``. ``dags test`` has no option to execute an
   existing run (Airflow 3.3: no ``--run-id``), but it replaces the run of the same logical date with its
   own, so the queued run is executed in place (same logical date, same conf) and nothing stays queued.

``python -m recsys.loop --start 2026-01-01 --days 8`` (or ``make demo-drift``) runs it with the
environment as configured (``RECSYS_SIMULATOR__DRIFT`` for the drift, ``RECSYS_TRAIN__TRAIN_EVERY_DAYS``
large so only the first day and the monitor-triggered retrain train), then prints the timeline and saves
a plot. The figures come from what the stages recorded under ``reports/runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

_RUNS_SNIPPET = """
import json, sys
from sqlalchemy import select
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
with create_session() as s:
    runs = s.scalars(select(DagRun).where(DagRun.dag_id.in_(sys.argv[1:]))).all()
    out = [{"dag_id": r.dag_id, "run_id": r.run_id, "state": str(r.state), "conf": r.conf or {},
            "logical_date": r.logical_date.isoformat() if r.logical_date else None,
            "run_type": str(r.run_type), "run_after": r.run_after.isoformat() if r.run_after else None}
           for r in runs]
print("@@RUNS@@" + json.dumps(out, default=str))
"""


@dataclass
class DayRecord:
    """One row of the timeline."""

    ds: str
    daily_state: str = "-"
    monitor_state: str = "-"
    ctr: float | None = None  # recommended impressions (rec_version set)
    ctr_exploration: float | None = None
    recommended_impressions: int = 0
    served_model: str | None = None  # the model whose lists users saw on ds (published at the end of ds-1)
    champion: str | None = None  # the model whose lists were live at the end of ds
    trained: bool = False  # the daily run trained and registered a model
    retrain_fired: bool = False
    reasons: list[str] = field(default_factory=list)
    retrain_conf: dict | None = None
    retrain_state: str | None = None
    retrain_blessed: bool | None = None
    seconds: float = 0.0


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
        self.env = dict(env if env is not None else os.environ)
        self.cwd = str(cwd) if cwd else None
        self.echo = echo or (lambda _s: None)
        self.capture = capture
        self.logs: dict[str, str] = {}
        self.airflow_bin = str(Path(sys.executable).with_name("airflow"))

    @property
    def data_dir(self) -> Path:
        return Path(self.env.get("RECSYS_DATA_DIR", "data"))

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
        out = subprocess.run(
            [sys.executable, "-c", _RUNS_SNIPPET, *dag_ids],
            env=self.env,
            cwd=self.cwd,
            text=True,
            capture_output=True,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("@@RUNS@@")), None)
        if line is None:
            raise LoopError(f"could not read DAG runs: {out.stderr[-2000:]}")
        return json.loads(line[len("@@RUNS@@") :])

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
        p = self.data_dir / "reports" / "runs" / f"ds={ds}" / f"{stage}.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def _fill(self, rec: DayRecord, ds: date) -> None:
        mon = self._report(ds, "monitor")
        m = mon.get("metrics", {})
        rec.ctr, rec.ctr_exploration = m.get("ctr"), m.get("ctr_exploration")
        rec.recommended_impressions = int(m.get("recommended_impressions") or 0)
        rec.reasons = list(mon.get("reasons", []))
        if rec.retrain_fired and not rec.reasons:
            rec.reasons = list((rec.retrain_conf or {}).get("reasons", []))
        rec.served_model = self._report(ds - timedelta(days=1), "recommend").get("model_version")
        rec.champion = self._report(ds, "recommend").get("model_version")
        # a model the daily run trained *and registered* (train.json alone is not proof: see the report)
        rec.trained = bool(self._report(ds, "register")) and not rec.retrain_fired
        if rec.retrain_fired:
            rec.retrain_blessed = self._report(ds, "evaluate").get("blessed")

    def run(self, start: date, days: int) -> list[DayRecord]:
        out = []
        for i in range(days):
            out.append(self.run_day(start + timedelta(days=i)))
            r = out[-1]
            self.echo(
                f"    ctr rec {_f(r.ctr)}  exploration {_f(r.ctr_exploration)}  retrain "
                f"{'FIRED' if r.retrain_fired else 'no'}  champion {r.champion}  ({r.seconds:.0f}s)"
            )
        return out


# -------------------------------------------------------------------------------------------- report
def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_timeline(records: list[DayRecord], drift_days: list[str] | None = None) -> str:
    drift_days = drift_days or []
    lines = [
        f"{'day':<12}{'CTR rec':>9}{'CTR expl':>10}{'rec impr':>10}{'served by':>21}"
        f"{'retrain':>9}{'champion':>21}  note"
    ]
    for r in records:
        notes = []
        if r.ds in drift_days:
            notes.append("DRIFT")
        if r.trained:
            notes.append("daily trained")
        if r.retrain_fired:
            notes.append("retrain " + ("promoted" if r.retrain_blessed else "not blessed"))
        elif r.reasons:
            notes.append("held: " + r.reasons[-1][:60])
        lines.append(
            f"{r.ds:<12}{_f(r.ctr):>9}{_f(r.ctr_exploration):>10}{r.recommended_impressions:>10}"
            f"{r.served_model or '-':>21}{'FIRED' if r.retrain_fired else 'no':>9}"
            f"{r.champion or '-':>21}  {', '.join(notes)}"
        )
    fired = [r for r in records if r.retrain_fired]
    for r in fired:
        lines.append(f"retrain on {r.ds}: conf {json.dumps(r.retrain_conf)}")
    return "\n".join(lines)


def plot_timeline(records: list[DayRecord], path: str | Path, drift_days: list[str] | None = None) -> Path:
    """CTR of recommended vs exploration impressions per day; drift and retrains marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = list(range(len(records)))
    labels = [r.ds[5:] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x, [r.ctr if r.ctr is not None else float("nan") for r in records], "o-", label="CTR recommended")
    ax.plot(
        x,
        [r.ctr_exploration if r.ctr_exploration is not None else float("nan") for r in records],
        "s--",
        color="grey",
        label="CTR exploration",
    )
    for i, r in enumerate(records):
        if r.ds in (drift_days or []):
            ax.axvline(i, color="red", linestyle=":", label="drift")
        if r.retrain_fired:
            ax.axvline(i + 0.5, color="green", linestyle="-.", label="retrain (lists live next day)")
    handles, names = ax.get_legend_handles_labels()
    uniq = dict(zip(names, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), loc="best", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_xlabel("day")
    ax.set_ylabel("click-through rate")
    ax.set_title("recsys closed loop: online CTR, drift and retrain")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def drift_days_from_env(env: dict[str, str] | None = None) -> list[str]:
    raw = (env or os.environ).get("RECSYS_SIMULATOR__DRIFT")
    try:
        return [str(e["day"]) for e in json.loads(raw)] if raw else []
    except (ValueError, TypeError, KeyError):
        return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1))
    p.add_argument("--days", type=int, default=8)
    p.add_argument("--plot", default=None, help="PNG path (default: <data dir>/reports/closed_loop.png)")
    p.add_argument("--verbose", action="store_true", help="stream Airflow's output instead of capturing it")
    a = p.parse_args(argv)
    loop = AirflowLoop(capture=not a.verbose)
    drift = drift_days_from_env()
    t0 = time.monotonic()
    try:
        records = loop.run(a.start, a.days)
    except LoopError as exc:
        print(f"closed loop stopped: {exc}", file=sys.stderr)
        return 1
    print("\n" + "=" * 90)
    print(f"closed loop ({(time.monotonic() - t0) / 60:.1f} min), drift on {', '.join(drift) or 'no day'}")
    print("=" * 90)
    print(format_timeline(records, drift))
    out = loop.data_dir / "reports" / "closed_loop.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in records], indent=2))
    png = plot_timeline(records, a.plot or loop.data_dir / "reports" / "closed_loop.png", drift)
    print(f"\ntimeline: {out}\nplot:     {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

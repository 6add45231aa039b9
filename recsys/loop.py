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
    regret_ratio: float | None = None  # simulator: share of the oracle's expected clicks the lists missed
    pred_obs_ratio: float | None = None  # serving model's predicted / observed CTR of its impressions
    exploration_auc: float | None = None  # serving model's click AUC on the exploration impressions
    exploration_gauc: float | None = None  # the same per user (within-user ranking)
    served_model: str | None = None  # the model whose lists users saw on ds (published at the end of ds-1)
    champion: str | None = None  # the model whose lists were live at the end of ds
    trained: bool = False  # the daily run trained and registered a model
    retrain_fired: bool = False
    reasons: list[str] = field(default_factory=list)
    retrain_conf: dict | None = None
    retrain_state: str | None = None
    retrain_blessed: bool | None = None
    # after a promoting retrain: the same day replayed with the demoted model's lists (see replay_ctr)
    replay: dict | None = None
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
        return self._python_json(["-c", _RUNS_SNIPPET, *dag_ids], "@@RUNS@@", "could not read DAG runs")

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
        p = self.data_dir / "reports" / "runs" / f"ds={ds}" / f"{stage}.json"
        return json.loads(p.read_text()) if p.exists() else {}

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
        args = ["-m", "recsys.loop", "--replay", ds.isoformat(), "--version", str(version)]
        return self._python_json(args, "@@REPLAY@@", f"replay of {ds} failed")

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


def replay_ctr(ds: date, version: str, settings=None) -> dict:
    """Simulator only: the recommended-impression CTR the registered model ``version`` would have earned on
    ``ds``, next to the live lists' CTR, both drawn by the simulator for the same day.

    The live lists are the version users saw on ``ds`` (published for ``ds - 1``). The replayed lists are
    what that model ranks for the same users from the same history (clean zone through ``ds - 1``).
    The simulator then plays day ``ds`` once with each set of lists; the day's random stream is seeded by
    the day, so the same users come with the same sessions and exploration and the comparison is paired:
    the difference is the lists'. This is how the closed loop shows the retrain paid off against the model
    it replaced on the same days, not only against an earlier (different) day.
    """
    import pandas as pd

    from recsys.config import load_settings
    from recsys.data import simulate as sim
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.registry import load_ranker
    from recsys.serving import batch_recommendations
    from recsys.serving.publish import FALLBACK_KEY, engine_for, read_for_ds
    from recsys.stages import online_model_figures, open_lake

    settings = settings or load_settings()
    if settings.source != "simulator":
        raise ValueError("a replay needs the simulator (it draws what users would have done)")
    day_before = ds - timedelta(days=1)
    live = read_for_ds(engine_for(settings.resolved_db_url), str(day_before))
    if live.empty:
        raise LookupError(f"no list version for {day_before} is kept: nothing was live on {ds}")
    users = sorted(set(live["user_key"].astype(str)) - {FALLBACK_KEY})
    ranker = load_ranker(settings, version=version)
    other, _info = batch_recommendations(
        open_lake(settings), day_before, settings, user_keys=users, ranker=ranker
    )
    world = sim.build_world(settings.simulator, settings.seed)
    key = load_pseudonym_key(settings)
    raw_of = {pseudonym(u, key): u for u in world.users["user_id"]}

    def slates(frame: pd.DataFrame) -> dict[str, list[int]]:
        mine = frame[frame["user_key"].astype(str) != FALLBACK_KEY].sort_values(["user_key", "rank"])
        lists = mine.groupby("user_key")["video_id"].apply(list)
        return {raw_of[k]: [int(v) for v in vids] for k, vids in lists.items() if k in raw_of}

    result = {"ds": str(ds), "model_version": ranker.version}
    for name, frame, version in (
        ("live", live, str(live["version"].iloc[0])),
        ("replay", other, f"replay-{ranker.version}"),
    ):
        events = sim.simulate_day(world, ds, slates(frame), version)
        shown = events[events["rec_version"].notna()]
        result[f"ctr_{name}"] = float(pd.to_numeric(shown["clicked"]).mean()) if len(shown) else None
        result[f"impressions_{name}"] = len(shown)
    # the demoted model on the impressions users really saw on ds: its click AUC on the exploration ones
    # (videos neither model chose), next to the live model's on the same rows
    lake = open_lake(settings)
    logged = lake.read_frame("clean", "interactions", ds)
    for name, model in (("live", None), ("replay", ranker)):
        figures = online_model_figures(
            lake, settings, ds, logged, str(live["model_version"].iloc[0]), ranker=model
        )
        result[f"exploration_auc_{name}"] = figures.get("exploration_click_auc")
        result[f"exploration_gauc_{name}"] = figures.get("exploration_click_gauc")
    return result


# -------------------------------------------------------------------------------------------- report
def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _f3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_timeline(records: list[DayRecord], drift_days: list[str] | None = None) -> str:
    drift_days = drift_days or []
    lines = [
        f"{'day':<12}{'CTR rec':>9}{'CTR expl':>10}{'rec impr':>10}{'served by':>21}"
        f"{'retrain':>9}{'champion':>21}{'CTR prev':>10}{'regret':>8}{'pred/obs':>9}"
        f"{'AUC expl':>9}{'AUC prev':>9}{'GAUC expl':>10}{'GAUC prev':>10}  note"
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
            f"{r.champion or '-':>21}{_f((r.replay or {}).get('ctr_replay')):>10}"
            f"{'-' if r.regret_ratio is None else f'{r.regret_ratio:.0%}':>8}"
            f"{'-' if r.pred_obs_ratio is None else f'{r.pred_obs_ratio:.2f}':>9}"
            f"{_f3(r.exploration_auc):>9}{_f3((r.replay or {}).get('exploration_auc_replay')):>9}"
            f"{_f3(r.exploration_gauc):>10}{_f3((r.replay or {}).get('exploration_gauc_replay')):>10}"
            f"  {', '.join(notes)}"
        )
    fired = [r for r in records if r.retrain_fired]
    for r in fired:
        lines.append(f"retrain on {r.ds}: conf {json.dumps(r.retrain_conf)}")
    if any(r.replay for r in records):
        lines.append(
            "CTR prev: the same day replayed in the simulator with the demoted model's lists (same users, "
            "sessions and random draws)"
        )
    if any(r.regret_ratio is not None for r in records):
        lines.append("regret: share of the oracle lists' expected clicks the served lists missed (simulator)")
    if any(r.pred_obs_ratio is not None for r in records):
        lines.append(
            "pred/obs: the serving model's mean predicted click probability / observed CTR of its lists"
        )
    if any(r.exploration_auc is not None for r in records):
        lines.append(
            "AUC expl: the serving model's click AUC on the exploration impressions (not its picks); "
            "GAUC: per user; prev: the demoted model's on the same impressions"
        )
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
    if any(r.replay for r in records):
        ax.plot(
            x,
            [(r.replay or {}).get("ctr_replay") or float("nan") for r in records],
            "x:",
            color="tab:red",
            label="CTR had the demoted model stayed (replay)",
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
    p.add_argument(
        "--replay", type=date.fromisoformat, default=None, help="only replay this day (see replay_ctr)"
    )
    p.add_argument("--version", default=None, help="with --replay: the registered model version to replay")
    a = p.parse_args(argv)
    if a.replay is not None:
        if a.version is None:
            p.error("--replay needs --version")
        print("@@REPLAY@@" + json.dumps(replay_ctr(a.replay, a.version)))
        return 0
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

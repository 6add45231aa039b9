"""A local Airflow for the demo: an api-server and a LocalExecutor scheduler in the demo's Airflow home.

Why not ``airflow dags test``: it stamps a run's start with its logical date (Airflow 3.3,
``Dag.test`` passes ``start_date=logical_date``), so a run of 2026-01-01 made today shows in the UI as
lasting months; it runs every task in its own process and prints every task log to the terminal; and
the monitor, scheduled on an Asset, never runs under it. Here the demo triggers runs through the REST
API and a real scheduler executes them: the run's start is the moment the scheduler starts it, every
task log goes to its file under ``$AIRFLOW_HOME/logs``, and the UI shows the runs as they happened.

The scheduler runs with ``[scheduler] use_job_schedule = False``: it executes triggered runs only, so
unpausing the DAGs for the demo does not make it start a cron run for yesterday (``catchup=False``), and
the monitor runs when the demo triggers it (one run per day, as the closed-loop driver does), not once
per asset event. The DAGs are paused again on exit, as ``DAGS_ARE_PAUSED_AT_CREATION`` left them.
The api-server listens on a free port of 127.0.0.1 and serves the Execution API the task processes
report to; the demo logs in as the simple auth manager's generated ``admin`` user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

TERMINAL_RUN = {"success", "failed"}
TERMINAL_TI = {"success", "failed", "skipped", "upstream_failed", "removed"}


class LocalAirflowError(RuntimeError):
    """The local Airflow did not start, or refused a request."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def run_id_for(dag_id: str, ds: date) -> str:
    return f"demo__{ds.isoformat()}"


@dataclass
class LocalAirflow:
    """api-server + scheduler started in ``env``'s ``AIRFLOW_HOME``; REST calls as the admin user."""

    env: dict[str, str]
    port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _http: httpx.Client | None = None

    @property
    def home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        """Task logs (Airflow's own layout) and, under ``demo/``, the servers' output."""
        return self.home / "logs"

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def start(cls, env: dict[str, str] | None = None, timeout: float = 300.0) -> LocalAirflow:
        env = dict(env if env is not None else os.environ)
        port = free_port()
        env.update(
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
            # the scheduler's log server: a free port too (8793 may be another Airflow's on this machine)
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            # the days run one task at a time: two executor workers, not 32 idle processes
            AIRFLOW__CORE__PARALLELISM=env.get("AIRFLOW__CORE__PARALLELISM", "2"),
        )
        af = cls(env=env, port=port)
        out = af.log_dir / "demo"
        out.mkdir(parents=True, exist_ok=True)
        # the DAGs into the metadata DB once (no dag-processor re-parsing them all demo long)
        af._cli("dags", "reserialize", log=out / "reserialize.log")
        for name, args in (
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port)]),
            ("scheduler", ["scheduler"]),
        ):
            with open(out / f"{name}.log", "ab") as fh:
                af.procs[name] = subprocess.Popen(
                    [_airflow_bin(), *args],
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stop() signals the children too
                )
        try:
            af._wait_healthy(timeout)
        except BaseException:
            af.stop()
            raise
        return af

    def _cli(self, *args: str, log: Path) -> None:
        with open(log, "wb") as fh:
            rc = subprocess.run([_airflow_bin(), *args], env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        if rc.returncode != 0:
            raise LocalAirflowError(f"airflow {' '.join(args)} failed (exit {rc.returncode}); see {log}")

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise LocalAirflowError(
                        f"airflow {name} exited ({p.returncode}); see {self.log_dir / 'demo' / f'{name}.log'}"
                    )
            try:
                health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                if health.get("scheduler", {}).get("status") == "healthy":
                    self._login()
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(2)
        raise LocalAirflowError(
            f"Airflow did not become healthy in {timeout:.0f}s; see {self.log_dir / 'demo'}"
        )

    def _login(self) -> None:
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())["admin"]
        r = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        if r.status_code not in (200, 201):
            raise LocalAirflowError(f"login to the local Airflow failed: HTTP {r.status_code}")
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v2",
            headers={"Authorization": f"Bearer {r.json()['access_token']}"},
            timeout=60,
        )

    def stop(self) -> None:
        """Pause the DAGs again, then stop the servers (their whole process groups)."""
        if self._http is not None:
            for dag_id in ("recsys_daily", "recsys_monitor", "recsys_retrain"):
                with contextlib.suppress(httpx.HTTPError, LocalAirflowError):
                    self.set_paused(dag_id, True)
            self._http.close()
            self._http = None
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def __enter__(self) -> LocalAirflow:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- REST ------------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        if self._http is None:
            raise LocalAirflowError("not logged in")
        r = self._http.request(method, path, json=body)
        if r.status_code not in ok:
            raise LocalAirflowError(f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": paused})

    def runs_of_day(self, dag_id: str, ds: date) -> list[dict]:
        day = f"{ds.isoformat()}T00:00:00Z"
        got = self.api("GET", f"/dags/{dag_id}/dagRuns?logical_date_gte={day}&logical_date_lte={day}")
        return list(got["dag_runs"])

    def trigger(self, dag_id: str, ds: date, conf: dict | None = None) -> str:
        """A run of ``dag_id`` for logical date ``ds``; an earlier run of that date is deleted first
        (as ``airflow dags test`` replaces it: a rerun of the demo reruns the day)."""
        for old in self.runs_of_day(dag_id, ds):
            self.api("DELETE", f"/dags/{dag_id}/dagRuns/{old['dag_run_id']}")
        run = self.api(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            {
                "dag_run_id": run_id_for(dag_id, ds),
                "logical_date": f"{ds.isoformat()}T00:00:00Z",
                "conf": conf or {},
            },
        )
        return str(run["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])

    def task_log_path(self, dag_id: str, run_id: str, task_id: str) -> Path | None:
        """The file of the task's latest attempt (Airflow's default ``log_filename_template``)."""
        folder = self.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        attempts = sorted(folder.glob("attempt=*.log"), key=lambda p: int(p.stem.split("=")[1]))
        return attempts[-1] if attempts else None


def log_tail(path: Path, lines: int = 25) -> list[str]:
    """The last ``lines`` events of an Airflow 3 task log (JSON lines), as ``LEVEL event`` text."""
    out = []
    for raw in path.read_text(errors="replace").splitlines()[-lines:]:
        try:
            rec = json.loads(raw)
            text = f"{str(rec.get('level', '')).upper():<8} {rec.get('event', '')}"
            if rec.get("error_detail"):
                err = (
                    rec["error_detail"][-1] if isinstance(rec["error_detail"], list) else rec["error_detail"]
                )
                text += (
                    f" {err.get('exc_type', '')}: {err.get('exc_value', '')}" if isinstance(err, dict) else ""
                )
        except (ValueError, AttributeError):
            text = raw
        out.append(text)
    return out

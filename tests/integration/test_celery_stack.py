"""recsys_daily on the production stack: Airflow 3 + CeleryExecutor (Redis broker, PostgreSQL metadata),
two Celery workers, recommendations in PostgreSQL and an MLflow tracking *server* backed by PostgreSQL.

Nothing in ``recsys`` or the DAG changes for this: only settings (environment variables) do, which is the
claim of ARCHITECTURE.md "Scale" this test proves.

Layout (everything torn down in ``finally``):

* fresh PostgreSQL databases ``airflow_it_<r>``, ``recsys_it_<r>``, ``mlflow_it_<r>`` (dropped at the end);
* a dedicated, empty Redis database number (flushed at the end);
* ``mlflow server`` (1 worker) on a free port, artifacts proxied to a temporary folder;
* ``airflow scheduler``, ``dag-processor``, ``api-server`` (free port) and two ``airflow celery worker``
  processes (``worker1@%h``, ``worker2@%h``, concurrency 1 each), every one started with ``setsid``
  (``start_new_session``) so its whole process group is signalled (SIGTERM, then SIGKILL).

The run is triggered through the REST API (token from ``POST /auth/token``, the simple auth manager with a
known password in a passwords file). ``[scheduler] use_job_schedule = False`` keeps the scheduler from
creating its own ``@daily`` run next to ours when the DAG is unpaused.

The Alertmanager -> Airflow relay (``recsys alerts relay``) runs next to the stack, logged in to this
api-server as the admin: an Alertmanager webhook payload posted to it creates one ``recsys_retrain`` run
with the alert's conf, and the same payload again (Alertmanager's repeat, or a relay that restarted and
lost its memory) creates none. Then a real Alertmanager, with the repository's alertmanager.yml (only
the relay's address and the retrain route's group_wait changed), receives two alerts through its API: the
one labelled ``action="retrain"`` reaches the relay and becomes a second run, the other one does not.
``recsys_retrain`` stays paused (as at creation), so the runs wait in ``queued`` and cost the stack nothing.

The stack is a module-scoped fixture (``celery_stack``), started once; the tests over it are focused: the
relay (one run per alert episode), Alertmanager -> relay (only retrain alerts), then one run of
``recsys_daily`` (fixture ``daily_run``) checked for its task states, the use of both workers, the
recommendations in PostgreSQL and the model on the MLflow server. The relay tests come first in the file
(pytest's order): the first one checks that ``recsys_retrain`` has no run yet.

"Both workers were used" is read from the workers' own logs (``Executing workload in Celery: ...
task_id='...'``): the ``hostname`` of a task instance is the machine's name, the same for two workers on
one host. With a prefetch multiplier of 1, late acks and concurrency 1, a busy worker holds no queued task,
and Redis hands the next message to the worker that has waited longest (BRPOP is FIFO among blocked
clients), so over the 11 tasks the two workers take turns; one worker taking every task would need the
other to miss every BRPOP.

Run: ``.venv/bin/pytest -m "slow and postgres" tests/integration/test_celery_stack.py -s``.
Keep the DAG run small (200 users, 200 videos, 3 epochs): the stack is seven processes on a shared host.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dag_tasks import DAILY_TASKS
from services import service_missing

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW, MLFLOW = str(BIN / "airflow"), str(BIN / "mlflow")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
DAG_ID = "recsys_daily"
RETRAIN_DAG_ID = "recsys_retrain"
LOGICAL_DATE = "2026-01-01T00:00:00Z"
RUN_TIMEOUT_S = int(os.environ.get("RECSYS_IT_RUN_TIMEOUT", "900"))
WORKERS = ("worker1", "worker2")
EXPECTED_TASKS = set(DAILY_TASKS)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(RUN_TIMEOUT_S + 900)]


# ------------------------------------------------------------------------------------------- services
def _pg_connect(dbname: str = "postgres"):
    import psycopg2

    conn = psycopg2.connect(dbname=dbname, connect_timeout=3, **PG)
    conn.autocommit = True
    return conn


def _services_or_skip():
    try:
        _pg_connect().close()
    except Exception as exc:  # noqa: BLE001
        service_missing(f"PostgreSQL unreachable at {PG['host']}:{PG['port']} as {PG['user']}: {exc}")
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        service_missing(f"Redis unreachable at {REDIS_HOST}:{REDIS_PORT}: {exc}")


def _free_redis_db() -> int:
    """A Redis database number nobody uses (empty), preferring 5; ours alone to flush."""
    import redis

    for n in (5, *range(6, 16), 4, 3, 2, 1):
        if redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n).dbsize() == 0:
            return n
    service_missing("no empty Redis database number (1-15) to use and flush")


# celery 5.7 removed ``celery.backends.database.retry``, which apache-airflow-providers-celery 3.26 imports
# (celery_executor_utils): with that pair neither the scheduler's CeleryExecutor nor ``airflow celery worker``
# can start. The real fix is a pin (``celery<5.7``, or a provider release that no longer imports it). Until
# then this test puts a ``sitecustomize`` on the stack's PYTHONPATH that restores an equivalent decorator
# (retry a result-backend query on a database error, as celery <= 5.6 did), and warns.
_CELERY_SHIM = '''\
"""Test-only shim (tests/integration/test_celery_stack.py): restore celery.backends.database.retry."""
import importlib.abc
import importlib.util
import sys


def _retry(fun):
    import functools

    @functools.wraps(fun)
    def _inner(*args, **kwargs):
        from sqlalchemy.exc import DatabaseError, InvalidRequestError
        from sqlalchemy.orm.exc import StaleDataError

        for attempt in range(3):
            try:
                return fun(*args, **kwargs)
            except (DatabaseError, InvalidRequestError, StaleDataError):
                if attempt == 2:
                    raise
    return _inner


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "celery.backends.database":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if not hasattr(module, "retry"):
                module.retry = _retry
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
'''


def _celery_needs_shim() -> bool:
    import celery.backends.database as db

    return not hasattr(db, "retry")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """Processes started in their own process groups, and their logs."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115  closed with the process
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # setsid
        out.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        p = self.logs / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def tail(self, name: str, n: int = 4000) -> str:
        return f"----- {name} (exit {self.procs[name].poll()}) -----\n{self.log(name)[-n:]}"

    def check_alive(self) -> None:
        dead = [n for n, p in self.procs.items() if p.poll() is not None]
        if dead:
            raise AssertionError(
                "stack process(es) died: " + ", ".join(dead) + "\n" + "\n".join(self.tail(n) for n in dead)
            )

    def stop(self, grace: float = 20.0) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():  # the group may outlive its leader (task supervisors, pool children)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _http(
    method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 30
) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read().decode()
            try:
                return resp.status, (json.loads(raw) if raw else {})
            except ValueError:  # e.g. MLflow's /health answers "OK"
                return resp.status, raw
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw


def _wait(what: str, probe, timeout: float, stack: Stack, every: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            last = probe()
            if last:
                return last
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})\n"
        + "\n".join(stack.tail(n) for n in stack.procs)
    )


# ------------------------------------------------------------------------------------------ the stack
@dataclass
class CeleryStack:
    """The running stack, shared by the tests of this module (started once, torn down at the end)."""

    procs: Stack
    env: dict[str, str]
    dbs: dict[str, str]
    base: str  # the api-server
    token: str
    password: str
    relay_port: int
    artifacts: Path
    tmp_path: Path
    tag: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def relay(self) -> str:
        return f"http://127.0.0.1:{self.relay_port}"


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory) -> Iterator[CeleryStack]:
    """MLflow server, Airflow (api-server, scheduler, dag-processor, two Celery workers) and the alert
    relay on fresh PostgreSQL databases and an empty Redis database; everything dropped, flushed and
    stopped at the end, whatever the tests did."""
    _services_or_skip()
    from cryptography.fernet import Fernet

    tmp_path = tmp_path_factory.mktemp("celery_stack")
    t_start = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    dbs = {k: f"{k}_it_{tag}" for k in ("airflow", "recsys", "mlflow")}
    redis_db = _free_redis_db()
    api_port, mlflow_port, relay_port = _free_port(), _free_port(), _free_port()
    pg = f"postgres@{PG['host']}:{PG['port']}"
    home, data, artifacts, logs = (tmp_path / d for d in ("airflow", "data", "mlflow-artifacts", "logs"))
    for d in (home, data, artifacts, logs):
        d.mkdir()
    password = "it-" + uuid.uuid4().hex
    pw_file = home / "passwords.json"
    pw_file.write_text(json.dumps({"admin": password}))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "AIRFLOW", "MLFLOW_"))}
    env.update(
        {
            # --- recsys: the same package, production-form settings
            "RECSYS_DATA_DIR": str(data),
            "RECSYS_DB_URL": f"postgresql+psycopg2://{pg}/{dbs['recsys']}",
            "RECSYS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
            "RECSYS_MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/recsys",  # through the server's artifact proxy
            "RECSYS_PRIVACY__PSEUDONYM_KEY": "celery-it-" + os.urandom(16).hex(),
            "RECSYS_PRIVACY__ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "RECSYS_SIMULATOR__N_USERS": "200",
            "RECSYS_SIMULATOR__N_VIDEOS": "200",
            "RECSYS_TRAIN__EPOCHS": "3",
            # the first model must be promoted whatever 3 epochs on 200 users give (the popularity margin too)
            "RECSYS_EVALUATE__FLOOR_AUC": '{"click": 0.0}',
            "RECSYS_EVALUATE__MIN_MARGIN_OVER_POPULARITY": "-1.0",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "GX_ANALYTICS_ENABLED": "False",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
            # --- Airflow: CeleryExecutor, PostgreSQL metadata, Redis broker
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}/{dbs['airflow']}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}/{dbs['airflow']}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
            # every DAG starts paused: recsys_daily is unpaused below, recsys_retrain stays paused
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # only our manual run: no @daily run is created when the DAG is unpaused
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        }
    )

    if _celery_needs_shim():
        import celery

        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(_CELERY_SHIM)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
        warnings.warn(
            f"celery {celery.__version__} lacks celery.backends.database.retry, which "
            "apache-airflow-providers-celery imports: the CeleryExecutor cannot start without the "
            "test's shim. Pin celery<5.7 in requirements.in.",
            stacklevel=1,
        )

    admin = _pg_connect()
    redis_client = None
    stack = Stack(logs)
    try:
        with admin.cursor() as cur:
            for db in dbs.values():
                cur.execute(f'CREATE DATABASE "{db}"')
        import redis

        redis_client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
        redis_client.flushdb()

        # MLflow tracking server (PostgreSQL backend, proxied artifacts); starts while Airflow migrates
        stack.start(
            "mlflow",
            [
                MLFLOW,
                "server",
                "--backend-store-uri",
                f"postgresql+psycopg2://{pg}/{dbs['mlflow']}",
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            env,
            tmp_path,
        )
        mig = subprocess.run(
            [AIRFLOW, "db", "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert mig.returncode == 0, f"airflow db migrate failed:\n{mig.stdout[-3000:]}\n{mig.stderr[-3000:]}"
        t_migrated = time.monotonic()

        stack.start(
            "api-server",
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"],
            env,
            tmp_path,
        )
        stack.start("scheduler", [AIRFLOW, "scheduler"], env, tmp_path)
        stack.start("dag-processor", [AIRFLOW, "dag-processor"], env, tmp_path)
        for name in WORKERS:
            # each worker serves its own task logs: one port each
            wenv = env | {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port())}
            stack.start(
                name,
                [AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1"],
                wenv,
                tmp_path,
            )

        base = f"http://127.0.0.1:{api_port}"
        # the Alertmanager -> Airflow relay, as compose runs it, logged in as the stack's admin
        relay_env = env | {
            "RECSYS_RELAY__AIRFLOW_URL": base,
            "RECSYS_RELAY__USERNAME": "admin",
            "RECSYS_RELAY__PASSWORD": password,
            "RECSYS_RELAY__PORT": str(relay_port),
            "RECSYS_RELAY__COOLDOWN_DAYS": "3",
            "RECSYS_RELAY__TIMEOUT_SECONDS": "30",  # a busy 2-core host: the api-server may be slow
        }
        stack.start("relay", [str(BIN / "recsys"), "alerts", "relay"], relay_env, tmp_path)

        _wait(
            "the MLflow server",
            lambda: _http("GET", f"http://127.0.0.1:{mlflow_port}/health")[0] == 200,
            240,
            stack,
        )
        _wait("the api-server", lambda: _http("GET", f"{base}/api/v2/monitor/health")[0] == 200, 240, stack)
        status, body = _http("POST", f"{base}/auth/token", {"username": "admin", "password": password})
        assert status in (200, 201), f"token: {status} {body}"
        token = body["access_token"]
        _wait(
            "recsys_daily to be parsed",
            lambda: _http("GET", f"{base}/api/v2/dags/{DAG_ID}", token=token)[0] == 200,
            240,
            stack,
        )
        _wait(
            "both Celery workers to be ready",
            lambda: all("ready." in stack.log(w) for w in WORKERS),
            240,
            stack,
        )
        t_ready = time.monotonic()

        yield CeleryStack(
            procs=stack,
            env=env,
            dbs=dbs,
            base=base,
            token=token,
            password=password,
            relay_port=relay_port,
            artifacts=artifacts,
            tmp_path=tmp_path,
            tag=tag,
            timings={"start": t_start, "migrated": t_migrated, "ready": t_ready},
        )
    finally:
        stack.stop()
        if redis_client is not None:
            with contextlib.suppress(Exception):
                redis_client.flushdb()
        with admin.cursor() as cur:
            for db in dbs.values():
                with contextlib.suppress(Exception):
                    cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


@dataclass(frozen=True)
class DailyRun:
    run_id: str
    state: str
    task_instances: list[dict]


@pytest.fixture(scope="module")
def daily_run(celery_stack: CeleryStack) -> DailyRun:
    """One run of recsys_daily for LOGICAL_DATE through the REST API, waited for to its end."""
    stack, base, token, tag = celery_stack.procs, celery_stack.base, celery_stack.token, celery_stack.tag
    t_trigger = time.monotonic()
    status, body = _http("PATCH", f"{base}/api/v2/dags/{DAG_ID}", {"is_paused": False}, token)
    assert status == 200 and body["is_paused"] is False, f"unpause: {status} {body}"
    status, body = _http(
        "POST",
        f"{base}/api/v2/dags/{DAG_ID}/dagRuns",
        {"dag_run_id": f"celery_it_{tag}", "logical_date": LOGICAL_DATE, "conf": {}},
        token,
    )
    assert status in (200, 201), f"trigger: {status} {body}"
    run_id = body["dag_run_id"]
    run_url = f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"

    def task_instances() -> list[dict]:
        return _http("GET", f"{run_url}/taskInstances", token=token)[1]["task_instances"]

    def finished():
        state = _http("GET", run_url, token=token)[1]["state"]
        return state if state in ("success", "failed") else None

    try:
        state = _wait(f"dag run {run_id}", finished, RUN_TIMEOUT_S, stack, every=5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ntask states: {_states(task_instances())}") from None
    t_run = time.monotonic()
    tis = task_instances()
    celery_stack.timings |= {"trigger": t_trigger, "run": t_run}
    return DailyRun(run_id, state, tis)


# ------------------------------------------------------------------------------------------- the tests
# In file order: the relay tests run before the daily run is triggered (the first asserts that
# recsys_retrain has no run yet), and neither depends on the daily run.


def _states(tis: list[dict]) -> dict[str, str]:
    return {ti["task_id"]: f"{ti['state']}@{ti.get('hostname') or '-'}" for ti in tis}


def test_alert_relay_makes_one_retrain_run_per_alert_episode(celery_stack: CeleryStack):
    """An Alertmanager v4 notification through the relay makes one recsys_retrain run, never two."""
    stack, base, token = celery_stack.procs, celery_stack.base, celery_stack.token
    relay, password = celery_stack.relay, celery_stack.password
    from recsys.monitoring.relay import RelayConfig
    from recsys.monitoring.relay_app import serve_relay

    _wait(
        f"{RETRAIN_DAG_ID} to be parsed",
        lambda: _http("GET", f"{base}/api/v2/dags/{RETRAIN_DAG_ID}", token=token)[0] == 200,
        120,
        stack,
    )
    status, dag = _http("GET", f"{base}/api/v2/dags/{RETRAIN_DAG_ID}", token=token)
    assert dag["is_paused"] is True, f"{RETRAIN_DAG_ID} must stay paused in this test: {dag}"
    _wait("the alert relay", lambda: _http("GET", f"{relay}/healthz")[0] == 200, 60, stack, every=0.5)

    payload = {
        "receiver": "recsys-retrain",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "RecsysFeatureDrift",
                    "action": "retrain",
                    "severity": "warning",
                    "feature": "device",
                    "job": "recsys_exporter",
                    "instance": "recsys-exporter:8000",
                },
                "annotations": {
                    "summary": "feature device drifted (PSI 0.300 > 0.2)",
                    "description": "Its distribution moved away from the training window.",
                },
                "startsAt": "2026-01-01T09:15:30.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=recsys_feature_psi+%3E+0.2",
                "fingerprint": "4c2d1f0a9b8e7d6c",
            }
        ],
        "groupLabels": {"alertname": "RecsysFeatureDrift"},
        "commonLabels": {"alertname": "RecsysFeatureDrift", "action": "retrain", "severity": "warning"},
        "commonAnnotations": {"summary": "feature device drifted (PSI 0.300 > 0.2)"},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}/{action="retrain"}:{alertname="RecsysFeatureDrift"}',
        "truncatedAlerts": 0,
    }
    expected_conf = {
        "trigger": "alert",
        "reasons": ["RecsysFeatureDrift: feature device drifted (PSI 0.300 > 0.2)"],
        "ds": "2025-12-31",
    }
    webhook = f"{relay}/alertmanager/retrain"

    def runs() -> list[dict]:
        status, body = _http("GET", f"{base}/api/v2/dags/{RETRAIN_DAG_ID}/dagRuns", token=token)
        assert status == 200, body
        assert body["total_entries"] == len(body["dag_runs"])
        return body["dag_runs"]

    assert runs() == []
    status, first = _http("POST", webhook, payload, timeout=120)
    assert status == 200 and first["outcome"] == "triggered", (status, first, stack.tail("relay"))
    assert first["warning"] == f"{RETRAIN_DAG_ID} is paused: the run waits until it is unpaused"
    (run,) = runs()
    assert run["dag_run_id"] == first["dag_run_id"] and run["conf"] == expected_conf, run
    assert run["run_type"] == "manual" and run["triggered_by"] == "rest_api", run
    assert run["triggering_user_name"] == "admin" and run["logical_date"] is None, run
    assert run["state"] in ("queued", "running"), run  # paused: it waits (never run by this test)
    assert run["note"] == "Alertmanager: RecsysFeatureDrift", run

    # Alertmanager repeats the notification while the alert fires: no second run
    status, again = _http("POST", webhook, payload, timeout=120)
    assert (status, again["outcome"]) == (200, "duplicate"), again
    # a relay without that memory (a restart): the episode's run id is already taken in Airflow (409)
    config = RelayConfig(airflow_url=base, password=password, port=0, cooldown_seconds=0, timeout_seconds=30)
    with serve_relay(config) as fresh:
        status, restarted = _http("POST", f"{fresh.url}/alertmanager/retrain", payload, timeout=120)
    assert (status, restarted["outcome"]) == (200, "duplicate"), restarted
    assert restarted["dag_run_id"] == first["dag_run_id"]
    assert [r["dag_run_id"] for r in runs()] == [first["dag_run_id"]]

    status, metrics = _http("GET", f"{relay}/metrics")
    assert "recsys_alert_relay_triggered_total 1.0" in metrics, metrics
    assert 'recsys_alert_relay_requests_total{outcome="duplicate"} 1.0' in metrics, metrics
    assert password not in stack.log("relay")
    print(f"alert relay: {RETRAIN_DAG_ID} run {run['dag_run_id']} ({run['state']}), conf {run['conf']}")


def test_alertmanager_delivers_only_retrain_alerts_to_the_relay(celery_stack: CeleryStack):
    """Alertmanager (the repository's routing) -> relay -> Airflow: only action="retrain" alerts retrain."""
    stack, base, token = celery_stack.procs, celery_stack.base, celery_stack.token
    relay_port, tmp_path = celery_stack.relay_port, celery_stack.tmp_path
    import shutil
    from datetime import UTC, datetime, timedelta

    import yaml

    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        service_missing("no alertmanager binary (make system-deps installs it): Alertmanager step not run")
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    retrain_routes = [r for r in config["route"]["routes"] if r["receiver"] == "recsys-retrain"]
    assert len(retrain_routes) == 1, config["route"]
    retrain_routes[0]["group_wait"] = "1s"  # the file waits a minute to batch alerts
    (receiver,) = [r for r in config["receivers"] if r["name"] == "recsys-retrain"]
    assert receiver["webhook_configs"][0]["url"] == "http://recsys-alert-relay:8081/alertmanager/retrain"
    receiver["webhook_configs"][0]["url"] = f"http://127.0.0.1:{relay_port}/alertmanager/retrain"
    am_dir = tmp_path / "alertmanager"
    am_dir.mkdir()
    (am_dir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    am_port = _free_port()
    stack.start(
        "alertmanager",
        [
            binary,
            f"--config.file={am_dir / 'alertmanager.yml'}",
            f"--storage.path={am_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",  # no gossip: a single instance
        ],
        dict(os.environ),
        am_dir,
    )
    am = f"http://127.0.0.1:{am_port}"
    _wait("Alertmanager", lambda: _http("GET", f"{am}/-/ready")[0] == 200, 60, stack, every=0.5)

    def runs() -> list[dict]:
        status, body = _http("GET", f"{base}/api/v2/dags/{RETRAIN_DAG_ID}/dagRuns", token=token)
        assert status == 200, body
        return body["dag_runs"]

    before = {r["dag_run_id"] for r in runs()}
    starts = datetime.now(UTC).replace(microsecond=0)
    summary = "the recsys monitor asked for a retrain"
    alerts = [
        {
            "labels": {
                "alertname": "RecsysRetrainRecommended",
                "action": "retrain",
                "severity": "warning",
            },
            "annotations": {"summary": summary},
            "startsAt": starts.isoformat().replace("+00:00", "Z"),
        },
        {  # goes to on-call only: no action="retrain"
            "labels": {
                "alertname": "RecsysTaskFailed",
                "severity": "warning",
                "dag_id": "recsys_daily",
                "task_id": "model__train",
                "stage": "train",
            },
            "annotations": {"summary": "Airflow task recsys_daily.model__train failed in the last hour"},
            "startsAt": starts.isoformat().replace("+00:00", "Z"),
        },
    ]
    status, body = _http("POST", f"{am}/api/v2/alerts", alerts)
    assert status == 200, (status, body)

    def new_runs() -> list[dict]:
        return [r for r in runs() if r["dag_run_id"] not in before]

    (run,) = _wait("Alertmanager's notification to become a recsys_retrain run", new_runs, 90, stack, every=1)
    assert run["conf"] == {
        "trigger": "alert",
        "reasons": [f"RecsysRetrainRecommended: {summary}"],
        "ds": (starts.date() - timedelta(days=1)).isoformat(),
    }, run
    assert run["note"] == "Alertmanager: RecsysRetrainRecommended", run
    # the on-call alert was routed too, but to a receiver without a webhook: still only that one run
    time.sleep(3)
    assert [r["dag_run_id"] for r in new_runs()] == [run["dag_run_id"]]
    assert "RecsysTaskFailed" not in stack.log("relay")
    print(f"alertmanager -> relay -> {RETRAIN_DAG_ID} run {run['dag_run_id']}, conf {run['conf']}")


def test_recsys_daily_succeeds_with_every_task(celery_stack: CeleryStack, daily_run: DailyRun):
    stack, state, run_id, tis = (
        celery_stack.procs,
        daily_run.state,
        daily_run.run_id,
        daily_run.task_instances,
    )
    assert state == "success", f"dag run {run_id} ended {state}; task states: {_states(tis)}\n" + "\n".join(
        stack.tail(n) for n in (*WORKERS, "scheduler")
    )
    assert {ti["task_id"] for ti in tis} == EXPECTED_TASKS
    assert all(ti["state"] == "success" for ti in tis), _states(tis)
    retried = {ti["task_id"]: ti["try_number"] for ti in tis if ti["try_number"] > 1}
    if retried:  # the run succeeded through the DAG's retries; say so rather than hide it
        warnings.warn(
            f"tasks needed retries on the Celery stack: {retried} (see the task logs)", stacklevel=1
        )


def test_both_celery_workers_ran_tasks(celery_stack: CeleryStack, daily_run: DailyRun):
    """The workers' own logs name the tasks they ran (a task instance's hostname is the machine's)."""
    stack, tis = celery_stack.procs, daily_run.task_instances
    ran = re.compile(r"Executing workload in Celery:.*?task_id='([^']+)'")
    by_worker = {w: sorted(set(ran.findall(stack.log(w)))) for w in WORKERS}
    print(f"\ntasks per Celery worker: {json.dumps(by_worker)}")
    print(f"task instance hostnames: {sorted({ti['hostname'] for ti in tis})}")
    assert set().union(*by_worker.values()) == EXPECTED_TASKS, by_worker
    assert all(by_worker.values()), f"one worker ran every task: {by_worker}"


def test_recommendations_land_in_postgresql(celery_stack: CeleryStack, daily_run: DailyRun):
    with contextlib.closing(_pg_connect(celery_stack.dbs["recsys"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT user_key), min(version) FROM live_recommendations")
        rows, users, version = cur.fetchone()
    assert rows > 0 and users > 0, "no live recommendations in PostgreSQL"
    assert version == "2026-01-01"
    print(f"live_recommendations: {rows} rows for {users} users")


def test_the_model_is_registered_on_the_mlflow_server_as_champion(
    celery_stack: CeleryStack, daily_run: DailyRun
):
    from mlflow import MlflowClient

    uri = celery_stack.env["RECSYS_MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champ = client.get_model_version_by_alias("recsys-ranker", "champion")
    assert champ.version == "1" and champ.tags.get("ds") == "2026-01-01"
    assert any(celery_stack.artifacts.rglob("model.keras")), (
        "model artifacts did not go through the server's proxy"
    )
    t = celery_stack.timings
    print(
        f"champion v{champ.version}; timings: migrate {t['migrated'] - t['start']:.0f}s, "
        f"stack ready {t['ready'] - t['migrated']:.0f}s, dag run {t['run'] - t['trigger']:.0f}s, "
        f"total {time.monotonic() - t['start']:.0f}s"
    )

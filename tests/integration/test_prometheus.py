"""A real Pushgateway and Prometheus scrape what recsys pushes and exports (and what statsd-exporter
exports of Airflow's task metrics); the alert rules are valid and fire as intended; what fires reaches a
real Alertmanager, which routes it by the shipped alertmanager.yml.

Needs the ``prometheus``, ``promtool`` and Pushgateway binaries, and Alertmanager for the chain test
(Debian: ``apt-get install -y prometheus prometheus-pushgateway prometheus-alertmanager``; ``make
system-deps``). Everything listens on free loopback ports and lives in a temporary folder; every process
is terminated at the end.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from services import requires

from recsys.monitoring import compute_metrics, push_stage_metrics, serve_metrics, write_quality_snapshot

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
MISSING = [
    name
    for name, path in [
        ("prometheus", PROMETHEUS),
        ("promtool", PROMTOOL),
        ("prometheus-pushgateway", PUSHGATEWAY),
    ]
    if not path
]
needs_binaries = requires(
    not MISSING,
    f"binaries not on PATH: {', '.join(MISSING)} (apt-get install -y prometheus prometheus-pushgateway)",
)
WAIT_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, check: Callable[[], object], timeout: float = WAIT_SECONDS) -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


def _ready(url: str, proc: subprocess.Popen, name: str) -> bytes:
    if proc.poll() is not None:  # exited (bad flag or config): no point waiting
        proc.log_file.flush()  # type: ignore[attr-defined]
        pytest.fail(f"{name} exited with {proc.returncode}; see its log below")
    return _get(f"{url}/-/ready")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    proc.log_file = out  # type: ignore[attr-defined]
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    proc.log_file.close()  # type: ignore[attr-defined]


def _start_pushgateway(tmp_path: Path, port: int) -> subprocess.Popen:
    return _start(
        [
            PUSHGATEWAY,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        tmp_path / "pushgateway.log",
    )


def _prometheus_config(rule_files: list[Path], jobs: dict[str, str], alertmanager: str | None = None) -> str:
    """Evaluate ``rule_files`` and scrape ``jobs`` (job name -> host:port) every second; send alerts to
    ``alertmanager`` (host:port) if given. The Pushgateway's job keeps the pushed labels (honor_labels)."""
    config: dict = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "honor_labels": job == "recsys_pushgateway",
                "static_configs": [{"targets": [at]}],
            }
            for job, at in jobs.items()
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(config)


def _start_prometheus(tmp_path: Path, port: int, config: str) -> subprocess.Popen:
    """Prometheus on ``port`` with ``config`` (YAML, written to tmp_path/prometheus.yml)."""
    (tmp_path / "prometheus.yml").write_text(config)
    return _start(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        tmp_path / "prometheus.log",
    )


def _wait_ready(servers: list[tuple[str, str, subprocess.Popen]]) -> None:
    for name, url, proc in servers:
        _wait_for(f"{name} ready", lambda url=url, proc=proc, name=name: _ready(url, proc, name))


def _stop_all(procs: list[subprocess.Popen], tmp_path: Path) -> None:
    for proc in procs:
        _stop(proc)
    for log in sorted(tmp_path.glob("*.log")):  # shown by pytest only when the test fails
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


class Stack:
    """URLs of the running pushgateway / prometheus and the exporter's snapshot file."""

    def __init__(self, pushgateway: str, prometheus: str, snapshot: Path, logs: Path):
        self.pushgateway, self.prometheus, self.snapshot, self.logs = pushgateway, prometheus, snapshot, logs

    def query(self, promql: str) -> list[dict]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = json.loads(_get(url))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql: str, expected: float) -> None:
        _wait_for(
            f"{promql} == {expected}",
            lambda: (v := self.value(promql)) is not None and v == pytest.approx(expected),
        )


class _StatsdExporterStandIn:
    """What statsd-exporter serves after Airflow reported a task outcome: ``airflow_ti_finish_total`` with
    the labels of statsd/statsd_mapping.yml (that mapping is tested against Airflow's own metric registry
    in tests/integration/test_compose_statsd.py). Counters appear at their first event, as there."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, start_http_server

        self.registry = CollectorRegistry()
        self.finished = Counter(
            "airflow_ti_finish",
            "Task instances finished, by final state.",
            ["dag_id", "task_id", "stage", "state"],
            registry=self.registry,
        )
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    pg_port, prom_port = _free_port(), _free_port()
    snapshot = tmp_path / "quality.json"
    procs: list[subprocess.Popen] = []
    exporter = serve_metrics(snapshot, port=0)
    statsd = _StatsdExporterStandIn()
    try:
        procs.append(_start_pushgateway(tmp_path, pg_port))
        jobs = {
            "recsys_exporter": f"127.0.0.1:{exporter.port}",
            "recsys_pushgateway": f"127.0.0.1:{pg_port}",
            "airflow_statsd": f"127.0.0.1:{statsd.port}",
        }
        procs.append(_start_prometheus(tmp_path, prom_port, _prometheus_config([ALERTS], jobs)))
        s = Stack(f"http://127.0.0.1:{pg_port}", f"http://127.0.0.1:{prom_port}", snapshot, tmp_path)
        s.statsd = statsd
        _wait_ready([("pushgateway", s.pushgateway, procs[0]), ("prometheus", s.prometheus, procs[1])])
        yield s
    finally:
        exporter.close()
        statsd.close()
        _stop_all(procs, tmp_path)


@needs_binaries
def test_pushed_and_exported_figures_reach_prometheus_and_alerts_fire(stack: Stack):
    # Batch health: a success, then a failure.
    assert push_stage_metrics(
        "features",
        "2024-03-01",
        success=True,
        duration_seconds=12.5,
        rows={"train": 900, "valid": 100},
        pushgateway_url=stack.pushgateway,
    )
    stack.wait_value('recsys_stage_last_run_success{job="recsys_batch",stage="features"}', 1)
    success_ts = stack.value(
        'recsys_stage_last_success_timestamp_seconds{job="recsys_batch",stage="features"}'
    )
    assert success_ts is not None and abs(success_ts - time.time()) < 60
    assert stack.value('recsys_stage_rows{stage="features",kind="train"}') == 900

    assert push_stage_metrics(
        "features",
        "2024-03-02",
        success=False,
        duration_seconds=3.0,
        rows=None,
        pushgateway_url=stack.pushgateway,
    )
    stack.wait_value('recsys_stage_last_run_success{stage="features"}', 0)
    # the failure push left the last success in place
    assert stack.value('recsys_stage_last_success_timestamp_seconds{stage="features"}') == pytest.approx(
        success_ts
    )
    # Airflow counted the task's failure (its first: the series appears with value 1)
    stack.statsd.finished.labels("recsys_daily", "model__features", "features", "failed").inc()
    stack.wait_value('airflow_ti_finish_total{job="airflow_statsd",state="failed"}', 1)

    # Quality figures through the exporter.
    events = pd.DataFrame(
        {
            "user_key": ["k1", "k1", "k2", "k3"],
            "video_id": [1, 2, 1, 9],
            "position": [1, 2, 1, None],
            "rec_version": ["v1", "v1", "v1", None],
            "clicked": [1, 0, 0, 1],
            "watch_seconds": [20.0, 0, 0, 5],
            "liked": [1, 0, 0, 0],
            "shared": [0, 0, 0, 0],
        }
    )
    write_quality_snapshot(
        stack.snapshot,
        {
            "ds": "2024-03-02",
            "model_version": "3",
            "online": compute_metrics(events, catalog_size=30),
            "psi": {"device": 0.4, "position": 0.01},
            "retrain_recommended": True,  # the monitor's decision
        },
    )
    stack.wait_value('recsys_online_click_through_ratio{job="recsys_exporter",source="recommended"}', 1 / 3)
    assert stack.value('recsys_online_click_through_ratio{source="exploration"}') == 1.0
    assert stack.value("recsys_online_catalog_coverage_ratio") == pytest.approx(2 / 30)
    assert stack.value("recsys_retrain_recommended") == 1
    assert stack.value('recsys_model_info{model_version="3"}') == 1
    assert stack.value('recsys_feature_psi{feature="device"}') == pytest.approx(0.4)

    # The shipped rules, evaluated every second on these series.
    def alert_states() -> dict[tuple[str, str], str]:
        return {
            (a["metric"]["alertname"], a["metric"].get("stage") or a["metric"].get("feature", "")): a[
                "metric"
            ]["alertstate"]
            for a in stack.query("ALERTS")
        }

    _wait_for(
        "alerts on the pushed and exported series",
        lambda: (
            {
                ("RecsysTaskFailed", "features"),  # Airflow's failure counter appeared
                ("RecsysStageFailing", "features"),  # pending: `for: 30m`
                ("RecsysFeatureDrift", "device"),  # pending: `for: 15m`
                ("RecsysRecommendationsBelowExploration", ""),  # 1/3 < 1.0, pending
                ("RecsysRetrainRecommended", ""),  # the monitor's decision
            }
            <= set(alert_states())
        ),
    )
    states = alert_states()
    assert states[("RecsysTaskFailed", "features")] == "firing"
    assert states[("RecsysRetrainRecommended", "")] == "firing"
    assert states[("RecsysFeatureDrift", "device")] == "pending"
    assert ("RecsysFeatureDrift", "position") not in states
    assert not any(name == "RecsysStageStale" for name, _ in states)  # succeeded moments ago


@needs_binaries
def test_shipped_config_and_rules_pass_promtool():
    rules = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run(
        [PROMTOOL, "check", "config", str(REPO / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0, config.stdout + config.stderr


RULE_TESTS = """\
rule_files:
  - {alerts}
evaluation_interval: 5m
tests:
  # Freshness: a daily stage last succeeded at t=0; train (own schedule) is not held to 26 h.
  - interval: 1m
    input_series:
      - series: 'recsys_stage_last_success_timestamp_seconds{{job="recsys_batch",stage="features"}}'
        values: '0x1700'
      - series: 'recsys_stage_last_success_timestamp_seconds{{job="recsys_batch",stage="train"}}'
        values: '0x1700'
    alert_rule_test:
      - eval_time: 25h
        alertname: RecsysStageStale
        exp_alerts: []
      - eval_time: 27h
        alertname: RecsysStageStale
        exp_alerts:
          - exp_labels: {{severity: critical, job: recsys_batch, stage: features}}
            exp_annotations:
              summary: "recsys stage features has not succeeded for over 26 h"
              description: "Last success 1d 3h 0m 0s ago; the data it feeds is stale."
              runbook_url: docs/runbook.md#recsysstagestale
  # Airflow counts a task's failure: a series that exists at 0 and increases, and (another task) one that
  # appears with its first failure (statsd-exporter creates a counter at its first event). Successes
  # and retries do not alert.
  - interval: 1m
    input_series:
      - series: 'airflow_ti_finish_total{{job="airflow_statsd",dag_id="recsys_daily",
          task_id="model__train",stage="train",state="failed"}}'
        values: '0x5 1x10'
      - series: 'airflow_ti_finish_total{{job="airflow_statsd",dag_id="recsys_daily",
          task_id="ingest__collect",stage="collect",state="failed"}}'
        values: '_x30 1x100'
      - series: 'airflow_ti_finish_total{{job="airflow_statsd",dag_id="recsys_daily",
          task_id="ingest__collect",stage="collect",state="up_for_retry"}}'
        values: '0x5 1x10'
      - series: 'airflow_ti_finish_total{{job="airflow_statsd",dag_id="recsys_daily",
          task_id="serve__publish",stage="publish",state="success"}}'
        values: '0+1x15'
      - series: 'airflow_ti_finish_total{{job="airflow_statsd",dag_id="other_dag",task_id="t",
          stage="t",state="failed"}}'
        values: '0x5 1x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: RecsysTaskFailed
        exp_alerts: []
      - eval_time: 10m
        alertname: RecsysTaskFailed
        exp_alerts:
          - exp_labels: {{severity: warning, dag_id: recsys_daily, task_id: model__train, stage: train}}
            exp_annotations:
              summary: "Airflow task recsys_daily.model__train failed in the last hour"
              description: "1 failed run(s) of stage train in 1 h, after Airflow's retries."
              runbook_url: docs/runbook.md#recsystaskfailed
      - eval_time: 35m
        alertname: RecsysTaskFailed
        exp_alerts:
          - exp_labels: {{severity: warning, dag_id: recsys_daily, task_id: model__train, stage: train}}
            exp_annotations:
              summary: "Airflow task recsys_daily.model__train failed in the last hour"
              description: "1 failed run(s) of stage train in 1 h, after Airflow's retries."
              runbook_url: docs/runbook.md#recsystaskfailed
          - exp_labels: {{severity: warning, dag_id: recsys_daily, task_id: ingest__collect, stage: collect}}
            exp_annotations:
              summary: "Airflow task recsys_daily.ingest__collect failed in the last hour"
              description: "1 failed run(s) of stage collect in 1 h, after Airflow's retries."
              runbook_url: docs/runbook.md#recsystaskfailed
      - eval_time: 100m
        alertname: RecsysTaskFailed
        exp_alerts: []
  # The monitor's retrain decision (its CTR, drift and age rules) is the alert; drift names the feature.
  - interval: 1m
    input_series:
      - series: 'recsys_retrain_recommended{{job="recsys_exporter"}}'
        values: '0x60 1x60 0x60'
      - series: 'recsys_feature_psi{{job="recsys_exporter",feature="device"}}'
        values: '0.05x60 0.3x120'
      - series: 'recsys_feature_psi{{job="recsys_exporter",feature="position"}}'
        values: '0.05x180'
    alert_rule_test:
      - eval_time: 55m
        alertname: RecsysRetrainRecommended
        exp_alerts: []
      - eval_time: 65m
        alertname: RecsysRetrainRecommended
        exp_alerts:
          - exp_labels: {{severity: warning, job: recsys_exporter}}
            exp_annotations:
              summary: "the recsys monitor asked for a retrain"
              description: "Its rules fired on the last monitored day; the reasons are in the
                recsys_monitor run's log and data/reports/monitoring/retrains.jsonl."
              runbook_url: docs/runbook.md#recsysretrainrecommended
      - eval_time: 125m
        alertname: RecsysRetrainRecommended
        exp_alerts: []
      - eval_time: 80m
        alertname: RecsysFeatureDrift
        exp_alerts:
          - exp_labels: {{severity: info, job: recsys_exporter, feature: device}}
            exp_annotations:
              summary: "feature device drifted (PSI 0.300 > 0.2)"
              description: "Its distribution moved away from the training window; the monitor's decision says
                whether to retrain."
              runbook_url: docs/runbook.md#recsysfeaturedrift
  # Airflow's own liveness: the scheduler stops heartbeating; a DAG file stops importing.
  - interval: 1m
    input_series:
      - series: 'airflow_scheduler_heartbeat_total{{job="airflow_statsd"}}'
        values: '0+12x30 360x30'
      - series: 'airflow_dag_processing_import_errors{{job="airflow_statsd"}}'
        values: '0x10 1x30'
    alert_rule_test:
      - eval_time: 30m
        alertname: RecsysAirflowSchedulerDown
        exp_alerts: []
      - eval_time: 45m
        alertname: RecsysAirflowSchedulerDown
        exp_alerts:
          - exp_labels: {{severity: critical}}
            exp_annotations:
              summary: "the Airflow scheduler has not sent a heartbeat for 5 minutes"
              description: "No recsys task is being scheduled; the daily pipeline is standing still."
              runbook_url: docs/runbook.md#recsysairflowschedulerdown
      - eval_time: 20m
        alertname: RecsysDagImportErrors
        exp_alerts: []
      - eval_time: 30m
        alertname: RecsysDagImportErrors
        exp_alerts:
          - exp_labels: {{severity: critical}}
            exp_annotations:
              summary: "1 DAG file(s) fail to import"
              description: "A DAG that does not import does not run; see Airflow's Import errors page."
              runbook_url: docs/runbook.md#recsysdagimporterrors
"""


@needs_binaries
def test_alert_rules_fire_as_intended(tmp_path: Path):
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(RULE_TESTS.format(alerts=ALERTS))
    result = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
ALERTMANAGER_CONFIG = REPO / "alertmanager" / "alertmanager.yml"
RELAY_URL = "http://recsys-alert-relay:8081/alertmanager/retrain"  # the shipped retrain webhook


class _Webhooks:
    """A loopback HTTP endpoint standing in for the relay: keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                bodies.append({"path": self.path, "body": json.loads(raw)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alertmanager/retrain"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@requires(
    not MISSING and ALERTMANAGER is not None,
    "needs prometheus, promtool, the Pushgateway and Alertmanager (make system-deps)",
)
def test_a_firing_rule_reaches_alertmanager_and_only_retrain_alerts_reach_the_webhook(tmp_path: Path):
    """The whole alert path in one chain: the exporter serves the monitor's retrain decision, Prometheus
    evaluates the shipped rules and sends what fires to an Alertmanager running the shipped routing, which
    hands action="retrain" alerts to the relay's webhook and the rest to on-call only.

    No shipped rule carries action="retrain" (see alertmanager.yml), so a second rule file labels a copy of
    the shipped ``RecsysRetrainRecommended`` with it: the change a team makes to have that alert retrain.
    Timings changed for a test: the evaluation and scrape interval (1 s) and the routes' ``group_wait``.
    """
    from recsys.monitoring.relay import build_conf, parse_payload

    hooks = _Webhooks()
    procs: list[subprocess.Popen] = []
    exporter = serve_metrics(tmp_path / "quality.json", port=0)
    try:
        # Alertmanager: the shipped routing, with the relay's address swapped for the stand-in
        config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
        config["route"]["group_wait"] = "1s"
        for route in config["route"]["routes"]:
            route["group_wait"] = "1s"
        (retrain,) = [r for r in config["receivers"] if r["name"] == "recsys-retrain"]
        assert retrain["webhook_configs"][0]["url"] == RELAY_URL
        retrain["webhook_configs"][0]["url"] = hooks.url
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
        am_port, pg_port, prom_port = _free_port(), _free_port(), _free_port()
        procs.append(
            _start(
                [
                    ALERTMANAGER,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",  # no gossip: a single instance
                ],
                tmp_path / "alertmanager.log",
            )
        )
        procs.append(_start_pushgateway(tmp_path, pg_port))
        shipped = yaml.safe_load(ALERTS.read_text())
        (decision,) = [
            r for g in shipped["groups"] for r in g["rules"] if r.get("alert") == "RecsysRetrainRecommended"
        ]
        labelled = dict(decision, alert="RecsysRetrainRecommendedRetrain")
        labelled["labels"] = {**decision.get("labels", {}), "action": "retrain"}
        extra = tmp_path / "retrain_rules.yml"
        extra.write_text(yaml.safe_dump({"groups": [{"name": "retrain_labelled", "rules": [labelled]}]}))
        jobs = {"recsys_pushgateway": f"127.0.0.1:{pg_port}", "recsys_exporter": f"127.0.0.1:{exporter.port}"}
        config = _prometheus_config([ALERTS, extra], jobs, alertmanager=f"127.0.0.1:{am_port}")
        procs.append(_start_prometheus(tmp_path, prom_port, config))
        am, pg, prom = (f"http://127.0.0.1:{p}" for p in (am_port, pg_port, prom_port))
        _wait_ready(
            list(zip(("alertmanager", "pushgateway", "prometheus"), (am, pg, prom), procs, strict=True))
        )
        stack = Stack(pg, prom, tmp_path / "quality.json", tmp_path)

        # the monitor decided to retrain (its snapshot, as the monitor stage writes it)
        write_quality_snapshot(stack.snapshot, {"ds": "2024-03-02", "retrain_recommended": True})

        def in_alertmanager() -> dict[str, set[str]]:
            alerts = json.loads(_get(f"{am}/api/v2/alerts"))
            got = {a["labels"]["alertname"]: {r["name"] for r in a["receivers"]} for a in alerts}
            return got if {"RecsysRetrainRecommended", "RecsysRetrainRecommendedRetrain"} <= set(got) else {}

        receivers = _wait_for("both decision alerts in Alertmanager", in_alertmanager)
        assert receivers["RecsysRetrainRecommended"] == {"oncall"}
        assert receivers["RecsysRetrainRecommendedRetrain"] == {"recsys-retrain", "oncall"}

        (hook,) = _wait_for("Alertmanager's webhook notification", lambda: list(hooks.bodies))
        assert hook["path"] == "/alertmanager/retrain"
        alerts = parse_payload(hook["body"])  # what the relay would read
        assert [a.alertname for a in alerts] == ["RecsysRetrainRecommendedRetrain"]
        assert alerts[0].firing and alerts[0].starts_at is not None
        conf = build_conf(alerts)
        assert conf["trigger"] == "alert"
        assert conf["reasons"] == ["RecsysRetrainRecommendedRetrain: the recsys monitor asked for a retrain"]
        assert hook["body"]["commonLabels"]["action"] == "retrain"
        time.sleep(3)  # the on-call alert has been routed by now too: still the one notification
        assert len(hooks.bodies) == 1, hooks.bodies
    finally:
        hooks.close()
        exporter.close()
        _stop_all(procs, tmp_path)

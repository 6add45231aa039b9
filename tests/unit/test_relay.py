"""The Alertmanager -> Airflow relay (recsys/monitoring/relay.py).

Payload parsing, the conf and the de-duplication memory are tested as functions; the HTTP behaviour
against the real relay server on a free loopback port. Where Airflow must answer something specific
(401 then a fresh token, 5xx, 409, refused credentials), a small real HTTP server in the test stands in
for it: only for those error paths. The relay against the real Airflow api-server is tested in
tests/integration/test_celery_stack*.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recsys.config import load_settings
from recsys.monitoring.relay import (
    WEBHOOK_PATH,
    Alert,
    PayloadError,
    Relay,
    RelayConfig,
    RelayedAlerts,
    build_conf,
    parse_payload,
    run_id_for,
)
from recsys.monitoring.relay_app import serve_relay
from recsys.monitoring.retrain import conf_reasons, trigger_label

PASSWORD = "relay-test-" + os.urandom(6).hex()
AIRFLOW_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]+$")  # Airflow's default [scheduler] allowed_run_id_pattern


def _alert(
    name="RecsysFeatureDrift",
    status="firing",
    fingerprint="f1",
    starts="2026-01-05T10:00:00.123456789Z",
    summary="feature device drifted (PSI 0.300 > 0.2)",
    description="Its distribution moved away from the training window; a retrain may follow.",
    **labels,
):
    annotations = {k: v for k, v in {"summary": summary, "description": description}.items() if v}
    return {
        "status": status,
        "labels": {"alertname": name, "action": "retrain", "severity": "warning", **labels},
        "annotations": annotations,
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=recsys_feature_psi+%3E+0.2",
        "fingerprint": fingerprint,
    }


def _payload(*alerts, status=None):
    status = status or ("firing" if any(a["status"] == "firing" for a in alerts) else "resolved")
    return {
        "receiver": "recsys-retrain",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]} if alerts else {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}/{action="retrain"}:{alertname="RecsysFeatureDrift"}',
        "truncatedAlerts": 0,
    }


# ------------------------------------------------------------------------------------ payload, conf
def test_parse_payload_keeps_name_summary_fingerprint_and_start_only():
    alerts = parse_payload(
        _payload(
            _alert(feature="device", instance="recsys-exporter:8000", user_id="u042000001"),
            _alert("RecsysClickRateDegraded", status="resolved", fingerprint="f2", summary=None),
        )
    )
    assert [a.status for a in alerts] == ["firing", "resolved"]
    first = alerts[0]
    assert first == Alert(
        status="firing",
        alertname="RecsysFeatureDrift",
        summary="feature device drifted (PSI 0.300 > 0.2)",
        key="f1",
        starts_at=datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC),
    )
    # no summary: the description stands in
    assert alerts[1].summary.startswith("Its distribution moved away")
    # nothing else of the labels survives parsing
    assert "u042000001" not in repr(alerts) and "recsys-exporter" not in repr(alerts)


def test_parse_payload_without_fingerprint_hashes_the_label_set():
    a = _alert(feature="device")
    b = _alert(feature="position")
    for x in (a, b):
        del x["fingerprint"]
    ka, kb = (parse_payload(_payload(x))[0].key for x in (a, b))
    assert ka.startswith("labels-") and ka != kb
    assert parse_payload(_payload(dict(a)))[0].key == ka  # stable


def test_parse_payload_status_falls_back_to_the_group_status():
    raw = _alert()
    del raw["status"]
    assert parse_payload(_payload(raw, status="firing"))[0].firing


@pytest.mark.parametrize(
    "payload, message",
    [
        ([], "JSON object"),
        ("firing", "JSON object"),
        ({"version": "4"}, "'alerts' must be a list"),
        ({"alerts": {"a": 1}}, "'alerts' must be a list"),
        ({"alerts": ["x"]}, "alerts[0] must be an object"),
        ({"alerts": [{"labels": ["alertname"]}]}, "must be objects"),
        ({"version": "3", "alerts": []}, "version '3'"),
    ],
)
def test_parse_payload_rejects_what_is_not_an_alertmanager_payload(payload, message):
    with pytest.raises(PayloadError, match=re.escape(message)):
        parse_payload(payload)


def test_build_conf_follows_the_retrain_contract():
    alerts = parse_payload(
        _payload(
            _alert(starts="2026-01-04T23:30:00+00:00"),
            # 00:30 on the 6th in UTC+02:00 is 22:30 on the 5th in UTC: ds is a UTC date
            _alert(
                "RecsysClickRateDegraded",
                fingerprint="f2",
                starts="2026-01-06T00:30:00+02:00",
                summary="recsys click-through rate dropped more than 20%",
            ),
            _alert("NoAnnotations", fingerprint="f3", summary=None, description=None, starts="bogus"),
            _alert(fingerprint="f4", starts="2026-01-03T00:00:00Z"),  # same reason as f1: listed once
        )
    )
    conf = build_conf(alerts, today=date(2030, 1, 1))
    assert conf == {
        "trigger": "alert",
        "reasons": [
            "RecsysFeatureDrift: feature device drifted (PSI 0.300 > 0.2)",
            "RecsysClickRateDegraded: recsys click-through rate dropped more than 20%",
            "NoAnnotations",
        ],
        "ds": "2026-01-04",  # the day before the latest start: the last complete day
    }
    # what recsys_retrain reads back from it
    assert trigger_label(conf) == "alert"
    assert conf_reasons(conf) == conf["reasons"]
    assert json.loads(json.dumps(conf)) == conf


def test_build_conf_without_start_times_uses_today_and_flattens_long_summaries():
    raw = _alert(starts="0001-01-01T00:00:00Z", summary="line one\n  line two " + "x" * 900)
    conf = build_conf(parse_payload(_payload(raw)), today=date(2026, 2, 3))
    assert conf["ds"] == "2026-02-02"
    (reason,) = conf["reasons"]
    assert reason.startswith("RecsysFeatureDrift: line one line two x") and len(reason) == 500


def test_run_id_is_fixed_by_the_episode():
    a = parse_payload(_payload(_alert(), _alert("B", fingerprint="f2")))
    again = parse_payload(_payload(_alert("B", fingerprint="f2"), _alert()))
    refired = parse_payload(_payload(_alert(starts="2026-01-07T08:00:00Z"), _alert("B", fingerprint="f2")))
    run_id = run_id_for(a, "2026-01-05")
    assert run_id == run_id_for(again, "2026-01-05")  # order of the alerts does not matter
    assert run_id != run_id_for(refired, "2026-01-05")  # a new firing episode is a new run
    assert run_id != run_id_for(a[:1], "2026-01-05")
    assert AIRFLOW_RUN_ID.match(run_id) and len(run_id) < 250 and run_id.startswith("alert__2026-01-05__")


# --------------------------------------------------------------------------------------- de-dupe
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_relayed_alerts_forget_after_the_cooldown():
    clock = Clock()
    memory = RelayedAlerts(cooldown_seconds=3600, clock=clock)
    first, second = parse_payload(_payload(_alert(), _alert("B", fingerprint="f2")))
    assert memory.fresh([first, first]) == [first]  # one per fingerprint
    memory.remember([first])
    clock.now += 3599
    assert memory.fresh([first, second]) == [second]
    # the same fingerprint firing anew (new startsAt) within the cooldown is still held back
    refired = replace(first, starts_at=datetime(2026, 1, 6, tzinfo=UTC))
    assert memory.fresh([refired]) == []
    clock.now += 1
    assert memory.fresh([refired]) == [refired] and len(memory) == 0


def test_zero_cooldown_remembers_nothing():
    memory = RelayedAlerts(cooldown_seconds=0, clock=Clock())
    (alert,) = parse_payload(_payload(_alert()))
    memory.remember([alert])
    assert memory.fresh([alert]) == [alert]


# ----------------------------------------------------------------------------------------- config
def _env(**values):
    return {f"RECSYS_RELAY__{k}": str(v) for k, v in values.items()}


def _config(monkeypatch, env: dict[str, str]) -> RelayConfig:
    """RelayConfig from the typed settings, read from exactly ``env`` (RECSYS_RELAY__*)."""
    import os

    for key in [k for k in os.environ if k.startswith("RECSYS_RELAY_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return RelayConfig.from_settings(load_settings())


def test_config_from_settings_defaults_and_values(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_MONITORING__COOLDOWN_DAYS", "5")
    config = _config(monkeypatch, _env(PASSWORD=PASSWORD))
    assert config == RelayConfig(password=PASSWORD, cooldown_seconds=5 * 86400)
    assert (config.airflow_url, config.host, config.port) == ("http://127.0.0.1:8080", "127.0.0.1", 8081)
    assert (config.dag_id, config.username) == ("recsys_retrain", "admin")
    assert PASSWORD not in repr(config)
    assert PASSWORD not in repr(load_settings())  # a SecretStr in the settings too

    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    config = _config(
        monkeypatch,
        _env(
            PASSWORD_FILE=secret,
            AIRFLOW_URL="http://airflow-apiserver:8080/",
            USERNAME="relay",
            DAG_ID="other",
            HOST="0.0.0.0",
            PORT=9999,
            COOLDOWN_DAYS=0.5,
            TIMEOUT_SECONDS=3,
        ),
    )
    assert config == RelayConfig(
        airflow_url="http://airflow-apiserver:8080",
        username="relay",
        password=PASSWORD,
        dag_id="other",
        host="0.0.0.0",
        port=9999,
        cooldown_seconds=43200,
        timeout_seconds=3,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "password is missing"),
        (_env(PASSWORD=""), "password is missing"),
        (_env(PASSWORD="a", PASSWORD_FILE="/nonexistent"), "not both"),
        (_env(PASSWORD_FILE="/nonexistent/password"), "cannot read"),
        (_env(PASSWORD="a", PORT="http"), "relay.port\n  Input should be a valid integer"),
        (
            _env(PASSWORD="a", COOLDOWN_DAYS="-1"),
            "relay.cooldown_days\n  Input should be greater than or equal to 0",
        ),
        (_env(PASSWORD="a", AIRFLOW_URL="airflow:8080"), "http(s) URL"),
        (_env(PASSWORD="a", AIRFLOW_URL="http://admin:pw@airflow:8080"), "must not hold credentials"),
    ],
)
def test_config_from_settings_refuses_bad_values(env, message, monkeypatch):
    with pytest.raises(ValueError, match=re.escape(message)) as exc:
        _config(monkeypatch, env)
    assert ":pw@" not in str(exc.value)  # a password in the URL is not echoed back


# ------------------------------------------------------------------------------- HTTP: the server
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(method, url, body: bytes | None = None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(relay, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, text = _request("POST", relay.url + WEBHOOK_PATH, body, {"Content-Type": "application/json"})
    return status, json.loads(text)


def _metrics(relay) -> dict[tuple[str, tuple], float]:
    status, text = _request("GET", relay.url + "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _outcome(metrics, outcome):
    return metrics[("recsys_alert_relay_requests_total", (("outcome", outcome),))]


@contextlib.contextmanager
def _relay(airflow_url, clock=None, **overrides):
    config = RelayConfig(airflow_url=airflow_url, password=PASSWORD, port=0, timeout_seconds=5, **overrides)
    relay = Relay(config, clock=clock) if clock else None
    server = serve_relay(config, relay=relay)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def offline_relay():
    """A relay whose Airflow URL is a closed port: any call to Airflow would answer 502."""
    with _relay(f"http://127.0.0.1:{_closed_port()}") as server:
        yield server


def test_health_metrics_and_unknown_paths(offline_relay):
    assert _request("GET", offline_relay.url + "/healthz") == (200, "ok\n")
    metrics = _metrics(offline_relay)
    for outcome in ("triggered", "duplicate", "ignored", "bad_request", "airflow_error", "internal_error"):
        assert _outcome(metrics, outcome) == 0
    assert metrics[("recsys_alert_relay_triggered_total", ())] == 0
    assert _request("GET", offline_relay.url + "/nope")[0] == 404
    assert _request("POST", offline_relay.url + "/alertmanager/other", b"{}")[0] == 404


def test_bad_json_and_bad_payloads_get_400_with_a_message(offline_relay):
    status, body = _post(offline_relay, b'{"alerts": [')
    assert status == 400 and body["outcome"] == "bad_request"
    assert body["error"].startswith("the body is not valid JSON")
    status, body = _post(offline_relay, b"\xff\xfe not text")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = _post(offline_relay, {"alerts": "firing"})
    assert (status, body["error"]) == (400, "'alerts' must be a list")
    status, body = _post(offline_relay, {"version": "5", "alerts": []})
    assert status == 400 and "version" in body["error"]
    assert _outcome(_metrics(offline_relay), "bad_request") == 4


def test_resolved_only_payloads_are_acknowledged_without_calling_airflow(offline_relay):
    resolved = _payload(_alert(status="resolved"), _alert("B", fingerprint="f2", status="resolved"))
    assert _post(offline_relay, resolved) == (
        200,
        {"outcome": "ignored", "detail": "no firing alert: nothing to do"},
    )
    assert _post(offline_relay, _payload())[0] == 200  # no alert at all
    metrics = _metrics(offline_relay)
    # a call to Airflow (closed port) would have been a 502
    assert _outcome(metrics, "ignored") == 2 and _outcome(metrics, "airflow_error") == 0


def test_airflow_unreachable_is_a_502_with_the_reason(offline_relay, caplog):
    caplog.set_level(logging.DEBUG, logger="recsys.monitoring.relay")
    status, body = _post(offline_relay, _payload(_alert()))
    assert status == 502 and body["outcome"] == "airflow_error"
    assert body["error"].startswith(f"Airflow unreachable at {offline_relay.relay.config.airflow_url}")
    assert "refused" in body["error"].lower()
    assert "could not trigger recsys_retrain" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in json.dumps(body)
    # not remembered as relayed: Alertmanager's retry will try again
    assert len(offline_relay.relay.relayed) == 0
    assert _outcome(_metrics(offline_relay), "airflow_error") == 1


@pytest.mark.parametrize(
    "headers, status",
    # a Content-Length that is not a number is malformed HTTP: uvicorn's parser answers 400 itself
    [("Content-Length: 2000000\r\n", b"413"), ("", b"411"), ("Content-Length: x\r\n", b"400")],
)
def test_oversized_or_unsized_bodies_are_refused_unread(offline_relay, headers, status):
    # raw socket: the relay answers from the headers alone, before any body is sent
    with socket.create_connection(("127.0.0.1", offline_relay.port), timeout=5) as s:
        s.sendall(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        answer = b"".join(iter(lambda: s.recv(4096), b""))  # the relay closes the connection
    assert answer.split(b" ")[1] == status


# ---------------------------------------------------- error handling, with a stand-in for Airflow
class StandIn:
    """A real HTTP server answering /auth/token and the trigger as scripted, recording each request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.tokens_issued = 0
        self.login_status = 201
        self.trigger_statuses: list[int] = []  # popped per trigger call; 200 when empty
        self.valid_tokens: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                outer.requests.append({"path": self.path, "body": body, "auth": auth})
                if self.path == "/auth/token":
                    if outer.login_status != 201 or body != {"username": "admin", "password": PASSWORD}:
                        return self._answer(outer.login_status, {"detail": "Invalid credentials"})
                    outer.tokens_issued += 1
                    token = f"token-{outer.tokens_issued}"
                    outer.valid_tokens.add(token)
                    return self._answer(201, {"access_token": token})
                if auth is None or auth.removeprefix("Bearer ") not in outer.valid_tokens:
                    return self._answer(401, {"detail": "Not authenticated"})
                status = outer.trigger_statuses.pop(0) if outer.trigger_statuses else 200
                if status != 200:
                    return self._answer(status, {"detail": f"scripted {status}"})
                return self._answer(200, {"dag_run_id": body["dag_run_id"], "state": "queued"})

            def do_GET(self):  # noqa: N802
                outer.requests.append(
                    {"path": self.path, "body": None, "auth": self.headers["Authorization"]}
                )
                self._answer(200, {"dag_id": "recsys_retrain", "is_paused": True})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def triggers(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/dagRuns")]

    def logins(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/auth/token"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_an_expired_token_is_renewed_once_and_the_trigger_repeated(caplog):
    caplog.set_level(logging.DEBUG, logger="recsys.monitoring.relay")
    with StandIn() as airflow, _relay(airflow.url) as relay:
        assert _post(relay, _payload(_alert()))[1]["outcome"] == "triggered"
        airflow.valid_tokens.clear()  # token-1 expires
        status, body = _post(relay, _payload(_alert("B", fingerprint="f2")))
        assert status == 200 and body["outcome"] == "triggered"
        assert body["warning"] == "recsys_retrain is paused: the run waits until it is unpaused"
        assert [r["auth"] for r in airflow.triggers()] == [
            "Bearer token-1",
            "Bearer token-1",
            "Bearer token-2",
        ]
        assert len(airflow.logins()) == 2  # the cached token served the first call; one renewal
        last = airflow.triggers()[-1]
        assert last["path"] == "/api/v2/dags/recsys_retrain/dagRuns"
        assert last["body"] == {
            "dag_run_id": body["dag_run_id"],
            "logical_date": None,
            "conf": {
                "trigger": "alert",
                "reasons": ["B: feature device drifted (PSI 0.300 > 0.2)"],
                "ds": "2026-01-04",
            },
            "note": "Alertmanager: B",
        }
        assert _metrics(relay)[("recsys_alert_relay_triggered_total", ())] == 2
    assert PASSWORD not in caplog.text and "token-2" not in caplog.text


def test_a_token_refused_after_renewal_is_a_502():
    with StandIn() as airflow, _relay(airflow.url) as relay:
        airflow.trigger_statuses = [401, 401]  # even the fresh token is refused (e.g. user lost access)
        status, body = _post(relay, _payload(_alert()))
        assert status == 502 and "Airflow refused to trigger recsys_retrain (401" in body["error"]
        assert len(airflow.logins()) == 2 and len(airflow.triggers()) == 2


def test_refused_credentials_are_a_502_without_the_password(caplog):
    caplog.set_level(logging.DEBUG, logger="recsys.monitoring.relay")
    with StandIn() as airflow, _relay(airflow.url) as relay:
        airflow.login_status = 401
        status, body = _post(relay, _payload(_alert()))
        assert status == 502
        assert body["error"] == (
            "Airflow refused the relay's login as 'admin' (POST /auth/token -> 401: \"Invalid credentials\")"
        )
        assert not airflow.triggers()
    assert PASSWORD not in caplog.text and PASSWORD not in json.dumps(body)


def test_a_5xx_is_a_502_and_the_retry_triggers_once_airflow_recovers():
    with StandIn() as airflow, _relay(airflow.url) as relay:
        airflow.trigger_statuses = [503]
        payload = _payload(_alert())
        status, body = _post(relay, payload)
        assert status == 502 and '(503: "scripted 503")' in body["error"]
        # Alertmanager retries the same notification: the failure was not remembered as relayed
        status, body = _post(relay, payload)
        assert status == 200 and body["outcome"] == "triggered"
        assert len(airflow.triggers()) == 2
        assert airflow.triggers()[0]["body"] == airflow.triggers()[1]["body"]
        # and the next repeat is a duplicate answered without calling Airflow
        n = len(airflow.requests)
        assert _post(relay, payload)[1]["outcome"] == "duplicate"
        assert len(airflow.requests) == n
        metrics = _metrics(relay)
        assert [_outcome(metrics, o) for o in ("airflow_error", "triggered", "duplicate")] == [1, 1, 1]


def test_a_409_after_the_cooldown_is_answered_as_a_duplicate():
    clock = Clock()
    with StandIn() as airflow, _relay(airflow.url, clock=clock, cooldown_seconds=60) as relay:
        payload = _payload(_alert())
        first = _post(relay, payload)[1]
        clock.now += 61  # the memory forgot it; Airflow still has the episode's run id
        airflow.trigger_statuses = [409]
        status, body = _post(relay, payload)
        assert (status, body["outcome"], body["dag_run_id"]) == (200, "duplicate", first["dag_run_id"])
        assert airflow.triggers()[-1]["body"]["dag_run_id"] == first["dag_run_id"]
        assert _metrics(relay)[("recsys_alert_relay_triggered_total", ())] == 1


# -------------------------------------------------------------------------------------------- CLI
def test_cli_serves_until_sigterm(tmp_path):
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_RELAY_")}
    env.update(_env(PASSWORD=PASSWORD, PORT=port, COOLDOWN_DAYS=1))
    recsys = Path(sys.executable).with_name("recsys")
    proc = subprocess.Popen([str(recsys), "alerts", "relay"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if _request("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "the relay did not come up"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert f"http://127.0.0.1:{port}/alertmanager/retrain" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_without_a_password_says_so():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_RELAY_")}
    recsys = Path(sys.executable).with_name("recsys")
    out = subprocess.run(
        [str(recsys), "alerts", "relay"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "RECSYS_RELAY__PASSWORD" in out.stderr

"""The Alertmanager -> Airflow relay (``recsys alerts relay``, service ``recsys-alert-relay``, :8081).

Alertmanager routes alerts labelled ``action="retrain"`` to a webhook (alertmanager/alertmanager.yml). It
cannot call Airflow's REST API itself: ``POST /api/v2/dags/{dag_id}/dagRuns`` wants a bearer token from
``POST /auth/token`` and a strict body. This small stdlib server sits in between:

``POST /alertmanager/retrain``
    Takes Alertmanager's webhook payload (version "4"). For the *firing* alerts not relayed within the
    cooldown it triggers ``recsys_retrain`` once, with the conf of :mod:`recsys.monitoring.retrain`::

        {"trigger": "alert", "reasons": ["RecsysFeatureDrift: feature device drifted (PSI 0.300 > 0.2)"],
         "ds": "2026-01-04"}

    ``reasons`` are ``"<alertname>: <summary>"`` (the description when there is no summary). ``ds`` is
    the last complete day before the triggering alerts were all firing: the UTC date of the latest
    ``startsAt`` minus one day (that day's data is still arriving; the monitor that exported the degraded
    figures ran on the day before). Without start times, yesterday. No other label or annotation goes
    into the conf. Resolved-only payloads are acknowledged and ignored. Answers: 200 (triggered,
    duplicate or ignored), 400 (not an Alertmanager payload: not retried by Alertmanager), 502 (Airflow
    unreachable or refusing: Alertmanager retries), 500 (a bug).
``GET /healthz``
    200 ``ok`` while the server runs (it does not call Airflow).
``GET /metrics``
    ``recsys_alert_relay_requests_total{outcome}`` and ``recsys_alert_relay_triggered_total``.

De-duplication, so that one degradation fires one retrain:

* in memory, per alert fingerprint: an alert relayed less than ``cooldown`` ago (default: the monitor's
  ``cooldown_days``) does not trigger again, even if it resolved and fired anew meanwhile (flapping);
* in Airflow, per firing episode: the run id is derived from the alerts' fingerprints and start times,
  so a repeat of the same episode after the cooldown, or after a restart of the relay (the memory is
  lost), gets 409 Conflict from Airflow and is answered as a duplicate.

Configuration (environment, :meth:`RelayConfig.from_env`): ``RECSYS_RELAY_AIRFLOW_URL``,
``RECSYS_RELAY_USERNAME``, ``RECSYS_RELAY_PASSWORD`` or ``RECSYS_RELAY_PASSWORD_FILE``,
``RECSYS_RELAY_DAG_ID``, ``RECSYS_RELAY_HOST``, ``RECSYS_RELAY_PORT``, ``RECSYS_RELAY_COOLDOWN_DAYS``,
``RECSYS_RELAY_TIMEOUT_SECONDS``. The password and the token are never logged nor returned.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/alertmanager/retrain"
MAX_BODY_BYTES = 1 << 20  # Alertmanager sends at most max_alerts (20) alerts: a few kB
MAX_REASON_CHARS = 500
OUTCOMES = ("triggered", "duplicate", "ignored", "bad_request", "airflow_error", "internal_error")
_ENV = "RECSYS_RELAY_"


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class RelayConfig:
    """Where Airflow is, who the relay logs in as, where it listens, how long it remembers alerts."""

    airflow_url: str = "http://127.0.0.1:8080"
    username: str = "admin"
    password: str = field(default="", repr=False)
    dag_id: str = "recsys_retrain"
    host: str = "127.0.0.1"
    port: int = 8081
    cooldown_seconds: float = 3 * 86400.0
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RelayConfig:
        """Read ``RECSYS_RELAY_*``; the cooldown defaults to the settings' ``monitoring.cooldown_days``.

        Raises:
            ValueError: no password (or two sources of it), or a value that does not parse.
        """
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(_ENV + name)
            return value if value not in (None, "") else default

        def number(name: str, default: float, kind: type = float) -> Any:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{_ENV}{name}={raw!r} is not a number") from None
            if value < 0:
                raise ValueError(f"{_ENV}{name} must not be negative")
            return value

        password, password_file = get("PASSWORD"), get("PASSWORD_FILE")
        if password and password_file:
            raise ValueError(f"set {_ENV}PASSWORD or {_ENV}PASSWORD_FILE, not both")
        if password_file:
            try:
                password = Path(password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"{_ENV}PASSWORD_FILE: cannot read {password_file}: {exc.strerror}"
                ) from None
        if not password:
            raise ValueError(f"the Airflow password is missing: set {_ENV}PASSWORD or {_ENV}PASSWORD_FILE")

        if get("COOLDOWN_DAYS") is None:
            from recsys.config import load_settings

            cooldown_days = float(load_settings().monitoring.cooldown_days)
        else:
            cooldown_days = number("COOLDOWN_DAYS", 0.0)
        airflow_url = get("AIRFLOW_URL", cls.airflow_url).rstrip("/")
        parts = urllib.parse.urlsplit(airflow_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_ENV}AIRFLOW_URL must be an http(s) URL, got {_redact_url(airflow_url)!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"{_ENV}AIRFLOW_URL must not hold credentials: use {_ENV}USERNAME and {_ENV}PASSWORD"
            )
        return cls(
            airflow_url=airflow_url,
            username=get("USERNAME", cls.username),
            password=password,
            dag_id=get("DAG_ID", cls.dag_id),
            host=get("HOST", cls.host),
            port=number("PORT", cls.port, int),
            cooldown_seconds=cooldown_days * 86400.0,
            timeout_seconds=number("TIMEOUT_SECONDS", cls.timeout_seconds),
        )


def _redact_url(url: str) -> str:
    """``url`` without any user:password@ part (for logs and messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ------------------------------------------------------------------------------------------- payload
class PayloadError(ValueError):
    """The request body is not an Alertmanager webhook payload (answered 400)."""


@dataclass(frozen=True)
class Alert:
    """What the relay keeps of one alert: no label but the name, no annotation but summary/description."""

    status: str
    alertname: str
    summary: str
    key: str  # Alertmanager's fingerprint (a hash of the label set)
    starts_at: datetime | None

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    @property
    def reason(self) -> str:
        return f"{self.alertname}: {self.summary}" if self.summary else self.alertname


def _one_line(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip() if value is not None else ""


def _parse_time(value: Any) -> datetime | None:
    """RFC 3339 ``startsAt`` as an aware UTC datetime; None when absent or Go's zero time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    return parsed if parsed.year >= 1970 else None


def parse_payload(payload: Any) -> list[Alert]:
    """The alerts of an Alertmanager webhook payload (version "4").

    Raises:
        PayloadError: not a JSON object with a list ``alerts`` of objects, or another version.
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body must be a JSON object (Alertmanager webhook payload)")
    version = payload.get("version")
    if version is not None and str(version) != "4":
        raise PayloadError(f"unsupported Alertmanager webhook payload version {version!r} (expected '4')")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("'alerts' must be a list")
    default_status = str(payload.get("status") or "")
    out = []
    for i, raw in enumerate(alerts):
        if not isinstance(raw, dict):
            raise PayloadError(f"alerts[{i}] must be an object")
        labels, annotations = raw.get("labels") or {}, raw.get("annotations") or {}
        if not isinstance(labels, dict) or not isinstance(annotations, dict):
            raise PayloadError(f"alerts[{i}]: 'labels' and 'annotations' must be objects")
        key = str(raw.get("fingerprint") or "")
        if not key:  # older senders: hash the label set, as Alertmanager's fingerprint does
            canonical = json.dumps({str(k): str(v) for k, v in labels.items()}, sort_keys=True)
            key = "labels-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
        summary = _one_line(annotations.get("summary")) or _one_line(annotations.get("description"))
        out.append(
            Alert(
                status=str(raw.get("status") or default_status),
                alertname=_one_line(labels.get("alertname")) or "unnamed alert",
                summary=summary,
                key=key,
                starts_at=_parse_time(raw.get("startsAt")),
            )
        )
    return out


def build_conf(alerts: Iterable[Alert], today: date | None = None) -> dict[str, Any]:
    """``recsys_retrain``'s conf for these (firing) alerts: trigger, reasons, ds.

    ``ds`` is the day before the UTC date of the latest ``startsAt`` (the first day all of them were
    firing): the last day whose data is complete, which is what the monitor's figures describe. Without
    start times, the day before ``today`` (the DAG needs a ds: the relay triggers without a logical date).
    """
    alerts = list(alerts)
    reasons = list(dict.fromkeys(a.reason[:MAX_REASON_CHARS] for a in alerts))
    starts = [a.starts_at for a in alerts if a.starts_at is not None]
    ds = (max(starts).date() if starts else (today or datetime.now(UTC).date())) - timedelta(days=1)
    return {"trigger": "alert", "reasons": reasons, "ds": ds.isoformat()}


def run_id_for(alerts: Iterable[Alert], ds: str) -> str:
    """A run id fixed by the alerts' fingerprints and start times: one firing episode, one run id."""
    episode = sorted(f"{a.key}@{a.starts_at.isoformat() if a.starts_at else ''}" for a in alerts)
    digest = hashlib.sha256("\n".join(episode).encode()).hexdigest()[:16]
    return f"alert__{ds}__{digest}"  # within Airflow's default allowed_run_id_pattern


class RelayedAlerts:
    """Fingerprints relayed within the cooldown (in memory; forgotten when the cooldown is over)."""

    def __init__(self, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._seen: dict[str, float] = {}

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._seen.items() if now - t >= self.cooldown_seconds]:
            del self._seen[key]

    def fresh(self, alerts: Iterable[Alert]) -> list[Alert]:
        """The alerts not relayed within the cooldown (one per fingerprint)."""
        self._prune(self._clock())
        out: dict[str, Alert] = {}
        for alert in alerts:
            if alert.key not in self._seen:
                out.setdefault(alert.key, alert)
        return list(out.values())

    def remember(self, alerts: Iterable[Alert]) -> None:
        now = self._clock()
        for alert in alerts:
            self._seen[alert.key] = now

    def __len__(self) -> int:
        self._prune(self._clock())
        return len(self._seen)


# ------------------------------------------------------------------------------------------- Airflow
class AirflowError(RuntimeError):
    """Airflow could not be reached or refused the request (answered 502: Alertmanager retries)."""


@dataclass(frozen=True)
class TriggerResult:
    dag_run_id: str
    created: bool  # False: Airflow already had this run id (409)
    state: str | None = None


def _detail(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
        text = json.dumps(body["detail"]) if isinstance(body, dict) and "detail" in body else text
    except ValueError:
        pass
    return _one_line(text)[:300]


class AirflowClient:
    """Airflow 3 REST API calls: a cached token from ``POST /auth/token`` (renewed on 401) and triggers."""

    def __init__(self, config: RelayConfig):
        self.config = config
        self._token: str | None = None
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, body: Any = None, token: str | None = None):
        """(status, raw body); HTTP error statuses are returned, network failures raise AirflowError."""
        url = self.config.airflow_url + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_seconds) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, exc.read()
            except (OSError, http.client.HTTPException):
                return exc.code, b""
            finally:
                exc.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise AirflowError(
                f"Airflow unreachable at {_redact_url(self.config.airflow_url)}: {reason}"
            ) from None

    def _login(self) -> str:
        status, raw = self._request(
            "POST", "/auth/token", {"username": self.config.username, "password": self.config.password}
        )
        if status not in (200, 201):
            raise AirflowError(
                f"Airflow refused the relay's login as {self.config.username!r} "
                f"(POST /auth/token -> {status}: {_detail(raw)})"
            )
        try:
            token = json.loads(raw)["access_token"]
        except (ValueError, KeyError, TypeError):
            raise AirflowError("POST /auth/token answered without an access_token") from None
        if not isinstance(token, str) or not token:
            raise AirflowError("POST /auth/token answered an empty access_token")
        return token

    def _call(self, method: str, path: str, body: Any = None):
        """An authenticated call; on 401 the cached token is renewed once and the call repeated."""
        with self._lock:
            token = self._token or self._login()
            self._token = token
        status, raw = self._request(method, path, body, token)
        if status == HTTPStatus.UNAUTHORIZED:
            log.info("Airflow answered 401 (token expired or revoked): logging in again")
            with self._lock:
                if self._token == token:  # another thread may have renewed it already
                    self._token = self._login()
                token = self._token
            status, raw = self._request(method, path, body, token)
        return status, raw

    def trigger(self, conf: Mapping[str, Any], dag_run_id: str, note: str | None = None) -> TriggerResult:
        path = f"/api/v2/dags/{urllib.parse.quote(self.config.dag_id, safe='')}/dagRuns"
        body = {"dag_run_id": dag_run_id, "logical_date": None, "conf": dict(conf)}
        if note:
            body["note"] = note
        status, raw = self._call("POST", path, body)
        if status == HTTPStatus.CONFLICT:
            return TriggerResult(dag_run_id, created=False)
        if status not in (200, 201):
            raise AirflowError(f"Airflow refused to trigger {self.config.dag_id} ({status}: {_detail(raw)})")
        try:
            run = json.loads(raw)
        except ValueError:
            run = {}
        return TriggerResult(str(run.get("dag_run_id") or dag_run_id), created=True, state=run.get("state"))

    def is_paused(self) -> bool | None:
        """Whether the DAG is paused (its runs then wait); None if Airflow does not say."""
        try:
            status, raw = self._call("GET", f"/api/v2/dags/{urllib.parse.quote(self.config.dag_id, safe='')}")
            return bool(json.loads(raw)["is_paused"]) if status == 200 else None
        except (AirflowError, ValueError, KeyError, TypeError):
            return None


# --------------------------------------------------------------------------------------------- relay
class Relay:
    """The webhook's logic: payload in, (HTTP status, JSON answer) out; metrics on ``self.registry``."""

    def __init__(
        self,
        config: RelayConfig,
        client: AirflowClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.client = client or AirflowClient(config)
        self.relayed = RelayedAlerts(config.cooldown_seconds, clock)
        self._lock = threading.Lock()  # one trigger at a time: HA Alertmanagers may post the same group
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recsys_alert_relay_requests",
            "Alertmanager webhook requests to the relay, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self.triggered = Counter(
            "recsys_alert_relay_triggered",
            "Runs of the retrain DAG the relay created.",
            registry=self.registry,
        )

    def answer(self, outcome: str, status: int, **body: Any) -> tuple[int, dict[str, Any]]:
        """Count the request under ``outcome`` and build the (status, JSON body) answer."""
        self.requests.labels(outcome).inc()
        return status, {"outcome": outcome, **body}

    def handle_body(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return self.answer("bad_request", 400, error=f"the body is not valid JSON: {exc}")
        return self.handle(payload)

    def handle(self, payload: Any) -> tuple[int, dict[str, Any]]:
        try:
            alerts = parse_payload(payload)
        except PayloadError as exc:
            return self.answer("bad_request", 400, error=str(exc))
        firing = [a for a in alerts if a.firing]
        if not firing:
            log.info("ignored an Alertmanager notification without firing alerts (%d resolved)", len(alerts))
            return self.answer("ignored", 200, detail="no firing alert: nothing to do")
        with self._lock:
            fresh = self.relayed.fresh(firing)
            if not fresh:
                names = sorted({a.alertname for a in firing})
                log.info("alerts %s were relayed within the cooldown: no new retrain", names)
                return self.answer(
                    "duplicate", 200, detail="already relayed within the cooldown", alerts=names
                )
            conf = build_conf(fresh)
            run_id = run_id_for(fresh, conf["ds"])
            names = sorted({a.alertname for a in fresh})
            try:
                result = self.client.trigger(conf, run_id, note="Alertmanager: " + ", ".join(names))
            except AirflowError as exc:
                log.warning("could not trigger %s for %s: %s", self.config.dag_id, names, exc)
                return self.answer("airflow_error", 502, error=str(exc))
            self.relayed.remember(fresh)
        if not result.created:
            log.info(
                "%s run %s already exists (same alert episode): not triggered again",
                self.config.dag_id,
                run_id,
            )
            return self.answer(
                "duplicate", 200, detail="Airflow already has this episode's run", dag_run_id=run_id
            )
        self.triggered.inc()
        paused = self.client.is_paused()
        log.info(
            "triggered %s run %s for %s (ds %s)", self.config.dag_id, result.dag_run_id, names, conf["ds"]
        )
        answer: dict[str, Any] = {"dag_run_id": result.dag_run_id, "conf": conf}
        if paused:
            log.warning(
                "%s is paused: run %s waits until it is unpaused", self.config.dag_id, result.dag_run_id
            )
            answer["warning"] = f"{self.config.dag_id} is paused: the run waits until it is unpaused"
        return self.answer("triggered", 200, **answer)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "recsys-alert-relay"
    sys_version = ""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: Mapping[str, Any]) -> None:
        self._send(status, json.dumps(body).encode() + b"\n", "application/json")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.relay.registry), CONTENT_TYPE_LATEST)
        else:
            self._json(404, {"error": f"no such path {path}; POST {WEBHOOK_PATH}, GET /healthz or /metrics"})

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        if path != WEBHOOK_PATH:
            self._json(404, {"error": f"no such path {path}; Alertmanager posts to {WEBHOOK_PATH}"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(411, {"error": "Content-Length required"})
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        relay = self.server.relay
        try:
            status, body = relay.handle_body(self.rfile.read(length))
        except Exception as exc:  # a bug, not Airflow's answer: 500, and Alertmanager retries
            log.exception("the relay failed on a webhook request")
            status, body = relay.answer("internal_error", 500, error=f"internal error: {type(exc).__name__}")
        self._json(status, body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], relay: Relay):
        self.relay = relay
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Through logging, not stderr; a client that hung up early is no error of ours."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s disconnected before the answer was written", client_address)
        else:
            log.exception("error while serving %s", client_address)


@dataclass
class RelayServer:
    """A running relay; :meth:`close` (or leaving a ``with`` block) stops it."""

    relay: Relay
    server: _Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> RelayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_relay(config: RelayConfig, *, relay: Relay | None = None) -> RelayServer:
    """Listen on ``config.host:config.port`` (0: a free port) from a daemon thread."""
    relay = relay or Relay(config)
    server = _Server((config.host, config.port), relay)
    thread = threading.Thread(target=server.serve_forever, name="recsys-alert-relay", daemon=True)
    thread.start()
    log.info(
        "alert relay on http://%s:%d%s -> %s (dag %s, user %s, cooldown %.1f h)",
        config.host,
        server.server_address[1],
        WEBHOOK_PATH,
        _redact_url(config.airflow_url),
        config.dag_id,
        config.username,
        config.cooldown_seconds / 3600,
    )
    return RelayServer(relay, server, thread)

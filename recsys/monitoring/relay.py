"""The Alertmanager -> Airflow relay's logic: webhook payload in, one ``recsys_retrain`` run out.

Alertmanager routes alerts labelled ``action="retrain"`` to a webhook (alertmanager/alertmanager.yml). It
cannot call Airflow's REST API itself: ``POST /api/v2/dags/{dag_id}/dagRuns`` wants a bearer token from
``POST /auth/token`` and a strict body. The relay sits in between; this module is what it decides, the
HTTP side is :mod:`recsys.monitoring.relay_app` (a Starlette app under uvicorn) and the Airflow side
:mod:`recsys.monitoring.airflow_client` (httpx).

For the *firing* alerts not relayed within the cooldown, :meth:`Relay.handle` triggers ``recsys_retrain``
once, with the conf of :mod:`recsys.monitoring.retrain`::

    {"trigger": "alert", "reasons": ["RecsysFeatureDrift: feature device drifted (PSI 0.300 > 0.2)"],
     "ds": "2026-01-04"}

``reasons`` are ``"<alertname>: <summary>"`` (the description when there is no summary). ``ds`` is the
last complete day before the triggering alerts were all firing: the UTC date of the latest ``startsAt``
minus one day (that day's data is still arriving; the monitor that exported the degraded figures ran on
the day before). Without start times, yesterday. No other label or annotation goes into the conf.
Resolved-only payloads are acknowledged and ignored. Answers: 200 (triggered, duplicate or ignored), 400
(not an Alertmanager payload: not retried by Alertmanager), 502 (Airflow unreachable or refusing:
Alertmanager retries), 500 (a bug).

De-duplication, so that one degradation fires one retrain:

* in memory, per alert fingerprint: an alert relayed less than ``cooldown`` ago (default: the monitor's
  ``cooldown_days``) does not trigger again, even if it resolved and fired anew meanwhile (flapping);
* in Airflow, per firing episode: the run id is derived from the alerts' fingerprints and start times,
  so a repeat of the same episode after the cooldown, or after a restart of the relay (the memory is
  lost), gets 409 Conflict from Airflow and is answered as a duplicate.

Configuration: ``Settings.relay`` (``RECSYS_RELAY__*``), resolved by :meth:`RelayConfig.from_settings`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from recsys.monitoring.airflow_client import AirflowClient, AirflowError

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/alertmanager/retrain"
MAX_BODY_BYTES = 1 << 20  # Alertmanager sends at most max_alerts (20) alerts: a few kB
MAX_REASON_CHARS = 500
OUTCOMES = ("triggered", "duplicate", "ignored", "bad_request", "airflow_error", "internal_error")


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class RelayConfig:
    """The relay's settings with the password read and the cooldown resolved (in seconds)."""

    airflow_url: str = "http://127.0.0.1:8080"
    username: str = "admin"
    password: str = field(default="", repr=False)
    dag_id: str = "recsys_retrain"
    host: str = "127.0.0.1"
    port: int = 8081
    cooldown_seconds: float = 3 * 86400.0
    timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayConfig:
        """``settings.relay`` resolved: the password (or its file) read, the cooldown in seconds.

        Raises:
            ValueError: no password, or its file cannot be read.
        """
        relay = settings.relay
        password = relay.password.get_secret_value() if relay.password is not None else ""
        if relay.password_file:
            try:
                password = Path(relay.password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"RECSYS_RELAY__PASSWORD_FILE: cannot read {relay.password_file}: {exc.strerror}"
                ) from None
        if not password:
            raise ValueError(
                "the Airflow password is missing: set RECSYS_RELAY__PASSWORD or RECSYS_RELAY__PASSWORD_FILE"
            )
        cooldown_days = (
            settings.monitoring.cooldown_days if relay.cooldown_days is None else relay.cooldown_days
        )
        return cls(
            airflow_url=relay.airflow_url,
            username=relay.username,
            password=password,
            dag_id=relay.dag_id,
            host=relay.host,
            port=relay.port,
            cooldown_seconds=float(cooldown_days) * 86400.0,
            timeout_seconds=relay.timeout_seconds,
        )


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

"""The alert relay's client of Airflow 3's REST API, on httpx.

Two calls matter: ``POST /auth/token`` (a bearer token for the configured user; cached, renewed once on a
401) and ``POST /api/v2/dags/{dag_id}/dagRuns`` (trigger a run with a given run id and conf; 409 means
Airflow already has that run). ``GET /api/v2/dags/{dag_id}`` says whether the DAG is paused. HTTP error
statuses are answers; only a network failure or a refusal raises :class:`AirflowError`. The password
and the token are never logged nor put in an error message.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

if TYPE_CHECKING:
    from recsys.monitoring.relay import RelayConfig

log = logging.getLogger(__name__)


class AirflowError(RuntimeError):
    """Airflow could not be reached or refused the request (answered 502: Alertmanager retries)."""


@dataclass(frozen=True)
class TriggerResult:
    dag_run_id: str
    created: bool  # False: Airflow already had this run id (409)
    state: str | None = None


def _detail(response: httpx.Response) -> str:
    """Airflow's ``detail`` of an error answer (else the body), one line, at most 300 characters."""
    text = response.text
    try:
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            import json

            text = json.dumps(body["detail"])
    except ValueError:
        pass
    return " ".join(text.split())[:300]


class AirflowClient:
    """Airflow 3 REST API calls: a cached token from ``POST /auth/token`` (renewed on 401) and triggers."""

    def __init__(self, config: RelayConfig, transport: httpx.BaseTransport | None = None):
        self.config = config
        self._http = httpx.Client(
            base_url=config.airflow_url,
            timeout=config.timeout_seconds,
            headers={"Accept": "application/json"},
            transport=transport,
        )
        self._token: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: Any = None, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            return self._http.request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise AirflowError(f"Airflow unreachable at {self.config.airflow_url}: {exc}") from None

    def _login(self) -> str:
        response = self._request(
            "POST", "/auth/token", {"username": self.config.username, "password": self.config.password}
        )
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow refused the relay's login as {self.config.username!r} "
                f"(POST /auth/token -> {response.status_code}: {_detail(response)})"
            )
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            raise AirflowError("POST /auth/token answered without an access_token") from None
        if not isinstance(token, str) or not token:
            raise AirflowError("POST /auth/token answered an empty access_token")
        return token

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """An authenticated call; on 401 the cached token is renewed once and the call repeated."""
        with self._lock:
            token = self._token or self._login()
            self._token = token
        response = self._request(method, path, body, token)
        if response.status_code == httpx.codes.UNAUTHORIZED:
            log.info("Airflow answered 401 (token expired or revoked): logging in again")
            with self._lock:
                if self._token == token:  # another thread may have renewed it already
                    self._token = self._login()
                token = self._token
            response = self._request(method, path, body, token)
        return response

    def _dag_path(self) -> str:
        return f"/api/v2/dags/{quote(self.config.dag_id, safe='')}"

    def trigger(self, conf: dict[str, Any], dag_run_id: str, note: str | None = None) -> TriggerResult:
        body: dict[str, Any] = {"dag_run_id": dag_run_id, "logical_date": None, "conf": dict(conf)}
        if note:
            body["note"] = note
        response = self._call("POST", self._dag_path() + "/dagRuns", body)
        if response.status_code == httpx.codes.CONFLICT:
            return TriggerResult(dag_run_id, created=False)
        if response.status_code not in (200, 201):
            status = response.status_code
            raise AirflowError(
                f"Airflow refused to trigger {self.config.dag_id} ({status}: {_detail(response)})"
            )
        try:
            run = response.json()
        except ValueError:
            run = {}
        return TriggerResult(str(run.get("dag_run_id") or dag_run_id), created=True, state=run.get("state"))

    def is_paused(self) -> bool | None:
        """Whether the DAG is paused (its runs then wait); None if Airflow does not say."""
        try:
            response = self._call("GET", self._dag_path())
            return bool(response.json()["is_paused"]) if response.status_code == 200 else None
        except (AirflowError, ValueError, KeyError, TypeError):
            return None

"""The Alertmanager routing (alertmanager/alertmanager.yml): retrain alerts go to the relay's webhook,
everything to on-call (``amtool`` from ``prometheus-alertmanager`` when present), and the relay's compose
settings parse and log in to the api-server as its admin."""

from __future__ import annotations

import os
import subprocess

import pytest
from compose_helpers import (
    ALERTMANAGER,
    AMTOOL,
    _command,
    _env_example,
    _environment,
    _healthcheck_test,
    _interpolated,
    _load_compose,
    _yaml,
)
from services import requires


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


# --------------------------------------------------------------------------------------------------
# (d) Alertmanager
# --------------------------------------------------------------------------------------------------


def _routes(route: dict):
    yield route
    for child in route.get("routes", []):
        yield from _routes(child)


def test_alertmanager_config_routes_retrain_alerts_to_a_webhook():
    config = _yaml(ALERTMANAGER)
    receivers = {r["name"]: r for r in config["receivers"]}
    for route in _routes(config["route"]):
        assert route["receiver"] in receivers
    retrain_routes = [r for r in _routes(config["route"]) if 'action = "retrain"' in r.get("matchers", [])]
    assert len(retrain_routes) == 1 and retrain_routes[0].get("continue") is True
    webhooks = receivers[retrain_routes[0]["receiver"]]["webhook_configs"]
    assert webhooks and all(w["url"].startswith("http://") and "retrain" in w["url"] for w in webhooks)
    assert "recsys_retrain" in ALERTMANAGER.read_text(encoding="utf-8")  # the comment says where it goes


def test_retrain_webhook_goes_to_the_relay_and_the_relay_to_airflow(services, monkeypatch):
    """The webhook names the relay's service, port and path; the relay's settings (as compose resolves
    them) are real settings, parse and log in to the api-server as the admin whose password airflow-init
    writes."""
    from recsys.config import RelaySettings, load_settings
    from recsys.monitoring.relay import WEBHOOK_PATH, RelayConfig

    webhooks = [w["url"] for r in _yaml(ALERTMANAGER)["receivers"] for w in r.get("webhook_configs", [])]
    relay = services["recsys-alert-relay"]
    assert _command(relay) == ["recsys", "alerts", "relay"]
    values, _ = _env_example()
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    for key, value in _environment(relay).items():
        assert key.startswith("RECSYS_RELAY__"), key
        assert key.removeprefix("RECSYS_RELAY__").lower() in RelaySettings.model_fields, key
        monkeypatch.setenv(key, _interpolated(value, values))
    config = RelayConfig.from_settings(load_settings())
    assert webhooks == [f"http://recsys-alert-relay:{config.port}{WEBHOOK_PATH}"]
    assert config.host == "0.0.0.0" and str(config.port) in [str(p) for p in relay["expose"]]
    assert f"http://localhost:{config.port}/healthz" in _healthcheck_test(relay)
    assert config.airflow_url == "http://airflow-apiserver:8080" and config.dag_id == "recsys_retrain"
    assert relay["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    admin = _environment(services["airflow-init"])["AIRFLOW_ADMIN_PASSWORD"]
    assert _environment(relay)["RECSYS_RELAY__PASSWORD"] == admin
    assert config.password == values["AIRFLOW_ADMIN_PASSWORD"]
    users = _environment(services["airflow-apiserver"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert f"{config.username}:admin" in users.split(","), "the relay's user must be an Airflow admin"
    assert config.cooldown_seconds == 3 * 86400


@requires(AMTOOL is not None, "amtool is not on PATH (Debian package prometheus-alertmanager)")
def test_alertmanager_config_passes_amtool():
    checked = subprocess.run(
        [AMTOOL, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def receivers_for(*labels: str) -> str:
        result = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert receivers_for("alertname=RecsysFeatureDrift", "action=retrain", "severity=warning") == (
        "recsys-retrain,oncall"
    )
    assert receivers_for("alertname=RecsysStageStale", "severity=critical") == "oncall"

"""Prometheus inside compose (prometheus/prometheus.compose.yml): it scrapes the compose services by
name and delivers alerts to Alertmanager."""

from __future__ import annotations

import shutil
import subprocess

import yaml
from compose_helpers import (
    ROOT,
)
from services import service_missing


def test_compose_prometheus_config_targets_compose_services():
    """Inside compose, Prometheus must scrape service names (not localhost) and deliver to Alertmanager."""
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = set(compose["services"])
    command = " ".join(compose["services"]["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in command
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.compose.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    hosts = {t.split(":")[0] for t in targets} - {"localhost"}  # localhost: Prometheus scraping itself
    assert hosts and hosts <= services, hosts - services
    assert {"recsys-exporter", "pushgateway", "statsd-exporter", "recsys-alert-relay"} <= hosts
    am = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert {a.split(":")[0] for a in am} <= services
    promtool = shutil.which("promtool")
    if promtool is None:
        service_missing("promtool not installed (apt-get install prometheus)")
    out = subprocess.run(
        [promtool, "check", "config", str(ROOT / "prometheus" / "prometheus.compose.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr

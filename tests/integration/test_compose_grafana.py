"""The Grafana dashboard and its provisioning: the dashboard loads, its queries are valid PromQL
(promtool), the provisioning points at the compose services, and every metric a panel queries is one
that recsys (stage pushes, the quality exporter, the alert relay) or Airflow's StatsD mapping emits."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from compose_helpers import (
    DASHBOARD,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    PROMTOOL,
    ROOT,
    STATSD_MAPPING,
    _dashboard_targets,
    _environment,
    _load_compose,
    _metric_names,
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
# (c) Grafana
# --------------------------------------------------------------------------------------------------

GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}


def test_grafana_dashboard_loads_and_reads_recsys_or_airflow_metrics():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "recsys"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    datasource_uids = {d["uid"] for d in _yaml(DATASOURCES)["datasources"] if d["type"] == "prometheus"}
    data_panels = [p for p in panels if p["type"] != "row"]
    assert len(data_panels) >= 8
    for panel in data_panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] in datasource_uids
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel, target in _dashboard_targets(dashboard):
        expr = target["expr"]
        assert _metric_names(expr), f"{panel['title']!r}: {expr} reads no recsys_/airflow_ metric"
        for used in re.findall(r"\$(\w+)", expr):
            assert used in variables or f"${used}" in GRAFANA_VARS, f"{panel['title']!r}: undefined ${used}"
    # Both halves of the brief are there.
    all_names = set().union(*(_metric_names(t["expr"]) for _, t in _dashboard_targets(dashboard)))
    assert {"recsys_stage_duration_seconds", "recsys_stage_last_success_timestamp_seconds"} <= all_names
    assert "airflow_ti_finish_total" in all_names  # task failures: Airflow's own count
    assert {"recsys_online_click_through_ratio", "recsys_feature_psi", "recsys_model_info"} <= all_names


def test_grafana_provisioning_points_at_the_compose_services(services):
    datasources = _yaml(DATASOURCES)["datasources"]
    for ds in datasources:
        host = re.match(r"https?://([^:/]+)", ds["url"])[1]
        assert host in services
    assert sum(1 for d in datasources if d.get("isDefault")) == 1
    providers = _yaml(DASHBOARD_PROVIDERS)["providers"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["grafana"]["volumes"]}
    for provider in providers:
        source = mounts[provider["options"]["path"]]
        assert (ROOT / source / DASHBOARD.name).exists()
    home = _environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{providers[0]['options']['path']}/{DASHBOARD.name}"


@requires(PROMTOOL is not None, "promtool is not on PATH (Debian package prometheus)")
def test_grafana_queries_are_valid_promql(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rules = []
    for panel, target in _dashboard_targets(dashboard):
        expr = target["expr"]
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        expr = re.sub(r"\$\w+", ".*", expr)
        rules.append({"record": f"dashboard:panel_{panel['id']}:{target['refId']}", "expr": expr})
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _emitted_recsys_metrics(tmp_path) -> set[str]:
    """Every metric name recsys itself can put on /metrics: what a stage pushes (success and failure), what
    the exporter serves for a snapshot holding every key the monitor writes, and the relay's counters."""
    import pandas as pd

    from recsys.monitoring import compute_metrics, write_quality_snapshot
    from recsys.monitoring.exporter import _ONLINE_GAUGES, SNAPSHOT_KEYS, QualitySnapshotCollector
    from recsys.monitoring.metrics import build_stage_registry
    from recsys.monitoring.relay import Relay, RelayConfig

    def names(families) -> set[str]:
        return {s.name for family in families for s in family.samples}

    out: set[str] = set()
    for success in (True, False):
        registry = build_stage_registry("x", "2026-01-01", success=success, duration_seconds=1, rows={"r": 1})
        out |= names(registry.collect())
    events = pd.DataFrame(
        {
            "user_key": ["k1", "k2"],
            "video_id": [1, 2],
            "rec_version": ["v1", None],
            "clicked": [1, 0],
            "watch_seconds": [3.0, 0.0],
            "liked": [0, 0],
            "shared": [0, 0],
        }
    )
    # the online figures: compute_metrics' own, plus the model and simulator figures the monitor adds
    online = compute_metrics(events, catalog_size=10, known_users=set()) | {k: 0.5 for k in _ONLINE_GAUGES}
    snapshot = {
        "ds": "2026-01-01",
        "model_version": "1",
        "online": online,
        "psi": {"device": 0.1},
        "retrain_recommended": False,
    }
    assert set(snapshot) | {"written_at"} == set(SNAPSHOT_KEYS)
    path = write_quality_snapshot(tmp_path / "quality.json", snapshot)
    out |= names(QualitySnapshotCollector(path).collect())
    relay = Relay(RelayConfig(password="x"))
    out |= names(relay.registry.collect())
    relay.client.close()
    return out


def test_every_metric_a_panel_queries_can_be_emitted(tmp_path):
    """No panel waits for a series nothing writes: each recsys_ name comes from a stage push, the quality
    exporter or the relay; each airflow_ name from the StatsD mapping (test_compose_statsd.py)."""
    emitted = _emitted_recsys_metrics(tmp_path)
    produced = {m["name"] for m in _yaml(STATSD_MAPPING)["mappings"] if m.get("action") != "drop"}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queried = [(panel, target) for panel, target in _dashboard_targets(dashboard)]
    queried += [
        ({"title": f"variable {v['name']}"}, {"expr": v["definition"]})
        for v in dashboard["templating"]["list"]
    ]
    for panel, target in queried:
        for name in _metric_names(target["expr"]):
            if name.startswith("recsys_"):
                assert name in emitted, f"{panel['title']!r} queries {name}, which nothing emits"
            else:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in produced or base in produced, f"{panel['title']!r}: {name} is not mapped"

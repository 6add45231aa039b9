"""The statsd-exporter mapping (statsd/statsd_mapping.yml), checked against statsd_exporter's own
validation rules and Airflow's own metric registry: Airflow's legacy names become labelled metrics (with
the recsys stage as a label), everything else is dropped."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from compose_helpers import (
    DASHBOARD,
    STATSD_MAPPING,
    _dashboard_targets,
    _metric_names,
    _yaml,
)
from services import service_missing

# --------------------------------------------------------------------------------------------------
# (e) statsd-exporter mapping
# --------------------------------------------------------------------------------------------------

# statsd_exporter's own validation of a mapping file (pkg/mapper).
_STATSD_COMPONENT = r"[a-zA-Z_](-?[a-zA-Z0-9_])+"
GLOB_LINE = re.compile(rf"^(\*\.|{_STATSD_COMPONENT}\.)+(\*|{_STATSD_COMPONENT})$")
TEMPLATE = r"(\$\{?\d+\}?)"
METRIC_NAME = re.compile(rf"^([a-zA-Z_]|{TEMPLATE})([a-zA-Z0-9_]|{TEMPLATE})*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _compiled_mappings() -> list[tuple[dict, re.Pattern]]:
    config = _yaml(STATSD_MAPPING)
    default_type = config.get("defaults", {}).get("match_type", "glob")
    out = []
    for mapping in config["mappings"]:
        if mapping.get("match_type", default_type) == "glob":
            pattern = re.compile("^" + re.escape(mapping["match"]).replace(r"\*", "([^.]*)") + "$")
        else:
            pattern = re.compile(mapping["match"])
        out.append((mapping, pattern))
    # Like statsd_exporter: glob rules (in file order) before regex rules (in file order).
    return sorted(out, key=lambda mp: mp[0].get("match_type", default_type) != "glob")


def _map_statsd(metric: str, compiled) -> tuple[str, dict[str, str]] | None:
    """(name, labels) statsd_exporter would export for ``metric``; None if dropped."""
    for mapping, pattern in compiled:
        match = pattern.search(metric)
        if not match:
            continue
        if mapping.get("action") == "drop":
            return None

        def expand(template: str, match=match) -> str:
            return re.sub(r"\$\{?(\d+)\}?", lambda m: match.group(int(m[1])), template)

        return expand(mapping["name"]), {k: expand(str(v)) for k, v in (mapping.get("labels") or {}).items()}
    return re.sub(r"[^a-zA-Z0-9_]", "_", metric), {}


def _airflow_metric_registry() -> list[dict]:
    spec = importlib.util.find_spec("airflow")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        service_missing("apache-airflow is not installed")
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "_shared/observability/metrics/metrics_template.yaml"
    )
    if not path.exists():
        service_missing(f"this Airflow version has no metric registry at {path}")
    return _yaml(path)["metrics"]


def _sample_names(entry: dict) -> list[str]:
    """Statsd names Airflow sends for a registry entry (legacy and new), with sample variable values."""
    names = []
    for template in (entry.get("legacy_name", "-"), entry["name"]):
        if template and template != "-":
            names.append("airflow." + re.sub(r"\{\w+\}", "sample_value", template))
    return names


def test_statsd_mapping_is_valid_for_statsd_exporter():
    config = _yaml(STATSD_MAPPING)
    assert config["defaults"]["observer_type"] in {"histogram", "summary"}
    names_to_labels: dict[str, set[str]] = {}
    for mapping, pattern in _compiled_mappings():
        assert mapping.get("name"), mapping
        assert METRIC_NAME.match(mapping["name"]), mapping["name"]
        if mapping.get("match_type", "glob") == "glob":
            assert GLOB_LINE.match(mapping["match"]), mapping["match"]
        labels = mapping.get("labels") or {}
        for key, value in labels.items():
            assert LABEL_NAME.match(key), key
            for ref in re.findall(r"\$\{?(\d+)\}?", str(value)):
                assert int(ref) <= pattern.groups, f"{mapping['match']}: ${ref} has no wildcard"
        if mapping.get("action") != "drop":
            assert mapping["name"].startswith("airflow_"), mapping["name"]
            # statsd_exporter rejects one name with different label sets.
            assert names_to_labels.setdefault(mapping["name"], set(labels)) == set(labels), mapping["name"]
    last = config["mappings"][-1]
    assert last["action"] == "drop" and last["match_type"] == "regex", "unmapped names must be dropped"


def test_statsd_mapping_turns_airflow_names_into_labelled_metrics():
    compiled = _compiled_mappings()
    # the stage is a label: the task's name without its task group (nested groups: the last part)
    assert _map_statsd("airflow.ti.finish.recsys_daily.features__build.success", compiled) == (
        "airflow_ti_finish_total",
        {"dag_id": "recsys_daily", "task_id": "features__build", "stage": "build", "state": "success"},
    )
    assert _map_statsd("airflow.ti.finish.recsys_daily.model__train_due.failed", compiled) == (
        "airflow_ti_finish_total",
        {"dag_id": "recsys_daily", "task_id": "model__train_due", "stage": "train_due", "state": "failed"},
    )
    assert _map_statsd("airflow.ti.finish.recsys_monitor.monitor.up_for_retry", compiled) == (
        "airflow_ti_finish_total",
        {"dag_id": "recsys_monitor", "task_id": "monitor", "stage": "monitor", "state": "up_for_retry"},
    )
    assert _map_statsd("airflow.ti.start.recsys_daily.a__b__collect", compiled) == (
        "airflow_ti_start_total",
        {"dag_id": "recsys_daily", "task_id": "a__b__collect", "stage": "collect"},
    )
    assert _map_statsd("airflow.dagrun.duration.failed.recsys_retrain", compiled) == (
        "airflow_dagrun_duration_seconds",
        {"dag_id": "recsys_retrain", "state": "failed"},
    )
    assert _map_statsd("airflow.dag.recsys_daily.train.duration", compiled) == (
        "airflow_task_duration_seconds",
        {"dag_id": "recsys_daily", "task_id": "train", "stage": "train"},
    )
    assert _map_statsd("airflow.dag.recsys_daily.model__train.duration", compiled) == (
        "airflow_task_duration_seconds",
        {"dag_id": "recsys_daily", "task_id": "model__train", "stage": "train"},
    )
    assert _map_statsd("airflow.scheduler_heartbeat", compiled) == ("airflow_scheduler_heartbeat_total", {})
    assert _map_statsd("airflow.operator_failures_PythonOperator", compiled) == (
        "airflow_operator_failures_total",
        {"operator": "PythonOperator"},
    )
    # New-style names (tags lost on plain StatsD) and unmapped legacy names are dropped.
    assert _map_statsd("airflow.ti.finish", compiled) is None
    assert _map_statsd("airflow.dagrun.dependency-check.recsys_daily", compiled) is None


def test_statsd_mapping_matches_what_airflow_emits():
    """Each mapping catches a metric in Airflow's registry; counters end in _total, timers in _seconds."""
    registry = _airflow_metric_registry()
    compiled = _compiled_mappings()
    types_by_name: dict[str, set[str]] = {}
    for entry in registry:
        for sample in _sample_names(entry):
            mapped = _map_statsd(sample, compiled)
            if mapped:
                types_by_name.setdefault(mapped[0], set()).add(entry["type"])
    produced = {m["name"] for m, _ in compiled if m.get("action") != "drop"}
    assert produced <= set(types_by_name), (
        f"mappings matching no Airflow metric: {produced - set(types_by_name)}"
    )
    for name, types in types_by_name.items():
        assert len(types) == 1, f"{name} mixes {types}"
        kind = types.pop()
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "timer":
            assert name.endswith("_seconds"), name


def test_dashboard_airflow_metrics_come_from_the_mapping():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    produced = {m["name"] for m, _ in _compiled_mappings() if m.get("action") != "drop"}
    for _, target in _dashboard_targets(dashboard):
        for name in _metric_names(target["expr"]):
            if name.startswith("airflow_"):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in produced or base in produced, f"{name} is not produced by statsd_mapping.yml"

"""The Airflow plugin without a running Airflow: MLflow link URLs, the listener's metrics, import cost."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "recsys_plugin.py"


@pytest.fixture(scope="module")
def plugin():
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
    spec = importlib.util.spec_from_file_location("recsys_plugin", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_link_url_from_a_return_value_with_a_run_id(plugin):
    value = {"run_id": "abc123", "model_uri": "runs:/abc123/ranker", "epochs": 3}
    assert plugin.mlflow_run_url(value, "http://mlflow:5000/") == "http://mlflow:5000/#/runs/abc123"
    assert (
        plugin.mlflow_run_url(value, "http://mlflow:5000", experiment_id="7")
        == "http://mlflow:5000/#/experiments/7/runs/abc123"
    )


@pytest.mark.parametrize("value", [None, "abc", {"version": "3"}, {"run_id": ""}, {"run_id": 5}, [1, 2]])
def test_no_link_without_a_run_id(plugin, value):
    assert plugin.mlflow_run_url(value, "http://x") == ""


def test_link_base_url_from_the_environment(plugin, monkeypatch):
    monkeypatch.delenv("RECSYS_MLFLOW_UI_URL", raising=False)
    assert plugin.mlflow_run_url({"run_id": "r1"}) == "http://localhost:5000/#/runs/r1"
    monkeypatch.setenv("RECSYS_MLFLOW_UI_URL", "https://mlflow.example.org/")
    assert plugin.mlflow_run_url({"run_id": "r/1"}) == "https://mlflow.example.org/#/runs/r%2F1"


def test_link_reads_the_return_value_xcom(plugin, monkeypatch):
    monkeypatch.setattr(plugin, "_return_value", lambda key: {"run_id": f"run-of-{key.task_id}"})
    monkeypatch.setenv("RECSYS_MLFLOW_UI_URL", "http://m")
    link = plugin.MLflowRunLink()
    key = SimpleNamespace(dag_id="recsys_daily", task_id="train", run_id="r", map_index=-1)
    assert link.name == "MLflow run"
    assert link.get_link(None, ti_key=key) == "http://m/#/runs/run-of-train"

    def boom(key):
        raise RuntimeError("no database")

    monkeypatch.setattr(plugin, "_return_value", boom)
    assert link.get_link(None, ti_key=key) == ""


def test_plugin_registers_the_link_and_the_listener(plugin):
    assert plugin.RecsysPlugin.name == "recsys"
    assert any(isinstance(x, plugin.MLflowRunLink) for x in plugin.RecsysPlugin.global_operator_extra_links)
    assert plugin.task_metrics_listener in plugin.RecsysPlugin.listeners


def _ti(**kw):
    base = {
        "dag_id": "recsys_daily",
        "task_id": "model.train",
        "run_id": "manual__x",
        "start_date": datetime(2026, 1, 1, 3, 0, tzinfo=UTC),
        "end_date": datetime(2026, 1, 1, 3, 0, 42, tzinfo=UTC),
    }
    return SimpleNamespace(**(base | kw))


def test_task_outcome_duration_and_ids(plugin):
    assert plugin.task_outcome(_ti(), True) == {
        "dag_id": "recsys_daily",
        "task_id": "model.train",
        "success": True,
        "duration_seconds": 42.0,
    }
    assert plugin.task_outcome(_ti(duration=7.5), False)["duration_seconds"] == 7.5
    running = _ti(start_date=datetime.now(UTC) - timedelta(seconds=5), end_date=None)
    assert 4 <= plugin.task_outcome(running, True)["duration_seconds"] < 60
    assert plugin.task_outcome(SimpleNamespace(dag_id="d", task_id="t"), False)["duration_seconds"] is None


def test_listener_is_a_no_op_without_a_pushgateway(plugin, monkeypatch):
    monkeypatch.delenv("RECSYS_MONITORING__PUSHGATEWAY_URL", raising=False)
    called = []
    monkeypatch.setattr("recsys.monitoring.metrics.push_task_metrics", lambda *a, **k: called.append(a))
    plugin.task_metrics_listener.on_task_instance_success(previous_state=None, task_instance=_ti())
    plugin.task_metrics_listener.on_task_instance_failed(previous_state=None, task_instance=_ti(), error="x")
    assert called == []


def test_listener_pushes_outcomes(plugin, monkeypatch):
    pushed = []
    monkeypatch.setattr(
        "recsys.monitoring.metrics.push_task_metrics",
        lambda dag_id, task_id, **kw: pushed.append((dag_id, task_id, kw)),
    )
    monkeypatch.setenv("RECSYS_MONITORING__PUSHGATEWAY_URL", "http://127.0.0.1:9091")
    plugin.task_metrics_listener.on_task_instance_failed(previous_state=None, task_instance=_ti(), error="x")
    assert pushed == [
        (
            "recsys_daily",
            "model.train",
            {"success": False, "duration_seconds": 42.0, "pushgateway_url": "http://127.0.0.1:9091"},
        )
    ]


def test_listener_never_raises(plugin, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("gateway exploded")

    monkeypatch.setattr("recsys.monitoring.metrics.push_task_metrics", boom)
    monkeypatch.setenv("RECSYS_MONITORING__PUSHGATEWAY_URL", "http://127.0.0.1:9091")
    plugin.task_metrics_listener.on_task_instance_success(previous_state=None, task_instance=_ti())


def test_task_registry_metrics():
    from recsys.monitoring.metrics import build_task_registry

    ok = generate_latest(
        build_task_registry("d", "t", success=True, duration_seconds=3.5, failures_before=2, now=100.0)
    ).decode()
    assert "recsys_airflow_task_duration_seconds 3.5" in ok
    assert "recsys_airflow_task_last_run_success 1.0" in ok
    assert "recsys_airflow_task_failures_total 2.0" in ok
    assert "recsys_airflow_task_last_success_timestamp_seconds 100.0" in ok
    bad = generate_latest(
        build_task_registry("d", "t", success=False, duration_seconds=None, failures_before=2, now=100.0)
    ).decode()
    assert "recsys_airflow_task_failures_total 3.0" in bad
    assert "recsys_airflow_task_last_run_success 0.0" in bad
    assert "last_success" not in bad and "duration" not in bad


def test_push_task_metrics_without_url_is_a_no_op():
    from recsys.monitoring.metrics import push_task_metrics

    assert push_task_metrics("d", "t", success=True, duration_seconds=1.0, pushgateway_url=None) is False
    # an unreachable gateway is a warning, not an error
    assert (
        push_task_metrics(
            "d", "t", success=True, duration_seconds=1.0, pushgateway_url="http://127.0.0.1:9", timeout=0.5
        )
        is False
    )


def test_plugin_module_imports_no_heavy_library():
    code = (
        "import importlib.util, sys; s = importlib.util.spec_from_file_location('p', sys.argv[1]); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
        "heavy = ('pandas', 'tensorflow', 'mlflow', 'great_expectations'); "
        "print(sorted(x for x in heavy if x in sys.modules))"
    )
    env = dict(os.environ, AIRFLOW_HOME=tempfile.mkdtemp(prefix="airflow-home-"))
    out = subprocess.run(
        [sys.executable, "-c", code, str(PLUGIN)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

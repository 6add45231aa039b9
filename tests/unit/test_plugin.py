"""The Airflow plugin without a running Airflow: MLflow link URLs, no task listener, import cost."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

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


def test_plugin_registers_the_link_and_no_listener(plugin):
    """Task health comes from Airflow's StatsD metrics: the plugin pushes nothing itself."""
    assert plugin.RecsysPlugin.name == "recsys"
    assert any(isinstance(x, plugin.MLflowRunLink) for x in plugin.RecsysPlugin.global_operator_extra_links)
    assert not getattr(plugin.RecsysPlugin, "listeners", [])


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

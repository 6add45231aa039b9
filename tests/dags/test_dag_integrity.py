"""Every DAG file loads, carries docs, tags and retries, and stays cheap to parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ("tensorflow", "keras", "mlflow", "pandas", "numpy", "great_expectations", "dask", "sklearn")
sys.path.append(str(DAGS))  # as Airflow does for a bundle: the DAG files import recsys_common
IGNORED = {ln for ln in (DAGS / ".airflowignore").read_text().splitlines() if ln and not ln.startswith("#")}
DAG_FILES = [p for p in sorted(DAGS.glob("*.py")) if p.name not in IGNORED]
# Every key a run conf may carry, per DAG: each must be a typed, described Param (the UI's trigger form).
CONF_KEYS = {
    "recsys_daily": {"force_train": "boolean"},
    "recsys_monitor": {"ds": ["null", "string"]},
    "recsys_retrain": {
        "ds": ["null", "string"],
        "trigger": "string",
        "reasons": ["array", "string"],
        "window_days": ["null", "integer"],
    },
    "recsys_privacy": {"user_ids": "array"},
    "recsys_backfill": {"from": ["null", "string"], "to": ["null", "string"]},
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import BundleDagBag

    # as Airflow parses a bundle: its folder on sys.path, so the DAG files can import recsys_common
    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="recsys-tests")


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "recsys_daily" in dagbag.dags


def test_every_dag_has_docs_tags_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id} has no doc_md"
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
            assert t.doc_md, f"{dag_id}.{t.task_id} has no doc_md"


def test_every_task_has_a_time_limit_and_the_failure_callback(dagbag):
    from recsys_common import on_failure_callback

    for dag_id, dag in dagbag.dags.items():
        for t in dag.tasks:
            assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} has no execution_timeout"
            callbacks = t.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert on_failure_callback in callbacks, f"{dag_id}.{t.task_id} has no on_failure_callback"


def test_every_conf_key_is_a_typed_described_param(dagbag):
    assert set(CONF_KEYS) <= set(dagbag.dags)
    for dag_id, keys in CONF_KEYS.items():
        params = dagbag.dags[dag_id].params
        for key, json_type in keys.items():
            assert key in params, f"{dag_id} has no Param {key!r}"
            param = params.get_param(key)
            assert param.schema.get("type") == json_type, (dag_id, key, param.schema)
            assert param.description, f"{dag_id}.{key} has no description"


@pytest.mark.parametrize(
    ("dag_id", "key", "bad"),
    [
        ("recsys_daily", "force_train", "yes"),
        ("recsys_monitor", "ds", "5 January"),
        ("recsys_retrain", "window_days", 0),
        ("recsys_retrain", "trigger", "cron"),
        ("recsys_retrain", "reasons", [1, 2]),
        ("recsys_privacy", "user_ids", []),
        ("recsys_backfill", "from", "1997/09/22"),
    ],
)
def test_a_bad_conf_value_is_refused_by_its_param(dagbag, dag_id, key, bad):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dagbag.dags[dag_id].params.get_param(key).resolve(bad)


def test_dag_code_reads_params_not_the_raw_conf_and_assets_are_defined_once():
    for path in DAG_FILES:
        code = path.read_text()
        assert "dag_run.conf" not in code, f"{path.name} reads dag_run.conf"
        assert "Asset(" not in code, f"{path.name} defines an Asset: import it from recsys_common"
    assert (DAGS / "recsys_common.py").read_text().count("Asset(") >= 2


def test_a_permanent_failure_fails_the_task_without_retries(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException
    from recsys_common import call

    from recsys import stages
    from recsys.data.validate import BatchValidationError

    def bad_batch(ds, **kwargs):
        raise BatchValidationError("events: 40% of rows quarantined (threshold 20%)")

    def lost_connection(ds, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(stages, "bad_batch", bad_batch, raising=False)
    monkeypatch.setattr(stages, "lost_connection", lost_connection, raising=False)
    with pytest.raises(AirflowFailException, match="BatchValidationError: events: 40%"):
        call("bad_batch", "2026-01-01")
    with pytest.raises(ConnectionError):  # transient: left to the retries
        call("lost_connection", "2026-01-01")


def test_daily_dag_wiring(dagbag):
    dag = dagbag.dags["recsys_daily"]
    order = ["ingest.land", "ingest.collect", "ingest.validate", "ingest.anonymize", "model.features"]
    for a, b in zip(order, order[1:], strict=False):
        assert b in dag.get_task(a).downstream_task_ids
    # training is skipped unless due: train_due must gate train itself, not only what follows it
    assert "model.train" in dag.get_task("model.train_due").downstream_task_ids
    assert dag.get_task("model.train").upstream_task_ids == {"model.train_due"}
    assert dag.get_task("serve.recommend").trigger_rule == "none_failed"
    assert "serve.publish" in dag.get_task("serve.recommend").downstream_task_ids


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_module(path):
    code = (
        "import sys, json, os\n"
        "sys.path.insert(0, os.path.dirname(sys.argv[1]))\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import runpy; runpy.run_path(sys.argv[1])\n"
        f"heavy = sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({HEAVY!r}))\n"
        "print(json.dumps(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# the top layer of the import contracts in pyproject.toml (dags/ is not a package, so lint-imports cannot
# see it): a task calls the wiring (recsys.stages) or one of the few thin task entry points, nothing deeper
DAG_ENTRY_POINTS = {
    "recsys.stages",
    "recsys.monitoring.retrain",
    "recsys.privacy.erasure",
    "recsys.backfill",  # the history import: one call that runs the ingest stages day by day
    "recsys.monitoring.failures",  # the failure callback
    "recsys.errors",  # which failures are permanent
}


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_file_calls_only_the_wiring_layer(path):
    import ast

    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "recsys":  # from recsys import stages
            imported |= {f"recsys.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    recsys = {m for m in imported if m == "recsys" or m.startswith("recsys.")}
    assert recsys <= DAG_ENTRY_POINTS, recsys - DAG_ENTRY_POINTS

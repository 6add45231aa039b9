"""recsys_backfill: manual, one task, typed from/to params that default to the whole history."""

from __future__ import annotations

from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_backfill_dag_is_manual_with_typed_params():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "recsys_backfill.py"))
    assert bag.import_errors == {}
    dag = bag.dags["recsys_backfill"]
    assert dag.schedule is None or str(dag.timetable.summary) in ("None", "")
    assert [t.task_id for t in dag.tasks] == ["backfill"] and dag.tasks[0].retries >= 1
    params = dag.params
    assert set(params.keys()) >= {"from", "to"}
    for name in ("from", "to"):
        schema = params.get_param(name).schema
        assert schema["type"] == ["null", "string"] and schema["format"] == "date"
        assert params[name] is None  # empty: the source's first / last day

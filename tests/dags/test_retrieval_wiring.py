"""train_retrieval sits where pairing needs it: after features (and the training gate), before the ranker's
register task, in the daily and the retrain DAG."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.mark.parametrize(
    ("dag_id", "prefix", "gate"),
    [("recsys_daily", "model.", "model.train_due"), ("recsys_retrain", "", "features")],
)
def test_train_retrieval_runs_before_the_ranker_is_registered(dagbag, dag_id, prefix, gate):
    dag = dagbag.dags[dag_id]
    task = dag.get_task(f"{prefix}train_retrieval")
    assert task.upstream_task_ids == {gate}
    assert f"{prefix}register" in task.downstream_task_ids
    assert task.doc_md

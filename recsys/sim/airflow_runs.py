"""The DAG runs Airflow recorded, with their conf: what the closed-loop driver reads between runs.

``airflow dags list-runs`` does not show a run's conf, and the driver needs the conf of the queued
``recsys_retrain`` run the monitor created. ``python -m recsys.sim.airflow_runs DAG_ID...`` prints the runs
as one JSON line after :data:`MARKER`; the driver runs it in the DAG runs' environment (their
``AIRFLOW_HOME`` and metadata database), so this process never imports Airflow itself.
"""

from __future__ import annotations

import json
import sys

MARKER = "@@RUNS@@"


def dag_runs(dag_ids: list[str]) -> list[dict]:
    """Every run of ``dag_ids`` in the metadata database: id, state, conf, logical date, type, run_after."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id.in_(dag_ids))).all()
        return [
            {
                "dag_id": r.dag_id,
                "run_id": r.run_id,
                "state": str(r.state),
                "conf": r.conf or {},
                "logical_date": r.logical_date.isoformat() if r.logical_date else None,
                "run_type": str(r.run_type),
                "run_after": r.run_after.isoformat() if r.run_after else None,
            }
            for r in runs
        ]


def main(argv: list[str] | None = None) -> int:
    print(MARKER + json.dumps(dag_runs(argv if argv is not None else sys.argv[1:]), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

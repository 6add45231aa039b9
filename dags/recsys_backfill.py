"""
# recsys_backfill

Manual: imports a source's history (MovieLens, KuaiRand, PostgreSQL) day by day through the daily ingest
path (`land -> collect -> validate -> anonymize`). Params `from` / `to` (YYYY-MM-DD, empty = the source's
first / last day). Resumable: days already imported are skipped, so a failed or killed run is simply
triggered again. One call into `recsys.backfill`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from recsys_common import default_args


@dag(
    dag_id="recsys_backfill",
    schedule=None,
    start_date=pendulum.datetime(1990, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # a retry resumes: days already imported are skipped
    default_args=default_args(execution_timeout=timedelta(hours=12)),
    tags=["recsys", "backfill"],
    doc_md=__doc__,
    params={
        "from": Param(
            None,
            type=["null", "string"],
            format="date",
            title="From",
            description="first day, YYYY-MM-DD (empty: the source's first)",
        ),
        "to": Param(
            None,
            type=["null", "string"],
            format="date",
            title="To",
            description="last day, YYYY-MM-DD (empty: the source's last)",
        ),
    },
)
def recsys_backfill():
    @task(doc_md="Every not-yet-imported day of the range through the ingest stages.")
    def backfill(params: dict | None = None):
        from recsys.backfill import backfill_range

        return backfill_range((params or {}).get("from"), (params or {}).get("to"))

    backfill()


recsys_backfill()

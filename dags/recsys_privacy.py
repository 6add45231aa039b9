"""
# recsys_privacy

Erasure requests: removes each listed user from every lake zone (landing, raw, quarantine, clean,
features, recs), every version of the recommendations table and every registered model (the versions
behind an alias repaired and re-registered, older ones deleted), adds the user's pseudonym to the
suppression list, writes an audit record (pseudonym only), then checks that nothing is left.

No schedule: triggered per request, by hand or by the privacy tooling through the REST API:

```
airflow dags trigger recsys_privacy --conf '{"user_ids": ["<raw user id>", ...]}'
```

The run's conf holds the raw ids (inherent to a request) and is stored in the Airflow metadata database:
only privacy operators should be able to trigger or read runs of this DAG, and old runs should be purged
(`airflow db clean`). The tasks never log or return a raw id: logs and XCom carry pseudonyms only. See
docs/security.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from recsys_common import default_args


@dag(
    dag_id="recsys_privacy",
    schedule=None,
    start_date=pendulum.datetime(1990, 1, 1, tz="UTC"),  # any logical date; datasets go back to the 1990s
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params={
        "user_ids": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1},
            minItems=1,
            title="User ids",
            description="Raw user ids to erase (one per line in the form).",
        )
    },
    tags=["recsys", "privacy"],
    doc_md=__doc__,
)
def recsys_privacy():
    @task(
        doc_md="Erase every user of `conf.user_ids`; returns (XCom) the audit records, pseudonyms only. "
        "Idempotent: a retry removes nothing twice."
    )
    def erase(params=None):
        from recsys.privacy.erasure import erase_users

        return erase_users(list(params["user_ids"]))

    @task(doc_md="Check that no zone or table still holds a row of the erased pseudonyms.")
    def verify(records: list[dict]):
        from recsys.privacy.erasure import verify_erased

        return verify_erased([r["user_key"] for r in records])

    verify(erase())


recsys_privacy()

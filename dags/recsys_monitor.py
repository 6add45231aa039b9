"""
# recsys_monitor

Watches what users did with the published recommendations and decides whether the model needs retraining.

Runs whenever `recsys_daily` has anonymized a new day of interactions (Asset `recsys://clean/interactions`).

1. `monitor` computes the day's online metrics (click-through rate of recommended vs exploration
   impressions, watch time per impression, like rate, coverage, cold-start share, the serving model's
   predicted vs observed click rate and its click AUC on exploration impressions, and on simulated data
   the regret against the oracle), drift
   (population stability index of device, category and hour against the training window), writes the
   quality snapshot that `recsys metrics serve` exports to Prometheus, and applies the retrain rules (a
   relative CTR drop vs a trailing baseline, a smaller drop sustained for days, drift above threshold,
   model age) with a cooldown so one degradation fires one retrain.
2. `retrain_needed` stops here unless the rules fired.
3. `trigger_retrain` starts `recsys_retrain` for the monitored day, conf
   `{"ds", "trigger": "monitor", "reasons": [...], "window_days"}` (`window_days`: the retrain's fresh
   window, the number of degraded days after a CTR drop).

**Params** (the trigger form): `ds`, the day to monitor (a date; default: the run's logical date).

Under `airflow dags test` asset
scheduling does not fire: run `airflow dags test recsys_monitor <day>` after `recsys_daily <day>`
(`recsys.sim.loop` does this).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from recsys_common import CLEAN_INTERACTIONS, call, default_args


def _ds(params, ds):
    return params.get("ds") or ds


@dag(
    dag_id="recsys_monitor",
    schedule=[CLEAN_INTERACTIONS],
    start_date=pendulum.datetime(1990, 1, 1, tz="UTC"),  # any logical date; datasets go back to the 1990s
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day to monitor",
            description="YYYY-MM-DD; empty: the run's logical date.",
        )
    },
    tags=["recsys", "monitoring"],
    doc_md=__doc__,
)
def recsys_monitor():
    @task(doc_md="Online metrics, drift and the retrain decision for the day.")
    def monitor(ds: str | None = None, params=None):
        return call("monitor", _ds(params, ds))

    @task.short_circuit(doc_md="Continue only if the rules fired; returns the conf for `recsys_retrain`.")
    def retrain_needed(decision: dict, ds: str | None = None, params=None):
        from recsys.monitoring.retrain import retrain_conf

        # a dict (truthy) carries the conf downstream as XCom; {} stops the run here
        return retrain_conf(decision, _ds(params, ds))

    @task(doc_md="Start recsys_retrain for the monitored day with the reasons (a list) in its conf.")
    def trigger_retrain(conf: dict, ds: str | None = None, params=None, **context):
        # The operator is imported here, not at module level: its import costs more than this whole file
        # may take to parse. Its execute() asks the task runner to create the run (Airflow 3 raises
        # DagRunTriggerException, handled by the runner), as the operator itself would. The retrain run
        # gets the monitored day as its logical date: one retrain run per day at most (a rerun of the
        # monitor skips instead of failing), and `airflow dags test recsys_retrain <day>` executes it.
        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

        return TriggerDagRunOperator(
            task_id="trigger_retrain",
            trigger_dag_id="recsys_retrain",
            conf=conf,
            logical_date=_ds(params, ds),
            skip_when_already_exists=True,
            wait_for_completion=False,
        ).execute(context)

    trigger_retrain(retrain_needed(monitor()))


recsys_monitor()

"""What every recsys DAG file shares: the Assets, default task arguments, and how a task calls recsys.

Not a DAG file (listed in `.airflowignore`). Airflow puts the DAG bundle's folder on `sys.path`, so the DAG
files import it as `recsys_common`. Nothing heavy at module level: `recsys` is imported inside the calls.

- Assets are defined here once: `recsys_daily` produces `CLEAN_INTERACTIONS` (which schedules
  `recsys_monitor`) and `RECOMMENDATIONS`; `recsys_retrain` produces `RECOMMENDATIONS` too.
- `call(stage, ...)` is the one call a task makes into `recsys.stages`. A failure that will repeat on
  retry (a batch that fails its data-quality checks, a publish check, a missing key: `recsys.errors`)
  becomes `AirflowFailException`, so Airflow fails the task at once instead of retrying it; anything else
  (a lost connection, a killed worker) keeps the DAG's retries.
- `on_failure_callback` logs one line naming the task and its log, and records the failure
  (`recsys.monitoring.failures`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset

CLEAN_INTERACTIONS = Asset("recsys://clean/interactions")
RECOMMENDATIONS = Asset("recsys://recommendations")


def on_failure_callback(context: dict[str, Any]) -> None:
    from recsys.monitoring.failures import record_task_failure

    ti = context.get("ti") or context.get("task_instance")
    record_task_failure(
        dag_id=getattr(ti, "dag_id", None) or "?",
        task_id=getattr(ti, "task_id", None) or "?",
        run_id=getattr(ti, "run_id", None),
        try_number=getattr(ti, "try_number", None),
        error=context.get("exception"),
        log_url=getattr(ti, "log_url", None),
    )


def default_args(retries: int = 2, retry_delay: timedelta = timedelta(seconds=30), **extra: Any) -> dict:
    """Retries with backoff for transient failures, a time limit, and the failure callback, on every task."""
    return {
        "owner": "recsys",
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=1),
        "on_failure_callback": on_failure_callback,
        **extra,
    }


def call(stage: str, ds: str | None, **kwargs: Any) -> Any:
    """Run ``recsys.stages.<stage>(ds, **kwargs)``; a permanent failure fails the task without retries."""
    from recsys import stages
    from recsys.errors import is_permanent

    try:
        return getattr(stages, stage)(ds, **kwargs)
    except Exception as exc:
        if is_permanent(exc):
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        raise

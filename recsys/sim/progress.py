"""The demo's progress report: one line per task with its duration and the figure that matters.

The figure comes from the stage's run record (``catalog.runs``, written by :mod:`recsys.runner` on
success), the duration and the state from Airflow's task instance. Tasks that Airflow skipped (training
not due, no retrain needed) get no line of their own: the task that decided it says so. Pure formatting
here; :mod:`recsys.sim.days` feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# task id (without its task group) -> the stage whose run record holds its figures
STAGE_OF_TASK = {"train_due": "should_train"}


def _n(x: Any) -> str:
    return f"{int(x):,}" if isinstance(x, int | float) else "-"


def _loss(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) else "-"


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _validate(r: Mapping) -> str:
    rules = r.get("rules") or {}
    why = f" ({', '.join(f'{k} {v}' for k, v in rules.items())})" if rules else ""
    return f"{_n(r.get('input_rows'))} rows in, {_n(r.get('quarantined_rows'))} quarantined{why}"


def _evaluate(r: Mapping) -> str:
    verdict = "BLESSED" if r.get("blessed") else "not blessed"
    failed = str(r.get("failed_checks") or "")
    if failed.lower() in ("", "none"):
        return f"gate: {verdict}, every check passed" if r.get("blessed") else f"gate: {verdict}"
    return f"gate: {verdict} (failed: {failed.replace(',', ', ')})"


def _train_retrieval(r: Mapping) -> str:
    recall = _loss((r.get("metrics") or {}).get("recall_200"))
    gate = "passed" if (r.get("gate") or {}).get("passed") else "failed"
    return f"{_n(r.get('index_items'))} videos indexed, recall@200 {recall}, gate {gate}"


def _register(r: Mapping) -> str:
    if r.get("promoted"):
        return f"version {r.get('version')} -> champion (previous {r.get('previous') or '-'})"
    return f"version {r.get('version')} registered, champion stays {r.get('champion') or 'none'}"


def _monitor(r: Mapping) -> str:
    m = r.get("metrics") or {}
    ctr = m.get("ctr")
    head = f"ctr {ctr:.4f}" if isinstance(ctr, int | float) else "ctr -"
    if r.get("retrain"):
        return _short(f"{head}, RETRAIN: {'; '.join(r.get('reasons') or [])}")
    if not m.get("recommended_impressions"):
        return "no recommended impressions yet (nothing was published before), no retrain"
    return f"{head} on {_n(m.get('recommended_impressions'))} recommended impressions, no retrain"


FIGURES: dict[str, Callable[[Mapping], str]] = {
    "land": lambda r: f"{_n(r.get('events_rows'))} events landed",
    "simulate": lambda r: f"{_n(r.get('events_rows'))} events landed",
    "collect": lambda r: f"{_n(r.get('input_rows'))} rows in, {_n(r.get('malformed_rows'))} malformed",
    "validate": _validate,
    "anonymize": lambda r: f"{_n(r.get('interactions_rows'))} clean rows, {_n(r.get('users_rows'))} users",
    "features": lambda r: (
        f"{_n(r.get('train_rows'))} train / {_n(r.get('valid_rows'))} valid / {_n(r.get('test_rows'))} test"
    ),
    "should_train": lambda r: ("train" if r.get("train") else "skip training") + f": {r.get('why', '')}",
    "train": lambda r: f"{r.get('epochs', '-')} epochs, best val loss {_loss(r.get('best_val_loss'))}",
    "train_retrieval": _train_retrieval,
    "evaluate": _evaluate,
    "register": _register,
    "recommend": lambda r: (
        f"{_n(r.get('recs_rows'))} rows for {_n(r.get('users'))} users, model {r.get('model_version')}"
    ),
    "publish": lambda r: f"{_n(r.get('rows'))} rows published, version {r.get('version')}",
    "monitor": _monitor,
}


def stage_of(task_id: str) -> str:
    name = task_id.rsplit(".", 1)[-1]
    return STAGE_OF_TASK.get(name, name)


def figure(task_id: str, record: Mapping | None) -> str:
    """The key figure of a finished task from its stage's run record ('' when it has none)."""
    fn = FIGURES.get(stage_of(task_id))
    if fn is None or not record:
        return ""
    try:
        return fn(record)
    except (TypeError, ValueError, AttributeError):
        return ""


def task_line(task_id: str, state: str, seconds: float | None, record: Mapping | None) -> str:
    """``  ingest.validate      16.3s  5,220 rows in, 0 quarantined`` (rich markup for the state)."""
    dur = f"{seconds:6.1f}s" if seconds is not None else "      -"
    text = figure(task_id, record) if state == "success" else f"[bold red]{state.upper()}[/]"
    return f"  {task_id:<22}{dur}  {text}"

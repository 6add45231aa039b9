"""Logging what users did with what they were shown, pseudonymized before anything is stored.

:func:`log_user_interaction` appends one impression (and the response) to a day's JSON-lines log, or to a
sink it is given; :func:`read_interaction_log` reads the records back as a frame with the clean zone's
schema, which :func:`recsys.monitoring.online.compute_metrics` takes.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

ACTIONS = {  # action -> the responses it implies (a like or a share happens on a clicked video)
    "impression": {},
    "click": {"clicked": 1},
    "watch": {"clicked": 1},
    "like": {"clicked": 1, "liked": 1},
    "share": {"clicked": 1, "shared": 1},
}


def interaction_log_path(settings, day: date | str) -> Path:
    """Where :func:`log_user_interaction` appends by default: ``data_dir/monitoring/interactions/ds=D``."""
    day = date.fromisoformat(str(day)[:10])
    return Path(settings.data_dir) / "monitoring" / "interactions" / f"ds={day}" / "log.jsonl"


def log_user_interaction(
    user_id: str | int | None = None,
    video_id: int | None = None,
    action: str = "impression",
    *,
    user_key: str | None = None,
    sink: list[dict[str, Any]] | str | Path | None = None,
    rec_version: str | None = None,
    position: int | None = None,
    clicked: int | None = None,
    watch_seconds: float = 0.0,
    liked: int | None = None,
    shared: int | None = None,
    device: str | None = None,
    region: str | None = None,
    session_key: str | None = None,
    ts: datetime | str | None = None,
    event_id: str | None = None,
    settings=None,
) -> dict[str, Any]:
    """Record one impression and the user's response, linked to the list version and slate position.

    A raw ``user_id`` is pseudonymized (keyed HMAC, the pipeline's key and domain, so it gives the
    ``user_key`` of the recommendation tables) before anything is stored or returned; a caller that
    already holds the pseudonym passes ``user_key`` instead. The record has the columns of
    ``recsys.data.schema.CLEAN_EVENTS``; :func:`read_interaction_log` reads a day of them back.
    ``rec_version=None`` marks an exploration impression (not from a published list).

    Args:
        action: ``impression`` (shown, no response), ``click``, ``watch`` (a click, with
            ``watch_seconds``), ``like`` or ``share`` (each implies the click); ``clicked``, ``liked``,
            ``shared`` override what the action implies.
        sink: a list (the record is appended) or a path (appended as one JSON line); default the day's
            log under the data folder (:func:`interaction_log_path`).
        ts: when it happened (default: now, UTC). event_id: default a random UUID; pass one to make
            reruns idempotent. settings: default the configured settings (key, data folder).

    Returns:
        The record that was logged (a dict; ``user_key``, never the raw id).
    """
    if (user_id is None) == (user_key is None):
        raise ValueError("pass exactly one of user_id (raw, pseudonymized here) or user_key")
    if video_id is None:
        raise ValueError("video_id is required")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
    if user_id is not None or sink is None:
        from recsys.defaults import settings_or_default

        settings = settings_or_default(settings)
    if user_id is not None:
        from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym

        user_key = pseudonym(str(user_id), load_pseudonym_key(settings))
    implied = ACTIONS[action]
    when = ts if ts is not None else datetime.now(UTC)
    record = {
        "event_id": event_id or uuid.uuid4().hex,
        "user_key": user_key,
        "session_key": session_key,
        "device": device,
        "region": region,
        "ts": when.isoformat() if isinstance(when, datetime) else str(when),
        "video_id": int(video_id),
        "position": None if position is None else int(position),
        "rec_version": rec_version,
        "clicked": int(implied.get("clicked", 0) if clicked is None else clicked),
        "watch_seconds": float(watch_seconds),
        "liked": int(implied.get("liked", 0) if liked is None else liked),
        "shared": int(implied.get("shared", 0) if shared is None else shared),
    }
    if sink is None:
        sink = interaction_log_path(settings, record["ts"])
    if isinstance(sink, list):
        sink.append(record)
    else:
        path = Path(sink)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return record


def read_interaction_log(
    source: list[dict[str, Any]] | str | Path | date | None = None, *, settings=None
) -> pd.DataFrame:
    """What :func:`log_user_interaction` recorded, as a frame with the ``CLEAN_EVENTS`` schema.

    Args:
        source: a list of records, a JSON-lines file, or a day (default: today, UTC) whose default log
            (:func:`interaction_log_path`) is read. A day with no log gives an empty frame.

    Returns:
        A DataFrame, one row per logged impression (``user_key``, never a raw id).
    """
    from recsys.data.schema import CLEAN_EVENTS, conform

    if isinstance(source, list):
        records = source
    else:
        if source is None or isinstance(source, date):
            from recsys.defaults import settings_or_default

            day = source or datetime.now(UTC).date()
            source = interaction_log_path(settings_or_default(settings), day)
        path = Path(source)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        records = [json.loads(line) for line in lines if line.strip()]
    frame = pd.DataFrame(records, columns=list(CLEAN_EVENTS))
    return conform(frame, CLEAN_EVENTS, name="interaction log")

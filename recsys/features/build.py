"""Training examples: clean interactions joined with content and user attributes, labelled, split by time.

The split is by time, never at random: the test set is day ``ds``; training and validation come from the
days before it (validation is the latest ``valid_fraction`` of them). Only when no earlier day exists
(the very first run) is day ``ds`` itself split by time, 70/15/15. The transform is fitted on the training
split alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import pandas as pd

from recsys import tasks as task_spec
from recsys.features.transform import Transform
from recsys.tasks import Task

EXAMPLE_COLUMNS = (
    "event_id",
    "user_key",
    "video_id",
    "author_id",
    "category",
    "device",
    "region",
    "age_band",
    "activity",
    "ts",
    "title",
    "duration_seconds",
    "upload_ts",
    "position",
    "rec_version",
)


def build_examples(
    events: pd.DataFrame,
    videos: pd.DataFrame,
    users: pd.DataFrame,
    tasks: Sequence[Task] | None = None,
) -> pd.DataFrame:
    """Join clean events with video metadata and user attributes; add one label column per task.

    The labels are the task spec's (``tasks``, default :data:`recsys.tasks.TASKS`, see
    :meth:`recsys.tasks.Task.label`): ``click`` for every impression; ``watch`` (log1p seconds), ``like``
    and ``share`` only for clicked impressions (NaN otherwise, so those rows are masked out of the
    satisfaction losses).
    """
    tasks = task_spec.current(tasks)
    v = videos.drop_duplicates("video_id", keep="last")[
        ["video_id", "author_id", "category", "title", "duration_seconds", "upload_ts"]
    ]
    u = users.drop_duplicates("user_key", keep="last")[["user_key", "age_band", "activity"]]
    df = events.merge(v, on="video_id", how="left").merge(u, on="user_key", how="left")
    labels = {t.name: t.label(df) for t in tasks}
    for name, y in labels.items():
        df[name] = y
    return df[list(EXAMPLE_COLUMNS) + list(labels)].sort_values(["ts", "event_id"]).reset_index(drop=True)


def split_by_time(
    examples: pd.DataFrame, ds: date, valid_fraction: float = 0.15
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, valid, test): test = day ``ds``; train/valid = earlier days, valid the latest share."""
    start = pd.Timestamp(ds, tz="UTC")
    ts = pd.to_datetime(examples["ts"], utc=True)
    history = examples[ts < start].sort_values(["ts", "event_id"])
    test = examples[(ts >= start) & (ts < start + pd.Timedelta(days=1))].sort_values(["ts", "event_id"])
    if history.empty:  # first day: split the day itself by time
        n = len(test)
        a, b = int(n * 0.70), int(n * 0.85)
        history, test = test.iloc[:b], test.iloc[b:]
        cut = a
    else:
        cut = int(len(history) * (1 - valid_fraction))
    train, valid = history.iloc[:cut], history.iloc[cut:]
    return train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True)


def window_start(ds: date, window_days: int) -> date:
    return ds - timedelta(days=window_days - 1)


def encode(examples: pd.DataFrame, transform: Transform, ordered: bool = False, raw=None) -> pd.DataFrame:
    """Examples plus their model inputs as ``x_*`` columns (title as a list column).

    ``ordered``: these are the training rows (time order): affinities from the impressions before each
    row only (:meth:`Transform.apply`). ``raw``: their raw numerics, already computed."""
    x = transform.apply(examples, ordered=ordered, raw=raw)
    out = examples.copy()
    for name, arr in x.items():
        out[f"x_{name}"] = list(arr) if arr.ndim == 2 else arr
    return out

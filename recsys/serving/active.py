"""Who gets a model-ranked list: every returning user, not only the day's actives (issue 13, point 5).

A batch recommender that lists only the users seen on the last day leaves everyone else with the cold-start
fallback, though the model knows them: on a MovieLens-like history a day holds a few dozen of the hundreds
of users who come back within a month. The users to rank are those with an engagement (a click) in the last
``ServingSettings.active_window_days`` days up to ``ds`` (default 30), plus anyone with an impression on
``ds`` itself; all other users read the ``__fallback__`` list.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

CHUNK_ROWS = 200_000


def active_user_keys(lake, ds: date, window_days: int) -> list[str]:
    """Sorted user keys with a click in ``[ds - window_days + 1, ds]`` or any event on ``ds``."""
    start = ds - timedelta(days=max(window_days, 1) - 1)
    keys: set[str] = set()
    for d in lake.list_ds("clean", "interactions"):
        if not start <= d <= ds or not lake.has_frame("clean", "interactions", d):
            continue
        # one day at a time, the two columns read, a chunk of rows at a time: bounded memory
        with lake.open_frame("clean", "interactions", d) as reader:
            for frame in reader.frame_batches(CHUNK_ROWS, columns=["user_key", "clicked"]):
                if d == ds:
                    keys.update(frame["user_key"].dropna().astype(str))
                clicked = pd.to_numeric(frame["clicked"], errors="coerce").fillna(0) > 0
                keys.update(frame.loc[clicked, "user_key"].dropna().astype(str))
            reader.verify()
    return sorted(keys)

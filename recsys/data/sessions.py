"""Time helpers the dataset readers share: sessions from gaps in a user's events, untimed rows on a day.

Kept apart from :mod:`recsys.data.importers` so the readers (:mod:`~recsys.data.kuairand`,
:mod:`~recsys.data.movielens`) do not import the module that imports them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SESSION_GAP_S = 30 * 60


def sessionize(user: pd.Series, ts: pd.Series, prefix: str, gap_s: int = SESSION_GAP_S) -> pd.Series:
    """Session ids: a user's run of events with gaps under ``gap_s`` seconds is one session, named
    ``<prefix>-<user>-<epoch second of its first event>``."""
    secs = (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    t_all = secs.to_numpy("int64")
    u_all = user.astype(str).to_numpy(object)
    order = np.lexsort((t_all, u_all))
    u, t = u_all[order], t_all[order]
    new = np.ones(len(u), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] >= gap_s)
    first = t[np.maximum.accumulate(np.where(new, np.arange(len(u)), 0))] if len(u) else t
    ids = np.empty(len(u), dtype=object)
    ids[order] = [f"{prefix}-{a}-{b}" for a, b in zip(u, first, strict=True)]
    return pd.Series(ids, index=user.index, dtype="string")


def spread_over_day(n: int) -> pd.TimedeltaIndex:
    """Offsets that place ``n`` untimed rows evenly over one day, keeping their order."""
    return pd.to_timedelta(np.arange(n) * (86_400 // max(n, 1)), unit="s")

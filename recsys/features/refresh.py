"""The users' affinity evidence counted chunk by chunk with integer keys: :meth:`Transform.refreshed`'s
chunked path.

:class:`~recsys.features.transform.FitStats` keeps its per-(user, side) sums as pandas Series indexed by
the key strings, stacked and regrouped as chunks come: at 10M interactions a day (8.5M train and validation
rows, 11M pairs) the serving transform's refresh peaked at 4.4 GB there. Here every user and side value
gets an integer code once and a chunk's pairs are summed on int64 keys
(:class:`~recsys.features.pair_counts.PairCounts`, the chunked features fit's counter), the partial sums
merged as they pile up: about 24 bytes a pair.

The sums are of whole-number click labels (``integral``; the caller refreshes from one frame otherwise),
so they are exact in any order and the result is FitStats' to the bit (tests/unit/test_features_chunks.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.keys import _keys
from recsys.features.pair_counts import PairCounts
from recsys.features.spec import AFFINITY


class AffinityCounts:
    """The affinity priors and (user, side) tables of rows added in chunks (what ``FitStats(affinity_only
    =True)`` then ``fit_affinity`` give, for whole-number click labels); the pairs counted by
    :class:`~recsys.features.pair_counts.PairCounts`, as the chunked features fit counts them."""

    def __init__(self):
        self._keys = _keys
        self.pairs = {name: PairCounts() for name in AFFINITY}
        self.click_sum, self.rows, self.integral = 0.0, 0, True

    def add(self, chunk: pd.DataFrame) -> None:
        clicks = pd.to_numeric(chunk["click"], errors="coerce").fillna(0).to_numpy(float)
        self.integral &= bool(np.all(clicks == np.round(clicks)))
        self.rows += len(clicks)
        self.click_sum += float(clicks.sum())
        users = self._keys(chunk["user_key"])
        for name, col in AFFINITY.items():
            sides = self._keys(chunk[col])
            ok = (users != "") & (sides != "")
            self.pairs[name].add(users[ok], sides[ok], clicks[ok])

    def fit(self, t) -> None:
        """``t.affinity_prior`` and ``t.affinity`` from the rows added (as ``FitStats.fit_affinity``)."""
        base = float(np.clip(self.click_sum / self.rows if self.rows else 0.5, 1e-4, 1 - 1e-4))
        m = t.affinity_strength
        for name in AFFINITY:
            table = self.pairs[name].table()
            side_sum = np.bincount(table.side_codes, weights=table.clicks, minlength=len(table.sides))
            side_size = np.bincount(table.side_codes, weights=table.imps, minlength=len(table.sides))
            seen = np.flatnonzero(np.bincount(table.side_codes, minlength=len(table.sides)) > 0)
            prior = (side_sum[seen] + m * base) / (side_size[seen] + m)
            t.affinity_prior[name] = {
                "": base,
                **{k: float(v) for k, v in zip(table.sides[seen].tolist(), prior.tolist(), strict=True)},
            }
            t.affinity[name] = table

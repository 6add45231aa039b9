"""The users' affinity evidence counted chunk by chunk with integer keys: :meth:`Transform.refreshed`'s
chunked path.

:class:`~recsys.features.transform.FitStats` keeps its per-(user, side) sums as pandas Series indexed by
the key strings, stacked and regrouped as chunks come: at 10M interactions a day (8.5M train and validation
rows, 11M pairs) the serving transform's refresh peaked at 4.4 GB there. Here every user and side value
gets an integer code once, a chunk's pairs are summed with ``np.unique``/``np.bincount`` on int64 keys,
and the partial sums are merged the same way as they pile up: about 24 bytes a pair.

The sums are of whole-number click labels (``integral``; the caller refreshes from one frame otherwise),
so they are exact in any order and the result is FitStats' to the bit (tests/unit/test_features_chunks.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.affinity_table import AffinityTable
from recsys.features.spec import AFFINITY

_SIDES = 1 << 24  # side codes per user in a pair key: user code * _SIDES + side code


class _Codes:
    """A growing key -> code table (codes in order of first appearance)."""

    def __init__(self):
        self.code: dict[str, int] = {}

    def of(self, values: np.ndarray) -> np.ndarray:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object))
        table = np.fromiter(
            (self.code.setdefault(v, len(self.code)) for v in uniques), dtype=np.int64, count=len(uniques)
        )
        return table[np.asarray(codes)]

    def keys(self) -> np.ndarray:
        return np.array(list(self.code), dtype=object)


class _PairSums:
    """Per int64 key: the clicks and impressions added, merged as partial sums pile up."""

    def __init__(self):
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n = self._merged = 0

    def add(self, keys: np.ndarray, clicks: np.ndarray) -> None:
        uniq, inv = np.unique(keys, return_inverse=True)
        self.parts.append((uniq, np.bincount(inv, weights=clicks, minlength=len(uniq)), np.bincount(inv)))
        self._n += len(uniq)
        if self._n > 2 * self._merged + 1_000_000:
            self.parts = [self.total()]
            self._n = self._merged = len(self.parts[0][0])

    def total(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        if len(self.parts) == 1:
            return self.parts[0]
        keys = np.concatenate([p[0] for p in self.parts])
        clicks = np.concatenate([p[1] for p in self.parts])
        imps = np.concatenate([p[2] for p in self.parts])
        uniq, inv = np.unique(keys, return_inverse=True)
        return uniq, np.bincount(inv, weights=clicks, minlength=len(uniq)), np.bincount(inv, weights=imps)


class AffinityCounts:
    """The affinity priors and (user, side) tables of rows added in chunks (what ``FitStats(affinity_only
    =True)`` then ``fit_affinity`` give, for whole-number click labels)."""

    def __init__(self, keys):
        self._keys = keys  # the transform's key spelling of a column (transform._keys)
        self.users = _Codes()
        self.sides = {name: _Codes() for name in AFFINITY}
        self.pairs = {name: _PairSums() for name in AFFINITY}
        self.click_sum, self.rows, self.integral = 0.0, 0, True

    def add(self, chunk: pd.DataFrame) -> None:
        clicks = pd.to_numeric(chunk["click"], errors="coerce").fillna(0).to_numpy(float)
        self.integral &= bool(np.all(clicks == np.round(clicks)))
        self.rows += len(clicks)
        self.click_sum += float(clicks.sum())
        users = self._keys(chunk["user_key"])
        ucode = self.users.of(users)
        for name, col in AFFINITY.items():
            sides = self._keys(chunk[col])
            ok = (users != "") & (sides != "")
            scode = self.sides[name].of(sides[ok])
            if len(self.sides[name].code) >= _SIDES:
                raise ValueError(f"more than {_SIDES} distinct values of {col}")
            self.pairs[name].add(ucode[ok] * _SIDES + scode, clicks[ok])

    def fit(self, t) -> None:
        """``t.affinity_prior`` and ``t.affinity`` from the rows added (as ``FitStats.fit_affinity``)."""
        base = float(np.clip(self.click_sum / self.rows if self.rows else 0.5, 1e-4, 1 - 1e-4))
        m = t.affinity_strength
        users = self.users.keys()
        for name in AFFINITY:
            keys, clicks, imps = self.pairs[name].total()
            side_keys = self.sides[name].keys()
            scode = keys % _SIDES
            side_sum = np.bincount(scode, weights=clicks, minlength=len(side_keys))
            side_size = np.bincount(scode, weights=imps, minlength=len(side_keys)).astype(np.float64)
            seen = np.flatnonzero(np.bincount(scode, minlength=len(side_keys)) > 0)
            prior = (side_sum[seen] + m * base) / (side_size[seen] + m)
            t.affinity_prior[name] = {
                "": base,
                **{k: float(v) for k, v in zip(side_keys[seen].tolist(), prior.tolist(), strict=True)},
            }
            t.affinity[name] = AffinityTable.from_pairs(
                users[keys // _SIDES] if len(keys) else [],
                side_keys[scode] if len(keys) else [],
                clicks,
                imps.astype(np.float64),
            )

"""The affinity inputs of (user, video) pairs without a row per pair: the serving batch path.

:func:`pair_affinity` gives, for users and videos given separately, a look-up of the normalized
``user_category_affinity``, ``user_author_affinity`` and ``user_video_coengagement`` inputs of any
(user index, video index) pair: the values :meth:`recsys.features.transform.Transform.apply` gives the same
pair's row, bit for bit (tests/unit/test_features.py), without building a row per pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.keys import _keys
from recsys.features.spec import AFFINITY
from recsys.features.transform import COENGAGEMENT, Transform, affinity_lift


def pair_affinity(transform: Transform, user_keys, side_values: dict[str, np.ndarray]) -> PairAffinity:
    """Normalized affinity inputs for (user, video) pairs given by index into ``user_keys`` and into the
    videos whose side values (``{example column: values}``, ``video_id`` among them when the transform has
    the co-engagement input) are given."""
    return PairAffinity(transform, np.asarray(user_keys, dtype=object), side_values)


class PairAffinity:
    """The affinity inputs of (user, video) pairs without a row per pair: the fitted table restricted to
    the given users and side values, as sorted integer keys ``user * n_sides + side``."""

    def __init__(self, transform: Transform, user_keys: np.ndarray, side_values: dict[str, np.ndarray]):
        self.names = [n for n in transform.numeric if n in AFFINITY]
        self._lookups = {}
        self._co = None
        if COENGAGEMENT in transform.numeric:  # needs the videos' ids among the side values
            table = transform.coengagement_table()
            urow, vcode = table.codes(user_keys, side_values["video_id"])
            self._co = (table, urow, vcode, lambda raw: transform.normalize(COENGAGEMENT, raw))
        users = pd.Index(user_keys.astype(str) if len(user_keys) else user_keys, dtype=object)
        for name in self.names:
            sides = _keys(pd.Series(side_values[AFFINITY[name]], dtype=object))
            scode, suniq = pd.factorize(pd.Series(sides, dtype=object))
            u, s, c, n = _pairs_of(transform, name, users, suniq)
            ok = (u >= 0) & (s >= 0)
            prior_of_side = transform.prior(name, np.asarray(suniq, dtype=object))
            keys = u[ok].astype(np.int64) * len(suniq) + s[ok]
            raw = affinity_lift(c[ok], n[ok], prior_of_side[s[ok]], transform.affinity_strength)
            order = np.argsort(keys, kind="stable")
            # an absent pair has no evidence: lift 0; a missing user key or side value too
            zero = transform.normalize(name, np.zeros(1))[0]
            self._lookups[name] = (
                keys[order],
                transform.normalize(name, raw[order]),
                zero,
                len(suniq),
                scode.astype(np.int64),
            )

    def __call__(self, user_idx: np.ndarray, video_idx: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        if self._co is not None:
            table, urow, vcode, normalize = self._co
            out[COENGAGEMENT] = normalize(table.raw_codes(urow[user_idx], vcode[video_idx], loo=False))
        for name, (keys, values, zero, n_sides, scode) in self._lookups.items():
            k = user_idx.astype(np.int64) * n_sides + scode[video_idx]
            pos = np.minimum(np.searchsorted(keys, k), max(len(keys) - 1, 0))
            hit = (keys[pos] == k) if len(keys) else np.zeros(len(k), dtype=bool)
            out[name] = np.where(hit, values[pos] if len(keys) else zero, zero).astype(np.float32)
        return out


def _pairs_of(transform: Transform, name: str, users: pd.Index, suniq) -> tuple[np.ndarray, ...]:
    """The table's pairs of ``users`` only: (user position, side position or -1, clicks, impressions),
    gathered by the table's per-user offsets (memory and time follow the users given, not the table)."""
    table = transform.affinity.get(name)
    if not table or not len(users):
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),) * 2
    rows = table.user_index().get_indexer(users)
    mine = np.flatnonzero(rows >= 0)
    starts, lens = table.offsets[rows[mine]], np.diff(table.offsets)[rows[mine]]
    pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    side_pos = pd.Index(suniq, dtype=object).get_indexer(pd.Index(table.sides, dtype=object))
    side = side_pos[table.side_codes[pos]] if len(side_pos) else np.full(len(pos), -1)
    return np.repeat(mine, lens).astype(np.int64), side, table.clicks[pos], table.imps[pos]

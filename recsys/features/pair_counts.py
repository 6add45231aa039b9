"""The (user, side) click and impression counts of the affinity features in arrays, for the chunked features
stage (issue 15): the same figures as :attr:`Transform.affinity`'s nested dicts, at a tenth of the memory.

At 10M interactions a day the training split has about 9M (user, category) and (user, author) pairs; as
Python dicts of lists of floats they take about 2 GB, as arrays (an int64 key and two float64 per pair)
about 0.2 GB. :class:`PairCounts` adds them chunk by chunk (the clicks are whole numbers, which the stage
checks before it trusts a chunked fit, so the float sums are exact in any order) into the
fitted :class:`~recsys.features.affinity_table.AffinityTable` (the look-up of a row's pair, and the JSON
of :attr:`Transform.affinity` byte for byte what ``json.dumps(..., sort_keys=True)`` writes for the dicts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.affinity_table import AffinityTable

_SHIFT = 32  # key while adding: user code << 32 | side code


def _codes(values: np.ndarray, known: dict[str, int]) -> np.ndarray:
    """Codes of ``values`` (strings) in ``known``, new ones appended."""
    inverse, uniques = pd.factorize(values)
    codes = np.fromiter(
        (known.setdefault(v, len(known)) for v in uniques), dtype=np.int64, count=len(uniques)
    )
    return codes[inverse]


def _reduce(keys: np.ndarray, clicks: np.ndarray, imps: np.ndarray):
    uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.ravel()
    return uniq, np.bincount(inverse, clicks, len(uniq)), np.bincount(inverse, imps, len(uniq))


class PairCounts:
    """Per (user, side) pair: the sum of the click labels and the number of rows, added chunk by chunk."""

    def __init__(self):
        self.users: dict[str, int] = {}
        self.sides: dict[str, int] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n = self._compacted = 0

    def add(self, users: np.ndarray, sides: np.ndarray, clicks: np.ndarray) -> None:
        """Rows with a known user and side (strings, no ""), and their click labels."""
        if not len(users):
            return
        keys = (_codes(users, self.users) << _SHIFT) | _codes(sides, self.sides)
        part = _reduce(keys, np.asarray(clicks, float), np.ones(len(keys)))
        self._parts.append(part)
        self._n += len(part[0])
        if self._n > 2 * self._compacted + 200_000:
            self._compact()

    def _compact(self) -> None:
        if len(self._parts) > 1:
            self._parts = [_reduce(*(np.concatenate(col) for col in zip(*self._parts, strict=True)))]
        self._n = self._compacted = len(self._parts[0][0]) if self._parts else 0

    def table(self) -> AffinityTable:
        """The pairs added as the fitted :class:`~recsys.features.affinity_table.AffinityTable`."""
        self._compact()
        users = np.array(list(self.users), dtype=object)  # by code
        sides = np.array(list(self.sides), dtype=object)
        if not self._parts:
            return AffinityTable.from_pairs([], [], [], [])
        keys, clicks, imps = self._parts.pop()
        return AffinityTable.from_pairs(
            users[keys >> _SHIFT], sides[keys & ((1 << _SHIFT) - 1)], clicks, imps
        )

"""The (user, side) click and impression counts of the affinity features in arrays, for the chunked features
stage (issue 15): the same figures as :attr:`Transform.affinity`'s nested dicts, at a tenth of the memory.

At 10M interactions a day the training split has about 9M (user, category) and (user, author) pairs; as
Python dicts of lists of floats they take about 2 GB, as arrays (an int64 key and two float64 per pair)
about 0.2 GB. :class:`PairCounts` adds them chunk by chunk (the clicks are whole numbers, which the stage
checks before it trusts a chunked fit, so the float sums are exact in any order); :class:`PairTable` is the
fitted table: the look-up of a row's pair and the JSON of :attr:`Transform.affinity`, byte for byte what
``json.dumps(..., sort_keys=True)`` writes for the dicts.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

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

    def table(self) -> PairTable:
        self._compact()
        users = np.array(sorted(self.users), dtype=object)
        sides = np.array(sorted(self.sides), dtype=object)
        if not self._parts:
            return PairTable(users, sides, np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        keys, clicks, imps = self._parts[0]
        self._parts = []
        user_rank = np.empty(len(users), np.int64)
        user_rank[np.fromiter((self.users[u] for u in users), np.int64, len(users))] = np.arange(len(users))
        side_rank = np.empty(len(sides), np.int64)
        side_rank[np.fromiter((self.sides[s] for s in sides), np.int64, len(sides))] = np.arange(len(sides))
        ranked = user_rank[keys >> _SHIFT] * len(sides) + side_rank[keys & ((1 << _SHIFT) - 1)]
        del keys
        order = np.argsort(ranked, kind="stable")
        return PairTable(users, sides, ranked[order], clicks[order], imps[order])


class PairTable:
    """The fitted pairs: ``keys`` = user rank x len(sides) + side rank (ranks in sorted order), ascending,
    with each pair's clicks and impressions."""

    def __init__(self, users: np.ndarray, sides: np.ndarray, keys, clicks, imps):
        self.users, self.sides, self.keys, self.clicks, self.imps = users, sides, keys, clicks, imps
        self._user_index = pd.Index(users, dtype=object)
        self._side_index = pd.Index(sides, dtype=object)

    def __len__(self) -> int:
        return len(self.keys)

    def positions(self, users: np.ndarray, sides: np.ndarray) -> np.ndarray:
        """Each row's pair position in the table, -1 for a pair not in it."""
        u = self._user_index.get_indexer(pd.Index(users, dtype=object))
        s = self._side_index.get_indexer(pd.Index(sides, dtype=object))
        out = np.full(len(u), -1, dtype=np.int64)
        if not len(self.keys):
            return out
        ok = (u >= 0) & (s >= 0)
        key = u[ok] * len(self.sides) + s[ok]
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        out[np.flatnonzero(ok)[self.keys[pos] == key]] = pos[self.keys[pos] == key]
        return out

    def write_json(self, f) -> None:
        """``{user: {side: [clicks, impressions], ...}, ...}`` as ``json.dumps(sort_keys=True)`` writes it."""
        n_sides = len(self.sides)
        user_of = self.keys // n_sides if n_sides else self.keys
        f.write("{")
        if not len(self.keys):
            f.write("}")
            return
        starts = np.flatnonzero(np.r_[True, user_of[1:] != user_of[:-1]])
        ends = list(starts[1:]) + [len(self.keys)]
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            per = {
                self.sides[k % n_sides]: [float(c), float(n)]
                for k, c, n in zip(
                    self.keys[a:b].tolist(), self.clicks[a:b].tolist(), self.imps[a:b].tolist(), strict=True
                )
            }
            f.write(
                (", " if i else "")
                + json.dumps(self.users[user_of[a]])
                + ": "
                + json.dumps(per, sort_keys=True)
            )
        f.write("}")

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        """The nested dicts of :attr:`Transform.affinity` (what :meth:`write_json` writes)."""
        n_sides = len(self.sides)
        out: dict[str, dict[str, list[float]]] = {}
        for k, c, n in zip(self.keys.tolist(), self.clicks.tolist(), self.imps.tolist(), strict=True):
            out.setdefault(self.users[k // n_sides], {})[self.sides[k % n_sides]] = [float(c), float(n)]
        return out


def write_transform_json(f, rest: dict, tables: dict[str, PairTable]) -> None:
    """``json.dumps({"affinity": tables as dicts, **rest}, sort_keys=True)`` written piece by piece
    ("affinity" sorts before every other key of a transform; ``rest`` has none before it)."""
    assert all(k > "affinity" for k in rest)
    f.write('{"affinity": {')
    for i, name in enumerate(sorted(tables)):
        f.write((", " if i else "") + json.dumps(name) + ": ")
        tables[name].write_json(f)
    f.write("}")
    body = json.dumps(rest, sort_keys=True)
    f.write(", " + body[1:] if rest else "}")

"""The affinity tables held as arrays: per (user, side value) pair its clicks and impressions.

A transform's affinity tables have a pair per (user, category) and (user, author) seen in the training
window: about 1.1M pairs at 1M interactions a day, 11M at 10M. As nested dicts (user -> side -> [clicks,
impressions]) each pair costs about 200 bytes of Python objects, about 2.3 GB at 10M for one transform,
and the train stage held two, the recommend stage one plus its look-up index. :class:`AffinityTable`
keeps them as sorted arrays (about 30 bytes a pair) and still reads as the mapping it replaces
(``table[user]`` is that user's ``{side: [clicks, impressions]}``), so code that walks it is unchanged.

The JSON stays the same to the byte: :func:`write_json` writes what ``json.dumps(nested, sort_keys=True)``
wrote, and :func:`object_hook` lets ``json.loads`` build the arrays while it parses, without the nested
dicts ever being whole in memory.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

_encode = json.encoder.encode_basestring_ascii  # what json.dumps quotes strings with (ensure_ascii)


def _python_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of an object array of str with the uniques in Python's sort order (the order
    ``sort_keys`` writes them in)."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object))
    uniques = np.asarray(uniques, dtype=object)
    order = np.argsort(uniques, kind="stable")  # object arrays compare with Python's <
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[np.asarray(codes)], uniques[order]


class AffinityTable(Mapping):
    """user key -> {side value: [clicks, impressions]}, stored sorted by (user, side) in Python's string
    order: ``users`` (distinct), ``offsets`` (user i's pairs are ``offsets[i]:offsets[i+1]``), and per pair
    ``side_codes`` into ``sides``, ``clicks`` and ``imps``."""

    def __init__(self, users, offsets, sides, side_codes, clicks, imps):
        self.users = np.asarray(users, dtype=object)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sides = np.asarray(sides, dtype=object)
        self.side_codes = np.asarray(side_codes, dtype=np.int32)
        self.clicks = np.asarray(clicks, dtype=np.float64)
        self.imps = np.asarray(imps, dtype=np.float64)
        self._pos: dict | None = None
        self._keys: np.ndarray | None = None  # user rank x len(sides) + side rank per pair: ascending

    # ------------------------------------------------------------------ building
    @classmethod
    def from_pairs(cls, users, sides, clicks, imps) -> AffinityTable:
        """From one row per distinct (user, side) pair, in any order."""
        ucode, uniq_users = _python_order(np.asarray(users, dtype=object))
        scode, uniq_sides = _python_order(np.asarray(sides, dtype=object))
        order = np.lexsort((scode, ucode))
        counts = np.bincount(ucode, minlength=len(uniq_users))
        return cls(
            uniq_users,
            np.r_[0, np.cumsum(counts)],
            uniq_sides,
            scode[order],
            np.asarray(clicks, dtype=np.float64)[order],
            np.asarray(imps, dtype=np.float64)[order],
        )

    @classmethod
    def from_nested(cls, nested: Mapping) -> AffinityTable:
        """From ``{user: {side: [clicks, impressions]}}``."""
        if isinstance(nested, AffinityTable):
            return nested
        users, sides, c, n = [], [], array("d"), array("d")
        for user, per in nested.items():
            for side, (cl, im) in per.items():
                users.append(user)
                sides.append(side)
                c.append(cl)
                n.append(im)
        return cls.from_pairs(users, sides, np.frombuffer(c), np.frombuffer(n))

    # ------------------------------------------------------------------ the mapping it replaces
    def __getitem__(self, user: str) -> dict[str, list[float]]:
        if self._pos is None:
            self._pos = dict(zip(self.users.tolist(), range(len(self.users)), strict=True))
        i = self._pos[user]
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return {
            s: [c, n]
            for s, c, n in zip(
                self.sides[self.side_codes[lo:hi]].tolist(),
                self.clicks[lo:hi].tolist(),
                self.imps[lo:hi].tolist(),
                strict=True,
            )
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self.users.tolist())

    def __len__(self) -> int:
        return len(self.users)

    def __eq__(self, other) -> bool:
        if isinstance(other, Mapping) and not isinstance(other, AffinityTable):
            other = AffinityTable.from_nested(other)
        if not isinstance(other, AffinityTable):
            return NotImplemented
        return (
            np.array_equal(self.users, other.users)
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.sides[self.side_codes], other.sides[other.side_codes])
            and np.array_equal(self.clicks, other.clicks)
            and np.array_equal(self.imps, other.imps)
        )

    __hash__ = None

    def user_index(self) -> pd.Index:
        """The users as an index (built once): their rows in ``offsets``."""
        if getattr(self, "_users_index", None) is None:
            self._users_index = pd.Index(self.users, dtype=object)
        return self._users_index

    def pair_index(self) -> tuple[pd.MultiIndex, np.ndarray, np.ndarray]:
        """(user, side) MultiIndex of the pairs, with their clicks and impressions (no string hashed)."""
        counts = np.diff(self.offsets)
        index = pd.MultiIndex(
            levels=[pd.Index(self.users, dtype=object), pd.Index(self.sides, dtype=object)],
            codes=[np.repeat(np.arange(len(self.users)), counts), self.side_codes],
            verify_integrity=False,
        )
        return index, self.clicks, self.imps

    def positions(self, users, sides) -> np.ndarray:
        """Each row's pair position in the arrays (``clicks[pos]``), -1 for a pair not in the table; by
        integer codes (the pairs are sorted by user rank then side rank), no pair of strings hashed."""
        u = pd.Index(self.users, dtype=object).get_indexer(pd.Index(np.asarray(users, dtype=object)))
        s = pd.Index(self.sides, dtype=object).get_indexer(pd.Index(np.asarray(sides, dtype=object)))
        out = np.full(len(u), -1, dtype=np.int64)
        if not len(self.clicks):
            return out
        if self._keys is None:
            owner = np.repeat(np.arange(len(self.users), dtype=np.int64), np.diff(self.offsets))
            self._keys = owner * len(self.sides) + self.side_codes
        ok = np.flatnonzero((u >= 0) & (s >= 0))
        key = u[ok] * len(self.sides) + s[ok]
        pos = np.minimum(np.searchsorted(self._keys, key), len(self._keys) - 1)
        found = self._keys[pos] == key
        out[ok[found]] = pos[found]
        return out

    # ------------------------------------------------------------------ JSON
    def write_json(self, write) -> None:
        """``write`` the text ``json.dumps(dict(self), sort_keys=True)`` gives, some users at a time."""
        sides = np.array([_encode(s) for s in self.sides.tolist()] or [""], dtype=object)
        users = self.users.tolist()
        finite = bool(np.isfinite(self.clicks).all() and np.isfinite(self.imps).all())
        spell = float.__repr__ if finite else _float
        write("{")
        step = 10_000
        for lo in range(0, len(users), step):
            hi = min(len(users), lo + step)
            a, b = int(self.offsets[lo]), int(self.offsets[hi])
            pairs = list(
                map(
                    "{}: [{}, {}]".format,
                    sides[self.side_codes[a:b]].tolist(),
                    map(spell, self.clicks[a:b].tolist()),
                    map(spell, self.imps[a:b].tolist()),
                )
            )
            bounds = (self.offsets[lo : hi + 1] - a).tolist()
            text = ", ".join(
                f"{_encode(users[i])}: {{{', '.join(pairs[bounds[i - lo] : bounds[i - lo + 1]])}}}"
                for i in range(lo, hi)
            )
            write(("" if lo == 0 else ", ") + text)
        write("}")


def _float(x: float) -> str:
    """A float as json.dumps spells it (its repr; NaN and the infinities as JavaScript names)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def object_hook():
    """An ``object_pairs_hook`` for ``json.loads`` of a saved transform: each user's ``{side: [clicks,
    impressions]}`` object goes straight into flat arrays, and an object whose values are all such users
    becomes an :class:`AffinityTable`; every other object is a dict as usual."""
    sides: list[str] = []
    clicks, imps = array("d"), array("d")

    def hook(pairs):
        if pairs and all(
            type(v) is list and len(v) == 2 and type(v[0]) is float and type(v[1]) is float for _, v in pairs
        ):
            start = len(sides)
            for side, (c, n) in pairs:
                sides.append(side)
                clicks.append(c)
                imps.append(n)
            return _Span(start, len(sides))
        if pairs and all(type(v) is _Span for _, v in pairs):
            lo, hi = pairs[0][1].start, pairs[-1][1].end
            spans = [v for _, v in pairs]
            if all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False)):  # parsed in a row
                owner = np.repeat(
                    np.array([k for k, _ in pairs], dtype=object), [s.end - s.start for s in spans]
                )
                table = AffinityTable.from_pairs(
                    owner,
                    np.array(sides[lo:hi], dtype=object),
                    np.frombuffer(clicks, dtype=np.float64)[lo:hi].copy(),
                    np.frombuffer(imps, dtype=np.float64)[lo:hi].copy(),
                )
                if hi == len(sides):  # the spans are consumed: free them
                    del sides[lo:]
                    del clicks[lo:], imps[lo:]
                return table
        return {k: (_nested(v) if type(v) is _Span else v) for k, v in pairs}

    def _nested(span):
        return {sides[i]: [clicks[i], imps[i]] for i in range(span.start, span.end)}

    return hook


class _Span:
    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end

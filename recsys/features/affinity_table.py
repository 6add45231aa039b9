"""The affinity tables held as arrays: per (user, side value) pair its clicks and impressions.

A transform's affinity tables have a pair per (user, category) and (user, author) seen in the training
window: about 1.1M pairs at 1M interactions a day, 11M at 10M. As nested dicts (user -> side -> [clicks,
impressions]) each pair costs about 200 bytes of Python objects, about 2.3 GB at 10M for one transform,
and the train stage held two, the recommend stage one plus its look-up index. :class:`AffinityTable`
keeps them as sorted arrays (about 30 bytes a pair) and still reads as the mapping it replaces
(``table[user]`` is that user's ``{side: [clicks, impressions]}``), so code that walks it is unchanged.

In a saved transform each table is one JSON object of arrays (:meth:`AffinityTable.to_json_value`): the
users and side values as lists of strings, the per-user pair counts, side codes, clicks and impressions
as base64 of zlib-compressed little-endian binary. Loading it builds the arrays directly: at 10M
interactions a day (~9M pairs) the nested form took 11 CPU s and ~1 GB above the loaded size to parse.
A transform saved in the nested form (``{user: {side: [clicks, impressions]}}``, before 2026-12-08)
still loads: :func:`object_hook` builds the arrays while ``json.loads`` parses it, without the nested
dicts ever being whole in memory.
"""

from __future__ import annotations

import base64
import json
import zlib
from array import array
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

_encode = json.encoder.encode_basestring_ascii  # what json.dumps quotes strings with (ensure_ascii)

ARRAYS_FORMAT = "affinity/1"  # the "arrays" field of a table saved as arrays
# the binary fields of the saved form: name -> (attribute, little-endian dtype)
_BINARY = {"clicks": "<f8", "counts": "<i8", "imps": "<f8", "side_codes": "<i4"}
_SAVED_KEYS = frozenset({"arrays", *_BINARY, "sides", "users"})


def is_saved_arrays(value) -> bool:
    """``value`` is a table in its saved array form (a JSON object with ``"arrays": "affinity/…"``)."""
    return isinstance(value, Mapping) and isinstance(value.get("arrays"), str)


def _b64(values: np.ndarray, dtype: str) -> str:
    """base64 of the zlib-compressed little-endian bytes (the counts are mostly small whole numbers: a
    tenth of the size, and of the text a load parses)."""
    raw = np.ascontiguousarray(values, dtype=dtype).tobytes()
    return base64.b64encode(zlib.compress(raw, 1)).decode("ascii")


def _unb64(text: str, dtype: str, field: str) -> np.ndarray:
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (ValueError, UnicodeError, zlib.error) as exc:
        raise ValueError(f"affinity table: field {field!r} is not zlib+base64") from exc
    if len(raw) % np.dtype(dtype).itemsize:
        raise ValueError(f"affinity table: field {field!r} is not a whole number of {dtype} values")
    return np.frombuffer(raw, dtype=dtype).astype(np.dtype(dtype).newbyteorder("="))  # a writable copy


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
        """From ``{user: {side: [clicks, impressions]}}``, or from the saved array form."""
        if isinstance(nested, AffinityTable):
            return nested
        if is_saved_arrays(nested):
            return cls.from_json_value(nested)
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

    def without(self, users) -> AffinityTable:
        """The table without the pairs of ``users`` (the side values stay: they name videos' attributes)."""
        keep = ~np.isin(self.users, np.asarray(list(users), dtype=object))
        counts = np.diff(self.offsets)
        pairs = np.repeat(keep, counts)
        return AffinityTable(
            self.users[keep],
            np.r_[0, np.cumsum(counts[keep])],
            self.sides,
            self.side_codes[pairs],
            self.clicks[pairs],
            self.imps[pairs],
        )

    # ------------------------------------------------------------------ JSON
    def to_json_value(self) -> dict:
        """The saved form: a JSON object of arrays (:data:`ARRAYS_FORMAT`)."""
        return {
            "arrays": ARRAYS_FORMAT,
            "clicks": _b64(self.clicks, _BINARY["clicks"]),
            "counts": _b64(np.diff(self.offsets), _BINARY["counts"]),
            "imps": _b64(self.imps, _BINARY["imps"]),
            "side_codes": _b64(self.side_codes, _BINARY["side_codes"]),
            "sides": self.sides.tolist(),
            "users": self.users.tolist(),
        }

    @classmethod
    def from_json_value(cls, value: Mapping) -> AffinityTable:
        """From :meth:`to_json_value`'s object; a malformed one is a ValueError that names the field."""
        if value.get("arrays") != ARRAYS_FORMAT:
            got = value.get("arrays")
            raise ValueError(f"affinity table: unknown format {got!r} (known: {ARRAYS_FORMAT})")
        if set(value) != _SAVED_KEYS:
            raise ValueError(f"affinity table: fields {sorted(value)}, expected {sorted(_SAVED_KEYS)}")
        arrays = {k: _unb64(value[k], dtype, k) for k, dtype in _BINARY.items()}
        users, sides = list(value["users"]), list(value["sides"])
        counts, codes = arrays["counts"], arrays["side_codes"]
        n = int(counts.sum()) if len(counts) else 0
        if (
            len(counts) != len(users)
            or (counts < 0).any()
            or not len(codes) == len(arrays["clicks"]) == len(arrays["imps"]) == n
            or (len(codes) and (codes.min() < 0 or codes.max() >= len(sides)))
            or not all(isinstance(x, str) for x in users + sides)
        ):
            raise ValueError("affinity table: the arrays do not fit together (corrupt or truncated)")
        return cls(users, np.r_[0, np.cumsum(counts)], sides, codes, arrays["clicks"], arrays["imps"])

    def write_json(self, write) -> None:
        """``write`` the text ``json.dumps(self.to_json_value(), sort_keys=True)`` gives, a field at a time
        (no second copy of the large fields)."""
        write('{"arrays": ' + json.dumps(ARRAYS_FORMAT))
        for key, dtype in _BINARY.items():  # sorted: clicks, counts, imps, side_codes
            values = np.diff(self.offsets) if key == "counts" else getattr(self, key)
            write(f', "{key}": "')
            write(_b64(values, dtype))
            write('"')
        write(', "sides": ' + json.dumps(self.sides.tolist()))
        write(', "users": ' + json.dumps(self.users.tolist()) + "}")

    def write_nested_json(self, write) -> None:
        """``write`` the text ``json.dumps(dict(self), sort_keys=True)`` gives, some users at a time (the
        form transforms were saved in before the array form)."""
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
    """An ``object_pairs_hook`` for ``json.loads`` of a saved transform: a table in the saved array form
    becomes an :class:`AffinityTable`; in the older nested form each user's ``{side: [clicks,
    impressions]}`` object goes straight into flat arrays, and an object whose values are all such users
    becomes an :class:`AffinityTable`; every other object is a dict as usual."""
    sides: list[str] = []
    clicks, imps = array("d"), array("d")

    def hook(pairs):
        if any(k == "arrays" and type(v) is str for k, v in pairs):  # the saved array form
            return AffinityTable.from_json_value(dict(pairs))
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

"""Format rules for every text field of the raw schemas, and detectors for values that look personal.

Why: a declared field is a promise about its content. ``rec_version`` holds a version tag, ``region`` a
region code; a field that carries an e-mail address, a phone number or an IP address (an upstream bug,
or a hostile producer) would copy personal data past the anonymize stage into clean/, features and
model artifacts. So every text or id-like field has a pattern and a byte-length limit (256 bytes at
most), and any value that looks like an e-mail, a phone number or an IP address is rejected whatever
the column, except in the columns that are *meant* to hold one (``email``, ``ip``), which the
anonymize stage drops.

Pure functions over one value, vectorized by :func:`format_ok` and :func:`looks_personal` for frames.
:func:`fingerprint` is how a rejected value may be named outside the encrypted zones: a short hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MAX_BYTES = 256
_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"

# column -> (pattern the whole value must match, byte limit)
FORMATS: dict[str, tuple[str, int]] = {
    "event_id": (_ID, 128),
    "user_id": (_ID, 128),
    "session_id": (_ID, 128),
    "email": (r"[^\s@]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}", 254),
    "ip": (r"[0-9A-Fa-f:.]{2,45}", 45),  # and it must parse as an address (below)
    "device": (r"[a-z][a-z0-9_]{0,15}", 16),
    "region": (r"[A-Za-z]{2}(-[A-Za-z0-9]{1,8}){0,3}|unknown", 32),
    "rec_version": (r"[0-9A-Za-z][0-9A-Za-z._:-]{0,63}", 64),
    "age_band": (r"[0-9A-Za-z+<>-]{1,16}", 16),
    "gender": (r"[A-Za-z_]{1,16}", 16),
    "activity": (r"[A-Za-z0-9_ ]{1,32}", 32),
    "category": (r"[^\x00-\x1f]{1,64}", 64),
    "tags": (r"[^\x00-\x1f]{0,256}", MAX_BYTES),
    "title": (r"[^\x00-\x1f]{0,256}", MAX_BYTES),
}
# Columns meant to hold one kind of personal value (dropped by anonymize): not scanned for that kind.
EXPECTED_PII = {"email": "email", "ip": "ip"}

_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"']+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(
    r"(?<![\w+-])(\+\d[\d\s().-]{6,18}\d"  # international: +49 151 1234567, +4915112345678
    r"|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4})(?![\w-])"  # NANP: (555) 123-4567, 555.123.4567
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?![\w.])")
_IPV6_TOKEN = re.compile(r"[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}")


def kinds_of_personal(value: str) -> set[str]:
    """Which of ``email``, ``phone``, ``ip`` the text looks like it contains."""
    found = set()
    if "@" in value and _EMAIL.search(value):
        found.add("email")
    if _PHONE.search(value):
        found.add("phone")
    if _IPV4.search(value) or (value.count(":") >= 2 and _has_ipv6(value)):
        found.add("ip")
    return found


def _has_ipv6(value: str) -> bool:
    for m in _IPV6_TOKEN.finditer(value):
        try:
            ipaddress.IPv6Address(m.group(0))
        except ValueError:
            continue
        return True
    return False


def value_format_ok(column: str, value: str) -> bool:
    """``value`` matches the column's pattern and byte limit (columns without a rule: 256 bytes)."""
    pattern, limit = FORMATS.get(column, (None, MAX_BYTES))
    if len(value.encode("utf-8", errors="surrogatepass")) > limit:
        return False
    if pattern is not None and not re.fullmatch(pattern, value):
        return False
    if column == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
    return True


def value_personal(column: str, value: str) -> bool:
    """``value`` looks like personal data the column is not meant to hold."""
    return bool(kinds_of_personal(value) - {EXPECTED_PII.get(column)})


def map_values(s: pd.Series, fn) -> np.ndarray:
    """``fn`` of every value (an object array), computed once per distinct value when they are all
    strings (ids, devices and regions repeat a lot); a mixed column is mapped value by value, since
    hashing would merge ``1``, ``1.0`` and ``True``."""
    obj = s.astype(object)
    if pd.api.types.infer_dtype(obj, skipna=True) not in ("string", "empty"):
        out = np.empty(len(obj), dtype=object)
        out[:] = [fn(v) for v in obj]
        return out
    codes, uniques = pd.factorize(obj, use_na_sentinel=True)
    table = np.empty(len(uniques) + 1, dtype=object)
    table[: len(uniques)] = [fn(u) for u in uniques]
    table[len(uniques)] = fn(None)
    return table[np.where(codes < 0, len(uniques), codes)]


# A value of only these characters is blank: exactly the characters ``str.isspace`` is true of (what
# ``str.strip`` removes), as an RE2 class (a test checks every code point)
_BLANK = (
    r"^[\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]*$"
)


def arrow_text(s: pd.Series) -> pa.Array | None:
    """``s`` as an Arrow string array when every value is a str or null (a raw column always is), else
    None (mixed values, or a str Arrow cannot hold: a lone surrogate)."""
    if not isinstance(s.dtype, pd.StringDtype) and pd.api.types.infer_dtype(s, skipna=True) not in (
        "string",
        "empty",
    ):
        return None
    try:
        return pa.array(s.astype(object), type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        return None


def blank_or_null(arr: pa.Array) -> np.ndarray:
    """Per value of an Arrow string array: null, or only whitespace (``is_missing`` of a str)."""
    return pc.fill_null(pc.match_substring_regex(arr, _BLANK), True).to_numpy(zero_copy_only=False)


# Loose, RE2-compatible pre-filters (Arrow's vectorized regex has no look-around): a value that passes none
# of them cannot be personal; the few that do are judged exactly by :func:`value_personal`.
_PREFILTER = r"@[A-Za-z0-9-]+\.|\+\d|\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|:.*:"


def _uniques(s: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """Codes into the distinct non-null values of ``s`` (-1: null), and those values as Arrow strings."""
    codes, uniques = pd.factorize(s.astype(object), use_na_sentinel=True)
    return codes, pa.array([str(u) for u in uniques], type=pa.string())


def _spread(codes: np.ndarray, per_unique: np.ndarray, null: bool) -> np.ndarray:
    table = np.append(np.asarray(per_unique, dtype=bool), null)
    return table[np.where(codes < 0, len(per_unique), codes)]


def _np(mask) -> np.ndarray:
    return mask.to_numpy(zero_copy_only=False).astype(bool)


def format_ok(column: str, s: pd.Series) -> np.ndarray:
    """Per row: null, or a value that passes :func:`value_format_ok` (vectorized over distinct values)."""
    codes, u = _uniques(s)
    if len(u) == 0:
        return np.ones(len(s), dtype=bool)
    pattern, limit = FORMATS.get(column, (None, MAX_BYTES))
    ok = _np(pc.less_equal(pc.binary_length(u), limit))
    if pattern is not None:
        ok &= _np(pc.match_substring_regex(u, f"^(?:{pattern})$"))
    if column == "ip":
        values = u.to_pylist()
        ok[ok] = [value_format_ok(column, values[i]) for i in np.flatnonzero(ok)]
    return _spread(codes, ok, True)


def looks_personal(column: str, s: pd.Series) -> np.ndarray:
    """Per row: a non-null value for which :func:`value_personal` holds (Arrow pre-filter, then exact)."""
    codes, u = _uniques(s)
    if len(u) == 0:
        return np.zeros(len(s), dtype=bool)
    maybe = np.flatnonzero(_np(pc.match_substring_regex(u, _PREFILTER)))
    hit = np.zeros(len(u), dtype=bool)
    if len(maybe):
        values = u.take(pa.array(maybe)).to_pylist()
        hit[maybe] = [value_personal(column, v) for v in values]
    return _spread(codes, hit, False)


def fingerprint(value) -> str:
    """A short, unkeyed hash that names a value in a message without showing it (sha256, 12 hex)."""
    return "sha256:" + hashlib.sha256(str(value).encode("utf-8", errors="surrogatepass")).hexdigest()[:12]

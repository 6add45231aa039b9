"""Where data comes from: the landing zone (fed by the simulator or an upstream system).

The collect stage (:func:`recsys.data.collect.collect_day`) reads one logical day from the landing zone
with the readers and parsers of this module (:func:`read_landing`, :func:`parse_lines`,
:func:`parse_reference`; :func:`landing_interactions` and its siblings read a whole file at once). Events
are kept loose (every value as text, malformed lines kept) because deciding what is valid is the
validation stage's job, and nothing may be lost before it.

The seed's public readers, :func:`collect_user_interactions`, :func:`collect_content_metadata` and
:func:`collect_contextual_info`, read what the pipeline made of a day: the clean zone, pseudonymized (the
landing and raw zones hold raw identifiers and are the pipeline's business only).

Landing files are hostile input, so reading them is strict:

* only a regular file inside the lake is read (a symlink, FIFO or device is refused: :class:`LandingError`);
* each file is read **once** (:func:`read_landing`); the bytes that are parsed are the bytes that are
  sealed (encrypted in place), so a file re-delivered while collect runs is never half-used;
* lines are split on ``\\n`` only (U+2028, U+2029 and U+0085 inside JSON strings are data), a leading
  UTF-8 BOM is dropped, and a line that is not strict UTF-8 is set aside as ``bad_encoding`` with its
  original bytes (never rewritten with replacement characters).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from recsys.data.formats import fingerprint, format_ok, looks_personal
from recsys.data.lake import Lake, as_date, atomic_write_bytes
from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, SchemaError, conform
from recsys.errors import RecsysError

LANDING_FILE = "part-0.jsonl"
SEALED_FILE = LANDING_FILE + ".enc"  # the landing file once collected: encrypted at rest
BOM = b"\xef\xbb\xbf"
MALFORMED_COLUMNS = ("source", "line_number", "raw_line", "reason", "error", "raw_bytes")


class LandingError(RecsysError, ValueError):
    """A landing file cannot be used as delivered; the message names the file (and line)."""


class NotLandedError(RecsysError, FileNotFoundError):
    """Nothing was delivered for the day (the upstream is late, or the date is wrong)."""


@dataclass(frozen=True)
class Landed:
    """One landing file as read: its bytes, where they came from, and how to seal exactly them."""

    dataset: str
    path: Path  # the plain file, or its sealed ``.enc`` copy
    data: bytes
    sealed: bool  # read from the encrypted copy (already collected once)
    identity: tuple[int, int, int, int] | None = None  # (dev, inode, size, mtime_ns) of the plain file
    ds: date | None = None  # the day (a lake at a URL seals through the lake, by zone, dataset and day)


def landing_file(lake: Lake, dataset: str, ds) -> Path:
    return lake.partition("landing", dataset, ds) / LANDING_FILE


def open_regular(lake: Lake, path: Path) -> tuple[BinaryIO, tuple[int, int, int, int]]:
    """``path`` opened for reading if it is a regular file reached without symlinks, and its identity
    (dev, inode, size, mtime_ns) when opened; else :class:`LandingError`."""
    root = lake.root.resolve()
    try:
        rel = path.absolute().relative_to(lake.root.absolute())
    except ValueError:
        raise LandingError(f"{path}: outside the lake {lake.root}") from None
    if path.parent.resolve() != root / rel.parent:
        raise LandingError(f"{path}: a folder on the way is a symlink; refusing to read it")
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise LandingError(
            f"{path}: is a symlink (to {os.readlink(path)}); landing files must be regular files"
        )
    if not stat.S_ISREG(st.st_mode):
        raise LandingError(
            f"{path}: is not a regular file (mode {stat.filemode(st.st_mode)}); refusing to read it"
        )
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    f = os.fdopen(fd, "rb")
    fst = os.fstat(f.fileno())
    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        f.close()
        raise LandingError(f"{path}: was replaced by a non-regular file while being opened")
    return f, (fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns)


def _read_regular(lake: Lake, path: Path) -> tuple[bytes, tuple[int, int, int, int]]:
    """The bytes of ``path`` if it is a regular file reached without symlinks (:func:`open_regular`)."""
    f, identity = open_regular(lake, path)
    with f:
        return f.read(), identity


def at_url(lake: Lake) -> bool:
    """A lake at a URL (object storage): no local files, symlinks or inodes; reads go through the lake."""
    from recsys.data.object_lake import ObjectLake

    return isinstance(lake, ObjectLake)


def _read_landing_at_url(lake: Lake, dataset: str, ds) -> Landed:
    where = f"{lake.partition('landing', dataset, ds)}"
    if lake.has_file("landing", dataset, ds, LANDING_FILE):
        data = lake.read_bytes("landing", dataset, ds, LANDING_FILE)
        return Landed(dataset, Path(f"{where}/{LANDING_FILE}"), data, False, None, as_date(ds))
    if lake.has_file("landing", dataset, ds, SEALED_FILE):
        blob = lake.read_bytes("landing", dataset, ds, SEALED_FILE)
        data = lake.cipher.decrypt(blob, what=f"{where}/{SEALED_FILE}")
        return Landed(dataset, Path(f"{where}/{SEALED_FILE}"), data, True, None, as_date(ds))
    raise NotLandedError(
        f"nothing landed for {dataset} on ds={as_date(ds)} (looked for {where}/{LANDING_FILE})"
    )


def read_landing(lake: Lake, dataset: str, ds) -> Landed:
    """The day's landing file, read once: the plain one if newly delivered, else the sealed copy."""
    if at_url(lake):
        return _read_landing_at_url(lake, dataset, ds)
    plain = landing_file(lake, dataset, ds)
    enc = plain.with_name(plain.name + ".enc")
    if os.path.lexists(plain):
        data, identity = _read_regular(lake, plain)
        return Landed(dataset, plain, data, False, identity)
    if os.path.lexists(enc):
        data, _ = _read_regular(lake, enc)
        return Landed(dataset, enc, lake.cipher.decrypt(data, what=str(enc)), True)
    raise NotLandedError(f"nothing landed for {dataset} on ds={as_date(ds)} (looked for {plain})")


def read_landing_bytes(lake: Lake, dataset: str, ds) -> bytes:
    """The day's landing bytes (see :func:`read_landing`)."""
    return read_landing(lake, dataset, ds).data


def seal(lake: Lake, landed: Landed) -> None:
    """Encrypt exactly the bytes that were read, then remove the plain file if it is still that file.

    A file re-delivered after it was read (a different inode, size or mtime) is left in place for the
    next run: it is neither half-used nor lost.
    """
    if landed.sealed:
        return
    if at_url(lake):  # one commit: the sealed copy in, the plain file out
        sealed = lake.cipher.encrypt(landed.data)
        lake.write_bytes("landing", landed.dataset, landed.ds, SEALED_FILE, sealed, drop=(LANDING_FILE,))
        return
    atomic_write_bytes(landed.path.with_name(landed.path.name + ".enc"), lake.cipher.encrypt(landed.data))
    try:
        st = os.lstat(landed.path)
    except FileNotFoundError:
        return
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == landed.identity:
        landed.path.unlink()


def seal_landing(lake: Lake, dataset: str, ds) -> None:
    """Encrypt a landing file in place (raw identifiers are not kept in clear at rest)."""
    if at_url(lake):
        if lake.has_file("landing", dataset, ds, LANDING_FILE):
            seal(lake, read_landing(lake, dataset, ds))
        return
    plain = landing_file(lake, dataset, ds)
    if os.path.lexists(plain):
        seal(lake, read_landing(lake, dataset, ds))


# Parsing --------------------------------------------------------------------------------------------
def split_jsonl(data: bytes | str, source: str = "") -> tuple[list[dict], list[int], pd.DataFrame]:
    """Strictly parse JSON lines: (objects, their line numbers, malformed lines). Blank lines are skipped.

    Reasons of a malformed line: ``bad_encoding`` (not strict UTF-8, or a ``\\ud800``-style escape of half
    a surrogate pair, which no UTF-8 store can hold), ``malformed_json``, or
    ``not_json_object`` (valid JSON that is not an object). ``raw_bytes`` keeps the line as delivered.
    """
    raw = data.encode() if isinstance(data, str) else data
    rows, numbers, bad = parse_lines(enumerate(raw.removeprefix(BOM).split(b"\n"), start=1), source)
    return rows, numbers, malformed_frame(bad)


def parse_lines(lines: Iterable[tuple[int, bytes]], source: str) -> tuple[list[dict], list[int], list[tuple]]:
    """(line number, bytes) pairs -> (objects, their line numbers, malformed lines as tuples of
    :data:`MALFORMED_COLUMNS`): the rules of :func:`split_jsonl`, for a whole file or a chunk of one."""
    rows, numbers, bad = [], [], []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = line.decode("utf-8", errors="backslashreplace")
            bad.append(
                (source, number, shown, "bad_encoding", f"not UTF-8: {exc.reason} at byte {exc.start}", line)
            )
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            bad.append((source, number, text, "malformed_json", str(exc), line))
            continue
        if not isinstance(value, dict):
            bad.append((source, number, text, "not_json_object", f"a JSON {type(value).__name__}", line))
            continue
        if "\\u" in text and (where := _lone_surrogate(value)) is not None:
            # JSON allows the escape of half a surrogate pair ("\ud800"); Python decodes it, but no UTF-8
            # writer (Arrow, Parquet, the database) can store it: the line's bytes are UTF-8, its value not
            bad.append((source, number, text, "bad_encoding", f"lone surrogate escape in {where}", line))
            continue
        rows.append(value)
        numbers.append(number)
    return rows, numbers, bad


def _lone_surrogate(value) -> str | None:
    """Where a decoded JSON value holds a lone UTF-16 surrogate (a key or a string value): ``key 'k'``,
    ``value of 'k'``; None when every string is encodable as UTF-8."""
    stack = [("", value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return where or "a value"
        elif isinstance(v, dict):
            for k, item in v.items():
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    return "a key"
                stack.append((where or f"the value of {k!r}", item))
        elif isinstance(v, list):
            stack.extend((where, item) for item in v)
    return None


def malformed_frame(bad: list[tuple]) -> pd.DataFrame:
    """Malformed lines (tuples of :data:`MALFORMED_COLUMNS`) as the raw zone's ``events_malformed`` frame."""
    return pd.DataFrame(bad, columns=list(MALFORMED_COLUMNS)).astype(
        {
            "source": "string",
            "line_number": "int64",
            "raw_line": "string",
            "reason": "string",
            "error": "string",
        }
    )


def loose_text(value) -> str | None:
    """A JSON value as text: strings as they are, anything else as its JSON text (``true``, ``1e400``)."""
    if value is None or isinstance(value, str):
        return value
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)  # what json.dumps writes for them, without its overhead
    return json.dumps(value, ensure_ascii=False)


def parse_jsonl(data: bytes | str, source: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, malformed): every JSON object becomes a row of text values (see :func:`split_jsonl`)."""
    rows, _, malformed = split_jsonl(data, source)
    return loose_frame(rows), malformed


def loose_frame(rows: list[dict]) -> pd.DataFrame:
    """JSON objects as a frame of text values (:func:`loose_text`), one column per key in the order keys
    first appear; no rows: the columns of ``RAW_EVENTS``."""
    if not rows:
        return pd.DataFrame(columns=list(RAW_EVENTS), dtype="string")
    return pd.DataFrame([{k: loose_text(v) for k, v in r.items()} for r in rows]).astype("string")


def parse_reference(data: bytes, schema: dict[str, str], *, source: str, name: str) -> pd.DataFrame:
    """A reference file (users, videos) in the canonical schema, used whole or not at all.

    Raises:
        LandingError: a malformed line, a value that cannot be read as its column's type, or a text
            value that breaks its format or looks like personal data (:mod:`recsys.data.formats`). The
            message names the file, the line, the column and the rule; a value only by its hash.
    """
    rows, numbers, malformed = split_jsonl(data, source)
    if len(malformed):
        first = malformed.iloc[0]
        raise LandingError(
            f"{source} line {first['line_number']}: {first['reason']} ({first['error']}); "
            f"{len(malformed)} bad line(s) in all"
        )
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(schema))
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise LandingError(f"{source}: missing column(s) {missing}")
    for col, dtype in schema.items():  # the first cell that does not conform, named by line and column
        try:
            conform(frame[[col]], {col: dtype}, name=name)
        except SchemaError:
            for i in range(len(frame)):
                try:
                    conform(frame[[col]].iloc[[i]], {col: dtype}, name=name)
                except SchemaError:
                    value = fingerprint(frame[col].iloc[i])
                    raise LandingError(
                        f"{source} line {numbers[i]}: column {col!r} cannot be read as {dtype} ({value})"
                    ) from None
    typed = conform(frame, schema, name=name)
    for col, dtype in schema.items():  # the format and personal-data rules of every text column
        if dtype != "string":
            continue
        for rule, rows_bad in (
            (f"pii_in_{col}", looks_personal(col, typed[col])),
            (f"bad_format_{col}", ~format_ok(col, typed[col])),
        ):
            if rows_bad.any():
                i = int(rows_bad.argmax())
                raise LandingError(
                    f"{source} line {numbers[i]}: column {col!r} fails {rule} "
                    f"({fingerprint(typed[col].iloc[i])}; {int(rows_bad.sum())} row(s) in all)"
                )
    return typed


def landing_interactions(lake: Lake, ds: str | date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's raw interaction events (loose text values) and its malformed lines."""
    landed = read_landing(lake, "events", ds)
    return parse_jsonl(landed.data, source=str(landed.path))


def landing_content_metadata(lake: Lake, ds: str | date) -> pd.DataFrame:
    """The video catalog as delivered for the day, in the canonical schema."""
    landed = read_landing(lake, "videos", ds)
    return parse_reference(landed.data, VIDEOS, source=str(landed.path), name="videos")


def landing_contextual_info(lake: Lake, ds: str | date) -> pd.DataFrame:
    """User attributes and devices (context for every impression), in the canonical schema."""
    landed = read_landing(lake, "users", ds)
    return parse_reference(landed.data, RAW_USERS, source=str(landed.path), name="users")


# ------------------------------------------------------------------------------ the seed's readers
def _clean(dataset: str, ds, lake: Lake | None, settings) -> pd.DataFrame:
    from recsys.defaults import ds_or_latest, lake_or_default

    lake = lake_or_default(lake, settings)
    return lake.read_frame("clean", dataset, ds_or_latest(ds, lake, "clean", dataset))


def collect_user_interactions(
    ds: str | date | None = None, *, lake: Lake | None = None, settings=None
) -> pd.DataFrame:
    """The day's interactions as the pipeline stored them: pseudonymized, never a raw user id.

    Args:
        ds: the logical day (default: the latest day in the clean zone).
        lake: default the configured lake (``settings.data_dir``, configured keys).
        settings: default :func:`recsys.config.load_settings`.

    Returns:
        A DataFrame with the columns of ``recsys.data.schema.CLEAN_EVENTS`` (``user_key``, ``video_id``,
        ``ts``, ``clicked``, ``watch_seconds``, ...), one row per impression.
    """
    return _clean("interactions", ds, lake, settings)


def collect_content_metadata(
    ds: str | date | None = None, *, lake: Lake | None = None, settings=None
) -> pd.DataFrame:
    """The video catalog of the day (``video_id``, ``author_id``, ``category``, ``title``, ...).

    Defaults as :func:`collect_user_interactions`. Returns a DataFrame, one row per video.
    """
    return _clean("videos", ds, lake, settings)


def collect_contextual_info(
    ds: str | date | None = None, *, lake: Lake | None = None, settings=None
) -> pd.DataFrame:
    """User attributes of the day, pseudonymized (``user_key``, ``device``, ``region``, ``age_band``, ...).

    Defaults as :func:`collect_user_interactions`. Returns a DataFrame, one row per user.
    """
    return _clean("users", ds, lake, settings)

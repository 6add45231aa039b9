"""The collect stage: landing -> raw zone for one day, the events streamed in chunks with bounded memory.

The day's events file is read once, in blocks: each block is parsed (by chunks of ``chunk_rows`` lines,
with the rules of :func:`recsys.data.sources.parse_lines` and the file's own line numbers) and, as it is
read, encrypted into a staged sealed copy, so the bytes that are parsed are exactly the bytes that are
sealed (a re-delivery while collect runs is neither half-used nor lost: :func:`recsys.data.sources.seal`).
Each chunk is written as Parquet row groups into an encrypted file staged beside its partition
(:meth:`recsys.privacy.crypto.Cipher.writer`: the raw zone's usual format, one Fernet token, built
piece by piece). Nothing is visible until every output is complete: the four raw files are then committed
(renamed, or uploaded under one manifest each at a URL) and only then the landing files sealed. A failed
or killed run leaves only hidden staged files, removed on failure or by the next run of the day
(:func:`recsys.data.lake.clean_orphans`).

The frames are the ones the whole file would give (:func:`recsys.data.sources.parse_jsonl`): columns in
the order their keys first appear in the file. If a key appears after the first chunk's columns were
fixed (a hostile or drifting upstream), the events are written again in a second pass over the staged
sealed copy (or the already-sealed file), never over the landing file again.

The reference files (videos, users) are parsed whole, first, as before: an error in them stops the day
before anything is written. A lake at a URL reads the events file whole (one object GET), then parses
and writes it in chunks as here.

Parsing a chunk (JSON decoding, the rules, the chunk's own Arrow table) is a pure function of its lines
(:func:`parsed_chunk`), so ``map_chunks`` can run it elsewhere: :func:`recsys.scale.map_in_order` on Dask
workers (the stage's choice with a ``tls://`` ``RECSYS_DASK_SCHEDULER``), the results taken in chunk
order. Reading, sealing, the columns (in first-appearance order over the file), writing and committing
stay in this process, so the outputs are the same wherever the chunks were parsed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

import pandas as pd
import pyarrow as pa

from recsys.data.lake import Lake, frame_to_parquet_bytes
from recsys.data.schema import RAW_USERS, VIDEOS
from recsys.data.sources import (
    BOM,
    SEALED_FILE,
    Landed,
    NotLandedError,
    at_url,
    landing_file,
    loose_frame,
    loose_text,
    malformed_frame,
    open_regular,
    parse_lines,
    parse_reference,
    read_landing,
    seal,
)
from recsys.data.staged import FrameFile as _FrameFile
from recsys.data.staged import Staged as _Staged
from recsys.privacy.withheld import ChunkError, withheld  # noqa: F401  (ChunkError: what a chunk raises)

DEFAULT_CHUNK_ROWS = 50_000  # lines per chunk: ~0.5 GB peak for the simulator's events (bench/pipeline.py)
READ_BYTES = 1 << 22  # bytes read (and sealed) from the landing file at a time


# The events file, read once ------------------------------------------------------------------------
class _EventsSource:
    """The day's events landing file opened for one streaming read that seals what it reads.

    ``blocks()`` gives the file's bytes once (sealing them into a staged copy when the file is new);
    ``replay()`` gives the same bytes again from that sealed copy, for a second pass.
    """

    def __init__(self, lake: Lake, ds):
        self.lake, self.ds = lake, ds
        self._whole: Landed | None = None  # a lake at a URL: the object, read whole
        self._file = None
        self._sealing: _Staged | None = None
        self.identity = None
        if at_url(lake):
            self._whole = read_landing(lake, "events", ds)
            self.path, self.sealed = self._whole.path, self._whole.sealed
            return
        plain = landing_file(lake, "events", ds)
        enc = plain.with_name(SEALED_FILE)
        if os.path.lexists(plain):
            self.path, self.sealed = plain, False
            self._file, self.identity = open_regular(lake, plain)
        elif os.path.lexists(enc):
            self.path, self.sealed = enc, True
            self._file, _ = open_regular(lake, enc)
        else:
            raise NotLandedError(f"nothing landed for events on ds={ds} (looked for {plain})")

    def blocks(self) -> Iterator[bytes]:
        if self._whole is not None:
            yield self._whole.data
            return
        if self.sealed:
            yield from self.lake.cipher.decrypt_file(self._file, what=str(self.path))
            return
        self._sealing = _Staged(self.lake, "landing", "events", self.ds, SEALED_FILE)
        while block := self._file.read(READ_BYTES):
            self._sealing.stream.write(block)
            yield block
        self._sealing.close()

    def replay(self) -> Iterator[bytes]:
        if self._whole is not None or self.sealed:
            if self._file is not None:
                self._file.seek(0)
            yield from self.blocks()
            return
        with open(self._sealing.path, "rb") as f:
            yield from self.lake.cipher.decrypt_file(f, what=str(self._sealing.path))

    def seal(self) -> None:
        """Put the sealed copy in place, then remove the plain file if it is still the one read."""
        if self._whole is not None:
            seal(self.lake, self._whole)
            return
        if self.sealed:
            return
        self._sealing.commit()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == self.identity:
            self.path.unlink()

    def close(self, ok: bool) -> None:
        if self._file is not None:
            self._file.close()
        if not ok and self._sealing is not None:
            self._sealing.discard()


def numbered_lines(blocks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a file given in blocks: split on ``\n`` only, a leading BOM dropped, as
    :func:`recsys.data.sources.split_jsonl` does on the whole file. A line longer than a block is joined
    once, when it ends (linear, however long a hostile line is)."""
    number, pending, started, head = 0, [], False, b""
    for block in blocks:
        if not started:
            head += block
            if len(head) < len(BOM) and BOM.startswith(head):
                continue  # too short to tell a BOM yet
            block, started = head.removeprefix(BOM), True
        if b"\n" not in block:
            pending.append(block)
            continue
        lines = block.split(b"\n")
        lines[0] = b"".join([*pending, lines[0]])
        pending = [lines.pop()]
        for line in lines:
            number += 1
            yield number, line
    if not started:
        pending = [head.removeprefix(BOM)]
    yield number + 1, b"".join(pending)


def chunks(lines: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# The stage -----------------------------------------------------------------------------------------
def _events_schema(columns: list[str]) -> pa.Schema:
    return pa.Schema.from_pandas(pd.DataFrame(columns=columns, dtype="string"), preserve_index=False)


def _events_table(rows: list[dict], columns: list[str], schema: pa.Schema) -> pa.Table:
    """The rows as :func:`recsys.data.sources.loose_frame` gives them, in ``columns`` (missing: null),
    built column by column in Arrow (the frame's own conversion is four times slower)."""
    return pa.Table.from_arrays([_text_column([r.get(c) for r in rows]) for c in columns], schema=schema)


_NONE = type(None)


def _text_column(values: list) -> pa.Array:
    """``loose_text`` of every value as a large_string array. Columns of text (the usual case) go to Arrow
    as they are and columns of integers through Arrow's integer-to-text cast (Python's own spelling of an
    int64); anything else (floats, booleans, objects, integers beyond 64 bits) value by value."""
    kinds = set(map(type, values))
    if kinds <= {str, _NONE}:
        return pa.array(values, type=pa.large_string())
    if kinds <= {int, _NONE}:
        with contextlib.suppress(OverflowError, pa.ArrowInvalid):
            return pa.array(values, type=pa.int64()).cast(pa.large_string())
    return pa.array(list(map(loose_text, values)), type=pa.large_string())


class LineChunk:
    """A chunk of the events file's (line number, bytes) pairs on its way to be parsed (on a Dask worker,
    perhaps): its repr, which is what Dask logs of a failed task's arguments, shows no value."""

    __slots__ = ("lines", "source")

    def __init__(self, lines: list[tuple[int, bytes]], source: str):
        self.lines, self.source = lines, source

    def __repr__(self) -> str:
        return f"<LineChunk: {len(self.lines)} landed lines, values withheld>"


@dataclass(frozen=True)
class ParsedChunk:
    """A chunk parsed: its objects as a table of the keys they have (first-appearance order), the count,
    and its malformed lines as the malformed table."""

    keys: list[str]
    rows: int
    table: pa.Table
    malformed: pa.Table


def parsed_chunk(chunk: LineChunk) -> ParsedChunk:
    """Parse ``chunk`` by :func:`recsys.data.sources.parse_lines`'s rules into a :class:`ParsedChunk`: a
    pure function of its lines, wherever it runs."""
    try:
        rows, _, bad = parse_lines(chunk.lines, chunk.source)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        table = _events_table(rows, keys, _events_schema(keys))
        malformed = pa.Table.from_pandas(malformed_frame(bad), preserve_index=False)
        return ParsedChunk(keys, len(rows), table, malformed)
    except Exception as exc:  # its message may quote a landed value: the type and the place only
        raise withheld(exc, f"parsing a chunk of {len(chunk.lines)} landed lines") from None


def _in_columns(table: pa.Table, columns: list[str], schema: pa.Schema) -> pa.Table:
    """A chunk's table in the file's ``columns``: a key its objects lack is a column of nulls, as
    :func:`_events_table` over all ``columns`` gives it."""
    have = set(table.column_names)
    return pa.Table.from_arrays(
        [table.column(c) if c in have else pa.nulls(table.num_rows, pa.large_string()) for c in columns],
        schema=schema,
    )


def _in_process(fn: Callable, items: Iterable) -> Iterator:
    return map(fn, items)


def _write_events(
    lake: Lake, ds, landed: _EventsSource, chunk_rows: int, map_chunks: Callable = _in_process
) -> tuple[_FrameFile, _FrameFile]:
    """One pass over the events (two if a key appears after the first chunk): the staged events and
    malformed files."""
    source = str(landed.path)
    events = _FrameFile(lake, "events", ds, loose_frame([]))
    malformed = _FrameFile(lake, "events_malformed", ds, malformed_frame([]))
    columns: list[str] = []
    schema = None
    n_rows = 0

    def parsed(blocks: Iterable[bytes]) -> Iterator[ParsedChunk]:
        lines = (LineChunk(c, source) for c in chunks(numbered_lines(blocks), chunk_rows))
        return map_chunks(parsed_chunk, lines)

    try:
        for chunk in parsed(landed.blocks()):
            n_rows += chunk.rows
            malformed.write(chunk.malformed)
            known = set(columns)
            new = [k for k in chunk.keys if k not in known]
            if new and schema is not None and events is not None:
                events.discard()  # a late key: the events are written again below, with every column
                events = None
            columns += new
            if events is not None and chunk.rows:
                schema = schema or _events_schema(columns)
                events.write(_in_columns(chunk.table, columns, schema))
        if events is None:
            events = _FrameFile(lake, "events", ds, loose_frame([]), _events_schema(columns))
            for chunk in parsed(landed.replay()):
                events.write(_in_columns(chunk.table, columns, events.schema))
        if n_rows and not columns:  # only objects without a key ({}): a table needs a column to hold
            # rows, so they get a null event_id and reach validate, which judges them (never dropped here)
            events.discard()
            events = _FrameFile(lake, "events", ds, loose_frame([]), _events_schema(["event_id"]))
            events.write(pa.table({"event_id": pa.nulls(n_rows, pa.large_string())}, schema=events.schema))
        return events, malformed
    except BaseException:
        for f in (events, malformed):
            if f is not None:
                f.discard()
        raise


def _stage_frame(lake: Lake, dataset: str, ds, frame: pd.DataFrame) -> _Staged:
    staged = _Staged(lake, "raw", dataset, ds, Lake.frame_file("raw"))
    try:
        staged.stream.write(frame_to_parquet_bytes(frame))
        staged.close()
    except BaseException:
        staged.discard()
        raise
    return staged


def collect_day(
    lake: Lake, ds: str | date, chunk_rows: int = DEFAULT_CHUNK_ROWS, map_chunks: Callable = _in_process
) -> dict:
    """Landing -> raw zone for one day (see the module's docstring); returns the row counts.

    ``chunk_rows``: lines of the events file parsed and written at a time (memory grows with it, not with
    the day; the outputs do not depend on it). ``map_chunks(fn, chunks)``: how the chunks are parsed,
    results in chunk order (default: here, one after another; :func:`recsys.scale.map_in_order` on Dask).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    source = _EventsSource(lake, ds)  # opened first, as before: a day not delivered names its events file
    staged: list[_Staged] = []
    outputs: tuple[_FrameFile, ...] = ()
    ok = False
    try:
        refs = {d: read_landing(lake, d, ds) for d in ("videos", "users")}
        v, u = refs["videos"], refs["users"]
        videos = parse_reference(v.data, VIDEOS, source=str(v.path), name="videos")
        users = parse_reference(u.data, RAW_USERS, source=str(u.path), name="users")
        counts = {"videos_rows": len(videos), "users_rows": len(users)}
        staged += [_stage_frame(lake, "videos", ds, videos), _stage_frame(lake, "users", ds, users)]
        del videos, users
        outputs = events, malformed = _write_events(lake, ds, source, chunk_rows, map_chunks)
        staged += [f.finish() for f in outputs]
        for one in staged:
            one.commit()
        ok = True
    finally:
        source.close(ok)
        if not ok:
            for one in [*staged, *outputs]:
                with contextlib.suppress(Exception):  # one failed clean-up must not keep the others
                    one.discard()
    source.seal()
    for one in refs.values():
        seal(lake, one)
    return {
        "input_rows": events.rows + malformed.rows,
        "malformed_rows": malformed.rows,
        **counts,
    }

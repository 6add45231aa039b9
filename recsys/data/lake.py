"""The data lake: zones of files partitioned by logical date, written atomically.

Layout under the root::

    landing/<dataset>/ds=YYYY-MM-DD/part-0.jsonl[.enc]   raw, as delivered (encrypted after collection)
    raw/<dataset>/ds=.../part-0.parquet.enc               raw identifiers, always encrypted
    quarantine/<dataset>/ds=.../part-0.parquet.enc        rejected rows + reason (raw ids: encrypted)
    clean/<dataset>/ds=.../part-0.parquet                 pseudonymous
    features/ds=.../{train,valid,test}.parquet            model inputs + labels
    reports/...                                           validation Data Docs, evaluation pages

Every write goes to a temporary name in the same folder and is renamed into place, so a reader (or a
rerun after a crash) never sees a half-written file. Writing a partition replaces it: rerunning a day
gives the same result. A temporary name carries its writer's host and pid (``.<name>.tmp-<host>.<pid>-<hex>``)
so that the next run of a day can remove what a killed run left behind (:func:`clean_orphans`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.privacy.crypto import Cipher

ZONES = ("landing", "raw", "quarantine", "clean", "features", "recs", "reports")
ENCRYPTED_ZONES = ("raw", "quarantine")


def as_date(ds: str | date) -> date:
    return ds if isinstance(ds, date) else date.fromisoformat(str(ds)[:10])


ORPHAN_AGE_SECONDS = 3600.0  # a temp file this old is a dead run's, whoever wrote it
_TMP = re.compile(r"^\..+\.(tmp|old)-(?:(?P<host>[A-Za-z0-9_.-]+)\.(?P<pid>\d+)-)?[0-9a-f]{8}$")


def temp_name(name: str, kind: str = "tmp") -> str:
    """A hidden sibling name for ``name`` that records the writer (host, pid) for :func:`clean_orphans`."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
    return f".{name}.{kind}-{host}.{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _writer_alive(host: str | None, pid: str | None) -> bool:
    if host is None or pid is None or host != re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]:
        return True  # not ours to judge: only age decides
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_orphans(root: Path | str, ds: str | date, *, max_age: float = ORPHAN_AGE_SECONDS) -> list[Path]:
    """Remove the temporary files and folders that dead runs left in the partitions of ``ds``.

    A temp entry is removed when its writer (host, pid in its name) is this host and no longer alive, or
    when it is older than ``max_age`` seconds. Called by a stage while it holds the day's stage lock.
    """
    root, tag = Path(root), f"ds={as_date(ds).isoformat()}"
    found = [*root.glob(f"*/*/{tag}/.*"), *root.glob(f"*/*/.{tag}.*"), *root.glob(f"*/runs/{tag}/.*")]
    found += [*root.glob(f"*/{tag}/.*"), *root.glob(f"*/.{tag}.*")]
    removed, now = [], time.time()
    for p in sorted(set(found)):
        m = _TMP.match(p.name)
        if not m:
            continue
        try:
            old = now - p.lstat().st_mtime > max_age
        except FileNotFoundError:
            continue
        if old or not _writer_alive(m.group("host"), m.group("pid")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def frame_to_parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


class Lake:
    """Files by zone, dataset and logical date; ``cipher`` encrypts the raw-identifier zones."""

    def __init__(self, root: Path | str, cipher: Cipher | None = None):
        self.root = Path(root)
        self._cipher = cipher

    @property
    def cipher(self) -> Cipher:
        if self._cipher is None:
            raise RuntimeError("this lake was opened without encryption keys")
        return self._cipher

    def partition(self, zone: str, dataset: str, ds: str | date) -> Path:
        if zone not in ZONES:
            raise ValueError(f"unknown zone {zone!r}")
        return self.root / zone / dataset / f"ds={as_date(ds).isoformat()}"

    def list_ds(self, zone: str, dataset: str) -> list[date]:
        base = self.root / zone / dataset
        if not base.exists():
            return []
        out = []
        for p in base.iterdir():
            if p.is_dir() and p.name.startswith("ds=") and any(p.iterdir()):
                out.append(date.fromisoformat(p.name[3:]))
        return sorted(out)

    # Frames -----------------------------------------------------------------------------------
    def _frame_path(self, zone: str, dataset: str, ds, name: str) -> Path:
        suffix = ".parquet.enc" if zone in ENCRYPTED_ZONES else ".parquet"
        return self.partition(zone, dataset, ds) / f"{name}{suffix}"

    def write_frame(self, zone: str, dataset: str, ds, df: pd.DataFrame, name: str = "part-0") -> Path:
        """Write ``df`` as the partition's file ``name``, replacing it atomically."""
        data = frame_to_parquet_bytes(df)
        if zone in ENCRYPTED_ZONES:
            data = self.cipher.encrypt(data)
        return atomic_write_bytes(self._frame_path(zone, dataset, ds, name), data)

    def has_frame(self, zone: str, dataset: str, ds, name: str = "part-0") -> bool:
        return self._frame_path(zone, dataset, ds, name).exists()

    @staticmethod
    def frame_file(zone: str, name: str = "part-0") -> str:
        """The file name of frame ``name`` in a partition of ``zone`` (encrypted zones: ``.parquet.enc``)."""
        return f"{name}.parquet.enc" if zone in ENCRYPTED_ZONES else f"{name}.parquet"

    # Files written in pieces, then committed ------------------------------------------------------
    def stage(self, zone: str, dataset: str, ds, name: str) -> Path:
        """A local temporary path to write the partition's file ``name`` to before :meth:`commit`.

        Here a hidden sibling in the partition folder (:func:`temp_name`: a killed writer's file is
        removed by :func:`clean_orphans`); readers see nothing of it.
        """
        part = self.partition(zone, dataset, ds)
        part.mkdir(parents=True, exist_ok=True)
        return part / temp_name(name)

    def commit(self, zone: str, dataset: str, ds, name: str, staged: Path) -> None:
        """Put the staged file (complete and synced to disk) in place as the partition's file ``name``."""
        os.replace(staged, self.partition(zone, dataset, ds) / name)

    def frame_writer(self, zone: str, dataset: str, ds, name: str = "part-0") -> FrameWriter:
        """A writer of the partition's frame ``name`` in pieces (Parquet row groups), committed whole at
        the end (:class:`FrameWriter`); plaintext zones only."""
        return FrameWriter(self, zone, dataset, ds, name)

    def read_frame(
        self, zone: str, dataset: str, ds, name: str = "part-0", columns: list[str] | None = None
    ) -> pd.DataFrame:
        """The partition's frame ``name`` (``columns``: only those, read from the file alone)."""
        path = self._frame_path(zone, dataset, ds, name)
        if not path.exists():
            raise FileNotFoundError(f"no {zone}/{dataset} partition for ds={as_date(ds)} ({path})")
        data = path.read_bytes()
        if zone in ENCRYPTED_ZONES:
            data = self.cipher.decrypt(data, what=str(path))
        return pd.read_parquet(io.BytesIO(data), columns=columns)

    def _open_file(self, zone: str, dataset: str, ds, fname: str):
        """The partition's file ``fname`` opened for reading (seekable), and a name for messages."""
        path = self.partition(zone, dataset, ds) / fname
        if not path.exists():
            raise FileNotFoundError(f"no {zone}/{dataset} partition for ds={as_date(ds)} ({path})")
        return open(path, "rb"), str(path)  # noqa: SIM115 (closed by open_frame)

    @contextlib.contextmanager
    def open_frame(self, zone: str, dataset: str, ds, name: str = "part-0") -> Iterator[FrameReader]:
        """The partition's frame ``name`` opened for reading in chunks (:class:`FrameReader`), decrypted
        where it is read in the encrypted zones: memory follows the chunk, not the file."""
        f, what = self._open_file(zone, dataset, ds, self.frame_file(zone, name))
        try:
            plain = self.cipher.open_file(f, what=what) if zone in ENCRYPTED_ZONES else f
            yield FrameReader(plain, what)
        finally:
            f.close()

    def read_window(self, zone: str, dataset: str, start, end, name: str = "part-0") -> pd.DataFrame:
        """Concatenate the partitions with start <= ds <= end (missing days are skipped)."""
        start, end = as_date(start), as_date(end)
        frames = [
            self.read_frame(zone, dataset, d, name)
            for d in self.list_ds(zone, dataset)
            if start <= d <= end and self.has_frame(zone, dataset, d, name)
        ]
        if not frames:
            raise FileNotFoundError(f"no {zone}/{dataset} partitions between {start} and {end}")
        return pd.concat(frames, ignore_index=True)

    # Partitions as folders --------------------------------------------------------------------
    def replace_partition(self, zone: str, dataset: str, ds, build) -> Path:
        """Build a whole partition folder in a temporary folder, then swap it in.

        ``build(tmp_dir)`` writes the files. If it raises, the old partition is untouched.
        """
        final = self.partition(zone, dataset, ds)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(temp_name(final.name))
        tmp.mkdir()
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = final.with_name(temp_name(final.name, "old"))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def drop_partition(self, zone: str, dataset: str, ds) -> None:
        shutil.rmtree(self.partition(zone, dataset, ds), ignore_errors=True)

    # Single files of a partition (landing deliveries) and local access ---------------------------
    def write_bytes(self, zone: str, dataset: str, ds, name: str, data: bytes, drop=()) -> Path:
        """Write ``data`` as the partition's file ``name`` atomically, then remove the files ``drop``."""
        part = self.partition(zone, dataset, ds)
        path = atomic_write_bytes(part / name, data)
        for other in drop:
            (part / other).unlink(missing_ok=True)
        return path

    def read_bytes(self, zone: str, dataset: str, ds, name: str) -> bytes:
        return (self.partition(zone, dataset, ds) / name).read_bytes()

    def has_file(self, zone: str, dataset: str, ds, name: str) -> bool:
        return (self.partition(zone, dataset, ds) / name).exists()

    def remove_file(self, zone: str, dataset: str, ds, name: str) -> None:
        (self.partition(zone, dataset, ds) / name).unlink(missing_ok=True)

    def local_dir(self, zone: str, dataset: str, ds) -> Path:
        """A local folder holding the partition's files (here: the partition itself)."""
        return self.partition(zone, dataset, ds)


class FrameWriter:
    """One frame of a partition written a piece at a time: each :meth:`write` appends row groups to a file
    staged with :meth:`Lake.stage` (a hidden sibling on disk, a local file for a lake at a URL), and
    :meth:`commit` syncs it and puts it in place with :meth:`Lake.commit` (a rename, or an upload under
    one manifest). Readers see the old frame or the whole new one; on an error (``with`` block) the
    staged file is removed, and a killed writer's is removed by the next run (:func:`clean_orphans`).

    The schema (with its pandas metadata) is the first piece's: the file reads back as
    ``pd.concat(pieces, ignore_index=True)`` when the pieces share their dtypes; no rows at all: the first
    (empty) piece is written as a whole-frame write would.
    """

    def __init__(self, lake: Lake, zone: str, dataset: str, ds, name: str = "part-0"):
        if zone in ENCRYPTED_ZONES:
            raise ValueError(f"{zone} is encrypted: its frames are written whole (Lake.write_frame)")
        self.lake, self.where = lake, (zone, dataset, ds)
        self.file = Lake.frame_file(zone, name)
        self.rows = 0
        self._path: Path | None = None
        self._writer = None
        self._schema = None
        self._empty: pd.DataFrame | None = None

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._empty is None:
            self._empty = df.iloc[:0]
        if len(df) == 0:
            return
        if self._writer is None:
            self._path = Path(self.lake.stage(*self.where, self.file))
            table = pa.Table.from_pandas(df, preserve_index=False)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._path, self._schema)
        else:
            table = pa.Table.from_pandas(df, schema=self._schema, preserve_index=False)
        self._writer.write_table(table)
        self.rows += len(df)

    def commit(self) -> None:
        if self._writer is None:  # nothing written: the (empty) frame whole
            if self._empty is None:
                raise ValueError("no frame was written, not even an empty one (its columns are unknown)")
            self._path = Path(self.lake.stage(*self.where, self.file))
            self._path.write_bytes(frame_to_parquet_bytes(self._empty))
        else:
            self._writer.close()
            self._writer = None
        try:
            with open(self._path, "rb+") as f:
                os.fsync(f.fileno())
            self.lake.commit(*self.where, self.file, self._path)
        except BaseException:
            self.discard()
            raise
        self._path = None

    def discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the file is removed next, whatever state it is in
                self._writer.close()
            self._writer = None
        if self._path is not None:
            Path(self._path).unlink(missing_ok=True)
            self._path = None

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class FrameReader:
    """One Parquet frame of the lake read in chunks of rows (Arrow tables), whatever its row groups."""

    def __init__(self, f, what: str):
        self._f, self.what = f, what
        self.file = pq.ParquetFile(f)
        self.num_rows = self.file.metadata.num_rows
        self.schema = self.file.schema_arrow

    def batches(self, chunk_rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The frame's rows in order, ``chunk_rows`` at a time (the last chunk may be shorter)."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        held: list[pa.RecordBatch] = []
        n = 0
        for batch in self.file.iter_batches(batch_size=min(chunk_rows, 1 << 16), columns=columns):
            held.append(batch)
            n += batch.num_rows
            while n >= chunk_rows:
                table = pa.Table.from_batches(held)
                yield table.slice(0, chunk_rows)
                rest = table.slice(chunk_rows)
                held, n = rest.to_batches(), rest.num_rows
        if n:
            yield pa.Table.from_batches(held, schema=self.schema if columns is None else None)

    def frame_batches(self, chunk_rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """:meth:`batches` as the frames :meth:`Lake.read_frame` gives for those rows."""
        for table in self.batches(chunk_rows, columns):
            yield table.to_pandas().reset_index(drop=True)

    def verify(self) -> None:
        """For an encrypted file: authenticate it again (it did not change while it was read)."""
        if hasattr(self._f, "verify_again"):
            self._f.verify_again()

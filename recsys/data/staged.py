"""Files of the lake written in pieces (a frame as Parquet row groups), encrypted as they are written in the
raw-identifier zones, and committed only when complete; discarded (or left hidden for
:func:`recsys.data.lake.clean_orphans`) otherwise. Used by the chunked stages (collect, validate,
anonymize)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.lake import ENCRYPTED_ZONES, Lake, frame_to_parquet_bytes


class Staged:
    """A file of the lake written in pieces, then committed or discarded; encrypted as it is written in
    the raw-identifier zones and landing (a sealed copy), plain in the pseudonymous zones."""

    def __init__(self, lake: Lake, zone: str, dataset: str, ds, name: str):
        self.lake, self.where, self.name = lake, (zone, dataset, ds), name
        self.path = lake.stage(zone, dataset, ds, name)
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close() or discard())
        encrypted = zone in ENCRYPTED_ZONES or zone == "landing"
        self._enc = lake.cipher.writer(self._file) if encrypted else None
        self.stream = self._file if self._enc is None else io.BufferedWriter(self._enc, 1 << 20)

    def close(self) -> Path:
        """Finish the encrypted file and sync it to disk (still staged)."""
        if not self._file.closed:
            self.stream.flush()
            if self._enc is not None:
                self._enc.finish()  # the only way the token is completed
                self.stream.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return self.path

    def commit(self) -> None:
        self.close()
        self.lake.commit(*self.where, self.name, self.path)

    def discard(self) -> None:
        """Remove the staged file (after an error: whatever state its writer is in)."""
        try:
            if not self._file.closed:
                if self._enc is not None:
                    self._enc.abort()  # the token is left unfinished: no reader would accept the file
                with contextlib.suppress(Exception):
                    self.stream.close()
                self._file.close()
        finally:
            self.path.unlink(missing_ok=True)


class FrameFile:
    """Chunks of one frame as row groups of one Parquet file of ``zone`` (encrypted in the raw-identifier
    zones), the schema taken from ``schema`` or the first non-empty chunk; no chunk at all: ``empty``
    written whole."""

    def __init__(
        self,
        lake: Lake,
        dataset: str,
        ds,
        empty: pd.DataFrame,
        schema: pa.Schema | None = None,
        zone: str = "raw",
    ):
        self.lake, self.dataset, self.ds, self.empty, self.zone = lake, dataset, ds, empty, zone
        self.schema, self.rows = schema, 0
        self._staged: Staged | None = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self.schema = self.schema or table.schema
            self._staged = Staged(self.lake, self.zone, self.dataset, self.ds, Lake.frame_file(self.zone))
            self._writer = pq.ParquetWriter(self._staged.stream, self.schema)
        self._writer.write_table(table.cast(self.schema) if table.schema != self.schema else table)
        self.rows += table.num_rows

    def finish(self) -> Staged:
        if self._writer is None:  # nothing written: the whole (empty) frame, as a frame write gives it
            self._staged = Staged(self.lake, self.zone, self.dataset, self.ds, Lake.frame_file(self.zone))
            self._staged.stream.write(frame_to_parquet_bytes(self.empty))
        else:
            self._writer.close()
        self._staged.close()
        return self._staged

    def discard(self) -> None:
        if self._staged is not None:
            self._staged.discard()  # first: the Parquet footer written below goes nowhere
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()

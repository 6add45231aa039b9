"""The lake at a URL (``RECSYS_LAKE_URL``): the same zones and methods as :class:`Lake`, on fsspec.

Every zone lives under the URL (``s3://bucket/prefix/<zone>/<dataset>/ds=D``) and every partition is
committed through a manifest (:mod:`recsys.data.store`), so a reader never sees half a partition, on
S3 as on disk. The raw-identifier zones are encrypted in this process before a byte leaves it, exactly
as on the local lake; landing files are sealed (encrypted) once collected.

What needs a local path (TensorFlow's Parquet reader in training, the evaluation) gets one through
:meth:`ObjectLake.local_dir`: the committed files are copied into a cache under ``data_dir/cache/lake``,
one folder per commit, so a cached copy is never stale nor partial.
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd

from recsys.data.lake import ENCRYPTED_ZONES, ZONES, Lake, as_date, frame_to_parquet_bytes, temp_name
from recsys.data.store import PartitionStore, open_store
from recsys.privacy.crypto import Cipher


def open_lake(settings, data_dir: Path, cipher: Cipher | None = None) -> Lake:
    """The lake ``settings`` name: a local :class:`Lake` under ``data_dir`` unless ``lake_url`` is set."""
    if not settings.lake_url:
        return Lake(data_dir, cipher)
    return ObjectLake(open_store(settings.lake_url, settings.s3), data_dir / "cache" / "lake", cipher)


class ObjectLake(Lake):
    """:class:`Lake` over a :class:`PartitionStore`; ``cache`` is where :meth:`local_dir` copies to."""

    def __init__(self, store: PartitionStore, cache: Path | str, cipher: Cipher | None = None):
        super().__init__(cache, cipher)
        self.store = store
        self.url = store.url

    def _part(self, zone: str, dataset: str, ds) -> str:
        if zone not in ZONES:
            raise ValueError(f"unknown zone {zone!r}")
        return f"{zone}/{dataset}/ds={as_date(ds).isoformat()}"

    def partition(self, zone: str, dataset: str, ds) -> str:  # type: ignore[override]
        """The partition's URL (a string: code that joins paths onto it must use the lake's methods)."""
        return self.store.url_of(self._part(zone, dataset, ds))

    def list_ds(self, zone: str, dataset: str) -> list[date]:
        return [date.fromisoformat(p[3:]) for p in self.store.partitions(f"{zone}/{dataset}")]

    # Frames -----------------------------------------------------------------------------------
    @staticmethod
    def _frame_name(zone: str, name: str) -> str:
        return f"{name}.parquet.enc" if zone in ENCRYPTED_ZONES else f"{name}.parquet"

    def write_frame(self, zone: str, dataset: str, ds, df: pd.DataFrame, name: str = "part-0") -> str:
        data = frame_to_parquet_bytes(df)
        if zone in ENCRYPTED_ZONES:
            data = self.cipher.encrypt(data)
        return self.write_bytes(zone, dataset, ds, self._frame_name(zone, name), data)

    def has_frame(self, zone: str, dataset: str, ds, name: str = "part-0") -> bool:
        return self.has_file(zone, dataset, ds, self._frame_name(zone, name))

    def read_frame(
        self, zone: str, dataset: str, ds, name: str = "part-0", columns: list[str] | None = None
    ) -> pd.DataFrame:
        fname = self._frame_name(zone, name)
        try:
            data = self.read_bytes(zone, dataset, ds, fname)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no {zone}/{dataset} partition for ds={as_date(ds)} ({self.partition(zone, dataset, ds)})"
            ) from None
        if zone in ENCRYPTED_ZONES:
            data = self.cipher.decrypt(data, what=f"{self.partition(zone, dataset, ds)}/{fname}")
        return pd.read_parquet(io.BytesIO(data), columns=columns)

    def _open_file(self, zone: str, dataset: str, ds, fname: str):
        """The object read whole (one GET) into memory: its ciphertext, decrypted where it is read."""
        try:
            data = self.read_bytes(zone, dataset, ds, fname)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no {zone}/{dataset} partition for ds={as_date(ds)} ({self.partition(zone, dataset, ds)})"
            ) from None
        return io.BytesIO(data), f"{self.partition(zone, dataset, ds)}/{fname}"

    # Files of a partition ----------------------------------------------------------------------
    def write_bytes(
        self, zone: str, dataset: str, ds, name: str, data: bytes, drop: Iterable[str] = ()
    ) -> str:
        part = self._part(zone, dataset, ds)
        self.store.publish(part, {name: data}, replace=False, drop=drop)
        return self.store.url_of(part, name)

    def read_bytes(self, zone: str, dataset: str, ds, name: str) -> bytes:
        return self.store.read(self._part(zone, dataset, ds), name)

    def has_file(self, zone: str, dataset: str, ds, name: str) -> bool:
        return self.store.has(self._part(zone, dataset, ds), name)

    def remove_file(self, zone: str, dataset: str, ds, name: str) -> None:
        part = self._part(zone, dataset, ds)
        if self.store.has(part, name):
            self.store.publish(part, {}, replace=False, drop=[name])

    def stage(self, zone: str, dataset: str, ds, name: str) -> Path:  # type: ignore[override]
        """A temporary file under the local cache, in the partition's folder there; committed by upload."""
        folder = self.root / zone / dataset / f"ds={as_date(ds).isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / temp_name(name)

    def commit(self, zone: str, dataset: str, ds, name: str, staged: Path) -> None:
        """Upload the staged file (without reading it whole) and commit it in one manifest, then drop it."""
        self.store.publish(self._part(zone, dataset, ds), {name: Path(staged)}, replace=False)
        Path(staged).unlink(missing_ok=True)

    # Partitions as folders --------------------------------------------------------------------
    def replace_partition(self, zone: str, dataset: str, ds, build) -> str:
        """``build(tmp_dir)`` writes the files in a local temporary folder; they are then committed as
        the whole partition in one manifest. If ``build`` raises, nothing is committed."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".build-") as tmp:
            build(Path(tmp))
            files = {p.relative_to(tmp).as_posix(): p for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
            # uploaded file by file from the build folder, never all in memory
            self.store.publish(self._part(zone, dataset, ds), files, replace=True)
        return self.partition(zone, dataset, ds)

    def drop_partition(self, zone: str, dataset: str, ds) -> None:
        self.store.drop(self._part(zone, dataset, ds))

    def local_dir(self, zone: str, dataset: str, ds) -> Path:
        """A local copy of the committed partition, ``<cache>/<zone>/<dataset>/<attempt>/ds=D`` (one folder
        per commit: a later commit gets a new folder; the copy is made aside and renamed into place)."""
        part = self._part(zone, dataset, ds)
        m = self.store.manifest(part)
        if m is None:
            raise FileNotFoundError(
                f"no {zone}/{dataset} partition for ds={as_date(ds)} ({self.partition(zone, dataset, ds)})"
            )
        base = self.root / zone / dataset / m["attempt"]
        final = base / f"ds={as_date(ds).isoformat()}"
        if final.exists():
            return final
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for name in m["files"]:
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.store.read(part, name, m))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.exists():
                raise
        for stale in (self.root / zone / dataset).glob(f"*/ds={as_date(ds).isoformat()}"):
            if stale != final:  # copies of earlier commits of this day
                shutil.rmtree(stale, ignore_errors=True)
        return final

    # Key rotation ----------------------------------------------------------------------------
    def rotate_encrypted(self, zones: Iterable[str], verify_with: Cipher | None = None) -> dict[str, int]:
        """Re-encrypt every ``.enc`` file of ``zones`` under the cipher's newest key, one commit per
        partition (a reader sees all of a partition's files under the old key or all under the new);
        ``verify_with`` (the newest key alone) then decrypts each one back. Files rotated, by zone."""
        counts: dict[str, int] = {}
        for zone in zones:
            counts[zone] = 0
            for dataset in sorted(posixpath.basename(p.rstrip("/")) for p in self.store._children(zone)):
                for ds in self.store.partitions(f"{zone}/{dataset}"):
                    part = f"{zone}/{dataset}/{ds}"
                    m = self.store.manifest(part)
                    names = [n for n in (m["files"] if m else {}) if n.endswith(".enc")]
                    if not names:
                        continue
                    rotated = {
                        n: self.cipher.rotate(self.store.read(part, n, m), what=self.store.url_of(part, n))
                        for n in names
                    }
                    self.store.publish(part, rotated, replace=False)
                    if verify_with is not None:
                        for n in names:
                            verify_with.decrypt(self.store.read(part, n), what=self.store.url_of(part, n))
                    counts[zone] += len(names)
        return counts

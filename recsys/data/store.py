"""Partitions on any fsspec filesystem (local disk, S3), published atomically through a manifest.

Object stores have no rename, so a partition cannot be built aside and swapped in. Instead every write
of a partition goes to a fresh *attempt* prefix, and a small manifest names the files that make up the
partition, written last in one PUT (S3 makes a single PUT visible whole or not at all)::

    <partition>/_attempt=<uuid>/part-0.parquet.enc     the files of one write
    <partition>/_manifest.json                          {"attempt", "files": {name: {key, size, sha256}}}

Readers resolve a partition through its manifest only: they see the previous partition or the new one,
never half of one. A writer killed before its manifest PUT leaves an orphan attempt that no reader
looks at; the next commit of that partition removes attempts its manifest no longer references. Each
file read is checked against the manifest's size and SHA-256, so a torn or damaged object is an error,
not data.

One writer per partition at a time (each pipeline task owns its day's partitions); two concurrent
writers of the same partition would both commit, the last manifest winning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "_manifest.json"
ATTEMPT_PREFIX = "_attempt="


class CorruptPartitionError(RuntimeError):
    """A file does not match the size or digest its partition's manifest recorded."""


def storage_options(url: str, s3: Any = None) -> dict[str, Any]:
    """fsspec options for ``url`` from typed settings (``s3``: :class:`recsys.config.S3Settings`)."""
    if url.startswith(("s3://", "s3a://")):
        opts: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
        if s3 is not None:
            client: dict[str, Any] = {}
            if s3.endpoint_url:
                client["endpoint_url"] = s3.endpoint_url
            if s3.region:
                client["region_name"] = s3.region
            if client:
                opts["client_kwargs"] = client
            if s3.access_key_id is not None and s3.secret_access_key is not None:
                opts["key"] = s3.access_key_id.get_secret_value()
                opts["secret"] = s3.secret_access_key.get_secret_value()
        return opts
    if "://" not in url or url.startswith("file://"):
        return {"auto_mkdir": True}
    return {}


def open_store(url: str, s3: Any = None) -> PartitionStore:
    """The store at ``url`` (``s3://bucket/prefix``, ``file:///path`` or a plain path)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **storage_options(url, s3))
    return PartitionStore(fs, root, url=url)


class PartitionStore:
    """Manifest-committed partitions under ``root`` of filesystem ``fs``; keys are ``/``-joined."""

    def __init__(self, fs, root: str, *, url: str | None = None):
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = (url or root).rstrip("/")
        self.local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))

    def key(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url_of(self, *parts: str) -> str:
        return posixpath.join(self.url, *parts)

    # Objects ---------------------------------------------------------------------------------
    def _put(self, key: str, data: bytes) -> None:
        """One object, visible whole or not at all: a PUT on S3, temporary file + rename on disk."""
        if self.local:
            from recsys.data.lake import atomic_write_bytes

            atomic_write_bytes(Path(key), data)
        else:
            self.fs.pipe_file(key, data)

    def _put_file(self, key: str, path: Path) -> tuple[int, str]:
        """Upload the local file ``path`` to ``key`` without reading it whole; its (size, SHA-256)."""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 23), b""):
                digest.update(chunk)
        if self.local:
            target = Path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:
            self.fs.put_file(str(path), key)  # multipart for large files
        return path.stat().st_size, digest.hexdigest()

    def _get(self, key: str) -> bytes:
        return self.fs.cat_file(key)

    # Manifests -------------------------------------------------------------------------------
    def manifest(self, partition: str) -> dict | None:
        """The committed manifest of ``partition`` (a key relative to the root), None if uncommitted."""
        try:
            return json.loads(self._get(self.key(partition, MANIFEST)))
        except FileNotFoundError:
            return None

    def publish(
        self,
        partition: str,
        files: Mapping[str, bytes | Path],
        *,
        replace: bool = True,
        drop: Iterable[str] = (),
    ) -> dict:
        """Commit ``files`` (name -> bytes, or a local file to upload) to ``partition``; return the manifest.

        ``replace``: the partition becomes exactly ``files``; otherwise they are added to (or replace
        files of the same name in) the committed partition, and the names in ``drop`` are removed, in
        the same commit. Nothing is visible to readers before the manifest PUT at the end.
        """
        attempt = f"{ATTEMPT_PREFIX}{uuid.uuid4().hex}"
        old = None if replace else self.manifest(partition)
        entries = dict(old["files"]) if old else {}
        for name in drop:
            entries.pop(name, None)
        for name, data in files.items():
            rel = f"{attempt}/{name}"
            if isinstance(data, Path):
                size, digest = self._put_file(self.key(partition, rel), data)
            else:
                self._put(self.key(partition, rel), data)
                size, digest = len(data), hashlib.sha256(data).hexdigest()
            entries[name] = {"key": rel, "size": size, "sha256": digest}
        manifest = {
            "format": 1,
            "attempt": attempt,
            "committed_at": datetime.now(UTC).isoformat(),
            "files": dict(sorted(entries.items())),
        }
        self._put(self.key(partition, MANIFEST), json.dumps(manifest, indent=1).encode())
        self.collect_garbage(partition, manifest)
        return manifest

    def collect_garbage(self, partition: str, manifest: dict | None = None) -> list[str]:
        """Remove the attempts of ``partition`` its manifest does not reference (earlier commits, writers
        killed before committing); return the removed attempt names."""
        manifest = manifest if manifest is not None else self.manifest(partition)
        if manifest is None:
            return []
        live = {e["key"].split("/", 1)[0] for e in manifest["files"].values()}
        removed = []
        for child in self._children(partition):
            name = posixpath.basename(child.rstrip("/"))
            if name.startswith(ATTEMPT_PREFIX) and name not in live:
                self.fs.rm(child, recursive=True)
                removed.append(name)
        return removed

    def _children(self, prefix: str) -> list[str]:
        try:
            return self.fs.ls(self.key(prefix), detail=False)
        except FileNotFoundError:
            return []

    # Reading ---------------------------------------------------------------------------------
    def names(self, partition: str) -> list[str]:
        m = self.manifest(partition)
        return list(m["files"]) if m else []

    def has(self, partition: str, name: str) -> bool:
        m = self.manifest(partition)
        return bool(m) and name in m["files"]

    def read(self, partition: str, name: str, manifest: dict | None = None) -> bytes:
        """The committed file ``name`` of ``partition``, checked against the manifest (``manifest``: read
        through that commit, e.g. to copy several files of one commit; otherwise the current one)."""
        for _ in range(1 if manifest else 3):  # a commit + clean-up between manifest and file: retry
            m = manifest or self.manifest(partition)
            if not m or name not in m["files"]:
                raise FileNotFoundError(f"no committed {name} in {self.url_of(partition)}")
            entry = m["files"][name]
            try:
                data = self._get(self.key(partition, entry["key"]))
            except FileNotFoundError:
                continue
            if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise CorruptPartitionError(
                    f"{self.url_of(partition, entry['key'])} does not match its manifest "
                    f"({len(data)} bytes, expected {entry['size']})"
                )
            return data
        raise FileNotFoundError(f"{name} of {self.url_of(partition)} kept changing while read")

    def partitions(self, prefix: str) -> list[str]:
        """The committed partition names (``ds=...``) directly under ``prefix``, sorted."""
        out = []
        for child in self._children(prefix):
            name = posixpath.basename(child.rstrip("/"))
            if name.startswith("ds=") and self.fs.exists(self.key(prefix, name, MANIFEST)):
                out.append(name)
        return sorted(out)

    def drop(self, partition: str) -> None:
        """Delete ``partition``: the manifest first (readers stop seeing it at once), then its files."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.key(partition, MANIFEST))
        if self.fs.exists(self.key(partition)):
            self.fs.rm(self.key(partition), recursive=True)

"""Find pseudonyms in bytes: every form a ``user_key`` can take inside a saved file.

A pseudonym is 32 hex characters (:func:`recsys.privacy.pseudonymize.pseudonym`). A file can hold it as
text (JSON, a pickled ``str``, HDF5 attribute strings), in upper case, or as the 16 bytes the hex spells
(a binary column, a pickled ``bytes``); and compressed inside a zip (``model.keras``) or gzip member,
where a plain byte search would miss it. :func:`find_keys` looks at all of these, so the erasure can tell
which model artifacts still hold a user and prove that the repaired ones do not.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

_HEX32 = re.compile(rb"[0-9a-f]{32}")
MAX_DEPTH = 3  # zip inside zip inside gzip: deeper nesting is not something we write


def _views(data: bytes, depth: int = 0) -> Iterable[bytes]:
    """The bytes themselves, then the members of a zip or the content of a gzip stream (recursively)."""
    yield data
    if depth >= MAX_DEPTH:
        return
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = [z.read(m) for m in z.namelist()]
        except (zipfile.BadZipFile, ValueError):
            return
        for sub in members:
            yield from _views(sub, depth + 1)
    elif data[:2] == b"\x1f\x8b":
        try:
            sub = gzip.decompress(data)
        except (OSError, EOFError):
            return
        yield from _views(sub, depth + 1)


def find_keys(data: bytes, keys: Iterable[str]) -> set[str]:
    """The pseudonyms of ``keys`` that ``data`` holds as hex (either case) or as their 16 raw bytes."""
    wanted = {k.lower() for k in keys}
    if not wanted:
        return set()
    raw = {bytes.fromhex(k): k for k in wanted if _HEX32.fullmatch(k.encode())}
    found: set[str] = set()
    for view in _views(data):
        low = view.lower()  # ASCII only: binary bytes stay as they are
        found |= {k for k in wanted - found if k.encode() in low}
        found |= {k for b, k in raw.items() if k not in found and b in view}
        if found == wanted:
            break
    return found


def files_holding(root: Path, keys: Iterable[str]) -> dict[Path, set[str]]:
    """Every file under ``root`` (or ``root`` itself) that holds one of ``keys``, with the keys it holds."""
    keys = set(keys)
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = {}
    for p in files:
        hits = find_keys(p.read_bytes(), keys)
        if hits:
            out[p] = hits
    return out

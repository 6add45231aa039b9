"""Encrypted storage of a frame at rest: the seed's ``secure_storage``, and reading it back.

A frame is written as Parquet, encrypted with the project's :class:`recsys.privacy.crypto.Cipher`
(Fernet under the configured keys, newest first: the same encryption as the lake's raw zone), and
renamed into place, so a reader never sees half a file. :func:`read_secure` decrypts with any configured
key, so data stored before a key rotation still reads; a wrong key raises ``DecryptionError``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SUFFIX = ".parquet.enc"


@dataclass(frozen=True)
class SecuredData:
    """Where an encrypted frame lies, and what it holds (no content: the file is the only copy)."""

    path: Path
    rows: int
    columns: tuple[str, ...]
    sha256: str  # of the encrypted file, to check it was not altered or swapped

    def read(self, settings=None) -> pd.DataFrame:
        """The frame back, decrypted (see :func:`read_secure`)."""
        return read_secure(self, settings=settings)


def secure_dir(settings) -> Path:
    """Default folder of :func:`secure_storage`: ``data_dir/secure``."""
    return Path(settings.data_dir) / "secure"


def secure_storage(
    data: pd.DataFrame, name: str | None = None, *, folder: Path | None = None, settings=None
) -> SecuredData:
    """Store ``data`` encrypted at rest (Parquet, then Fernet with the configured keys).

    Args:
        data: the frame to store; pseudonymize identifiers first (:func:`recsys.privacy.anonymize_data`):
            encryption protects the file, not what a key holder reads from it.
        name: file name without suffix (default a random one); an existing file of that name is replaced.
        folder: default ``settings.data_dir/secure``.
        settings: default the configured settings (keys from ``RECSYS_PRIVACY__ENCRYPTION_KEYS``).

    Returns:
        :class:`SecuredData` (``path``, ``rows``, ``columns``, ``sha256``); ``.read()`` or
        :func:`read_secure` gives the frame back.
    """
    from recsys.data.lake import atomic_write_bytes, frame_to_parquet_bytes
    from recsys.defaults import settings_or_default
    from recsys.privacy.crypto import Cipher

    settings = settings_or_default(settings)
    name = name or uuid.uuid4().hex
    if "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    blob = Cipher.from_settings(settings).encrypt(frame_to_parquet_bytes(data))
    path = atomic_write_bytes(Path(folder or secure_dir(settings)) / f"{name}{SUFFIX}", blob)
    return SecuredData(path, len(data), tuple(str(c) for c in data.columns), hashlib.sha256(blob).hexdigest())


def read_secure(secured: SecuredData | str | Path, *, settings=None) -> pd.DataFrame:
    """Decrypt and read a frame stored by :func:`secure_storage` (its :class:`SecuredData` or path).

    Raises ``recsys.privacy.crypto.DecryptionError`` for a wrong key or a damaged file, and ValueError
    when the file no longer matches the ``sha256`` of the :class:`SecuredData` given.
    """
    import io

    import pandas as pd

    from recsys.defaults import settings_or_default
    from recsys.privacy.crypto import Cipher

    path = Path(secured.path if isinstance(secured, SecuredData) else secured)
    blob = path.read_bytes()
    if isinstance(secured, SecuredData) and hashlib.sha256(blob).hexdigest() != secured.sha256:
        raise ValueError(f"{path} changed since it was stored (sha256 differs)")
    plain = Cipher.from_settings(settings_or_default(settings)).decrypt(blob, what=str(path))
    return pd.read_parquet(io.BytesIO(plain))

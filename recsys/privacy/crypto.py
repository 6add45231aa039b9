"""Encryption at rest with Fernet keys (AES-128-CBC + HMAC-SHA256), rotated through MultiFernet.

Keys come from ``RECSYS_PRIVACY__ENCRYPTION_KEYS`` (comma-separated, newest first) or from a key file
(one key per line, newest first, readable only by its owner). In demo mode a local key file is created
under the data folder, and a message says so. Decryption with a wrong key raises
:class:`DecryptionError`; it never returns garbage.

Files too large to hold in memory are written and read as a stream (:meth:`Cipher.writer`,
:meth:`Cipher.decrypt_file`): the same file format, one Fernet token built piece by piece
(:mod:`recsys.privacy.fernet_stream`), so either form reads what the other wrote.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from recsys.config import Settings
from recsys.privacy.fernet_stream import DecryptedFile, FernetWriter, TokenError, decrypt_blocks

log = logging.getLogger(__name__)

MAGIC = b"RSENC1\n"  # marks an encrypted file, so a plain file is never "decrypted" into garbage


class KeyConfigError(RuntimeError):
    """No usable key is configured."""


class DecryptionError(RuntimeError):
    """A file could not be decrypted with the configured keys."""


def _read_owner_only(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyConfigError(
            f"key file {path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it"
        )
    return path.read_text()


def demo_key_file(settings: Settings, name: str) -> Path:
    return settings.data_dir / "keys" / name


def ensure_demo_key(path: Path, make) -> None:
    """Create an owner-only key file for demo mode if it does not exist."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make() + "\n")
    log.warning("demo mode: created a local key file %s (do not use demo keys in production)", path)


def load_fernet_keys(settings: Settings) -> list[str]:
    """Return the configured Fernet keys, newest first."""
    p = settings.privacy
    if p.encryption_keys is not None:
        keys = [k.strip() for k in p.encryption_keys.get_secret_value().split(",") if k.strip()]
    else:
        path = p.encryption_key_file
        if path is None and settings.demo:
            path = demo_key_file(settings, "fernet.keys")
            ensure_demo_key(path, lambda: Fernet.generate_key().decode())
        if path is None or not Path(path).exists():
            raise KeyConfigError(
                "no encryption key: set RECSYS_PRIVACY__ENCRYPTION_KEYS "
                "or RECSYS_PRIVACY__ENCRYPTION_KEY_FILE "
                "(or RECSYS_DEMO=1 for a local demo key)"
            )
        keys = [k.strip() for k in _read_owner_only(Path(path)).splitlines() if k.strip()]
    if not keys:
        raise KeyConfigError("the encryption key list is empty")
    return keys


class Cipher:
    """Encrypts with the newest key; decrypts with any configured key."""

    def __init__(self, keys: list[str]):
        try:
            self._f = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError) as exc:
            raise KeyConfigError(f"malformed Fernet key: {exc}") from None
        self._keys = [k.encode() for k in keys]

    @classmethod
    def from_settings(cls, settings: Settings) -> Cipher:
        return cls(load_fernet_keys(settings))

    def encrypt(self, data: bytes) -> bytes:
        return MAGIC + self._f.encrypt(data)

    def decrypt(self, blob: bytes, *, what: str = "data") -> bytes:
        if not blob.startswith(MAGIC):
            raise DecryptionError(f"{what} is not an encrypted recsys file")
        try:
            return self._f.decrypt(blob[len(MAGIC) :])
        except InvalidToken:
            raise DecryptionError(
                f"{what} cannot be decrypted with the configured key(s): wrong key, or the file is damaged"
            ) from None

    def writer(self, sink: BinaryIO) -> FernetWriter:
        """A file that encrypts what is written to it into ``sink``, as :meth:`encrypt` would; ``finish()``
        completes the file; closed without it, it leaves one no reader accepts. ``sink`` stays open."""
        return FernetWriter(self._keys[0], sink, prefix=MAGIC)

    def decrypt_file(self, f: BinaryIO, *, what: str = "data") -> Iterator[bytes]:
        """The plaintext of the encrypted file ``f`` (seekable, opened at its start), piece by piece.

        The whole file is authenticated before the first piece is returned (:func:`decrypt_blocks`).
        """
        if f.read(len(MAGIC)) != MAGIC:
            raise DecryptionError(f"{what} is not an encrypted recsys file")
        blocks = decrypt_blocks(f, self._keys, start=len(MAGIC))
        try:
            first = next(blocks, b"")
        except TokenError:
            raise DecryptionError(
                f"{what} cannot be decrypted with the configured key(s): wrong key, or the file is damaged"
            ) from None
        return _chain(first, blocks, what)

    def open_file(self, f: BinaryIO, *, what: str = "data") -> DecryptedFile:
        """A seekable, read-only plaintext view of the encrypted file ``f`` (seekable), decrypted where it is
        read (:class:`~recsys.privacy.fernet_stream.DecryptedFile`): the whole file is authenticated first,
        and again by ``verify_again()``; memory does not grow with the file."""
        f.seek(0)
        if f.read(len(MAGIC)) != MAGIC:
            raise DecryptionError(f"{what} is not an encrypted recsys file")
        try:
            return DecryptedFile(f, self._keys, start=len(MAGIC))
        except TokenError:
            raise DecryptionError(
                f"{what} cannot be decrypted with the configured key(s): wrong key, or the file is damaged"
            ) from None

    def rotate(self, blob: bytes, *, what: str = "data") -> bytes:
        """Re-encrypt ``blob`` under the newest key (it must decrypt under one of the keys)."""
        if not blob.startswith(MAGIC):
            raise DecryptionError(f"{what} is not an encrypted recsys file")
        try:
            return MAGIC + self._f.rotate(blob[len(MAGIC) :])
        except InvalidToken:
            raise DecryptionError(f"{what} cannot be decrypted with the configured key(s)") from None


def _chain(first: bytes, rest: Iterator[bytes], what: str) -> Iterator[bytes]:
    if first:
        yield first
    try:
        yield from rest
    except TokenError:  # only after authentication: padding of a verified token
        raise DecryptionError(f"{what} is damaged") from None

"""Key rotation for encryption at rest: re-encrypt every encrypted lake file under the newest key.

Rotation procedure (see docs/security.md):

1. ``recsys privacy new-key`` prints a fresh Fernet key.
2. Put it first in the key list: ``RECSYS_PRIVACY__ENCRYPTION_KEYS="<new>,<old>"`` (newest first). From now
   on every new file is encrypted with it; old files still decrypt with the old key.
3. ``recsys privacy rotate-key`` re-encrypts every encrypted file (landing ``*.enc``, raw, quarantine)
   under the newest key, one file at a time, each replaced atomically; it then checks that every file
   decrypts with the newest key alone.
4. Remove the old key from the list and destroy it.

A file that does not decrypt with any configured key stops the rotation with :class:`DecryptionError`
naming the file (the files already rotated stay readable: the newest key is still in the list). The
rotation is idempotent: rerunning it after a crash simply rotates everything again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.fernet import Fernet

from recsys.config import Settings
from recsys.data.lake import atomic_write_bytes
from recsys.privacy.crypto import Cipher, DecryptionError, load_fernet_keys

log = logging.getLogger(__name__)

# zones whose files are encrypted at rest (landing only after collection: *.enc)
ENCRYPTED_FILE_ZONES = ("landing", "raw", "quarantine")


def new_key() -> str:
    """A fresh Fernet key (url-safe base64 of 32 random bytes)."""
    return Fernet.generate_key().decode()


def encrypted_files(data_dir: Path) -> dict[str, list[Path]]:
    """Every encrypted lake file, by zone (temporary files of an in-flight write are skipped)."""
    out: dict[str, list[Path]] = {}
    for zone in ENCRYPTED_FILE_ZONES:
        base = Path(data_dir) / zone
        files = base.rglob("*.enc") if base.exists() else []
        out[zone] = sorted(p for p in files if p.is_file() and not p.name.startswith("."))
    return out


def rotate_keys(settings: Settings, *, verify: bool = True) -> dict:
    """Re-encrypt every encrypted file under the newest configured key. Returns counts per zone.

    Raises :class:`~recsys.privacy.crypto.DecryptionError` if a file decrypts under none of the keys, and
    :class:`~recsys.privacy.crypto.KeyConfigError` if no usable key is configured.
    """
    keys = load_fernet_keys(settings)
    cipher = Cipher(keys)
    newest = Cipher(keys[:1])
    if settings.lake_url:  # the lake at a URL: rotated through its manifest commits
        from recsys.data.object_lake import open_lake

        lake = open_lake(settings, settings.data_dir, cipher)
        counts = lake.rotate_encrypted(ENCRYPTED_FILE_ZONES, newest if verify else None)
        log.info("rotated %d encrypted file(s) at %s to the newest key", sum(counts.values()), lake.url)
        return {
            "files": sum(counts.values()),
            "by_zone": counts,
            "keys_configured": len(keys),
            "verified": verify,
        }
    files = encrypted_files(settings.data_dir)
    counts = {zone: 0 for zone in files}
    for zone, paths in files.items():
        for path in paths:
            what = str(path.relative_to(settings.data_dir))
            blob = path.read_bytes()
            atomic_write_bytes(path, cipher.rotate(blob, what=what))
            counts[zone] += 1
    if verify:
        for paths in files.values():
            for path in paths:
                try:
                    newest.decrypt(path.read_bytes(), what=str(path.relative_to(settings.data_dir)))
                except DecryptionError as exc:  # pragma: no cover - would be a bug in rotation
                    raise DecryptionError(f"after rotation, {exc}") from None
    total = sum(counts.values())
    log.info(
        "rotated %d encrypted file(s) to the newest key (%d key(s) configured): %s", total, len(keys), counts
    )
    return {"files": total, "by_zone": counts, "keys_configured": len(keys), "verified": verify}

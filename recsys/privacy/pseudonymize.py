"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a secret key.

A plain hash of a user id can be reversed by hashing every possible id; an HMAC cannot without the key.
Apps compute the same ``user_key`` with :func:`user_key` and the same secret, so the recommendations table
never holds a raw identifier.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

import numpy as np

from recsys.config import Settings
from recsys.privacy.crypto import KeyConfigError, _read_owner_only, demo_key_file, ensure_demo_key

TOKEN_CHARS = 32  # hex characters kept (128 bits)


def load_pseudonym_key(settings: Settings) -> bytes:
    """The secret HMAC key, from the environment, an owner-only file, or (demo mode) a local file."""
    p = settings.privacy
    if p.pseudonym_key is not None:
        key = p.pseudonym_key.get_secret_value()
    else:
        path = p.pseudonym_key_file
        if path is None and settings.demo:
            path = demo_key_file(settings, "pseudonym.key")
            ensure_demo_key(path, lambda: secrets.token_hex(32))
        if path is None or not path.exists():
            raise KeyConfigError(
                "no pseudonym key: set RECSYS_PRIVACY__PSEUDONYM_KEY or RECSYS_PRIVACY__PSEUDONYM_KEY_FILE "
                "(or RECSYS_DEMO=1 for a local demo key)"
            )
        key = _read_owner_only(path).strip()
    if len(key) < 16:
        raise KeyConfigError("the pseudonym key must be at least 16 characters")
    return key.encode()


def pseudonym(value: str, key: bytes, *, domain: str = "user") -> str:
    """HMAC-SHA256 token of ``value``; ``domain`` separates user ids from session ids etc."""
    mac = hmac.new(key, f"{domain}:{value}".encode(), hashlib.sha256)
    return mac.hexdigest()[:TOKEN_CHARS]


def pseudonymize_many(values: Iterable[str], key: bytes, *, domain: str = "user") -> np.ndarray:
    """Pseudonyms for many values (each distinct value is hashed once)."""
    values = list(values)
    cache: dict[str, str] = {}
    out = []
    for v in values:
        if v is None or v != v:  # None or NaN/NA
            out.append(None)
            continue
        s = str(v)
        if s not in cache:
            cache[s] = pseudonym(s, key, domain=domain)
        out.append(cache[s])
    return np.array(out, dtype=object)


def user_key(user_id: str, settings: Settings | None = None) -> str:
    """The pseudonymous key under which an app finds ``user_id``'s recommendations.

    Apps call this with the same secret the pipeline uses (``RECSYS_PRIVACY__PSEUDONYM_KEY``).
    """
    from recsys.config import load_settings

    return pseudonym(str(user_id), load_pseudonym_key(settings or load_settings()))

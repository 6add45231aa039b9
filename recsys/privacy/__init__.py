"""Privacy: keyed pseudonyms, minimization, encryption at rest, access, erasure.

Modules: ``pseudonymize`` (HMAC-SHA256 pseudonyms, :func:`user_key` for apps), ``anonymize`` (the
declared policy for every raw column), ``crypto`` (Fernet keys and rotation), ``storage`` (encrypted
frames at rest), ``access``, ``erasure``, ``keys``, ``cli``.

The seed's names are re-exported here (see docs/api.md): :func:`anonymize_data` and
:func:`secure_storage` (with :func:`read_secure` to read it back). Imports are lazy, so
``import recsys.privacy`` pulls in neither pandas nor ``cryptography``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "anonymize_data": "anonymize",
    "secure_storage": "storage",
    "read_secure": "storage",
    "SecuredData": "storage",
    "user_key": "pseudonymize",
    "pseudonym": "pseudonymize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

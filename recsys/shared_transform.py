"""One transform in memory while a ranker is logged: MLflow loads the logged pyfunc in process (the serving
example is checked against a fresh load), and at 10M interactions a day each parsed copy of a transform is
hundreds of megabytes. :func:`sharing` marks the transform just saved; :func:`load_transform` of a file
with those bytes returns it instead of parsing the file again."""

from __future__ import annotations

import contextlib
from pathlib import Path

# (sha256 of a saved transform.json, the transform it was saved from) while log_ranker logs it
_SHARED: tuple[str, object] | None = None


def _digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def sharing(transform, path: Path):
    """While logging: a load of a transform.json with the bytes of ``path`` gets ``transform`` (what
    those bytes were saved from) instead of a parsed copy (MLflow's in-process loads of the logged
    model, while the caller still holds ``transform``)."""
    global _SHARED
    _SHARED = (_digest(path), transform)
    try:
        yield
    finally:
        _SHARED = None


def load_transform(path: Path):
    from recsys.features.transform import Transform

    shared = _SHARED
    if shared is not None and _digest(path) == shared[0]:
        return shared[1]
    return Transform.load(path)

"""Errors about raw values that must not quote them: what a stage raises when work on a chunk of raw rows
fails (in this process or on a Dask worker, whose logs keep what a task raised)."""

from __future__ import annotations

import traceback
from pathlib import Path


class ChunkError(RuntimeError):
    """Work on a chunk of raw values failed; the original message is withheld (it may quote raw values)."""


def withheld(exc: BaseException, what: str) -> ChunkError:
    """A :class:`ChunkError` for ``exc``, raised while ``what`` (e.g. "minimizing a chunk of 7 raw rows"):
    the exception's type and the file and line it came from, never its message."""
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return ChunkError(
        f"{what} failed: {type(exc).__name__} at {Path(where.filename).name}:{where.lineno} "
        "(message withheld: it may hold raw values)"
    )

"""Settings of the retrieval stage (``RECSYS_RETRIEVAL__*``), defined with the others in recsys.config."""

from __future__ import annotations

from recsys.config import RetrievalSettings

__all__ = ["RetrievalSettings"]

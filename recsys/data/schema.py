"""The canonical schemas every source produces and every stage reads.

A schema is a mapping column -> pandas dtype. :func:`conform` coerces a frame to a schema, keeping
only the declared columns (in order); it is the single place where types are decided, so a source only
has to rename its columns.
"""

from __future__ import annotations

import pandas as pd

DEVICES = ("android", "ios", "web", "tv")

# One raw event: an impression of one video in one slate, with the user's responses.
# Raw identifiers (user_id, email, ip, session_id) exist only in landing and the encrypted raw zone.
RAW_EVENTS: dict[str, str] = {
    "event_id": "string",
    "user_id": "string",
    "email": "string",
    "ip": "string",
    "device": "string",
    "region": "string",
    "ts": "datetime64[ns, UTC]",
    "session_id": "string",
    "video_id": "Int64",
    "position": "Int64",
    "rec_version": "string",
    "clicked": "Int64",
    "watch_seconds": "Float64",
    "liked": "Int64",
    "shared": "Int64",
}

VIDEOS: dict[str, str] = {
    "video_id": "Int64",
    "author_id": "Int64",
    "category": "string",
    "tags": "string",
    "duration_seconds": "Float64",
    "title": "string",
    "upload_ts": "datetime64[ns, UTC]",
    "visible": "boolean",
}

RAW_USERS: dict[str, str] = {
    "user_id": "string",
    "email": "string",
    "age_band": "string",
    "gender": "string",
    "region": "string",
    "device": "string",
    "activity": "string",
    "signup_ts": "datetime64[ns, UTC]",
}

# After anonymization: pseudonymous keys, coarse quasi-identifiers, no e-mail, no IP.
CLEAN_EVENTS: dict[str, str] = {
    "event_id": "string",
    "user_key": "string",
    "session_key": "string",
    "device": "string",
    "region": "string",
    "ts": "datetime64[ns, UTC]",
    "video_id": "Int64",
    "position": "Int64",
    "rec_version": "string",
    "clicked": "Int64",
    "watch_seconds": "Float64",
    "liked": "Int64",
    "shared": "Int64",
}

CLEAN_USERS: dict[str, str] = {
    "user_key": "string",
    "age_band": "string",
    "gender": "string",
    "region": "string",
    "device": "string",
    "activity": "string",
}


class SchemaError(ValueError):
    """A frame does not have the columns or types its schema requires."""


def conform(df: pd.DataFrame, schema: dict[str, str], *, name: str = "frame") -> pd.DataFrame:
    """Return a copy of ``df`` with exactly the schema's columns, cast to the schema's dtypes.

    Raises:
        SchemaError: a column is missing or a value cannot be cast; the message names the column.
    """
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}; have {sorted(df.columns)}")
    out = {}
    for col, dtype in schema.items():
        s = df[col]
        try:
            if dtype.startswith("datetime64"):
                out[col] = pd.to_datetime(s, utc=True, format="mixed")
            elif dtype in ("Int64", "Float64"):
                out[col] = pd.to_numeric(s, errors="raise").astype(dtype)
            else:
                out[col] = s.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"{name}: column {col!r} cannot be read as {dtype}: {exc}") from exc
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def empty(schema: dict[str, str]) -> pd.DataFrame:
    """An empty frame with the schema's columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in schema.items()})

"""Where data comes from: the landing zone (fed by the simulator or an upstream system).

The collect stage reads one logical day from the landing zone (:func:`landing_interactions`,
:func:`landing_content_metadata`, :func:`landing_contextual_info`). Events are kept loose (every value as
text, malformed lines kept) because deciding what is valid is the validation stage's job, and nothing may
be lost before it.

The seed's public readers, :func:`collect_user_interactions`, :func:`collect_content_metadata` and
:func:`collect_contextual_info`, read what the pipeline made of a day: the clean zone, pseudonymized (the
landing and raw zones hold raw identifiers and are the pipeline's business only).
"""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pandas as pd

from recsys.data.lake import Lake, as_date, atomic_write_bytes
from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, conform

LANDING_FILE = "part-0.jsonl"


def landing_file(lake: Lake, dataset: str, ds) -> Path:
    return lake.partition("landing", dataset, ds) / LANDING_FILE


def read_landing_bytes(lake: Lake, dataset: str, ds) -> bytes:
    """The day's landing file: the plain one if newly delivered, else the encrypted copy."""
    plain = landing_file(lake, dataset, ds)
    enc = plain.with_name(plain.name + ".enc")
    if plain.exists():
        return plain.read_bytes()
    if enc.exists():
        return lake.cipher.decrypt(enc.read_bytes(), what=str(enc))
    raise FileNotFoundError(f"nothing landed for {dataset} on ds={as_date(ds)} (looked for {plain})")


def seal_landing(lake: Lake, dataset: str, ds) -> None:
    """Encrypt a collected landing file in place (raw identifiers are not kept in clear at rest)."""
    plain = landing_file(lake, dataset, ds)
    if plain.exists():
        atomic_write_bytes(plain.with_name(plain.name + ".enc"), lake.cipher.encrypt(plain.read_bytes()))
        plain.unlink()


def parse_jsonl(data: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, malformed): every well-formed JSON object becomes a row with text values; a line that is not
    a JSON object is kept verbatim in ``malformed`` (columns ``line_no``, ``raw_line``)."""
    rows, bad = [], []
    for no, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError:
            bad.append({"line_no": no, "raw_line": line})
            continue
        rows.append({k: (None if v is None else str(v)) for k, v in obj.items()})
    frame = (
        pd.DataFrame(rows).astype("string")
        if rows
        else pd.DataFrame(columns=list(RAW_EVENTS), dtype="string")
    )
    return frame, pd.DataFrame(bad, columns=["line_no", "raw_line"])


def landing_interactions(lake: Lake, ds: str | date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's raw interaction events (loose text values) and its malformed lines."""
    return parse_jsonl(read_landing_bytes(lake, "events", ds))


def landing_content_metadata(lake: Lake, ds: str | date) -> pd.DataFrame:
    """The video catalog as delivered for the day, in the canonical schema."""
    df = pd.read_json(io.BytesIO(read_landing_bytes(lake, "videos", ds)), lines=True, dtype=False)
    return conform(df, VIDEOS, name="videos")


def landing_contextual_info(lake: Lake, ds: str | date) -> pd.DataFrame:
    """User attributes and devices (context for every impression), in the canonical schema."""
    df = pd.read_json(io.BytesIO(read_landing_bytes(lake, "users", ds)), lines=True, dtype=False)
    return conform(df, RAW_USERS, name="users")


# ------------------------------------------------------------------------------ the seed's readers
def _clean(dataset: str, ds, lake: Lake | None, settings) -> pd.DataFrame:
    from recsys.defaults import ds_or_latest, lake_or_default

    lake = lake_or_default(lake, settings)
    return lake.read_frame("clean", dataset, ds_or_latest(ds, lake, "clean", dataset))


def collect_user_interactions(
    ds: str | date | None = None, *, lake: Lake | None = None, settings=None
) -> pd.DataFrame:
    """The day's interactions as the pipeline stored them: pseudonymized, never a raw user id.

    Args:
        ds: the logical day (default: the latest day in the clean zone).
        lake: default the configured lake (``settings.data_dir``, configured keys).
        settings: default :func:`recsys.config.load_settings`.

    Returns:
        A DataFrame with the columns of ``recsys.data.schema.CLEAN_EVENTS`` (``user_key``, ``video_id``,
        ``ts``, ``clicked``, ``watch_seconds``, ...), one row per impression.
    """
    return _clean("interactions", ds, lake, settings)


def collect_content_metadata(
    ds: str | date | None = None, *, lake: Lake | None = None, settings=None
) -> pd.DataFrame:
    """The video catalog of the day (``video_id``, ``author_id``, ``category``, ``title``, ...).

    Defaults as :func:`collect_user_interactions`. Returns a DataFrame, one row per video.
    """
    return _clean("videos", ds, lake, settings)


def collect_contextual_info(
    ds: str | date | None = None, *, lake: Lake | None = None, settings=None
) -> pd.DataFrame:
    """User attributes of the day, pseudonymized (``user_key``, ``device``, ``region``, ``age_band``, ...).

    Defaults as :func:`collect_user_interactions`. Returns a DataFrame, one row per user.
    """
    return _clean("users", ds, lake, settings)

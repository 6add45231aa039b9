"""Where data comes from: the landing zone (fed by the simulator or an upstream system).

The seed's ``collect_user_interactions``, ``collect_content_metadata`` and ``collect_contextual_info``
read one logical day from the landing zone. Events are kept loose (every value as text, malformed lines
kept) because deciding what is valid is the validation stage's job, and nothing may be lost before it.
"""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pandas as pd

from recsys.data.lake import Lake, as_date
from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, conform

LANDING_FILE = "part-0.jsonl"
SEALED_FILE = LANDING_FILE + ".enc"  # the landing file once collected: encrypted at rest


def landing_file(lake: Lake, dataset: str, ds) -> Path:
    return lake.partition("landing", dataset, ds) / LANDING_FILE


def read_landing_bytes(lake: Lake, dataset: str, ds) -> bytes:
    """The day's landing file: the plain one if newly delivered, else the encrypted copy."""
    if lake.has_file("landing", dataset, ds, LANDING_FILE):
        return lake.read_bytes("landing", dataset, ds, LANDING_FILE)
    if lake.has_file("landing", dataset, ds, SEALED_FILE):
        blob = lake.read_bytes("landing", dataset, ds, SEALED_FILE)
        return lake.cipher.decrypt(blob, what=f"{lake.partition('landing', dataset, ds)}/{SEALED_FILE}")
    raise FileNotFoundError(
        f"nothing landed for {dataset} on ds={as_date(ds)} "
        f"(looked for {lake.partition('landing', dataset, ds)}/{LANDING_FILE})"
    )


def seal_landing(lake: Lake, dataset: str, ds) -> None:
    """Encrypt a collected landing file in place (raw identifiers are not kept in clear at rest)."""
    if lake.has_file("landing", dataset, ds, LANDING_FILE):
        sealed = lake.cipher.encrypt(lake.read_bytes("landing", dataset, ds, LANDING_FILE))
        lake.write_bytes("landing", dataset, ds, SEALED_FILE, sealed, drop=(LANDING_FILE,))


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


def collect_user_interactions(lake: Lake, ds: str | date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's raw interaction events (loose text values) and its malformed lines."""
    return parse_jsonl(read_landing_bytes(lake, "events", ds))


def collect_content_metadata(lake: Lake, ds: str | date) -> pd.DataFrame:
    """The video catalog as delivered for the day, in the canonical schema."""
    df = pd.read_json(io.BytesIO(read_landing_bytes(lake, "videos", ds)), lines=True, dtype=False)
    return conform(df, VIDEOS, name="videos")


def collect_contextual_info(lake: Lake, ds: str | date) -> pd.DataFrame:
    """User attributes and devices (context for every impression), in the canonical schema."""
    df = pd.read_json(io.BytesIO(read_landing_bytes(lake, "users", ds)), lines=True, dtype=False)
    return conform(df, RAW_USERS, name="users")

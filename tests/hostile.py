"""Building blocks for the hostile-input tests: a tiny landed day written byte by byte.

The tests write landing files exactly as an upstream (or an attacker) would deliver them, run the real
stages on a temporary data dir and read back what each zone holds.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd

DS = date(2026, 1, 1)
VIDEO_IDS = (1000, 1001, 1002)


def event(i: int, **over) -> dict:
    """A valid event of DS; ``over`` replaces fields (a value of ``...`` removes the field)."""
    row = {
        "event_id": f"e{DS:%Y%m%d}-{i:06d}",
        "user_id": f"u{i % 3:04d}",
        "email": f"u{i % 3:04d}@example.org",
        "ip": "10.0.0.1",
        "device": "ios",
        "region": "EU-DE-BE",
        "ts": f"{DS}T{i % 24:02d}:{i // 24 % 60:02d}:30Z",
        "session_id": f"s{i % 2}",
        "video_id": VIDEO_IDS[i % 3],
        "position": i % 10 + 1,
        "rec_version": None,
        "clicked": i % 2,
        "watch_seconds": 5.0 * (i % 2),
        "liked": 0,
        "shared": 0,
    }
    row.update(over)
    return {k: v for k, v in row.items() if v is not ...}


def line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def jsonl(rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else line(r)) + b"\n" for r in rows)


def videos() -> list[dict]:
    return [
        {
            "video_id": v,
            "author_id": 1 + i,
            "category": "sports",
            "tags": "sports",
            "duration_seconds": 60.0,
            "title": f"match {i}",
            "upload_ts": "2025-01-01T00:00:00Z",
            "visible": True,
        }
        for i, v in enumerate(VIDEO_IDS)
    ]


def users() -> list[dict]:
    return [
        {
            "user_id": f"u{i:04d}",
            "email": f"u{i:04d}@example.org",
            "age_band": "25-34",
            "gender": "m",
            "region": "EU-DE-BE",
            "device": "ios",
            "activity": "low",
            "signup_ts": "2024-01-01T00:00:00Z",
        }
        for i in range(3)
    ]


def landing_dir(data_dir: Path, dataset: str, ds: date = DS) -> Path:
    return Path(data_dir) / "landing" / dataset / f"ds={ds.isoformat()}"


def land(data_dir: Path, events: bytes, ds: date = DS, *, video_rows=None, user_rows=None) -> Path:
    """Write the day's three landing files (events as given, byte for byte); returns the events file."""
    files = {"events": events, "videos": jsonl(video_rows or videos()), "users": jsonl(user_rows or users())}
    for dataset, data in files.items():
        d = landing_dir(data_dir, dataset, ds)
        d.mkdir(parents=True, exist_ok=True)
        (d / "part-0.jsonl").write_bytes(data)
    return landing_dir(data_dir, "events", ds) / "part-0.jsonl"


def run_stages(settings, ds: date = DS, names=("collect", "validate", "anonymize")) -> dict:
    from recsys import stages

    return {n: getattr(stages, n)(ds, settings) for n in names}


def zone(settings, zone_name: str, dataset: str, ds: date = DS) -> pd.DataFrame:
    from recsys.stages import open_lake

    return open_lake(settings).read_frame(zone_name, dataset, ds)


def reasons(settings, ds: date = DS) -> list[str]:
    return [str(r) for r in zone(settings, "quarantine", "events", ds)["reason"]]


CORPUS = Path(__file__).resolve().parent / "fixtures" / "hostile"
EVENT_FILES = [
    n for n, spec in json.loads((CORPUS / "expected.json").read_text()).items() if spec["kind"] == "events"
]


def hostile_day() -> bytes:
    """Every hostile events file of the corpus, then clean events whose duplicates straddle chunks of 7,
    a key first seen late in the file, blank lines, CRLF and no final newline; a BOM in front."""
    parts = [(CORPUS / n).read_bytes().removeprefix(b"\xef\xbb\xbf") for n in sorted(EVENT_FILES)]
    parts = [p if p.endswith(b"\n") else p + b"\n" for p in parts]
    clean = [event(i) for i in range(40)]
    clean[12] = clean[5]  # duplicates 7 lines apart: in different chunks of 7
    clean[20] = dict(clean[19], watch_seconds=3.0)  # a conflicting copy across a chunk boundary
    clean[30] = b"{not json"
    clean[33] = b"   "
    tail = jsonl(clean).replace(b"\n", b"\r\n", 5)
    late = jsonl([event(100, late_key="x")]).rstrip(b"\n")
    return b"\xef\xbb\xbf" + b"".join(parts) + tail + late

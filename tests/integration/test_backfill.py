"""Backfill of a MovieLens-format history: every day through the ingest stages, rows conserved, and a
backfill killed mid-way and rerun imports every day exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.data import movielens
from recsys.sim.movielens_gen import generate_movielens

pytestmark = pytest.mark.slow
RECSYS = str(Path(sys.executable).with_name("recsys"))


@pytest.fixture()
def history(tmp_path, keys):
    folder = tmp_path / "ml"
    generate_movielens(folder, seed=5, n_users=60, n_items=120, days=8, first_batch=5, min_ratings=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_SOURCE="movielens",
        RECSYS_SOURCE_PATH=str(folder),
        RECSYS_DATA_DIR=str(tmp_path / "data"),
        RECSYS_PRIVACY__PSEUDONYM_KEY=os.environ["RECSYS_PRIVACY__PSEUDONYM_KEY"],
        RECSYS_PRIVACY__ENCRYPTION_KEYS=os.environ["RECSYS_PRIVACY__ENCRYPTION_KEYS"],
    )
    return folder, tmp_path / "data", env


def _markers(data: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (data / "backfill").glob("ds=*.json")}


def test_killed_backfill_resumes_and_imports_each_day_once(history):
    folder, data, env = history
    days = movielens.days(folder)
    log = (data.parent / "first-backfill.log").open("wb")  # a file, not a pipe nobody reads (it would fill)
    proc = subprocess.Popen([RECSYS, "backfill"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while len(_markers(data)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    before = _markers(data)
    assert 2 <= len(before) < len(days), "the kill should land mid-way"

    out = subprocess.run([RECSYS, "backfill"], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.index("{") :])
    assert summary["skipped_days"] == len(before)
    assert summary["imported_days"] == len(days) - len(before)
    after = _markers(data)
    assert len(after) == len(days)
    assert all(after[name] == mtime for name, mtime in before.items())  # done days were not imported again

    # rows conserved, per day: source ratings = accepted (clean) + quarantined
    ratings = movielens.load(folder).ratings
    for ds in days:
        m = json.loads((data / "backfill" / f"ds={ds}.json").read_text())
        n = int((ratings["day"] == pd.Timestamp(ds)).sum())
        assert m["input_rows"] == n and m["accepted_rows"] + m["quarantined_rows"] == n
        assert m["clean_rows"] == m["accepted_rows"]

    # one Data Docs site, built at the end of the backfill (not per suite), lists every imported day
    (index,) = (data / "reports" / "validation").rglob("index.html")
    html = index.read_text()
    assert all(f"ds={ds}" in html for ds in days)

    again = subprocess.run([RECSYS, "backfill"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout[again.stdout.index("{") :])["imported_days"] == 0


def test_unknown_item_is_quarantined_and_a_gap_is_reported(tmp_path, keys, monkeypatch):
    """An item missing from u.item is quarantined with its rule; days without ratings are listed as
    empty, never invented; every source row is accepted or quarantined."""
    import shutil

    from recsys import stages
    from recsys.backfill import backfill
    from recsys.config import load_settings

    folder = tmp_path / "ml-100k"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "movielens" / "ml-100k", folder)
    with (folder / "u.data").open("a") as f:
        f.write("2\t999\t4\t874958470\n")  # 1997-09-22, item 999 is not in u.item
        f.write("4\t1\t5\t875318400\n")  # 1997-09-27: 25 and 26 have no ratings
    monkeypatch.setenv("RECSYS_SOURCE", "movielens")
    monkeypatch.setenv("RECSYS_SOURCE_PATH", str(folder))
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    out = backfill(settings)
    assert out["empty_days"] == ["1997-09-25", "1997-09-26"]
    assert out["imported_days"] == 4 and out["input_rows"] == 11
    assert out["accepted_rows"] + out["quarantined_rows"] == 11 and out["quarantined_rows"] == 1
    q = stages.open_lake(settings).read_frame("quarantine", "events", date(1997, 9, 22))
    assert q["reason"].tolist() == ["unknown_video_id"]

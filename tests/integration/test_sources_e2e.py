"""Every stage on real-format data (KuaiRand sample, MovieLens fixture), configured by settings alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from services import service_missing

from recsys import stages
from recsys.config import load_settings
from recsys.data.importers import available_days
from recsys.serving.publish import FALLBACK_KEY, engine_for, read_live

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KUAIRAND = Path(__file__).resolve().parents[3] / "shared" / "data" / "kuairand"

INGEST = ("land", "collect", "validate", "anonymize")


def run_all(settings, days):
    for ds in days:
        for name in INGEST:
            getattr(stages, name)(ds, settings)
    last = days[-1]
    stages.features(last, settings)
    t = stages.train(last, settings)
    ev = stages.evaluate(last, settings, run_id=t["run_id"], model_uri=t["model_uri"])
    stages.register(last, settings, run_id=t["run_id"], blessed=ev["blessed"], model_uri=t["model_uri"])
    stages.recommend(last, settings)
    return stages.publish(last, settings), ev


@pytest.mark.parametrize(
    "source,path",
    [
        ("movielens", FIXTURES / "movielens" / "ml-100k"),
        ("kuairand", KUAIRAND),
    ],
)
def test_pipeline_runs_on_dataset(source, path, keys, tmp_path, monkeypatch):
    if not path.exists():
        service_missing(f"{path} not present")
    monkeypatch.setenv("RECSYS_SOURCE", source)
    monkeypatch.setenv("RECSYS_SOURCE_PATH", str(path))
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECSYS_TRAIN__EPOCHS", "2")
    settings = load_settings()
    days = available_days(settings)
    assert days, f"no days found in {path}"
    published, ev = run_all(settings, days)
    live = read_live(engine_for(settings.resolved_db_url))
    users = live[live["user_key"] != FALLBACK_KEY]
    assert published["rows"] == len(live) and len(users) > 0
    assert users.groupby("user_key")["video_id"].apply(lambda v: v.is_unique).all()
    assert "reasons" in ev

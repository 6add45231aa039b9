"""The catalog names each dataset once: run records and the retrain log as datasets, settings honoured."""

from __future__ import annotations

from datetime import date

from recsys.catalog import Catalog, RetrainLog, RunRecords
from recsys.config import Settings, settings_from_env
from recsys.train import should_train

D1, D2, D3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)


def test_run_records_round_trip_and_history(tmp_path):
    runs = RunRecords(tmp_path / "runs")
    assert runs.read(D1, "train") == {} and runs.days() == [] and runs.last_day("train", D3) is None
    runs.write(D1, "train", {"run_id": "a"})
    runs.write(D2, "validate", {"input_rows": 5})
    runs.write(D3, "train", {"run_id": "c"})
    assert runs.path(D1, "train") == tmp_path / "runs" / "ds=2026-01-01" / "train.json"
    assert runs.read("2026-01-01", "train") == {"run_id": "a"} and runs.exists(D2, "validate")
    assert runs.days() == [D1, D2, D3]
    assert runs.of_day(D2) == {"validate": {"input_rows": 5}}
    assert runs.history("train", before=D3) == [(D1, {"run_id": "a"})]
    assert runs.last_day("train", before=D3) == D1 and runs.last_day("train", before=date(2026, 2, 1)) == D3


def test_retrain_log_keeps_one_entry_per_day(tmp_path):
    log = RetrainLog(tmp_path / "retrains.jsonl")
    assert log.last_before(D3) is None
    log.record(D1, ["ctr dropped"], 1)
    log.record(D2, ["psi"], None)
    log.record(D1, ["rerun"], 2)  # a rerun of a day replaces its entry
    assert [e["ds"] for e in log.entries()] == ["2026-01-02", "2026-01-01"]
    assert log.entries()[-1] == {"ds": "2026-01-01", "reasons": ["rerun"], "window_days": 2}
    assert log.last_before(D2) == D1 and log.last_before(D3) == D2


def test_catalog_locations_follow_the_settings(tmp_path):
    snap = tmp_path / "elsewhere" / "q.json"
    s = Settings(
        data_dir=tmp_path / "d", monitoring={"quality_snapshot_path": snap, "pushgateway_url": "http://pg"}
    )
    cat = Catalog.from_settings(s)
    assert cat.quality_snapshot == snap and cat.pushgateway_url == "http://pg"
    assert cat.runs.root == tmp_path / "d" / "reports" / "runs"
    assert cat.db_url == s.resolved_db_url and cat.model_name == s.model_name
    assert cat.features_dir(D1) == tmp_path / "d" / "features" / "examples" / "ds=2026-01-01"
    assert cat.world is None
    default = Catalog.from_settings(Settings(data_dir=tmp_path / "d"))
    assert default.quality_snapshot == tmp_path / "d" / "monitoring" / "quality.json"


def test_settings_from_env_reads_the_given_environment_not_this_one(tmp_path):
    env = {"RECSYS_DATA_DIR": str(tmp_path), "RECSYS_TRAIN__TRAIN_EVERY_DAYS": "100"}
    s = settings_from_env(env)
    assert s.data_dir == tmp_path and s.train.train_every_days == 100


def test_should_train_schedule():
    kw = {"has_champion": True, "every_days": 2}
    assert (
        should_train(D3, force=True, has_champion=True, last_trained=D2, every_days=2)["why"]
        == "forced by trigger"
    )
    assert should_train(D3, force=False, has_champion=False, last_trained=D2, every_days=2)["train"]
    assert not should_train(D3, force=False, last_trained=D2, **kw)["train"]
    assert should_train(D3, force=False, last_trained=D1, **kw)["train"]
    assert should_train(D3, force=False, last_trained=None, **kw)["train"]

"""recsys.monitoring: online metrics, PSI, retrain rules, pushed stage metrics, the quality exporter."""

from __future__ import annotations

import json
import math
import threading
import urllib.request
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from recsys.config import MonitoringSettings
from recsys.data.schema import CLEAN_EVENTS, conform
from recsys.monitoring import (
    check_retraining_needed,
    compute_metrics,
    degraded_streak_days,
    log_user_interaction,
    population_stability_index,
    push_stage_metrics,
    read_quality_snapshot,
    serve_metrics,
    write_quality_snapshot,
)
from recsys.monitoring.exporter import SNAPSHOT_KEYS, QualitySnapshotCollector, snapshot_families
from recsys.monitoring.metrics import JOB, build_stage_registry
from recsys.monitoring.online import feature_psi

USER_KEYS = ("u-alice", "u-bob", "u-carol")
USER_LABELS = {"user", "user_id", "user_key", "uid"}

# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def events() -> pd.DataFrame:
    """Six impressions: four from lists r1/r2, two exploration; one row with unknown watch/like."""
    a, b, c = USER_KEYS
    rows = [
        # user, video, position, rec_version, clicked, watch_seconds, liked, shared
        (a, 1, 1, "r1", 1, 30.0, 1, 0),
        (a, 2, 2, "r1", 0, 0.0, 0, 0),
        (b, 1, 1, "r2", 1, 10.0, 0, 1),
        (b, 3, 2, "r2", 0, None, None, 0),
        (c, 4, None, None, 0, 0.0, 0, 0),
        (c, 5, None, None, 0, 0.0, 0, 0),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "user_key",
            "video_id",
            "position",
            "rec_version",
            "clicked",
            "watch_seconds",
            "liked",
            "shared",
        ],
    )
    frame = frame.assign(
        event_id=[f"e{i}" for i in range(6)],
        session_key="s",
        device="ios",
        region="eu",
        ts="2024-03-01T12:00:00+00:00",
    )
    return conform(frame, CLEAN_EVENTS, name="events")


def _settings(**overrides) -> MonitoringSettings:
    defaults = dict(ctr_drop=0.2, baseline_days=3, psi_threshold=0.2, max_model_age_days=30, cooldown_days=3)
    return MonitoringSettings(**(defaults | overrides))


def _history(ctrs: list[float], start: date = date(2024, 3, 1), psi: dict | None = None) -> list[dict]:
    rows = [{"ds": (start + timedelta(days=i)).isoformat(), "ctr": c} for i, c in enumerate(ctrs)]
    if psi is not None:
        rows[-1]["psi"] = psi
    return rows


def _samples(families) -> list:
    return [s for fam in families for s in fam.samples]


def _registry_samples(registry) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in registry.collect():
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


# ---------------------------------------------------------------------------------------------------
# Online metrics
# ---------------------------------------------------------------------------------------------------


def test_compute_metrics_exact_figures(events):
    m = compute_metrics(events, catalog_size=10, known_users={"u-alice"})
    assert m.pop("ds") == pd.to_datetime(events["ts"], utc=True).max().date().isoformat()
    assert m == {
        "impressions": 6,
        "recommended_impressions": 4,
        "exploration_impressions": 2,
        "users": 3,
        "ctr": 0.5,  # 2 clicks / 4 recommended impressions
        "ctr_exploration": 0.0,
        "watch_seconds_per_impression": pytest.approx(40 / 3),  # unknown watch time left out
        "like_rate": pytest.approx(1 / 3),
        "share_rate": 0.25,
        "coverage": 0.3,  # videos 1, 2, 3 of 10
        "cold_start_share": pytest.approx(2 / 3),  # bob and carol have no history
        "by_rec_version": {
            "r1": {"impressions": 2, "ctr": 0.5, "watch_seconds_per_impression": 15.0, "like_rate": 0.5},
            "r2": {"impressions": 2, "ctr": 0.5, "watch_seconds_per_impression": 10.0, "like_rate": 0.0},
        },
    }


def test_compute_metrics_without_catalog_or_known_users_and_empty_day(events):
    m = compute_metrics(events)
    assert m["coverage"] is None and m["cold_start_share"] is None
    empty = compute_metrics(events.iloc[0:0])
    assert empty["impressions"] == 0 and empty["ctr"] is None and empty["by_rec_version"] == {}


def test_compute_metrics_does_not_mutate_input(events):
    before = events.copy()
    compute_metrics(events, catalog_size=10, known_users=set())
    pd.testing.assert_frame_equal(events, before)


def test_log_user_interaction_to_list_and_file(tmp_path):
    sink: list[dict] = []
    log_user_interaction(
        sink=sink,
        user_key="u-alice",
        video_id=7,
        rec_version="2024-03-01",
        position=3,
        clicked=1,
        watch_seconds=12.5,
        ts="2024-03-01T10:00:00+00:00",
        event_id="e1",
    )
    log_user_interaction(
        sink=sink, user_key="u-bob", video_id=8, rec_version=None, position=None, event_id="e2"
    )
    path = tmp_path / "log" / "interactions.jsonl"
    for record in sink:
        log_user_interaction(sink=path, **{k: v for k, v in record.items() if k != "shared"})
    frame = conform(pd.DataFrame(sink), CLEAN_EVENTS)
    assert frame["rec_version"].tolist()[0] == "2024-03-01" and pd.isna(frame["rec_version"].iloc[1])
    assert frame["position"].iloc[0] == 3 and frame["clicked"].tolist() == [1, 0]
    from_file = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event_id"] for r in from_file] == ["e1", "e2"] and from_file[0]["watch_seconds"] == 12.5
    assert compute_metrics(frame)["ctr"] == 1.0


# ---------------------------------------------------------------------------------------------------
# PSI
# ---------------------------------------------------------------------------------------------------


def test_psi_numeric_matches_hand_computation():
    # bins=2 on expected [1,2,3,4]: median edge 2.5 -> shares (0.5, 0.5); actual [1,1,1,4] -> (0.75, 0.25)
    expected = 0.25 * math.log(0.75 / 0.5) + (-0.25) * math.log(0.25 / 0.5)
    assert population_stability_index([1, 2, 3, 4], [1, 1, 1, 4], bins=2) == pytest.approx(expected)
    assert expected == pytest.approx(0.274653, abs=1e-6)


def test_psi_categorical_matches_hand_computation():
    # expected a: 0.5, b: 0.5; actual a: 0.75, b: 0.25 -> same numbers as the numeric case
    psi = population_stability_index(["a", "b", "a", "b"], ["a", "a", "a", "b"])
    assert psi == pytest.approx(0.25 * math.log(1.5) - 0.25 * math.log(0.5))


def test_psi_identical_is_zero_and_unseen_category_or_nulls_show_drift():
    values = list(range(100))
    assert population_stability_index(values, values) == pytest.approx(0.0)
    # a category never seen in expected: share floored at eps = 1e-4
    psi = population_stability_index(["a", "a"], ["a", "z"])
    assert psi == pytest.approx((0.5 - 1) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))
    assert population_stability_index(pd.Series([1.0, 2.0, 3.0, 4.0]), pd.Series([1.0, None, None, 4.0])) > 1
    with pytest.raises(ValueError):
        population_stability_index([], [1])


def test_feature_psi_per_column(events):
    psi = feature_psi(events, events.iloc[:2], ["device", "watch_seconds", "absent"])
    assert set(psi) == {"device", "watch_seconds"} and psi["device"] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------------
# Retrain decision
# ---------------------------------------------------------------------------------------------------


def test_no_rule_fires_on_a_steady_history():
    decision = check_retraining_needed(_history([0.08, 0.081, 0.079, 0.078]), _settings(), today="2024-03-04")
    assert decision.retrain is False and decision.reasons == []


def test_ctr_drop_fires_with_numbers_in_the_reason():
    history = _history([0.5, 0.081, 0.081, 0.081, 0.056])  # 0.5 is outside the 3-day window
    decision = check_retraining_needed(history, _settings(), today=date(2024, 3, 5))
    assert decision.retrain is True
    assert decision.reasons == ["ctr dropped 31% vs trailing 3-day mean 0.081 -> 0.056 (threshold 20%)"]


def test_ctr_drop_below_threshold_or_without_baseline_does_not_fire():
    assert not check_retraining_needed(_history([0.1, 0.1, 0.1, 0.085]), _settings(), today="2024-03-04")
    assert not check_retraining_needed(_history([0.02]), _settings(), today="2024-03-01")


def test_ctr_rule_reads_a_dataframe_and_ignores_rows_after_today():
    frame = pd.DataFrame(_history([0.1, 0.1, 0.05, 0.1]))
    decision = check_retraining_needed(frame, _settings(), today="2024-03-03")
    assert decision.retrain and decision.reasons[0].startswith("ctr dropped 50% vs trailing 2-day mean 0.100")


def test_psi_above_threshold_fires_per_feature():
    history = _history([0.1, 0.1], psi={"device": 0.31, "position": 0.05})
    decision = check_retraining_needed(history, _settings(), today="2024-03-02")
    assert decision.retrain and decision.reasons == ["psi of device is 0.310 on 2024-03-02 (threshold 0.20)"]
    flat = pd.DataFrame([{"ds": "2024-03-02", "ctr": 0.1, "psi_region": 0.5, "psi_device": 0.1}])
    assert check_retraining_needed(flat, _settings(), today="2024-03-02").reasons == [
        "psi of region is 0.500 on 2024-03-02 (threshold 0.20)"
    ]


def test_model_age_rule():
    settings = _settings(max_model_age_days=30)
    old = check_retraining_needed([], settings, today="2024-03-31", model_trained_at=date(2024, 2, 1))
    assert old.retrain and old.reasons == ["model is 59 days old, trained 2024-02-01 (max 30 days)"]
    fresh = check_retraining_needed([], settings, today="2024-03-31", model_trained_at=date(2024, 3, 1))
    assert not fresh.retrain


def test_cooldown_suppresses_and_says_so():
    history = _history([0.1, 0.1, 0.1, 0.05])
    today = date(2024, 3, 4)
    held = check_retraining_needed(
        history, _settings(cooldown_days=3), today=today, last_retrain=today - timedelta(days=2)
    )
    assert held.retrain is False
    assert held.reasons[0].startswith("ctr dropped 50%")
    assert held.reasons[-1] == (
        "cooldown: last retrain 2024-03-02 was 2 day(s) ago (cooldown 3 days), so no retrain now"
    )
    after = check_retraining_needed(
        history, _settings(cooldown_days=3), today=today, last_retrain=today - timedelta(days=3)
    )
    assert after.retrain is True and not any("cooldown" in r for r in after.reasons)


# ---------------------------------------------------------------------------------------------------
# Stage metrics (Pushgateway)
# ---------------------------------------------------------------------------------------------------


def test_success_registry_has_every_figure_with_base_unit_names():
    registry = build_stage_registry(
        "features",
        "2024-03-01",
        success=True,
        duration_seconds=12.5,
        rows={"train": 900, "valid": 100},
        now=1_700_000_000.0,
    )
    samples = _registry_samples(registry)
    assert samples["recsys_stage_last_success_timestamp_seconds"][0].value == 1_700_000_000.0
    assert samples["recsys_stage_duration_seconds"][0].value == 12.5
    assert samples["recsys_stage_last_run_success"][0].value == 1.0
    assert samples["recsys_stage_last_run_timestamp_seconds"][0].value == 1_700_000_000.0
    assert samples["recsys_stage_logical_date_timestamp_seconds"][0].value == 1709251200.0  # 2024-03-01Z
    assert {s.labels["kind"]: s.value for s in samples["recsys_stage_rows"]} == {"train": 900, "valid": 100}
    # the stage is a label (the push's grouping key), never part of a metric name; failures are counted
    # by Airflow's StatsD metrics, not read back from the gateway
    assert set(samples) == {
        "recsys_stage_last_success_timestamp_seconds",
        "recsys_stage_duration_seconds",
        "recsys_stage_last_run_success",
        "recsys_stage_last_run_timestamp_seconds",
        "recsys_stage_logical_date_timestamp_seconds",
        "recsys_stage_rows",
    }
    assert not any(name.endswith("_created") for name in samples)


def test_failure_registry_has_no_last_success_gauge():
    registry = build_stage_registry("train", "2024-03-01", success=False, duration_seconds=3.0, rows=None)
    samples = _registry_samples(registry)
    assert not any(name.endswith("_last_success_timestamp_seconds") for name in samples)
    assert samples["recsys_stage_last_run_success"][0].value == 0.0
    assert samples["recsys_stage_duration_seconds"][0].value == 3.0


def test_push_without_url_is_a_noop_and_unreachable_gateway_returns_false():
    assert (
        push_stage_metrics(
            "features",
            "2024-03-01",
            success=True,
            duration_seconds=1.0,
            rows=None,
            pushgateway_url=None,
        )
        is False
    )
    assert (
        push_stage_metrics(
            "features",
            "2024-03-01",
            success=True,
            duration_seconds=1.0,
            pushgateway_url="http://127.0.0.1:9",
            timeout=1,
        )
        is False
    )


class _FakeGateway(BaseHTTPRequestHandler):
    """Records every request (method, path, body); answers a GET with an empty page."""

    pushes: list[tuple[str, str, str]] = []

    def do_GET(self):
        self.pushes.append((self.command, self.path, ""))
        body = b""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.pushes.append((self.command, self.path, self.rfile.read(length).decode()))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_gateway():
    _FakeGateway.pushes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_push_posts_to_the_stage_group_without_reading_the_gateway(fake_gateway):
    assert push_stage_metrics(
        "train",
        "2024-03-01",
        success=False,
        duration_seconds=2.0,
        rows={"rows": 10},
        pushgateway_url=fake_gateway,
    )
    # one request: no read-back of a counter before the push
    ((method, path, body),) = _FakeGateway.pushes
    # POST (pushadd) replaces only the names it carries, so the earlier last-success gauge survives
    assert method == "POST" and path == f"/metrics/job/{JOB}/stage/train"
    pushed = {s.name: s for fam in text_string_to_metric_families(body) for s in fam.samples}
    assert pushed["recsys_stage_last_run_success"].value == 0
    assert "recsys_stage_last_success_timestamp_seconds" not in pushed


# ---------------------------------------------------------------------------------------------------
# Quality snapshot and exporter
# ---------------------------------------------------------------------------------------------------


def _figures(events) -> dict:
    return {
        "ds": "2024-03-01",
        "model_version": "7",
        "online": compute_metrics(events, catalog_size=10, known_users={"u-alice"}),
        "psi": {"device": 0.25, "position": float("nan")},
        "retrain_recommended": True,
    }


def test_snapshot_round_trip_merges_and_writes_nan_as_null(tmp_path, events):
    path = tmp_path / "monitoring" / "quality.json"
    assert read_quality_snapshot(path) == {}
    write_quality_snapshot(path, _figures(events))
    assert read_quality_snapshot(path)["psi"]["position"] is None
    write_quality_snapshot(path, {"psi": {"device": 0.3}})
    snap = read_quality_snapshot(path)
    assert snap["psi"] == {"device": 0.3} and snap["online"]["ctr"] == 0.5
    assert snap["written_at"] > 0
    assert [p.name for p in path.parent.iterdir()] == ["quality.json"]  # no temporary file left behind
    write_quality_snapshot(path, {"ds": "2024-03-02"}, merge=False)
    assert set(read_quality_snapshot(path)) == {"ds", "written_at"}


def test_snapshot_families_names_and_values(events):
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in _samples(snapshot_families(_figures(events)))
    }
    assert samples[("recsys_model_info", (("model_version", "7"),))] == 1
    assert samples[("recsys_online_click_through_ratio", (("source", "recommended"),))] == 0.5
    assert samples[("recsys_online_click_through_ratio", (("source", "exploration"),))] == 0.0
    assert samples[("recsys_online_impressions", (("source", "recommended"),))] == 4
    assert samples[("recsys_online_watch_time_per_impression_seconds", ())] == pytest.approx(40 / 3)
    assert samples[("recsys_online_catalog_coverage_ratio", ())] == 0.3
    assert samples[("recsys_online_cold_start_user_ratio", ())] == pytest.approx(2 / 3)
    assert samples[("recsys_feature_psi", (("feature", "device"),))] == 0.25
    assert ("recsys_feature_psi", (("feature", "position"),)) not in samples  # NaN left out
    assert samples[("recsys_retrain_recommended", ())] == 1
    assert samples[("recsys_quality_logical_date_timestamp_seconds", ())] == 1709251200.0
    # only the snapshot's keys are exported: no offline or per-list-version family that nothing fills
    figures = _figures(events) | {"offline": {"auc": {"click": 0.7}}}
    assert set(figures) - {"offline"} <= set(SNAPSHOT_KEYS)
    names = {s.name for s in _samples(snapshot_families(figures))}
    assert not any(n.startswith("recsys_model_") and n != "recsys_model_info" for n in names), names
    assert not any("rec_version" in n for n in names), names


def test_no_user_id_in_any_label(tmp_path, events):
    path = write_quality_snapshot(tmp_path / "quality.json", _figures(events))
    exported = _samples(QualitySnapshotCollector(path).collect())
    pushed = _samples(
        build_stage_registry(
            "monitor",
            "2024-03-01",
            success=True,
            duration_seconds=1.0,
            rows={"events": 6},
        ).collect()
    )
    assert exported and pushed
    for sample in exported + pushed:
        assert not USER_LABELS & set(sample.labels), sample
        assert not set(USER_KEYS) & set(sample.labels.values()), sample


def test_exporter_rereads_the_snapshot_on_every_scrape(tmp_path, events):
    path = tmp_path / "quality.json"

    def scrape(port: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    with serve_metrics(path, port=0) as server:
        assert scrape(server.port)[("recsys_quality_snapshot_loaded", ())] == 0  # nothing written yet
        write_quality_snapshot(path, _figures(events))
        first = scrape(server.port)
        assert first[("recsys_quality_snapshot_loaded", ())] == 1
        assert first[("recsys_online_click_through_ratio", (("source", "recommended"),))] == 0.5
        write_quality_snapshot(path, {"online": {"ctr": 0.04}})
        assert (
            scrape(server.port)[("recsys_online_click_through_ratio", (("source", "recommended"),))] == 0.04
        )
        path.write_text("{not json")
        assert scrape(server.port)[("recsys_quality_snapshot_loaded", ())] == 0  # corrupt file: still serves
    assert not server.thread.is_alive()


def test_sustained_smaller_drop_fires_on_its_second_day_only():
    history = _history([0.1, 0.1, 0.1, 0.088, 0.087])
    first = check_retraining_needed(history[:4], _settings(), today="2024-03-04")
    assert not first.retrain and first.reasons == []  # -12%: one day is not enough, 20% would be
    second = check_retraining_needed(history, _settings(), today="2024-03-05")
    assert second.retrain and second.reasons == [
        "ctr dropped for 2 days in a row since 2024-03-04: 0.088, 0.087 vs the 3-day mean 0.100 before "
        "(threshold 10% for 2 days)"
    ]
    assert degraded_streak_days(history, _settings(), today="2024-03-05") == 2
    off = _settings(sustained_days=0)
    assert not check_retraining_needed(history, off, today="2024-03-05").retrain
    assert degraded_streak_days(history, off, today="2024-03-05") == 0  # 20% then: no degraded day


def test_streak_days_are_compared_with_the_days_before_the_streak_began():
    # day 3 is 13% down; day 4 is only 9% below the mean of days 1-3, but 13% below days 1-2, the last
    # level before the streak: the streak is 2 days and fires (a bug once compared day 4 with days 1-3)
    history = _history([0.2015, 0.2015, 0.1746, 0.1760])
    assert degraded_streak_days(history, _settings(), today="2024-03-04") == 2
    decision = check_retraining_needed(history, _settings(), today="2024-03-04")
    assert decision.retrain and "2 days in a row since 2024-03-03" in decision.reasons[0]
    # a recovered last day ends the streak
    assert degraded_streak_days(_history([0.2, 0.2, 0.17, 0.2]), _settings(), today="2024-03-04") == 0


def test_a_drop_needs_a_baseline_of_min_baseline_days():
    # a model's first day is its best (nothing of its picks watched yet); measured against that day alone,
    # the next day's ordinary decline read as the start of a streak, the retrain then learnt from a day
    # before the drift, failed the gate, and the cooldown held the next one back (closed-loop run, 2026-11)
    history = _history([0.2056, 0.1797, 0.1673])
    assert degraded_streak_days(history, _settings(), today="2024-03-03") == 1  # day 3 vs days 1-2 only
    assert not check_retraining_needed(history, _settings(), today="2024-03-03").retrain
    one_day = _settings(min_baseline_days=1)
    assert degraded_streak_days(history, one_day, today="2024-03-03") == 2
    assert check_retraining_needed(history, one_day, today="2024-03-03").retrain
    # the one-day rule too: 25% down against a single day does not fire, against two days it does
    assert not check_retraining_needed(_history([0.204, 0.153]), _settings(), today="2024-03-02").retrain
    assert check_retraining_needed(_history([0.204, 0.153]), one_day, today="2024-03-02").retrain
    decision = check_retraining_needed(_history([0.204, 0.2, 0.15]), _settings(), today="2024-03-03")
    assert decision.retrain and "trailing 2-day mean" in decision.reasons[0]


def test_ctr_baseline_keeps_model_served_days_after_the_last_monitor_retrain():
    from recsys.monitoring import ctr_baseline_rows
    from recsys.serving import BASELINE_VERSION

    rows = [
        {"ds": "2024-03-01", "ctr": 0.1, "served_model": None},  # no list yet
        {"ds": "2024-03-02", "ctr": 0.1, "served_model": BASELINE_VERSION},  # the popularity fallback
        {"ds": "2024-03-03", "ctr": 0.2, "served_model": "1"},
        {"ds": "2024-03-04", "ctr": 0.2, "served_model": "2"},  # a scheduled retrain: same lineage
        {"ds": "2024-03-05", "ctr": 0.1, "served_model": "2"},
        {"ds": "2024-03-06", "ctr": 0.2, "served_model": "3"},  # promoted by the retrain of 03-05
    ]
    assert [r["ds"] for r in ctr_baseline_rows(rows)] == [
        "2024-03-03",
        "2024-03-04",
        "2024-03-05",
        "2024-03-06",
    ]
    assert [r["ds"] for r in ctr_baseline_rows(rows, last_retrain=date(2024, 3, 5))] == ["2024-03-06"]

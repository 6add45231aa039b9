"""The demo's progress lines: the key figure of each task from its stage's run record; task log tails."""

from __future__ import annotations

import json

from recsys.sim.local_airflow import log_tail, run_id_for
from recsys.sim.progress import figure, stage_of, task_line


def test_task_ids_map_to_their_stage():
    assert stage_of("ingest.validate") == "validate"
    assert stage_of("model.train_due") == "should_train"
    assert stage_of("monitor") == "monitor"


def test_key_figures():
    assert figure(
        "ingest.validate", {"input_rows": 5220, "quarantined_rows": 12, "rules": {"ts_outside_ds": 12}}
    ) == ("5,220 rows in, 12 quarantined (ts_outside_ds 12)")
    assert (
        figure("model.train", {"epochs": 5, "best_val_loss": 1.56890428}) == "5 epochs, best val loss 1.5689"
    )
    assert figure("model.evaluate", {"blessed": False, "failed_checks": "floor_click_auc,margin"}) == (
        "gate: not blessed (failed: floor_click_auc, margin)"
    )
    assert figure("model.evaluate", {"blessed": True, "failed_checks": "none"}) == (
        "gate: BLESSED, every check passed"
    )
    assert figure("serve.publish", {"rows": 2430, "version": "2026-01-01"}) == (
        "2,430 rows published, version 2026-01-01"
    )
    assert figure("model.register", {"version": "3", "promoted": True, "previous": "2"}) == (
        "version 3 -> champion (previous 2)"
    )
    assert figure(
        "monitor", {"metrics": {"ctr": 0.2013, "recommended_impressions": 5330}, "retrain": False}
    ) == ("ctr 0.2013 on 5,330 recommended impressions, no retrain")
    assert figure("monitor", {"metrics": {"ctr": 0.15}, "retrain": True, "reasons": ["ctr dropped"]}) == (
        "ctr 0.1500, RETRAIN: ctr dropped"
    )


def test_the_first_day_has_no_served_lists_to_monitor():
    assert figure("monitor", {"metrics": {"ctr": None, "recommended_impressions": 0}, "retrain": False}) == (
        "no recommended impressions yet (nothing was published before), no retrain"
    )


def test_a_missing_record_or_an_unknown_task_has_no_figure():
    assert figure("ingest.validate", {}) == ""
    assert figure("trigger_retrain", {"x": 1}) == ""


def test_line_layout_and_failure():
    line = task_line("ingest.collect", "success", 2.837, {"input_rows": 10, "malformed_rows": 0})
    assert line == "  ingest.collect           2.8s  10 rows in, 0 malformed"
    assert "FAILED" in task_line("ingest.validate", "failed", 3.0, None)


def test_log_tail_renders_airflow_json_lines(tmp_path):
    log = tmp_path / "attempt=1.log"
    records = [
        {"timestamp": "t", "level": "info", "event": f"line {i}", "logger": "task"} for i in range(30)
    ] + [
        {
            "level": "error",
            "event": "Task failed with exception",
            "error_detail": [{"exc_type": "BatchValidationError", "exc_value": "raw_events: too few rows"}],
        }
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    tail = log_tail(log, lines=3)
    assert tail == [
        "INFO     line 29",
        "ERROR    Task failed with exception BatchValidationError: raw_events: too few rows",
        "not json",
    ]


def test_run_ids_name_the_day():
    from datetime import date

    assert run_id_for("recsys_daily", date(2026, 1, 2)) == "demo__2026-01-02"

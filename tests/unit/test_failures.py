"""Failure classification (retry or fail at once) and the one-line failure record."""

from __future__ import annotations

import logging
import socket

from prometheus_client import generate_latest

from recsys.data.schema import SchemaError
from recsys.data.validate import BatchValidationError
from recsys.errors import is_permanent
from recsys.monitoring.failures import failure_line, failure_registry, record_task_failure
from recsys.privacy.crypto import KeyConfigError
from recsys.serving.publish import PublishCheckError


def test_data_quality_publish_and_key_errors_are_permanent_others_are_not():
    for exc in (
        BatchValidationError("too many bad rows"),
        SchemaError("missing column"),
        PublishCheckError("empty version"),
        KeyConfigError("no key"),
    ):
        assert is_permanent(exc), exc
    for exc in (ConnectionError("gone"), TimeoutError(), FileNotFoundError("upstream late"), ValueError("x")):
        assert not is_permanent(exc), exc


def test_a_permanent_cause_makes_the_wrapping_error_permanent():
    try:
        try:
            raise BatchValidationError("bad batch")
        except BatchValidationError as inner:
            raise RuntimeError("stage validate failed") from inner
    except RuntimeError as outer:
        assert is_permanent(outer)


def test_failure_line_is_one_line_naming_task_run_try_and_error():
    err = BatchValidationError("events:\n 40% quarantined")
    line = failure_line("recsys_daily", "ingest.validate", "scheduled__2026-01-02", 3, err)
    assert line == (
        "recsys_daily.ingest.validate failed (run scheduled__2026-01-02, try 3): "
        "BatchValidationError: events: 40% quarantined"
    )
    assert failure_line("d", "t", None, None, None) == "d.t failed: no exception recorded"


def test_failure_registry_holds_the_task_labels_and_time():
    text = generate_latest(failure_registry("recsys_daily", "serve.publish", now=1767312000.0)).decode()
    labels = 'dag_id="recsys_daily",task_id="serve.publish"'
    assert f"recsys_task_last_failure_timestamp_seconds{{{labels}}} 1.767312e+09" in text


def test_an_unreachable_pushgateway_is_a_warning_not_a_failure(caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="recsys.monitoring.failures"):
        line = record_task_failure(
            "recsys_daily",
            "ingest.collect",
            error=OSError("disk full"),
            log_url="http://localhost:8080/log",
            pushgateway_url=f"http://127.0.0.1:{port}",
        )
    assert line.startswith("recsys_daily.ingest.collect failed: OSError: disk full")
    messages = [r.getMessage() for r in caplog.records]
    assert any("http://localhost:8080/log" in m for m in messages)
    assert any("could not push the failure" in m for m in messages)

"""Logging set-up: plain lines by default, JSON lines on request, never personal data.

Records carry ``ds``, ``run_id`` and ``model_version`` when a stage sets them (``extra=``); the JSON
formatter writes them as fields so log search can filter by day or model.
"""

from __future__ import annotations

import json
import logging
import sys

CONTEXT_FIELDS = ("ds", "run_id", "model_version", "stage")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for f in CONTEXT_FIELDS:
            if hasattr(record, f):
                out[f] = getattr(record, f)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: int = logging.INFO, json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # great_expectations logs every datasource save at INFO: hundreds of lines a day, none for an operator
    for noisy in (
        "alembic",
        "urllib3",
        "matplotlib",
        "absl",
        "h5py",
        "httpx",
        "httpcore",
        "great_expectations",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)

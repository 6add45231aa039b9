"""Shared fixtures: settings pointing at a temporary data folder, with test keys from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
KUAIRAND = SHARED / "data" / "kuairand"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@pytest.fixture
def keys(monkeypatch):
    """Test secrets in the environment (as production would have them), never in code or files."""
    from cryptography.fernet import Fernet

    pkey, fkey = "test-pseudonym-key-" + os.urandom(8).hex(), Fernet.generate_key().decode()
    monkeypatch.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", pkey)
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", fkey)
    return {"pseudonym": pkey, "fernet": fkey}


@pytest.fixture
def settings(tmp_path, keys, monkeypatch):
    from recsys.config import load_settings

    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RECSYS_DEMO", raising=False)
    return load_settings()


# Required services: skip locally, fail under CI=true (tests/services.py).
from services import pytest_configure, pytest_runtest_setup  # noqa: E402, F401

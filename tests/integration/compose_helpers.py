"""Shared helpers of the test_compose_*.py files: the compose file, .env.example, parsed services.

Imported by those test files (pytest puts tests/integration on sys.path); not a test module itself.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

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


def _load_compose() -> dict:
    """docker-compose.yaml, parsed (each test file wraps it in module-scoped fixtures)."""
    return _yaml(COMPOSE)


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


def _interpolated(value: str, values: dict[str, str]) -> str:
    """``value`` as docker-compose resolves it with ``values`` (defaults for what is not set)."""
    return ENV_REF.sub(lambda m: values.get(m[1]) or (m[3] if m[2] in {":-", "-"} else ""), value)


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

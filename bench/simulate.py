"""Benchmark: simulate one day of about a million events and write it to a landing file.

Times building the world, simulating the day and writing the JSON lines (atomically, as the ``simulate``
stage does) into a temporary folder, and records the throughput with the machine it ran on in
``bench/results/simulate.json``. Run: ``.venv/bin/python bench/simulate.py [--users 50000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from meta import git_commit

from recsys import sim
from recsys.config import SimulatorSettings

RESULTS = Path(__file__).parent / "results" / "simulate.json"
DAY = date(2026, 1, 5)


def settings_for(users: int) -> SimulatorSettings:
    # ~0.58 of users are active; max(1, Poisson(3.4)) sessions each; 10 impressions per session:
    # 50k users -> ~1.0M events.
    return SimulatorSettings(n_users=users, n_videos=5_000, n_authors=800, sessions_per_active_user=3.4)


def run(users: int, seed: int = 42) -> dict:
    settings = settings_for(users)
    t0 = time.perf_counter()
    world = sim.build_world(settings, seed)
    t1 = time.perf_counter()
    events = sim.simulate_day(world, DAY)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = sim.write_landing(events, Path(tmp) / "landing" / "events" / f"ds={DAY}" / "part-0.jsonl")
        size = path.stat().st_size
    t3 = time.perf_counter()
    n = len(events)
    wall = t3 - t0  # what the simulate stage does for a day: build the world, simulate, write
    return {
        "events": n,
        "wall_seconds": round(wall, 3),
        "events_per_second": round(n / wall, 1),
        "seconds_per_million_events": round(wall / n * 1e6, 3),
        "phases_seconds": {
            "build_world": round(t1 - t0, 3),
            "simulate_day": round(t2 - t1, 3),
            "write_landing": round(t3 - t2, 3),
        },
        "landing_bytes": size,
        "settings": {
            "n_users": settings.n_users,
            "n_videos": settings.n_videos,
            "sessions_per_active_user": settings.sessions_per_active_user,
            "slate_size": settings.slate_size,
            "seed": seed,
            "day": str(DAY),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.machine(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.users)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

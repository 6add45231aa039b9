"""Benchmark: how often, and how fast, the closed loop recovers from a preference drift, over seeds.

Run: ``.venv/bin/python bench/closed_loop.py --seeds 1 2 3 4 5`` (about 5 minutes of CPU per seed on an
idle machine; much longer on a busy one). Writes ``bench/results/closed_loop.json``, rewritten after every
seed (a long run leaves partial results), with the machine, the 1-minute load average before and after
each seed, and the git commit.

Each seed is the integration test's scenario (``recsys.sim.drift_scenario``: the same settings, the seed and a
pseudonym key derived from it) run under real Airflow by ``recsys.sim.loop.AirflowLoop`` in a fresh temporary
environment (``tests/integration/conftest.py:pipeline_env``), then judged by
``recsys.sim.drift_scenario.recovery``: recovered or not (and why not), days from the drift to the first day
served by the retrained model, and the CTRs behind the verdict. The summary is the recovered share and
the days to recover of the recovered seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "closed_loop.json"


def _pipeline_env(root: Path) -> dict[str, str]:
    spec = importlib.util.spec_from_file_location(
        "_integration_conftest", ROOT / "tests" / "integration" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.pipeline_env(root)


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_seed(seed: int, keep: Path | None = None) -> dict:
    from recsys.sim.drift_scenario import DAYS, DAYS_AFTER_RETRAIN, START, recovery, scenario_env
    from recsys.sim.loop import AirflowLoop
    from recsys.sim.timeline import format_timeline

    root = Path(tempfile.mkdtemp(prefix=f"closed-loop-{seed}-", dir=keep))
    env = scenario_env(_pipeline_env(root), seed)
    (root / "airflow").mkdir()
    loop = AirflowLoop(env, cwd=root, echo=lambda s: print(f"[seed {seed}] {s}", flush=True))
    load_before, t0 = os.getloadavg()[0], time.monotonic()
    loop.airflow("db", "migrate")
    records = loop.run(START, DAYS, days_after_retrain=DAYS_AFTER_RETRAIN)
    timeline = format_timeline(records)
    (root / "timeline.txt").write_text(timeline + "\n")
    (root / "records.json").write_text(json.dumps([dataclasses.asdict(r) for r in records], indent=1))
    print(timeline, flush=True)
    return {
        "seed": seed,
        **recovery(records),
        "seconds": round(time.monotonic() - t0, 1),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "run_dir": str(root),
    }


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["recovered"]]
    days = sorted(r["days_to_recover"] for r in ok)
    return {
        "seeds": len(runs),
        "recovered": len(ok),
        "recovered_share": round(len(ok) / len(runs), 3) if runs else None,
        "days_to_recover": days,
        "median_days_to_recover": days[len(days) // 2] if days else None,
        "not_recovered": {str(r["seed"]): r["why"] for r in runs if not r["recovered"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--keep", type=Path, default=None, help="folder for the runs' data (default: /tmp)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs: list[dict] = []
    for seed in args.seeds:
        runs.append(run_seed(seed, args.keep))
        result = {
            "benchmark": "closed_loop",
            "what": "recovery from a preference drift (recsys.sim.drift_scenario), one Airflow loop per seed",
            "summary": summarize(runs),
            "runs": runs,
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "commit": _commit(),
            "command": "bench/closed_loop.py --seeds " + " ".join(map(str, args.seeds)),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

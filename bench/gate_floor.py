"""Benchmark: does the integration suite's model clear the shipped click-AUC floor (0.55)?

Run: ``.venv/bin/python bench/gate_floor.py --seeds 1 2 3``. Writes ``bench/results/gate_floor.json``
(rewritten after every seed) with the machine, load average and git commit.

Why: the end-to-end Airflow suite (``tests/integration/conftest.py:pipeline_env``) used to lower the
gate's click-AUC floor to 0.5. This runs the suite's days with the suite's sizes (300 users, 300 videos,
6 epochs) but the **shipped** gate defaults, calling the same stage functions the DAG's tasks call, one
subprocess per seed (seed and pseudonym key vary), and records per day the candidate's click AUC on the
held-out day and the gate's verdict. The suite needs the first model blessed (a champion).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gate_floor.json"

CHILD = r"""
import json, sys
from datetime import date, timedelta
from recsys import stages
from recsys.config import load_settings
s = load_settings()
out = []
for i in range(int(sys.argv[1])):
    ds = date(2026, 1, 1) + timedelta(days=i)
    for name in ("land", "collect", "validate", "anonymize", "features"):
        getattr(stages, name)(ds, s)
    day = {"ds": str(ds), "trained": stages.should_train(ds, s)["train"]}
    if day["trained"]:
        run_id = stages.train(ds, s)["run_id"]
        ev = stages.evaluate(ds, s, run_id=run_id)
        stages.register(ds, s, run_id=run_id, blessed=ev["blessed"])
        day.update(click_auc=ev["metrics"].get("click_auc"), blessed=ev["blessed"], reasons=ev["reasons"])
    out.append(day)
print("@@GATE@@" + json.dumps(out))
"""


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_seed(seed: int, days: int) -> dict:
    from cryptography.fernet import Fernet

    root = Path(tempfile.mkdtemp(prefix=f"gate-floor-{seed}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "AIRFLOW"))}
    env.update(
        {
            "RECSYS_DATA_DIR": str(root / "data"),
            "RECSYS_SEED": str(seed),
            "RECSYS_PRIVACY__PSEUDONYM_KEY": f"gate-floor-bench-key-{seed:04d}-0123456789abcdef",
            "RECSYS_PRIVACY__ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "RECSYS_SIMULATOR__N_USERS": "300",
            "RECSYS_SIMULATOR__N_VIDEOS": "300",
            "RECSYS_TRAIN__EPOCHS": "6",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "False",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    load_before, t0 = os.getloadavg()[0], time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(days)], env=env, cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed} failed:\n{proc.stderr[-4000:]}")
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("@@GATE@@")]
    return {
        "seed": seed,
        "days": json.loads(line[len("@@GATE@@") :]),
        "seconds": round(time.monotonic() - t0, 1),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--days", type=int, default=3, help="the suite's days (tests/integration/conftest.py)"
    )
    args = parser.parse_args(argv)
    from recsys.config import EvaluateSettings

    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, args.days))
        first = [next(d for d in r["days"] if d["trained"]) for r in runs]
        aucs = [d["click_auc"] for r in runs for d in r["days"] if d.get("click_auc") is not None]
        result = {
            "benchmark": "gate_floor",
            "floor_auc": EvaluateSettings().floor_auc,
            "summary": {
                "seeds": len(runs),
                "first_model_blessed": sum(bool(d["blessed"]) for d in first),
                "click_auc_min": min(aucs) if aucs else None,
                "click_auc_max": max(aucs) if aucs else None,
            },
            "runs": runs,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "commit": _commit(),
            "command": "bench/gate_floor.py --seeds " + " ".join(map(str, args.seeds)),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

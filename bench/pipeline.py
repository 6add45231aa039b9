"""Benchmark: the whole daily pipeline on one simulated day, stage by stage: wall time and peak memory.

Run: ``.venv/bin/python bench/pipeline.py --interactions 100000 1000000 [--epochs 2]``
Writes ``bench/results/pipeline.json`` (rewritten after every size, so a long run leaves partial results).
``--until collect`` stops after that stage (``land`` still generates the day) and writes
``bench/results/pipeline_until_collect.json``: e.g. the collect stage alone at 100k, 1M and 10M events.

Design (how it compares with production):

* **One subprocess per stage**, as Airflow runs every task in a fresh process. The parent waits for each
  child with ``os.wait4``, whose rusage is that child's own: ``ru_maxrss`` is the stage's peak resident set
  (``getrusage(RUSAGE_CHILDREN)`` would give the maximum over all children so far, not per stage).
* Each child first imports what its stage needs (recsys, pandas/pyarrow, Great Expectations, TensorFlow,
  MLflow) and times that separately (``import_seconds``): ``stages`` holds the stage body's own seconds,
  ``process_seconds`` the whole process (Python start + imports + body), which is what a task costs.
* Scale: ``n_users = interactions / 20`` (about 58% of users are active, ``max(1, Poisson(3.4))`` sessions
  each, 10 impressions per session: about 20 events per user), 5,000 videos, 800 authors; the day is
  2026-01-05 and it is the only day in the lake (the feature window and the 7-day serving history hold
  one day). The actual event count is recorded.
* Training: ``--epochs`` (default 2, production default 12) with early stopping as configured; training
  time is roughly linear in epochs, so multiply ``train`` by epochs/2 for the production figure.
* Promotion is forced (``register`` gets ``blessed=True``), so ``recommend`` always scores with a model
  (a not-blessed first model would fall back to popularity lists and skip scoring); the gate's own
  decision is recorded.
* Embedded stores (SQLite tables and MLflow under a temporary data folder), no Pushgateway.
* The machine may be shared: the 1-minute load average before and after each size is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from meta import git_commit

RESULTS = Path(__file__).parent / "results" / "pipeline.json"
ROOT = Path(__file__).resolve().parents[1]
DS = date(2026, 1, 5)
STAGES = (
    "land",
    "collect",
    "validate",
    "anonymize",
    "features",
    "train",
    "evaluate",
    "register",
    "recommend",
    "publish",
)
# what each stage imports lazily; imported (and timed) before the stage body runs
PRELOAD = {
    "validate": ("great_expectations",),
    "train": ("tensorflow", "mlflow"),
    "evaluate": ("tensorflow", "mlflow"),
    "register": ("mlflow",),
    "recommend": ("tensorflow", "mlflow"),
    "publish": ("sqlalchemy",),
}
EVENTS_PER_USER = 20


# ---------------------------------------------------------------------------------------------- child
def child(stage_name: str, kwargs: dict, out: Path) -> int:
    t0 = time.perf_counter()
    import importlib

    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    from recsys import stages

    for mod in PRELOAD.get(stage_name, ()):
        importlib.import_module(mod)
    t1 = time.perf_counter()
    result = getattr(stages, stage_name)(DS, **kwargs)
    t2 = time.perf_counter()
    out.write_text(
        json.dumps({"import_seconds": t1 - t0, "stage_seconds": t2 - t1, "result": result}, default=str)
    )
    return 0


# ---------------------------------------------------------------------------------------------- parent
def _env(data_dir: Path, interactions: int, epochs: int) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        {
            "RECSYS_DATA_DIR": str(data_dir),
            "RECSYS_PRIVACY__PSEUDONYM_KEY": "bench-" + os.urandom(16).hex(),
            "RECSYS_PRIVACY__ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "RECSYS_SIMULATOR__N_USERS": str(max(100, interactions // EVENTS_PER_USER)),
            "RECSYS_SIMULATOR__N_VIDEOS": "5000",
            "RECSYS_SIMULATOR__N_AUTHORS": "800",
            "RECSYS_SIMULATOR__SESSIONS_PER_ACTIVE_USER": "3.4",
            "RECSYS_TRAIN__EPOCHS": str(epochs),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "GX_ANALYTICS_ENABLED": "False",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
    )
    return env


def _run_stage(name: str, kwargs: dict, env: dict, work: Path) -> dict:
    out = work / f"{name}.result.json"
    log = work / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", name, "--kwargs", json.dumps(kwargs), "--out", str(out)],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {name} failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
    data = json.loads(out.read_text())
    return {
        "process_seconds": wall,
        "import_seconds": data["import_seconds"],
        "stage_seconds": data["stage_seconds"],
        "peak_rss_bytes": rusage.ru_maxrss * 1024,
        "cpu_seconds": rusage.ru_utime + rusage.ru_stime,
        "result": data["result"],
    }


def run(interactions: int, epochs: int, until: str = STAGES[-1], keep: Path | None = None) -> dict:
    load_before = os.getloadavg()[0]
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=False)  # a fresh folder: an old lake would add its days
    with (
        contextlib.nullcontext(str(keep))
        if keep is not None
        else tempfile.TemporaryDirectory(prefix="recsys-bench-")
    ) as tmp:
        work = Path(tmp)
        env = _env(work / "data", interactions, epochs)
        if keep is not None:  # what reruns a stage on the kept folder: the same keys and settings
            (work / "env.json").write_text(
                json.dumps({k: v for k, v in env.items() if k.startswith("RECSYS_")}, indent=1)
            )
        per: dict[str, dict] = {}
        t0 = time.perf_counter()
        for name in STAGES[: STAGES.index(until) + 1]:
            kwargs: dict = {}
            if name == "evaluate":
                tr = per["train"]["result"]
                kwargs = {"run_id": tr["run_id"], "model_uri": tr["model_uri"]}
            elif name == "register":
                ev = per["evaluate"]["result"]
                kwargs = {"run_id": ev["run_id"], "model_uri": ev["model_uri"], "blessed": True}
            per[name] = _run_stage(name, kwargs, env, work)
            p = per[name]
            print(
                f"  {interactions:>9,} {name:<10} {p['stage_seconds']:8.1f}s body "
                f"{p['process_seconds']:8.1f}s process {p['peak_rss_bytes'] / 2**20:8.0f} MiB",
                flush=True,
            )
        wall = time.perf_counter() - t0
        lake_bytes = sum(p.stat().st_size for p in (work / "data").rglob("*") if p.is_file())
        landing_bytes = sum(p.stat().st_size for p in (work / "data" / "landing").rglob("*") if p.is_file())
    res = {k: per[k]["result"] for k in per}
    common = {
        "stages": {k: round(p["stage_seconds"], 2) for k, p in per.items()},
        "process_seconds": {k: round(p["process_seconds"], 2) for k, p in per.items()},
        "import_seconds": {k: round(p["import_seconds"], 2) for k, p in per.items()},
        "stage_peak_rss_bytes": {k: p["peak_rss_bytes"] for k, p in per.items()},
        "cpu_seconds": {k: round(p["cpu_seconds"], 1) for k, p in per.items()},
        "lake_bytes": lake_bytes,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    if until != STAGES[-1]:  # a partial run: the stages' own results instead of the whole pipeline's
        return {
            "interactions": int(res["collect"]["input_rows"]) if "collect" in res else None,
            "target_interactions": interactions,
            "wall_seconds": round(wall, 1),
            "landing_bytes_after": landing_bytes,  # sealed (encrypted) once collect ran
            **common,
            "results": res,
        }
    return {
        "interactions": int(res["collect"]["input_rows"]),
        "target_interactions": interactions,
        "wall_seconds": round(wall, 1),
        "peak_rss_bytes": max(p["peak_rss_bytes"] for p in per.values()),
        **common,
        "rows": {
            "users": int(res["collect"]["users_rows"]),
            "videos": int(res["collect"]["videos_rows"]),
            "accepted": int(res["validate"]["accepted_rows"]),
            "train": int(res["features"]["train_rows"]),
            "valid": int(res["features"]["valid_rows"]),
            "test": int(res["features"]["test_rows"]),
            "recs": int(res["recommend"]["recs_rows"]),
            "scored_users": int(res["recommend"]["users"]),
            "mean_candidates": res["recommend"]["mean_candidates"],
        },
        "train": {"epochs_setting": epochs, "epochs_run": res["train"]["epochs"]},
        "gate": {"blessed": res["evaluate"]["blessed"], "reasons": res["evaluate"]["reasons"]},
    }


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    mem = None
    with contextlib.suppress(OSError, StopIteration):
        mem = (
            int(
                next(
                    ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
                ).split()[1]
            )
            * 1024
        )

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    pkgs = {
        p: ver(p)
        for p in (
            "numpy",
            "pandas",
            "pyarrow",
            "tensorflow-cpu",
            "tensorflow",
            "keras",
            "mlflow",
            "great-expectations",
        )
    }
    return {
        "cpu_count": os.cpu_count(),
        "memory_bytes": mem,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "packages": {k: v for k, v in pkgs.items() if v},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--until", choices=STAGES, default=STAGES[-1], help="last stage to run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the data folder here (a new folder; one size only) with env.json, the RECSYS_ settings "
        "its stages ran with, e.g. to rerun train on a 1M features folder (bench/train_scale.py)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, json.loads(args.kwargs), Path(args.out))
    if args.keep is not None and len(args.interactions) != 1:
        parser.error("--keep takes one --interactions size")
    partial = args.until != STAGES[-1]
    if args.out is None:
        args.out = RESULTS.with_name(f"pipeline_until_{args.until}.json") if partial else RESULTS

    doc = {
        "benchmark": "one simulated day through every stage, one subprocess per stage"
        + (f" (stopped after {args.until})" if partial else ""),
        "method": __doc__.split("Design", 1)[1].strip(),
        "day": str(DS),
        "machine": machine(),
        **git_commit(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [],
    }
    for n in args.interactions:
        print(f"pipeline bench: ~{n:,} interactions", flush=True)
        doc["runs"].append(run(n, args.epochs, args.until, args.keep))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        json.dumps(
            [
                {k: r[k] for k in ("interactions", "wall_seconds", "stage_peak_rss_bytes", "stages")}
                for r in doc["runs"]
            ],
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

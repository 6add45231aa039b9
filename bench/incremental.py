"""Incremental vs full retraining on the simulator: held-out quality and training wall time.

For each seed, one simulated dataset (default world: 400 users, 500 videos) built with the pipeline's own
stages for ``--days`` days; the features of day N-1 and day N. Day N-1 is trained in full and registered
as the champion. Day N is then trained twice with :func:`recsys.train.train_model`, the code the
``train`` task runs, from the same features folder:

* ``full``: ``RECSYS_TRAIN__MODE=full``, a fresh model on the whole training split;
* ``incremental``: ``RECSYS_TRAIN__MODE=incremental``, warm-started from day N-1's champion, trained on
  the training split's last ``incremental_days`` day(s) only (docs/model.md, "Incremental training").

Both are scored on day N's held-out test split by :func:`recsys.evaluate.evaluate_run` (the gate's own
evaluation) with the simulated world: click AUC / GAUC of the logged impressions and true-utility
NDCG@10 over the visible catalog (``evaluate.truth_users`` test users). ``champion`` is day N-1's model
scored on day N as it is (no retraining), for scale. ``train_seconds`` is the wall time of
``train_model`` (planning, re-encoding, fitting, MLflow logging); the two day-N trainings alternate
their order across seeds. The machine is shared: the 1-minute load average is recorded around each
training.

Usage::

    .venv/bin/python bench/incremental.py --seeds 1 2 3 --days 6

Writes ``bench/results/incremental.json`` (after every seed) with every run, mean and population SD over
the seeds, the machine, load average and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
from meta import run_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "incremental.json"
START = date(2026, 1, 1)
METRICS = ("click_auc", "click_gauc", "like_auc", "true_ndcg_10")
FIGURES = (*METRICS, "train_seconds", "prepare_seconds", "fit_seconds", "epochs_run", "train_rows")


def _settings(data_dir: Path, seed: int, mode: str, incremental_days: int):
    from recsys.config import load_settings

    return load_settings(
        data_dir=data_dir,
        seed=seed,
        demo=False,
        source="simulator",
        train={"mode": mode, "incremental_days": incremental_days},
    )


def _train(settings, fdir: Path, name: str, work: Path) -> dict:
    from recsys.train import train_model

    load, t0 = os.getloadavg()[0], time.perf_counter()
    res = train_model(fdir, settings, run_name=name, work_dir=work)
    seconds = time.perf_counter() - t0
    import mlflow

    run = mlflow.get_run(res.run_id)
    return {
        "run_id": res.run_id,
        "model_uri": res.model_uri,
        "train_seconds": round(seconds, 2),
        "epochs_run": res.epochs_run,
        "train_rows": int(run.data.params["train_rows"]),
        "prepare_seconds": round(run.data.metrics["prepare_seconds"], 2),
        "fit_seconds": round(run.data.metrics["fit_seconds"], 2),
        "train_mode_tag": run.data.tags.get("train.mode"),
        "load_average_1m": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2)},
    }


def _evaluate(settings, run: dict, champion, fdir: Path, ds: date, world) -> tuple[dict, dict | None]:
    import mlflow

    from recsys.evaluate import evaluate_run
    from recsys.registry import load_ranker_dir

    local = mlflow.artifacts.download_artifacts(run["model_uri"])
    ranker = load_ranker_dir(Path(local) / "artifacts")
    res = evaluate_run(ranker, champion, fdir, settings.evaluate, world=world, ds=ds, seed=settings.seed)
    pick = {m: res["candidate"].get(m) for m in METRICS}
    champ = None if res["champion"] is None else {m: res["champion"].get(m) for m in METRICS}
    return {**pick, "blessed": res["decision"]["blessed"]}, champ


def run_seed(seed: int, days: int, incremental_days: int, root: Path) -> dict:
    from cryptography.fernet import Fernet

    from recsys import stages
    from recsys.registry import load_ranker, register
    from recsys.sim import world_for

    os.environ["RECSYS_PRIVACY__PSEUDONYM_KEY"] = f"incremental-bench-key-{seed:04d}-0123456789abcdef"
    os.environ["RECSYS_PRIVACY__ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    data_dir = root / f"seed-{seed}" / "data"
    full = _settings(data_dir, seed, "full", incremental_days)
    inc = _settings(data_dir, seed, "incremental", incremental_days)
    day_n = START + timedelta(days=days - 1)
    t0 = time.perf_counter()
    for i in range(days):
        ds = START + timedelta(days=i)
        for st in (stages.land, stages.collect, stages.validate, stages.anonymize):
            st(ds, full)
    for ds in (day_n - timedelta(days=1), day_n):
        stages.features(ds, full)
    data_seconds = time.perf_counter() - t0
    prev = _train(full, stages.features_dir(full, day_n - timedelta(days=1)), "champion", root / "ck-prev")
    register(full, prev["model_uri"], promote=True, tags={"ds": str(day_n - timedelta(days=1))})
    champion = load_ranker(full)
    fdir = stages.features_dir(full, day_n)
    order = [("full", full), ("incremental", inc)]
    if seed % 2 == 0:
        order.reverse()
    runs = {name: _train(s, fdir, name, root / f"ck-{name}") for name, s in order}
    world = world_for(full)
    out = {
        "seed": seed,
        "ds": str(day_n),
        "order": [n for n, _ in order],
        "data_seconds": round(data_seconds, 1),
    }
    champ = None
    for name, run in runs.items():
        figures, champ = _evaluate(full, run, champion, fdir, day_n, world)
        out[name] = {**run, **figures}
    out["champion"] = {**champ, "train_seconds": None, "epochs_run": None, "train_rows": None}
    out["champion_train_seconds"] = prev["train_seconds"]
    return out


def summarize(runs: list[dict]) -> dict:
    out = {}
    for scorer in ("full", "incremental", "champion"):
        out[scorer] = {}
        for fig in FIGURES:
            vals = [r[scorer][fig] for r in runs if r[scorer].get(fig) is not None]
            if vals:
                out[scorer][fig] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals)), "n": len(vals)}
    ratio = [r["incremental"]["train_seconds"] / r["full"]["train_seconds"] for r in runs]
    out["incremental_over_full_seconds"] = {"mean": float(np.mean(ratio)), "sd": float(np.std(ratio))}
    return out


def markdown(summary: dict) -> str:
    cols = [c for c in FIGURES if c != "like_auc"]
    lines = ["| day N model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for scorer in ("full", "incremental", "champion"):
        cells = []
        for c in cols:
            v = summary[scorer].get(c)
            fmt = (
                "{:.0f} ± {:.0f}"
                if c == "train_rows"
                else "{:.1f} ± {:.1f}"
                if "_seconds" in c or c == "epochs_run"
                else "{:.3f} ± {:.3f}"
            )
            cells.append(fmt.format(v["mean"], v["sd"]) if v else "-")
        lines.append(f"| {scorer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--incremental-days", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=None, help="default: a new temporary folder")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="recsys-incremental-"))
    start_info, t0, runs = run_info(), time.perf_counter(), []
    for seed in args.seeds:
        runs.append(run_seed(seed, args.days, args.incremental_days, root))
        summary = summarize(runs)
        result = {
            "benchmark": "incremental",
            "command": "bench/incremental.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "days": args.days,
            "incremental_days": args.incremental_days,
            "summary": summary,
            "table": markdown(summary),
            "runs": runs,
            "seconds": round(time.perf_counter() - t0, 1),
            "at_start": start_info,
            **run_info(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(
            json.dumps({"seed": seed, "full": runs[-1]["full"], "incremental": runs[-1]["incremental"]}),
            flush=True,
        )
    print(markdown(summarize(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the train stage on a large day at several batch sizes: time, peak memory and test quality.

Run (a 1M-interaction features folder first, kept by the pipeline bench)::

    .venv/bin/python bench/pipeline.py --interactions 1000000 --until features --keep /tmp/d1m \\
        --out /tmp/d1m/1000000.json
    .venv/bin/python bench/train_scale.py --kept /tmp/d1m/1000000 --batch-sizes 256 auto --seeds 0 1 2

Writes ``bench/results/train_scale.json``.

Design:

* Every training is the train stage's own call (``recsys.train.train_model`` on the features folder, with
  the settings the pipeline bench ran the day with, from ``env.json``) in a fresh subprocess, as Airflow
  runs a task; the parent reads that child's own rusage with ``os.wait4``: peak RSS, CPU seconds, wall.
  ``process_seconds`` includes Python start and the TensorFlow/MLflow imports (about 5 s).
* ``auto`` is the configured rule (``train.batch_size = "auto"``); a number is an explicit batch size,
  trained at ``--lr-rule``'s learning rate for it (``sqrt``: 3e-3 x sqrt(batch / 256), the rule ``auto``
  applies; ``linear``: 3e-3 x batch / 256; ``none``: 3e-3), so a row says which learning rate it used.
* Seeds are ``settings.seed`` (weights' initialization, dropout, the per-epoch shuffle) on the same day.
* Quality: the logged ranker (the MLflow model, transform included, as evaluate loads it) scores the test
  split; per-task metrics are :func:`recsys.evaluate.task_metrics` (click AUC, GAUC, log loss, ECE, ...,
  watch RMSE) and the ranking metrics of each test user's impressions (NDCG/Recall/MAP@10), the
  candidate's figures the evaluate stage reports (without its catalog ranking check and true-utility
  sample, which do not depend on the batch size's effect any differently).
* The summary gives, per batch setting, the mean and the spread (min, max, standard deviation) over seeds.
* The machine may be shared: the load average before and after every training is recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from meta import run_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "train_scale.json"
DS = date(2026, 1, 5)
BASE_LR, BASE_BATCH = 3e-3, 256


def learning_rate(batch: int, rule: str) -> float:
    scale = {"sqrt": math.sqrt(batch / BASE_BATCH), "linear": batch / BASE_BATCH, "none": 1.0}[rule]
    return BASE_LR * scale


# ---------------------------------------------------------------------------------------------- child
def child(out: Path, work: Path) -> int:
    t0 = time.perf_counter()
    import mlflow

    from recsys.config import load_settings
    from recsys.train import train_model

    settings = load_settings()
    features = Path(settings.data_dir) / "features" / "examples" / f"ds={DS}"
    t1 = time.perf_counter()
    res = train_model(
        features, settings, run_name="train-scale", work_dir=work, tags={"bench": "train_scale"}
    )
    t2 = time.perf_counter()
    run = mlflow.MlflowClient().get_run(res.run_id)
    out.write_text(
        json.dumps(
            {
                "import_seconds": t1 - t0,
                "train_seconds": t2 - t1,
                "run_id": res.run_id,
                "model_uri": res.model_uri,
                "epochs_run": res.epochs_run,
                "best_val_loss": res.best_val_loss,
                "params": {
                    k: run.data.params.get(k)
                    for k in (
                        "batch_size",
                        "batch_size_setting",
                        "learning_rate",
                        "jit_compile",
                        "train_rows",
                    )
                },
                "fit_seconds": run.data.metrics.get("fit_seconds"),
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------- parent
def train_once(
    kept: Path,
    batch: str,
    seed: int,
    lr_rule: str,
    epochs: int,
    tmp: Path,
    lr: float | None = None,
    patience: str = "auto",
) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(json.loads((kept / "env.json").read_text()))
    env.update(
        {
            "RECSYS_SEED": str(seed),
            "RECSYS_TRAIN__EPOCHS": str(epochs),
            "RECSYS_TRAIN__BATCH_SIZE": batch,
            "RECSYS_TRAIN__PATIENCE": patience,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
    )
    if batch != "auto":
        env["RECSYS_TRAIN__LEARNING_RATE"] = repr(
            lr if lr is not None else learning_rate(int(batch), lr_rule)
        )
    out, log = tmp / "result.json", tmp / "train.log"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(out), "--work", str(tmp / "work")],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"training failed:\n{log.read_text()[-4000:]}")
    res = json.loads(out.read_text())
    return {
        "batch_setting": batch,
        "lr_rule": None if batch == "auto" else ("fixed" if lr is not None else lr_rule),
        "seed": seed,
        **res,
        "process_seconds": round(wall, 2),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 1),
        "peak_rss_bytes": ru.ru_maxrss * 1024,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }


def test_quality(kept: Path, model_uri: str, test) -> dict:
    """The evaluate stage's candidate figures on the test split, from the logged model."""
    import mlflow
    import numpy as np

    from recsys import tasks as task_spec
    from recsys.evaluate import task_metrics
    from recsys.rank_metrics import ranking_metrics
    from recsys.registry import load_ranker_dir

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp)
        ranker = load_ranker_dir(Path(local) / "artifacts")
        out = ranker.predict(test)
    preds = {t: out[t].to_numpy(float) for t in task_spec.names() if t in out}
    labels = {t: test[t].to_numpy(float) for t in task_spec.names()}
    users = test["user_key"].astype(str).to_numpy()
    m = task_metrics(labels, preds, users)
    m.update(
        ranking_metrics(
            users, test["video_id"].astype(str).to_numpy(), labels["click"], out["score"].to_numpy(float), 10
        )
    )
    return {k: float(v) for k, v in m.items() if np.isfinite(v)}


def summary(runs: list[dict]) -> dict:
    import numpy as np

    out: dict[str, dict] = {}

    def key(r: dict) -> str:  # a batch setting, and the patience when it is not the default
        p = r.get("patience_setting", "auto")
        return r["batch_setting"] if p == "auto" else f"{r['batch_setting']} patience {p}"

    for batch in dict.fromkeys(map(key, runs)):
        rs = [r for r in runs if key(r) == batch]
        figs = {
            "process_seconds": [r["process_seconds"] for r in rs],
            "train_seconds": [r["train_seconds"] for r in rs],
            "fit_seconds": [r["fit_seconds"] for r in rs],
            "epochs_run": [r["epochs_run"] for r in rs],
            "peak_rss_bytes": [r["peak_rss_bytes"] for r in rs],
            **{k: [r["test"].get(k, float("nan")) for r in rs] for k in rs[0]["test"]},
        }
        out[batch] = {
            "seeds": [r["seed"] for r in rs],
            "batch_size": sorted({r["params"]["batch_size"] for r in rs}),
            "learning_rate": sorted({r["params"]["learning_rate"] for r in rs}),
            **{
                k: {
                    "mean": float(np.mean(v)),
                    "min": float(np.min(v)),
                    "max": float(np.max(v)),
                    "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                }
                for k, v in figs.items()
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--kept", type=Path, help="a work folder kept by bench/pipeline.py --keep DIR (DIR/<interactions>)"
    )
    ap.add_argument("--batch-sizes", nargs="+", default=["256", "auto"], help="numbers or 'auto'")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr-rule", choices=("sqrt", "linear", "none"), default="sqrt")
    ap.add_argument(
        "--learning-rate", type=float, default=None, help="for numeric batches, instead of the rule"
    )
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument(
        "--patience", nargs="+", default=["auto"], help="early stopping's patience settings: ints or 'auto'"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.work)
    for b in args.batch_sizes:
        if b != "auto" and not b.isdigit():
            ap.error(f"--batch-sizes: {b!r} is neither a number nor 'auto'")

    env = json.loads((args.kept / "env.json").read_text())
    os.environ.update({k: v for k, v in env.items()})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from recsys.config import load_settings
    from recsys.tracking import configure

    settings = load_settings()
    configure(settings)
    features = Path(settings.data_dir) / "features" / "examples" / f"ds={DS}"
    test = pd.read_parquet(features / "test.parquet")
    doc = {
        "benchmark": "the train stage on one large day at several batch sizes: time, memory, test quality",
        "method": __doc__.split("Design:", 1)[1].strip(),
        "command": "bench/train_scale.py " + " ".join(sys.argv[1:]),
        "features": {"interactions_target": None, "test_rows": len(test)},
        **run_info(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [],
    }
    meta_file = args.kept.parent / (args.kept.name + ".json")
    if meta_file.exists():  # the pipeline bench's record of the kept day (--out next to the folder)
        kept_run = json.loads(meta_file.read_text())["runs"][0]
        doc["features"]["interactions_target"] = kept_run["target_interactions"]
        doc["features"]["interactions"] = kept_run["interactions"]
    runs = [(seed, batch, p) for seed in args.seeds for batch in args.batch_sizes for p in args.patience]
    for seed, batch, patience in runs:
        with tempfile.TemporaryDirectory(prefix="train-scale-") as tmp:
            r = train_once(
                args.kept, batch, seed, args.lr_rule, args.epochs, Path(tmp), args.learning_rate, patience
            )
        r["patience_setting"] = patience
        r["test"] = test_quality(args.kept, r["model_uri"], test)
        doc["runs"].append(r)
        p, auc = r["params"], r["test"].get("click_auc", float("nan"))
        print(
            f"batch {batch:>5} (={p['batch_size']}, lr {p['learning_rate']}, jit {p['jit_compile']})"
            f" patience {patience} seed {seed}: {r['process_seconds']:6.1f}s process,"
            f" fit {r['fit_seconds']:6.1f}s,"
            f" {r['epochs_run']} epochs, {r['peak_rss_bytes'] / 2**20:6.0f} MiB, click AUC {auc:.4f}"
            f" load {r['load_average_1m']}",
            flush=True,
        )
        doc["summary"] = summary(doc["runs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Model-variant experiments on simulated data with position bias (the table in docs/model.md).

Builds one simulated multi-day dataset with the pipeline's own stages (land -> collect -> validate ->
anonymize for each day, then features for the last day, whose test split is that whole day), trains each
variant with :func:`recsys.train.train_model` (one MLflow run each, experiment ``recsys-experiments``), and
reports on the test day:

* per-task AUC and GAUC of the logged impressions (:func:`recsys.evaluate.task_metrics`);
* the true-utility NDCG@10 of the model's ranking of the whole visible catalog for up to 200 test-day
  users: gains are the simulator's ``World.true_utility`` (not the biased logged clicks), the ideal is the
  oracle order, computed with ``sklearn.metrics.ndcg_score``. For scale, the same users and catalog are
  ranked by the pipeline's popularity and recent-category baselines (:mod:`recsys.baselines`, fitted on
  train + valid as the evaluate stage fits them) and at random.

Usage (the command that produced docs/model.md)::

    .venv/bin/python bench/experiments.py --data-dir /tmp/recsys-exp2 --days 6 --seeds 1 2

Keys: RECSYS_PRIVACY__PSEUDONYM_KEY / RECSYS_PRIVACY__ENCRYPTION_KEYS are taken from the environment, or
generated for this run (and written to ``<data-dir>/keys.env`` so a rerun can reuse the dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from meta import git_commit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "shared_bottom+bias": {"variant": "shared_bottom", "bias_tower": True},
    "mmoe+bias": {"variant": "mmoe", "bias_tower": True},
    "ple+bias": {"variant": "ple", "bias_tower": True},
    "mmoe-nobias": {"variant": "mmoe", "bias_tower": False},
}
START = date(2026, 1, 1)
# test-day figures per run (recsys.evaluate.task_metrics), in table order
TASK_METRICS = ("click_auc", "click_gauc", "like_auc", "like_gauc", "share_auc", "share_gauc", "watch_rmse")


_KEYS_SET_HERE: set[str] = set()  # keys this module put in the environment (for an earlier dataset)


def ensure_keys(data_dir: Path) -> None:
    """Use the keys in the environment, else the ones saved with the dataset, else new ones.

    Keys an earlier call put in the environment (another dataset's, e.g. the previous seed's in one bench
    process) do not count as the environment's: each dataset is read with the keys it was written with.
    """
    keys_file = data_dir / "keys.env"
    names = ("RECSYS_PRIVACY__PSEUDONYM_KEY", "RECSYS_PRIVACY__ENCRYPTION_KEYS")
    if all(os.environ.get(k) for k in names) and not _KEYS_SET_HERE & set(names):
        return
    if keys_file.exists():
        for line in keys_file.read_text().splitlines():
            k, _, v = line.partition("=")
            os.environ[k] = v
            _KEYS_SET_HERE.add(k)
        return
    from cryptography.fernet import Fernet

    data_dir.mkdir(parents=True, exist_ok=True)
    vals = {
        "RECSYS_PRIVACY__PSEUDONYM_KEY": "bench-" + os.urandom(16).hex(),
        "RECSYS_PRIVACY__ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    keys_file.write_text("".join(f"{k}={v}\n" for k, v in vals.items()))
    keys_file.chmod(0o600)
    os.environ.update(vals)
    _KEYS_SET_HERE.update(vals)


def base_settings(data_dir: Path, tracking_uri: str | None):
    from recsys.config import load_settings

    kw = {"data_dir": data_dir, "experiment": "recsys-experiments", "demo": False, "source": "simulator"}
    if tracking_uri:
        kw["mlflow_tracking_uri"] = tracking_uri
    return load_settings(**kw)


def build_dataset(settings, days: int) -> date:
    """Run the ingestion stages for ``days`` days and the features stage for the last; returns that day."""
    from recsys import stages

    last = START + timedelta(days=days - 1)
    fdir = stages.features_dir(settings, last)
    if (fdir / "test.parquet").exists() and (fdir / "transform.json").exists():
        return last
    for i in range(days):
        ds = START + timedelta(days=i)
        for st in (stages.land, stages.collect, stages.validate, stages.anonymize):
            st(ds, settings)
    stages.features(last, settings)
    return last


def ndcg_study(ranker, settings, ds: date, n_users: int) -> dict:
    """True-utility NDCG@10 over the visible catalog for up to ``n_users`` test-day users."""
    from sklearn.metrics import ndcg_score

    ctx = _ndcg_context(settings, ds, n_users)
    return _ndcg_all(ctx, _by_user(ctx, ranker.predict(ctx["frame"])["score"]), ndcg_score)


def _by_user(ctx: dict, scores) -> np.ndarray:
    """Scores of the rows of ``ctx["frame"]`` (user-major) as a users x candidates matrix."""
    return np.asarray(scores, float).reshape(len(ctx["users"]), len(ctx["cand"]))


_CTX: dict = {}


def _ndcg_context(settings, ds: date, n_users: int) -> dict:
    """Test-day users, the visible catalog and the true utilities (computed once per dataset)."""
    key = (str(settings.data_dir), ds, n_users)
    if key in _CTX:
        return _CTX[key]
    from recsys.baselines import GlobalPopularity, RecentCategoryPopularity
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.serving.rank import scoring_frame
    from recsys.sim import build_world
    from recsys.stages import features_dir, open_lake

    lake = open_lake(settings)
    clean_users = lake.read_frame("clean", "users", ds)
    clean_videos = lake.read_frame("clean", "videos", ds)
    test = pd.read_parquet(features_dir(settings, ds) / "test.parquet", columns=["user_key"])
    world = build_world(settings.simulator, settings.seed)
    pkey = load_pseudonym_key(settings)
    uidx = {pseudonym(u, pkey): i for i, u in enumerate(world.users["user_id"])}
    users = sorted(u for u in test["user_key"].unique() if u in uidx)
    users = list(np.random.default_rng(0).permutation(users)[:n_users])
    vidx = world.video_index()
    visible = set(int(world.videos["video_id"].iloc[i]) for i in np.flatnonzero(world.visible_mask(ds)))
    cand = sorted(int(v) for v in clean_videos["video_id"].astype("int64").unique() if int(v) in visible)
    vi = np.array([vidx[v] for v in cand])
    util = np.stack([world.true_utility(np.full(len(vi), uidx[u]), vi, ds) for u in users])
    at = pd.Timestamp(ds, tz="UTC") + pd.Timedelta(hours=18)
    frame = scoring_frame(users, dict.fromkeys(users, cand), clean_users, clean_videos, at)
    # the evaluate stage's baselines, fitted as it fits them: on the train + valid examples
    cols = ["user_key", "video_id", "category", "ts", "click"]
    fdir = features_dir(settings, ds)
    history = pd.concat(
        [pd.read_parquet(fdir / f"{p}.parquet", columns=cols) for p in ("train", "valid")], ignore_index=True
    )
    baselines = [GlobalPopularity().fit(history), RecentCategoryPopularity().fit(history)]
    ctx = {"users": users, "cand": cand, "util": util, "frame": frame, "baselines": baselines}
    _CTX[key] = ctx
    return ctx


def _ndcg_all(ctx: dict, scores: np.ndarray, ndcg_score) -> dict:
    util = ctx["util"]
    return {
        "ndcg10": float(
            np.mean([ndcg_score(util[i : i + 1], scores[i : i + 1], k=10) for i in range(len(util))])
        ),
        "ndcg_users": len(util),
        "ndcg_candidates": len(ctx["cand"]),
    }


def reference_ndcg(settings, ds: date, n_users: int) -> dict:
    from sklearn.metrics import ndcg_score

    ctx = _ndcg_context(settings, ds, n_users)
    scores = {b.name: _by_user(ctx, b.score(ctx["frame"])) for b in ctx["baselines"]}
    scores["random"] = np.random.default_rng(0).random(ctx["util"].shape)
    return {**{n: _ndcg_all(ctx, s, ndcg_score)["ndcg10"] for n, s in scores.items()}, "oracle": 1.0}


def run_variant(settings, ds: date, name: str, overrides: dict, seed: int, n_users: int) -> dict:
    import mlflow

    from recsys import tasks
    from recsys.evaluate import task_metrics
    from recsys.registry import load_ranker_dir
    from recsys.stages import features_dir
    from recsys.train import train_model

    s = settings.model_copy(update={"seed": seed, "model": settings.model.model_copy(update=overrides)})
    fdir = features_dir(s, ds)
    t0 = time.monotonic()
    res = train_model(
        fdir,
        s,
        run_name=f"{name}-seed{seed}",
        tags={"ds": str(ds), "bench": "experiments", "variant_name": name},
        work_dir=s.data_dir / "checkpoints" / f"exp-{name}-{seed}",
    )
    train_s = time.monotonic() - t0
    local = Path(mlflow.artifacts.download_artifacts(res.model_uri))
    ranker = load_ranker_dir(local / "artifacts")
    test = pd.read_parquet(fdir / "test.parquet")
    preds = ranker.predict_tasks(test)
    labels = {t: test[t].to_numpy(float) for t in tasks.names()}
    m = task_metrics(labels, preds, test["user_key"].to_numpy())
    nd = ndcg_study(ranker, s, ds, n_users)
    out = {
        "name": name,
        "seed": seed,
        "model_variant": overrides["variant"],
        "bias_tower": overrides["bias_tower"],
        "run_id": res.run_id,
        "epochs": res.epochs_run,
        "best_val_loss": res.best_val_loss,
        "train_seconds": round(train_s, 1),
        **{k: m[k] for k in TASK_METRICS},
        **nd,
    }
    with mlflow.start_run(run_id=res.run_id):
        mlflow.log_metrics(
            {
                f"test_{k}": float(v)
                for k, v in out.items()
                if k.endswith(("auc", "gauc", "rmse")) or k == "ndcg10"
            }
        )
    return out


def summarize(rows: list[dict]) -> list[dict]:
    keys = [*TASK_METRICS, "ndcg10", "epochs", "train_seconds"]
    out = []
    for name in VARIANTS:
        mine = [r for r in rows if _name(r) == name]
        if not mine:
            continue
        agg = {"variant": name, "seeds": [r["seed"] for r in mine]}
        for k in keys:
            vals = np.array([r[k] for r in mine], float)
            agg[k] = float(np.nanmean(vals))
            agg[f"{k}_sd"] = float(np.nanstd(vals)) if len(vals) > 1 else 0.0
        out.append(agg)
    return out


def _name(row: dict) -> str:
    """The variant name of a result row (rows written before the "name" key: from variant + bias flag)."""
    if "name" in row:
        return row["name"]
    v = row.get("model_variant", row.get("variant"))
    return f"{v}+bias" if row["bias_tower"] else f"{v}-nobias"


def markdown_table(summary: list[dict], ref: dict) -> str:
    cols = [
        ("click_auc", "click AUC"),
        ("click_gauc", "click GAUC"),
        ("like_auc", "like AUC"),
        ("like_gauc", "like GAUC"),
        ("share_auc", "share AUC"),
        ("share_gauc", "share GAUC"),
        ("watch_rmse", "watch RMSE"),
        ("ndcg10", "true-utility NDCG@10"),
    ]
    lines = [
        "| variant | " + " | ".join(c[1] for c in cols) + " | epochs |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for s in summary:
        cells = [f"{s[k]:.3f} ± {s[k + '_sd']:.3f}" if s[k + "_sd"] else f"{s[k]:.3f}" for k, _ in cols]
        lines.append(f"| {s['variant']} | " + " | ".join(cells) + f" | {s['epochs']:.1f} |")
    for key in ("popularity", "recent_category", "random"):
        if key in ref:  # results written before the recent-category reference lack it
            lines.append(f"| {key.replace('_', ' ')} (reference) | | | | | | | | {ref[key]:.3f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/recsys-exp"))
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite under --data-dir)")
    ap.add_argument(
        "--resummarize",
        action="store_true",
        help="only rebuild the summary and table of an existing --out file",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "experiments.json")
    args = ap.parse_args(argv)

    if args.resummarize:
        res = json.loads(args.out.read_text())
        res["summary"] = summarize(res["runs"])
        res["table_markdown"] = markdown_table(res["summary"], res["reference_ndcg10"])
        args.out.write_text(json.dumps(res, indent=2, default=str))
        print(res["table_markdown"])
        return 0
    ensure_keys(args.data_dir)
    settings = base_settings(args.data_dir, args.tracking_uri)
    t0 = time.monotonic()
    ds = build_dataset(settings, args.days)
    data_s = time.monotonic() - t0
    import pyarrow.parquet as pq

    from recsys.stages import features_dir

    fdir = features_dir(settings, ds)
    rows_n = {n: pq.ParquetFile(fdir / f"{n}.parquet").metadata.num_rows for n in ("train", "valid", "test")}
    print(f"dataset ready in {data_s:.0f}s: {rows_n}", flush=True)
    ref = reference_ndcg(settings, ds, args.users)
    print(f"reference NDCG@10: {ref}", flush=True)
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            r = run_variant(settings, ds, name, VARIANTS[name], seed, args.users)
            print(json.dumps(r), flush=True)
            rows.append(r)
            _write(args, settings, ds, rows_n, ref, rows, time.monotonic() - t0)
    print(markdown_table(summarize(rows), ref))
    return 0


def _write(args, settings, ds, rows_n, ref, rows, elapsed) -> None:
    summary = summarize(rows)
    out = {
        "command": "bench/experiments.py " + " ".join(sys.argv[1:]),
        **git_commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "dataset": {
            "days": args.days,
            "start": str(START),
            "test_day": str(ds),
            "rows": rows_n,
            "simulator": settings.simulator.model_dump(mode="json"),
            "world_seed": settings.seed,
        },
        "train": settings.train.model_dump(mode="json"),
        "model_defaults": settings.model.model_dump(mode="json"),
        "mlflow_tracking_uri": settings.resolved_tracking_uri,
        "experiment": settings.experiment,
        "reference_ndcg10": ref,
        "runs": rows,
        "summary": summary,
        "table_markdown": markdown_table(summary, ref),
        "elapsed_seconds": round(elapsed, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())

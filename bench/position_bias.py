"""Does the position-bias tower matter when the logged slates come from the model's own ranking?

docs/model.md's variant study trained on days logged with popularity-drawn slates (no list published yet),
where a position says little about the item, and found no clear effect of the bias tower. This bench
builds the case where it should matter: from ``--self-ranked-from`` on, every day's slates are the lists
the latest model published the evening before (the simulator's users see their live list, top items
always at the top), so a video's logged click rate mixes its appeal with the place the model gave it.

Per seed (a different world each): days 1 .. ``--days`` through the pipeline's own stages
(``land -> collect -> validate -> anonymize``, then from day 2 ``features -> train -> register ->
recommend -> publish``; the logging policy is the latest model whatever the gate would say, so
``register`` always promotes), then the last day's features: MMoE with and without the bias tower
(:func:`experiments.run_variant`, the shipped settings otherwise), each scored on the test day by
true-utility NDCG@10 over the visible catalog (the simulator's truth, not the logged clicks) and by the
logged click AUC/GAUC. The share of the training impressions that came from published lists is recorded.

Writes ``bench/results/position_bias.json`` (runs, mean and sd over seeds, machine, load, commit).
Usage: ``python bench/position_bias.py [--seeds 1 2 3] [--days 6] [--self-ranked-from 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from experiments import START, TASK_METRICS, ensure_keys, run_variant  # noqa: E402
from meta import run_info  # noqa: E402

VARIANTS = {
    "mmoe+bias": {"variant": "mmoe", "bias_tower": True},
    "mmoe-nobias": {"variant": "mmoe", "bias_tower": False},
}


def build_self_ranked(settings, days: int, self_ranked_from: int) -> dict:
    """Days 1..``days`` with the model's own lists as the logging policy from day ``self_ranked_from``."""
    from recsys import stages

    last = START + timedelta(days=days - 1)
    done = settings.data_dir / "self_ranked.json"
    if done.exists() and (stages.features_dir(settings, last) / "test.parquet").exists():
        info = json.loads(done.read_text())
        if info.get("days_built") == days and info.get("self_ranked_from") == self_ranked_from:
            return info
        raise SystemExit(f"{settings.data_dir} holds another logging setup: remove it or pass --data-dir")
    log = []
    for i in range(days):
        ds = START + timedelta(days=i)
        landed = stages.land(ds, settings)
        for st in (stages.collect, stages.validate, stages.anonymize):
            st(ds, settings)
        row = {"ds": str(ds), "rec_version": landed.get("rec_version")}
        if i + 1 == days:
            stages.features(ds, settings)  # the test day's split; no model for it
        elif i + 2 >= self_ranked_from:  # publish tonight what tomorrow's users are shown
            stages.features(ds, settings)
            t = stages.train(ds, settings, trigger="bench")
            stages.register(ds, settings, run_id=t["run_id"], blessed=True, model_uri=t.get("model_uri"))
            row["recs_rows"] = stages.recommend(ds, settings).get("recs_rows")
            stages.publish(ds, settings)
        log.append(row)
    info = {"days": log, "days_built": days, "self_ranked_from": self_ranked_from}
    done.write_text(json.dumps(info, indent=2))
    return info


def from_lists_share(settings, ds) -> float:
    """Share of the training split's impressions (the features of ``ds``: what the variants are trained
    on, validation tail excluded) that were shown from a published list."""
    from recsys import stages

    path = stages.features_dir(settings, ds) / "train.parquet"
    have = set(pd.read_parquet(path, columns=None).columns) if path.exists() else set()
    if "rec_version" not in have:
        return float("nan")
    return float(pd.read_parquet(path, columns=["rec_version"])["rec_version"].notna().mean())


def stat(vals) -> dict:
    v = np.asarray(vals, float)
    return {"mean": float(np.mean(v)), "sd": float(np.std(v)), "values": v.tolist()}


def main(argv: list[str] | None = None) -> int:
    from recsys.config import load_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--self-ranked-from", type=int, default=3)
    ap.add_argument("--ndcg-users", type=int, default=200)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/recsys-bench-posbias"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "position_bias.json")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    result: dict = {
        "benchmark": "position_bias",
        "command": "bench/position_bias.py " + " ".join(sys.argv[1:] if argv is None else argv),
        **run_info(),
        "runs": [],
    }
    for seed in args.seeds:
        d = args.data_dir / f"seed{seed}"
        ensure_keys(d)
        s = load_settings(data_dir=d, seed=seed, demo=False, source="simulator", experiment="bench-posbias")
        s = s.model_copy(update={"retrieval": s.retrieval.model_copy(update={"enabled": False})})
        built = build_self_ranked(s, args.days, args.self_ranked_from)
        ds = START + timedelta(days=args.days - 1)
        share = from_lists_share(s, ds)
        for name, overrides in VARIANTS.items():
            r = run_variant(s, ds, name, overrides, seed, args.ndcg_users)
            r["from_lists_share"] = share
            r["logging"] = built["days"]
            result["runs"].append(r)
            print(
                json.dumps({k: r[k] for k in ("name", "seed", "ndcg10", "click_auc", "epochs")}), flush=True
            )
        _write(args.out, result, args)
    _write(args.out, result, args, final=True, elapsed=time.monotonic() - t_start)
    return 0


def _write(path: Path, result: dict, args, final: bool = False, elapsed: float | None = None) -> None:
    runs = result["runs"]
    summary = {}
    for name in VARIANTS:
        mine = [r for r in runs if r["name"] == name]
        if mine:
            summary[name] = {k: stat([r[k] for r in mine]) for k in ("ndcg10", *TASK_METRICS)}
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["name"]] = r["ndcg10"]
    gains = [v["mmoe+bias"] - v["mmoe-nobias"] for v in by_seed.values() if len(v) == 2]
    if gains:
        summary["ndcg10_gain_of_the_tower"] = stat(gains)
    result["summary"] = summary
    if final:
        result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        result["elapsed_seconds"] = round(elapsed or 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())

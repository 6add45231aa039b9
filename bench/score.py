"""Scoring speed: the batch path vs a naive per-user ``model.predict`` loop, and 10k users x 300 candidates.

Default model size (``recsys.config.ModelSettings()``), an untrained seeded model on a transform fitted to
synthetic data with 10,000 users and 5,000 videos. Writes ``bench/results/score.json``::

    pairs_per_second_batch   pairs per second of the batch path (rank_pairs: per-user/per-video
                             encoding, direct model calls in large batches, diverse top N included)
    pairs_per_second_naive   the same by a loop calling Ranker.predict (transform + model.predict) per user
    speedup                  their ratio
    wall_seconds_10k_x_300   rank_pairs for 10,000 users x 300 candidates (scores and diverse top-N lists)
    peak_rss_bytes           the process's peak resident memory (getrusage ru_maxrss)

Usage: ``python bench/score.py [--users 10000] [--videos 5000] [--candidates 300] [--naive-users 100]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from meta import run_info

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--videos", type=int, default=5_000)
    ap.add_argument("--candidates", type=int, default=300)
    ap.add_argument("--examples", type=int, default=200_000)
    ap.add_argument("--naive-users", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "score.json")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from recsys.config import ServingSettings
    from recsys.serving.rank import predict_scores, rank_pairs, scoring_frame
    from recsys.serving.synthetic import AT, candidates_for, make_ranker, make_world

    t0 = time.perf_counter()
    world = make_world(args.users, args.videos, args.examples, seed=0)
    ranker = make_ranker(world, seed=0)
    keys = world.users["user_key"].tolist()
    cands = candidates_for(world, keys, args.candidates, seed=1)
    setup = time.perf_counter() - t0
    sv = ServingSettings()

    # warm up both paths (tracing, first-call costs) on a few users
    warm = scoring_frame(keys[:4], cands, world.users, world.videos, AT)
    predict_scores(ranker, warm)
    ranker.predict_tasks(warm[warm["user_key"] == keys[0]])

    # naive: one transform + model.predict call per user
    naive_keys = keys[: args.naive_users]
    naive_frame = scoring_frame(naive_keys, cands, world.users, world.videos, AT)
    per_user = [g for _, g in naive_frame.groupby("user_key", sort=False)]
    t = time.perf_counter()
    for g in per_user:
        ranker.predict(g)
    naive_s = time.perf_counter() - t
    naive_pps = len(naive_frame) / naive_s

    # batch: every user at once (rank_pairs: the batch path of recommend / the Dask shards), top N included
    n_pairs = sum(len(cands[u]) for u in keys)
    t = time.perf_counter()
    recs = rank_pairs(
        ranker, keys, cands, world.users, world.videos, AT, sv.top_n, sv.max_per_author, sv.max_per_category
    )
    wall = time.perf_counter() - t
    batch_pps = n_pairs / wall

    # the batch path's scores equal the naive path's (the naive users' top N)
    mine = recs[recs["user_key"].isin(naive_keys[:5])]
    ref = pd.concat([g.assign(score=ranker.predict(g)["score"].to_numpy()) for g in per_user[:5]])
    ref = ref.set_index(["user_key", "video_id"])["score"]
    max_diff = float(
        np.abs(
            ref.loc[list(zip(mine["user_key"], mine["video_id"], strict=True))].to_numpy()
            - mine["score"].to_numpy()
        ).max()
    )

    result = {
        "pairs_per_second_batch": round(batch_pps, 1),
        "pairs_per_second_naive": round(naive_pps, 1),
        "speedup": round(batch_pps / naive_pps, 2),
        "wall_seconds_10k_x_300": round(wall, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "detail": {
            "users": args.users,
            "videos": args.videos,
            "candidates": args.candidates,
            "pairs": n_pairs,
            "lists": int(recs["user_key"].nunique()),
            "naive_users": len(per_user),
            "naive_pairs": len(naive_frame),
            "naive_seconds": round(naive_s, 2),
            "setup_seconds": round(setup, 2),
            "max_abs_score_diff_batch_vs_naive": max_diff,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "naive: Ranker.predict (transform.apply + model.predict) per user, scoring only; batch: "
            "rank_pairs over all users (encoding, model, diverse top N) - the same wall time",
        },
    }
    result.update(run_info())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

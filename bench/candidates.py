"""Candidate generation: recall of each pool and of the union, speed and memory, and final-list quality.

Writes ``bench/results/candidates.json`` with:

* ``throughput``: for 10k and 100k synthetic users x 200 candidates (5,000 videos, 20 clicks per user),
  the wall time of the two-tower pool (user tower + exact index search) and of the whole union
  (:func:`recsys.serving.candidates.generate_candidates`), users x candidates per second, and the peak
  RSS of the process (each size in a fresh subprocess that loads the saved retrieval model, as the
  ``recommend`` task does; the model is fitted once beforehand in a process of its own; ``getrusage``
  ``ru_maxrss``);
* ``quality``: per simulator seed (a different world each), on a dataset built by the pipeline's own
  stages (land -> collect -> validate -> anonymize per day, features for the last day):
  - candidate Recall@K (K = 100, 200, 500) of the test day's new engagements (videos the user had not
    clicked before) for each pool alone and for the rule-based union and the two-tower + rules union;
    history = the 7 days before the test day, as serving reads it;
  - true-utility NDCG@10 of the final lists: the ranker (trained on the same features) ranks each
    candidate set and keeps the diverse top 10 as serving does; gains are the simulator's true utility,
    the ideal is the oracle's top 10 over the visible catalog;
  - what the simulator allows at best: ``recall_truth`` (the same Recall@K for scorers that know the
    truth: exposure x click probability, exposure alone, click probability alone) and
    ``ndcg10_candidate_set_ceiling`` (each candidate set's true-utility NDCG@10 under a perfect ranker);
  then the mean and the standard deviation over seeds;
* ``movielens`` (with ``--movielens FOLDER ...``): the same Recall@K table on MovieLens-format histories,
  e.g. the ones ``recsys.sim.movielens_gen`` writes (the realdata branch's generator), one per seed:
  the last 7 days held out, the 60 days before them the training window.

Usage: ``python bench/candidates.py [--seeds 1 2 3] [--days 6] [--users 1500] [--videos 3000]``
(``--skip-quality`` / ``--skip-throughput`` / ``--skip-simulator`` to run a part; an earlier run's other
parts are kept, each with its own machine, load average and commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

KS = (100, 200, 500)
SINGLE_POOLS = ("two_tower", "covisitation", "category", "author", "fresh", "popular")
RULES = ("covisitation", "category", "author", "fresh", "popular")


# ------------------------------------------------------------------------------------------ throughput
def _throughput_world(n_videos: int = 5000):
    from recsys.serving.synthetic import make_world

    world = make_world(n_users=20_000, n_videos=n_videos, n_examples=100_000, seed=0)
    return world, world.videos.assign(tags=world.videos["category"])


def fit_throughput_bundle(path: Path, n_videos: int = 5000) -> None:
    """The retrieval model the throughput runs load (fitted once, in a process of its own, as the daily
    ``train_retrieval`` task does; ``recommend`` then loads the registered model)."""
    from recsys.features.transform import Transform
    from recsys.retrieval.settings import RetrievalSettings
    from recsys.retrieval.train import fit_retrieval
    from recsys.serving.synthetic import AT

    world, videos = _throughput_world(n_videos)
    ex = world.examples.assign(event_id=np.arange(len(world.examples)).astype(str))
    bundle, _ = fit_retrieval(ex, videos, Transform.fit(ex), RetrievalSettings(epochs=1), seed=0, index_at=AT)
    bundle.save(path)


def throughput_one(
    n_users: int, bundle_dir: Path, n_videos: int = 5000, clicks_per_user: int = 20, n: int = 200
) -> dict:
    """One size, in this process (run it in a fresh one: peak RSS is per process)."""
    from recsys.retrieval.settings import RetrievalSettings
    from recsys.retrieval.train import RetrievalBundle, retrieve
    from recsys.serving.candidates import generate_candidates
    from recsys.serving.synthetic import AT

    rng = np.random.default_rng(0)
    rs = RetrievalSettings(epochs=1)
    _, videos = _throughput_world(n_videos)
    bundle = RetrievalBundle.load(bundle_dir, rs)
    keys = np.array([f"u{i:07d}" for i in range(n_users)], dtype=object)
    m = n_users * clicks_per_user
    hist = pd.DataFrame(
        {
            "user_key": np.repeat(keys, clicks_per_user),
            "session_key": np.repeat(np.arange(n_users * 4), clicks_per_user // 4).astype(str),
            "video_id": rng.integers(1, n_videos + 1, m),
            "clicked": 1,
            "ts": AT - pd.to_timedelta(rng.uniform(1, 7 * 24, m), unit="h"),
        }
    )
    users = pd.DataFrame({"user_key": keys, "device": rng.choice(["ios", "android", "web"], n_users)})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # TF, the loaded model, the inputs
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    pool = retrieve(bundle, keys, hist, videos, users, AT, rs.k)
    t1 = time.perf_counter()
    cands = generate_candidates(hist, videos, list(keys), AT.date(), n, retrieved=pool)
    t2 = time.perf_counter()
    cpu = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the comparison run below
    sizes = cands.sizes()
    del cands, pool
    t2b = time.perf_counter()
    generate_candidates(hist, videos, list(keys), AT.date(), n)  # the rule pools alone, for comparison
    t3 = time.perf_counter()
    return {
        "users": n_users,
        "candidates": n,
        "videos": n_videos,
        "history_rows": m,
        "index_backend": bundle.index.backend,
        "two_tower_seconds": round(t1 - t0, 2),
        "union_seconds": round(t2 - t1, 2),
        "total_seconds": round(t2 - t0, 2),
        "total_cpu_seconds": round(cpu, 2),  # user + system CPU of the process (both cores count)
        "load_average": os.getloadavg(),
        "rules_only_seconds": round(t3 - t2b, 2),
        "user_candidates_per_second": round(float(sizes.sum()) / (t2 - t0)),
        "mean_list_length": float(sizes.mean()),
        "peak_rss_bytes": peak,  # the whole process up to the union: TensorFlow, the model, the inputs
        "peak_rss_before_candidates_bytes": rss_before,
    }


# ------------------------------------------------------------------------------------------ quality
def quality_one(settings, seed: int, days: int, n_users_eval: int) -> dict:
    """Recall per pool and final-list NDCG@10 on one simulated world (``settings.seed = seed``)."""
    import mlflow
    from experiments import build_dataset

    from recsys.features.transform import Transform
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.registry import load_ranker_dir
    from recsys.retrieval.pipeline import COLUMNS
    from recsys.retrieval.train import fit_retrieval, held_out_engagements, recall_at_k, retrieve
    from recsys.serving import HISTORY_DAYS
    from recsys.serving.candidates import generate_candidates
    from recsys.serving.rank import rank_pairs, serving_time
    from recsys.sim.world import build_world
    from recsys.stages import features_dir, open_lake
    from recsys.train import train_model

    t0 = time.monotonic()
    ds = build_dataset(settings, days)  # the test day
    fdir = features_dir(settings, ds)
    lake = open_lake(settings)
    videos, users = lake.read_frame("clean", "videos", ds), lake.read_frame("clean", "users", ds)
    prev = ds - timedelta(days=1)
    history = lake.read_window("clean", "interactions", ds - timedelta(days=HISTORY_DAYS), prev)
    today = lake.read_frame("clean", "interactions", ds)
    hc, tc = history[history["clicked"] == 1], today[today["clicked"] == 1]
    held = held_out_engagements(hc, tc)
    keys = sorted(held["user_key"].astype(str).unique())
    train = pd.read_parquet(fdir / "train.parquet", columns=COLUMNS)
    valid = pd.read_parquet(fdir / "valid.parquet", columns=COLUMNS)
    data_s = time.monotonic() - t0

    t0 = time.monotonic()
    rs = settings.retrieval
    bundle, hist = fit_retrieval(
        train,
        videos,
        Transform.load(fdir / "transform.json"),
        rs,
        seed=seed,
        index_at=pd.Timestamp(ds, tz="UTC"),
        valid=valid,
    )
    retrieval_s = time.monotonic() - t0
    out: dict = {"seed": seed, "test_day": str(ds), "held_out": len(held), "eval_users": len(keys)}
    out["retrieval_loss"] = [round(x, 4) for x in hist["loss"]]
    out["popularity_prior"] = {"used": bundle.prior, "valid_recall": hist["prior_recall"]}
    recall: dict = {}
    pools: dict = {}
    for k in KS:
        pools[k] = retrieve(bundle, keys, hc, videos, users, pd.Timestamp(ds, tz="UTC"), k)
        for name in SINGLE_POOLS:
            c = generate_candidates(history, videos, keys, prev, k, retrieved=pools[k], pools=(name,))
            recall.setdefault(name, {})[k] = recall_at_k(c, held)
        rules = generate_candidates(history, videos, keys, prev, k, pools=RULES)
        recall.setdefault("rules_union", {})[k] = recall_at_k(rules, held)
        tt = retrieve(bundle, keys, hc, videos, users, pd.Timestamp(ds, tz="UTC"), rs.k * k // 200)
        union = generate_candidates(history, videos, keys, prev, k, retrieved=tt, fresh_quota=rs.fresh_quota)
        recall.setdefault("two_tower_plus_rules", {})[k] = recall_at_k(union, held)
    out["recall"] = recall

    # final lists: the ranker trained on the same features ranks each candidate set
    t0 = time.monotonic()
    res = train_model(
        fdir,
        settings,
        run_name=f"bench-candidates-{seed}",
        tags={"bench": "candidates"},
        work_dir=settings.data_dir / "checkpoints" / f"bench-{seed}",
    )
    ranker = load_ranker_dir(Path(mlflow.artifacts.download_artifacts(res.model_uri)) / "artifacts")
    ranker_s = time.monotonic() - t0
    world = build_world(settings.simulator, settings.seed)
    pkey = load_pseudonym_key(settings)
    uidx = {pseudonym(u, pkey): i for i, u in enumerate(world.users["user_id"])}
    active = sorted(set(today["user_key"].astype(str)) & set(uidx))
    eval_users = list(np.random.default_rng(0).permutation(active)[:n_users_eval])
    sv, at = settings.serving, serving_time(prev)
    tt = retrieve(bundle, eval_users, hc, videos, users, at, rs.k)
    sets = {
        "rules": generate_candidates(history, videos, eval_users, prev, sv.n_candidates),
        "two_tower_plus_rules": generate_candidates(
            history, videos, eval_users, prev, sv.n_candidates, retrieved=tt, fresh_quota=rs.fresh_quota
        ),
    }
    out["ndcg10"] = {
        name: true_ndcg(
            world,
            uidx,
            ds,
            rank_pairs(ranker, eval_users, c, users, videos, at, 10, sv.max_per_author, sv.max_per_category),
        )
        for name, c in sets.items()
    }
    out["ndcg_users"] = len(eval_users)
    # how much either could gain at best: the best 10 of each candidate set by the true utility
    out["ndcg10_candidate_set_ceiling"] = {name: set_ceiling(world, uidx, ds, c) for name, c in sets.items()}
    out["recall_truth"] = truth_recall(world, uidx, ds, held, hc, settings.simulator.explore_share)
    out["seconds"] = {
        "data": round(data_s),
        "retrieval_fit": round(retrieval_s),
        "ranker_fit": round(ranker_s),
    }
    return out


def movielens_recall(folder: Path, seed: int, test_days: int = 7, window_days: int = 60) -> dict:
    """Recall@K per pool on a MovieLens-format history (positive-only: every rating is an engagement).

    The last ``test_days`` days are held out; the ``window_days`` before them are the training window,
    split by time as the features stage splits it (the latest 15% of its ratings validate: the two-tower
    model trains on the rest and picks its popularity prior on them); the rule pools read the whole
    window (MovieLens days are sparse, so not serving's 7 days); sessions are (user, day).
    ``RECSYS_RETRIEVAL__POPULARITY_PRIOR`` fixes the prior here as it does in the simulator part.
    """
    from recsys.data.movielens import load
    from recsys.features.transform import Transform
    from recsys.retrieval.settings import RetrievalSettings
    from recsys.retrieval.train import fit_retrieval, held_out_engagements, recall_at_k, retrieve
    from recsys.serving.candidates import generate_candidates

    ml = load(Path(folder))
    r = ml.ratings.rename(columns={"item": "video_id"}).assign(
        user_key=lambda d: "m" + d["user_id"].astype(str)
    )
    test_start = r["day"].max() - pd.Timedelta(days=test_days - 1)
    window = r[(r["day"] >= test_start - pd.Timedelta(days=window_days)) & (r["day"] < test_start)]
    test = r[r["day"] >= test_start]
    videos = ml.videos.assign(video_id=ml.videos["video_id"].astype("int64"))
    users = ml.users.assign(user_key="m" + ml.users["user_id"].astype(str), device="web")
    v = videos.drop(columns=["visible", "tags"])
    ex = window.merge(v, on="video_id", how="left").merge(
        users[["user_key", "region", "age_band", "activity"]], on="user_key", how="left"
    )
    ex = ex.assign(event_id=np.arange(len(ex)).astype(str), device="web", click=1.0).sort_values(
        ["ts", "event_id"]
    )
    hist = window.assign(clicked=1, session_key=window["user_key"] + window["day"].astype(str))
    held = held_out_engagements(hist, test)
    keys = sorted(held["user_key"].unique())
    at = pd.Timestamp(test_start, tz="UTC")
    prior = os.environ.get("RECSYS_RETRIEVAL__POPULARITY_PRIOR", "auto")
    rs = RetrievalSettings(popularity_prior=prior if prior == "auto" else float(prior))
    cut = int(len(ex) * (1 - 0.15))
    train, valid = ex.iloc[:cut], ex.iloc[cut:]
    bundle, h = fit_retrieval(train, videos, Transform.fit(train), rs, seed=seed, index_at=at, valid=valid)
    ulist = users[["user_key", "device"]]
    prev = (test_start - pd.Timedelta(days=1)).date()
    recall: dict = {}
    for k in KS:
        pool = retrieve(bundle, keys, hist, videos, ulist, at, k)
        for name in SINGLE_POOLS:
            c = generate_candidates(hist, videos, keys, prev, k, retrieved=pool, pools=(name,))
            recall.setdefault(name, {})[k] = recall_at_k(c, held)
        rules = generate_candidates(hist, videos, keys, prev, k, pools=RULES)
        recall.setdefault("rules_union", {})[k] = recall_at_k(rules, held)
        tt = retrieve(bundle, keys, hist, videos, ulist, at, rs.k * k // 200)
        union = generate_candidates(hist, videos, keys, prev, k, retrieved=tt, fresh_quota=rs.fresh_quota)
        recall.setdefault("two_tower_plus_rules", {})[k] = recall_at_k(union, held)
    return {
        "folder": str(folder),
        "seed": seed,
        "ratings": len(r),
        "window_ratings": len(window),
        "held_out": len(held),
        "eval_users": len(keys),
        "catalog": len(videos),
        "recall": recall,
        "retrieval_loss": [round(x, 4) for x in h["loss"]],
        "popularity_prior": {"used": bundle.prior, "valid_recall": h["prior_recall"]},
    }


def true_ndcg(world, uidx: dict, day: date, lists: pd.DataFrame, k: int = 10) -> float:
    """Mean over users of DCG(true utility of the list) / DCG(the oracle's top k), 0 for an empty list."""
    vidx = world.video_index()
    visible = np.flatnonzero(world.visible_mask(day))
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for u, g in lists.sort_values(["user_key", "rank"]).groupby("user_key"):
        i = uidx[u]
        util = world.true_utility(
            np.full(len(g), i), np.array([vidx[int(v)] for v in g["video_id"][:k]]), day
        )
        best = np.sort(world.true_utility(np.full(len(visible), i), visible, day))[::-1][:k]
        scores.append(float((util * disc[: len(util)]).sum() / (best * disc[: len(best)]).sum()))
    return float(np.mean(scores)) if scores else float("nan")


def truth_recall(
    world, uidx: dict, day: date, held: pd.DataFrame, clicks: pd.DataFrame, explore: float
) -> dict:
    """Recall@K of scorers that know the simulator's truth, on the same held-out engagements.

    A logged engagement needs an exposure and a click: with no live list, the simulator shows a slate
    drawn by ``exp(quality)`` (or, with probability ``explore``, a uniform one) and the user clicks with
    the true click probability. ``exposure_x_click`` ranks by the product (the best any scorer can do in
    expectation), ``exposure`` by the exposure alone (what a popularity count estimates), ``click`` by
    the true click probability alone. Videos the user clicked before are left out, as for the pools.
    """
    vis = np.flatnonzero(world.visible_mask(day))
    q = world.quality(day)[vis]
    pop = np.exp(q - q.max())
    expo = (1 - explore) * pop / pop.sum() + explore / len(vis)
    vpos = pd.Series(np.arange(len(vis)), index=world.videos["video_id"].to_numpy()[vis].astype(np.int64))
    seen = clicks[["user_key", "video_id"]].astype({"video_id": "int64"})
    ranks: dict = {"exposure_x_click": [], "exposure": [], "click": []}
    unknown = held[~held["user_key"].isin(list(uidx))]
    for u, g in held[held["user_key"].isin(list(uidx))].groupby("user_key"):
        cp = world.click_prob(world.affinity(np.full(len(vis), uidx[u]), vis, day))
        mine = vpos.reindex(seen.loc[seen["user_key"] == u, "video_id"]).dropna().astype(int).to_numpy()
        want = vpos.reindex(g["video_id"].astype("int64")).to_numpy()
        for name, score in (("exposure_x_click", expo * cp), ("exposure", expo), ("click", cp)):
            sc = score.astype(float).copy()
            sc[mine] = -np.inf
            rank = np.empty(len(sc), dtype=np.int64)
            rank[np.argsort(-sc, kind="stable")] = np.arange(len(sc))
            ranks[name] += [rank[int(w)] if np.isfinite(w) else len(sc) for w in want]
    out = {name: {k: float((np.asarray(r) < k).sum() / len(held)) for k in KS} for name, r in ranks.items()}
    return {**out, "held_out_of_unknown_users": len(unknown)}  # counted as missed


def set_ceiling(world, uidx: dict, day: date, cands, k: int = 10) -> float:
    """True-utility NDCG@10 of the best ``k`` videos of each user's candidate set (a perfect ranker)."""
    vidx = world.video_index()
    visible = np.flatnonzero(world.visible_mask(day))
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    users = np.repeat(np.asarray(cands.user_keys, dtype=object), cands.sizes())
    scores = []
    for u, g in pd.DataFrame({"u": users, "v": cands.video_ids}).groupby("u"):
        i = uidx[u]
        util = world.true_utility(np.full(len(g), i), np.array([vidx[int(v)] for v in g["v"]]), day)
        util = np.sort(util)[::-1][:k]
        best = np.sort(world.true_utility(np.full(len(visible), i), visible, day))[::-1][:k]
        scores.append(float((util * disc[: len(util)]).sum() / (best * disc[: len(best)]).sum()))
    return float(np.mean(scores)) if scores else float("nan")


def stat(vals) -> dict:
    v = np.asarray(vals, float)
    return {"mean": float(np.nanmean(v)), "sd": float(np.nanstd(v)), "values": v.tolist()}


def summarize_recall(rows: list[dict]) -> dict:
    return {
        pool: {k: stat([r["recall"][pool][k] for r in rows]) for k in rows[0]["recall"][pool]}
        for pool in rows[0]["recall"]
    }


def summarize(rows: list[dict]) -> dict:
    recall = summarize_recall(rows)
    ndcg = {name: stat([r["ndcg10"][name] for r in rows]) for name in rows[0]["ndcg10"]}
    gain = stat([r["ndcg10"]["two_tower_plus_rules"] - r["ndcg10"]["rules"] for r in rows])
    out = {"recall": recall, "ndcg10": ndcg, "ndcg10_gain": gain}
    if all("recall_truth" in r for r in rows):
        out["recall_truth"] = {
            name: {k: stat([r["recall_truth"][name][k] for r in rows]) for k in rows[0]["recall_truth"][name]}
            for name in rows[0]["recall_truth"]
            if name != "held_out_of_unknown_users"
        }
        out["ndcg10_candidate_set_ceiling"] = {
            name: stat([r["ndcg10_candidate_set_ceiling"][name] for r in rows]) for name in ndcg
        }
    return out


# ------------------------------------------------------------------------------------------ driver
def machine() -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    )
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "platform": platform.platform(),
        "processor": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "commit": commit,
        "dirty": dirty,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--videos", type=int, default=3000)
    ap.add_argument("--eval-users", type=int, default=300)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/recsys-bench-candidates"))
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument(
        "--movielens",
        type=Path,
        nargs="*",
        default=[],
        help="MovieLens-format folders (e.g. written by recsys.sim.movielens_gen)",
    )
    ap.add_argument("--skip-simulator", action="store_true", help="only the MovieLens recall")
    ap.add_argument("--throughput-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--fit-bundle", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "candidates.json")
    args = ap.parse_args(argv)
    if args.fit_bundle:
        fit_throughput_bundle(args.fit_bundle)
        return 0
    if args.throughput_one:
        print(json.dumps(throughput_one(args.throughput_one, args.bundle)))
        return 0
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result["command"] = "bench/candidates.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for part in ("quality", "movielens"):  # a section kept from an earlier run keeps its own machine/commit
        if part in result and "machine" not in result[part]:
            result[part]["machine"] = result.get("machine_at_start")
    result["machine_at_start"] = machine()
    if not args.skip_throughput:
        result["throughput"] = []  # each row: its own load average; the commit is throughput_machine's
        result["throughput_machine"] = result["machine_at_start"]
        result.pop("throughput_earlier_run", None)
        bundle_dir = Path(tempfile.mkdtemp(prefix="recsys-bench-bundle-")) / "retrieval"
        subprocess.run([sys.executable, __file__, "--fit-bundle", str(bundle_dir)], check=True)
        for n in args.sizes:
            p = subprocess.run(
                [sys.executable, __file__, "--throughput-one", str(n), "--bundle", str(bundle_dir)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(p.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            result["throughput"].append(row)
            _write(args.out, result)
    if args.movielens:
        runs = [movielens_recall(f, i + 1) for i, f in enumerate(args.movielens)]
        result["movielens"] = {"runs": runs, "machine": result["machine_at_start"]}
        result["movielens"]["summary"] = summarize_recall(result["movielens"]["runs"])
        print(json.dumps(result["movielens"]["summary"]), flush=True)
        _write(args.out, result)
    if not args.skip_quality and not args.skip_simulator:
        from experiments import ensure_keys

        from recsys.config import load_settings

        rows = []
        for seed in args.seeds:
            d = args.data_dir / f"seed{seed}"
            ensure_keys(d)
            s = load_settings(
                data_dir=d,
                seed=seed,
                demo=False,
                source="simulator",
                experiment="bench-candidates",
                simulator={"n_users": args.users, "n_videos": args.videos},
            )
            rows.append(quality_one(s, seed, args.days, args.eval_users))
            print(json.dumps(rows[-1]), flush=True)
            result["quality"] = {
                "runs": rows,
                "summary": summarize(rows),
                "days": args.days,
                "machine": result["machine_at_start"],
                "simulator": s.simulator.model_dump(mode="json"),
                "retrieval": s.retrieval.model_dump(mode="json"),
            }
            _write(args.out, result)
    result["machine_at_end"] = machine()
    _write(args.out, result)
    return 0


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: backfilling a MovieLens-format history of about a million ratings, peak memory and time.

Issue 13's last measurable point: "Backfilling 1M ratings stays under 1.5 GB peak RSS". For each size of
``--ratings`` this bench

1. generates an ml-100k-layout history (``u.data``, ``u.item``, ``u.user``) with
   :func:`recsys.sim.movielens_gen.generate_movielens` over ``--days`` days (default 60) with an
   ml-1m-sized catalog (``--items`` 3,706). Users: ``1.03 x ratings / r``, where ``r`` is what a user of a
   1,000-user pilot history (same days, catalog and seed) rated; a large history's users rate about 2.5%
   less, hence the margin. The actual count is recorded. Why 60 days and not ml-100k's 210: each day
   costs one to two seconds whatever its size (mostly Great Expectations: three suites a day; before the
   Data Docs were built once per backfill, each suite also rebuilt them, and 210 days took about 16
   minutes per size), so the days, not the ratings, set the time, while memory does not grow
   with the number of days (100k ratings over 210 days: 384 MiB from day 3 to day 210, peak 402 MiB).
   The same ratings packed into fewer days make each day larger, the harder case for peak memory, and
   keep both sizes within ``make bench``'s budget;
2. runs the real command, ``recsys backfill`` (every day through ``land -> collect -> validate ->
   anonymize``, then its marker), in a **fresh subprocess** with ``RECSYS_SOURCE=movielens``,
   ``RECSYS_SOURCE_PATH=<the folder>``, an empty data folder and new pseudonym / encryption keys. The
   parent waits for it with ``os.wait4``, whose rusage is that child's own: ``ru_maxrss`` (KiB on Linux)
   is the backfill's peak resident set, Python start and imports included. While it runs, the parent
   samples the child's ``VmRSS`` (``/proc/<pid>/status``) every ``--sample-s`` seconds and counts the day
   markers already written, so the JSON shows whether memory grows with the days imported or is set by
   one day (``rss_mib_by_day``: the highest sample while importing day k, for a few k);
3. checks that rows are conserved on every day: the source's ratings of that UTC day (counted here from
   ``u.data``) = the marker's ``input_rows`` = ``accepted_rows + quarantined_rows``, and ``clean_rows`` (the
   clean zone's interactions) = ``accepted_rows``.

Results in ``bench/results/backfill.json`` (rewritten after each size), one entry per size::

    ratings, users, items, days           the generated history (generate_seconds: how long that took)
    peak_rss_bytes                        the backfill process's ru_maxrss
    under_target                          peak_rss_bytes < 1.5e9 (1.5 GB read as 10^9 bytes, the stricter)
    wall_seconds, cpu_seconds             the backfill process, start to exit
    imported_days, input_rows, ...        what ``recsys backfill`` printed
    conserved_days / conservation_errors  the per-day check above

Run: ``.venv/bin/python bench/backfill.py [--ratings 100000 1000000] [--days 210] [--items 3706]``
(about 10 minutes for both sizes on 2 cores; the machine's load average is recorded, ``bench/meta.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from meta import run_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "backfill.json"
RECSYS = str(Path(sys.executable).with_name("recsys"))
PILOT_USERS = 1_000
USER_MARGIN = 1.03  # a large history's users rate ~2.5% less than the pilot's (975k for 1M without it)
TARGET_BYTES = 1_500_000_000


def ratings_per_user(days: int, items: int, seed: int) -> float:
    """What one generated user rates over ``days`` (a pilot history of 1,000 users, a few seconds)."""
    from recsys.sim.movielens_gen import generate_movielens

    with tempfile.TemporaryDirectory(prefix="recsys-bench-pilot-") as tmp:
        h = generate_movielens(tmp, seed=seed, n_users=PILOT_USERS, n_items=items, days=days, min_ratings=0)
    return h.ratings / PILOT_USERS


def generate(folder: Path, ratings: int, per_user: float, days: int, items: int, seed: int) -> dict:
    from recsys.sim.movielens_gen import generate_movielens

    t0 = time.perf_counter()
    h = generate_movielens(
        folder,
        seed=seed,
        n_users=max(50, round(ratings / per_user * USER_MARGIN)),
        n_items=items,
        days=days,
        min_ratings=int(ratings * 0.8),
    )
    out = h.to_dict()
    out.pop("folder")
    out["generate_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def source_rows_per_day(folder: Path) -> Counter:
    """Ratings per UTC day, counted straight from ``u.data`` (user, item, rating, unix seconds)."""
    per_day: Counter = Counter()
    with open(folder / "u.data", encoding="latin-1") as f:
        for line in f:
            per_day[int(line.rsplit("\t", 1)[1]) // 86_400] += 1
    return Counter({_iso_day(d): n for d, n in per_day.items()})


def _iso_day(days_since_epoch: int) -> str:
    return datetime.fromtimestamp(days_since_epoch * 86_400, tz=UTC).date().isoformat()


def env_for(folder: Path, data_dir: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_SOURCE="movielens",
        RECSYS_SOURCE_PATH=str(folder),
        RECSYS_DATA_DIR=str(data_dir),
        RECSYS_PRIVACY__PSEUDONYM_KEY="bench-" + os.urandom(16).hex(),
        RECSYS_PRIVACY__ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        GX_ANALYTICS_ENABLED="False",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
    )
    return env


def vm_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def sample(pid: int, markers: Path, every_s: float, stop: threading.Event, out: list) -> None:
    """(seconds, VmRSS KiB, days done) every ``every_s`` until ``stop``."""
    t0 = time.perf_counter()
    while not stop.is_set():
        rss = vm_rss_kib(pid)
        if rss is not None:
            done = sum(1 for _ in markers.glob("ds=*.json")) if markers.exists() else 0
            out.append((round(time.perf_counter() - t0, 2), rss, done))
        stop.wait(every_s)


def rss_by_day(samples: list, source: Counter) -> dict:
    """For a few days k (1-based, in import order): the highest VmRSS sample (MiB) while day k was being
    imported, and that day's ratings."""
    peak: dict[int, int] = {}
    for _, rss, done in samples:
        peak[done + 1] = max(peak.get(done + 1, 0), rss)
    rows = [source[d] for d in sorted(source)]
    n = len(rows)
    picks = sorted({1, 2, 3, n // 4, n // 2, 3 * n // 4, n} & set(peak))
    return {str(k): {"rss_mib": round(peak[k] / 1024), "ratings": rows[k - 1]} for k in picks if k <= n}


def run_backfill(folder: Path, data_dir: Path, every_s: float) -> dict:
    env = env_for(folder, data_dir)
    log = data_dir.parent / "backfill.log"
    out = data_dir.parent / "backfill.out"
    samples: list = []
    stop = threading.Event()
    t0 = time.perf_counter()
    with open(out, "wb") as fo, open(log, "wb") as fe:
        proc = subprocess.Popen([RECSYS, "backfill"], env=env, stdout=fo, stderr=fe, cwd=data_dir.parent)
        markers = data_dir / "backfill"
        sampler = threading.Thread(target=sample, args=(proc.pid, markers, every_s, stop, samples))
        sampler.start()
        _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"recsys backfill failed ({code}):\n{log.read_text()[-4000:]}")
    text = out.read_text()
    summary = json.loads(text[text.index("{") :])
    return {
        "summary": summary,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(rusage.ru_utime + rusage.ru_stime, 1),
        "peak_rss_bytes": rusage.ru_maxrss * 1024,
        "samples": samples,
    }


def check_conservation(data_dir: Path, source: Counter) -> tuple[int, list[str]]:
    """(days whose rows are conserved, one line per day that is not)."""
    errors = []
    markers = {p.name[3:-5]: json.loads(p.read_text()) for p in (data_dir / "backfill").glob("ds=*.json")}
    for ds in sorted(set(source) | set(markers)):
        m, n = markers.get(ds), source.get(ds, 0)
        if m is None:
            errors.append(f"{ds}: {n} source rows, no marker")
        elif not (m["input_rows"] == n and m["accepted_rows"] + m["quarantined_rows"] == n):
            errors.append(f"{ds}: source {n}, marker {m}")
        elif m["clean_rows"] != m["accepted_rows"]:
            errors.append(f"{ds}: clean {m['clean_rows']} != accepted {m['accepted_rows']}")
    return len(set(source) | set(markers)) - len(errors), errors


def run(ratings: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="recsys-bench-backfill-") as tmp:
        folder, data_dir = Path(tmp) / "ml", Path(tmp) / "data"
        data_dir.mkdir()
        history = generate(folder, ratings, args.per_user, args.days, args.items, args.seed)
        print(f"generated {history}", flush=True)
        source = source_rows_per_day(folder)
        load_before = os.getloadavg()[0]
        r = run_backfill(folder, data_dir, args.sample_s)
        conserved, errors = check_conservation(data_dir, source)
    s = r["summary"]
    samples = r["samples"]
    out = {
        "target_ratings": ratings,
        **history,
        "peak_rss_bytes": r["peak_rss_bytes"],
        "peak_rss_mib": round(r["peak_rss_bytes"] / 2**20),
        "under_target": r["peak_rss_bytes"] < TARGET_BYTES,
        "wall_seconds": r["wall_seconds"],
        "cpu_seconds": r["cpu_seconds"],
        "seconds_per_day": round(r["wall_seconds"] / max(1, s["imported_days"]), 2),
        "imported_days": s["imported_days"],
        "empty_days": len(s["empty_days"]),
        "input_rows": s["input_rows"],
        "accepted_rows": s["accepted_rows"],
        "quarantined_rows": s["quarantined_rows"],
        "conserved_days": conserved,
        "conservation_errors": errors[:10],
        "rss_mib_by_day": rss_by_day(samples, source),
        "max_sampled_rss_mib": round(max((x[1] for x in samples), default=0) / 1024),
        "max_sampled_while_importing_day": max(samples, key=lambda x: x[1])[2] + 1 if samples else None,
        "samples": len(samples),
        "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--days", type=int, default=60, help="days of history")
    ap.add_argument("--items", type=int, default=3706, help="catalog size (ml-1m's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-s", type=float, default=0.2, help="VmRSS sampling period of the backfill")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    info = run_info()
    args.per_user = ratings_per_user(args.days, args.items, args.seed)
    rows = []
    for ratings in args.ratings:
        rows.append(run(ratings, args))
        result = {
            **info,
            "target_peak_rss_bytes": TARGET_BYTES,
            "params": {
                "days": args.days,
                "items": args.items,
                "seed": args.seed,
                "pilot_ratings_per_user": round(args.per_user, 1),
            },
            "sizes": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(
            f"{r['ratings']:>9} ratings {r['days_with_ratings']:>4} days: {r['wall_seconds']:7.1f} s, "
            f"peak RSS {r['peak_rss_mib']:6d} MiB ({'under' if r['under_target'] else 'OVER'} 1.5 GB), "
            f"{r['conserved_days']}/{r['imported_days']} days conserved"
        )
    return 0 if all(not r["conservation_errors"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

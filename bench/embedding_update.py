"""Benchmark: the cost of one training step as the user vocabulary grows (why training at 10M interactions
a day is more than 10x the 1M day's).

Design:
* The ranker's user embedding is a ``keras.layers.Embedding(n_users, 16)``; a 1M-interaction day of the
  pipeline bench has 50k users, a 10M day 500k. This isolates that table: a model of one embedding
  (dimension 16) and a sigmoid unit, batches of 512 random ids, trained with ``model.fit`` on tf.data as
  the train stage does, with Keras's default compilation (XLA).
* Per vocabulary size and optimizer: CPU seconds (user + sys of this process, ``time.process_time``) of
  ``--steps`` steps after a warm-up fit (tracing and compilation excluded); the median of ``--repeats``.
  CPU seconds, not wall seconds, so other work on the machine changes the figure little.
* Optimizers: ``adam`` is what the ranker trains with (Keras 3's Adam decays both moment slots of the
  whole table every step, so its step grows with the table whatever the batch touches); ``adagrad`` and
  ``sgd`` apply an embedding's sparse gradient (``tf.IndexedSlices``) as a scatter update of the rows
  the batch touched (keras-team/keras#18692), shown for comparison; they are not what the ranker uses.

Writes bench/results/embedding_update.json. Run: .venv/bin/python bench/embedding_update.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from meta import run_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "embedding_update.json"


def step_seconds(n: int, optimizer: str, steps: int, batch: int, seed: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    ids = keras.Input((), dtype="int32")
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Embedding(n, 16)(ids))
    model = keras.Model(ids, out)
    opt = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad, "sgd": keras.optimizers.SGD}
    model.compile(opt[optimizer](1e-3), "binary_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, n, size=batch * steps).astype("int32")
    y = rng.random(batch * steps).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    model.fit(ds.take(20), verbose=0)  # tracing and compilation
    t0 = time.process_time()
    model.fit(ds, verbose=0)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[5_000, 50_000, 500_000])
    ap.add_argument("--optimizers", nargs="+", default=["adam", "adagrad", "sgd"])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    doc = {
        "benchmark": "CPU seconds of a training step by embedding table size and optimizer",
        "method": __doc__.split("Design:", 1)[1].split("Writes", 1)[0].strip(),
        "command": "bench/embedding_update.py " + " ".join(sys.argv[1:] if argv is None else argv),
        **run_info(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps": args.steps,
        "batch": args.batch,
        "runs": [],
    }
    for optimizer in args.optimizers:
        for n in args.vocab:
            secs = [step_seconds(n, optimizer, args.steps, args.batch, seed) for seed in range(args.repeats)]
            ms = 1000 * statistics.median(secs) / args.steps
            doc["runs"].append(
                {"optimizer": optimizer, "vocab": n, "cpu_seconds": secs, "median_cpu_ms_per_step": ms}
            )
            print(f"{optimizer:8} vocab {n:>9,}: {ms:6.2f} CPU ms a step (runs {secs})", flush=True)
    doc["load_average_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

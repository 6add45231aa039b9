"""The train stage's non-fit memory holders on a features folder, in train_model's order: the plan's
transform loaded, the serving transform refreshed from the train and validation rows, saved (what
log_ranker writes), loaded back. Prints RSS and peak RSS after each step and the saved file's SHA-256.

    .venv/bin/python bench/train_serving_state.py <features folder> [chunk_rows, default 100000; 0: whole]
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from meta import peak, rss


def main(folder: Path, chunk_rows: int) -> None:
    from recsys.features.partition import serving_transform
    from recsys.features.transform import Transform

    t0 = time.perf_counter()

    def report(what: str) -> None:
        print(
            f"{what:12s} rss {rss():6.0f} peak {peak():6.0f} MiB {time.perf_counter() - t0:6.1f}s", flush=True
        )

    fitted = Transform.load(folder / "transform.json")
    report("loaded")
    base = dataclasses.replace(fitted, affinity={}, affinity_prior={}, coengagement={})
    del fitted
    serving = serving_transform(folder, base, chunk_rows)
    del base
    report("serving")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "transform.json"
        serving.save(out)
        report("saved")
        Transform.load(out)
        report("loaded back")
        print("sha256", hashlib.sha256(out.read_bytes()).hexdigest(), out.stat().st_size, "bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)

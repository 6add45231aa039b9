"""Training throughput of the default model on this machine, against the machine's measured matmul peak.

Writes ``bench/results/train.json`` with (keys fixed by the brief):

* ``examples_per_second``: steady-state training examples per second (the first epoch, which traces and
  compiles, is excluded) for the default model (``ModelSettings()`` defaults, compiled exactly as
  training compiles it: masked losses, per-task AUC), at the batch size that gives the best rate; the
  rate at every batch size tried is under ``by_batch_size``. Inputs come from memory (a cached, repeated
  tf.data of random but valid ids), so this measures the model's compute, not the Parquet reader; the
  real input pipeline (``recsys.train.parquet_dataset``) at the default batch size is reported separately
  as ``pipeline_examples_per_second`` when ``--features-dir`` is given.
* ``flops_per_example``: *training* FLOPs per example = 3 x forward, forward = 2 x multiply-adds of every
  dense kernel (shallow tower, experts, gates, task towers); embedding lookups, pooling, activations and
  the optimizer update are not counted (``flops_basis`` says so; ``forward_flops_per_example`` is there).
* ``peak_flops``: float32 ``tf.matmul`` of two n x n matrices, best of several repetitions, 2 n^3 / t,
  measured in the same process before and after the throughput runs; the higher of the two readings is
  used (the machine is shared, and a peak read while others load it would flatter the fraction).
* ``fraction_of_peak`` = examples_per_second x flops_per_example / peak_flops.

Usage::

    .venv/bin/python bench/train.py [--batch-sizes 256 1024 4096 16384] [--features-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from meta import git_commit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def default_spec():
    """The feature spec of the default simulator world (its vocabulary sizes, rounded up)."""
    from recsys.features.spec import CATEGORICAL, NUMERIC, FeatureSpec

    vocab = {
        "user": 402,
        "video": 502,
        "author": 82,
        "category": 14,
        "device": 6,
        "region": 10,
        "age_band": 8,
        "activity": 5,
        "hour": 26,
        "dow": 9,
    }
    return FeatureSpec(
        vocab_sizes={n: vocab[n] for n in CATEGORICAL},
        title_vocab_size=2002,
        title_len=8,
        n_numeric=len(NUMERIC),
    )


def random_batch(spec, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = {name: rng.integers(0, spec.vocab_sizes[name], n).astype(np.int32) for name in spec.categorical}
    x["title"] = rng.integers(0, spec.title_vocab_size, (n, spec.title_len)).astype(np.int32)
    x["numeric"] = rng.normal(size=(n, spec.n_numeric)).astype(np.float32)
    x["position"] = rng.integers(0, spec.n_positions, n).astype(np.int32)
    click = (rng.random(n) < 0.1).astype(np.float32)
    on_click = np.where(click > 0, 1.0, np.nan).astype(np.float32)
    y = {
        "click": click,
        "watch": rng.uniform(0, 6, n).astype(np.float32) * on_click,
        "like": (rng.random(n) < 0.2).astype(np.float32) * on_click,
        "share": (rng.random(n) < 0.05).astype(np.float32) * on_click,
    }
    return x, y


def flops_per_example(model) -> tuple[int, dict[str, int]]:
    """Forward FLOPs per example: 2 x in x out for every dense kernel (x n_experts for expert banks)."""
    parts: dict[str, int] = {}
    for w in model.weights:
        path = getattr(w, "path", w.name)
        if path.split("/")[-1] != "kernel":
            continue
        parts[path] = 2 * int(np.prod(w.shape))  # [in, out] or [n_experts, in, out]
    return sum(parts.values()), parts


def matmul_peak(n: int = 2048, reps: int = 8) -> dict:
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    (a @ b).numpy()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        tf.matmul(a, b).numpy()
        times.append(time.perf_counter() - t)
    best = min(times)
    return {
        "peak_flops": 2 * n**3 / best,
        "median_flops": 2 * n**3 / float(np.median(times)),
        "n": n,
        "reps": reps,
        "best_seconds": best,
    }


class _EpochTimer:
    def __new__(cls):
        import keras

        class Cb(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        return Cb()


_MODELS: dict = {}


def throughput(
    spec, batch_size: int, *, examples_per_epoch: int, epochs: int = 3, jit_compile: bool | str = "auto"
) -> dict:
    """Steady-state training examples/s: epochs after the first (trace + compile) are timed.

    One compiled model per ``jit_compile`` setting is reused across batch sizes (the batch dimension is
    dynamic), so only the first batch size pays the trace; its first epoch is excluded regardless.
    """
    import tensorflow as tf

    from recsys.config import ModelSettings
    from recsys.model import build_multi_task_model, compile_multi_task_model

    if jit_compile not in _MODELS:
        ms = ModelSettings()
        m = build_multi_task_model(spec, ms, seed=0)
        compile_multi_task_model(m, ms, 3e-3)
        m.jit_compile = jit_compile
        _MODELS[jit_compile] = m
    model = _MODELS[jit_compile]
    steps = max(2, examples_per_epoch // batch_size)
    x, y = random_batch(spec, steps * batch_size)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).cache().repeat()
    timer = _EpochTimer()
    model.fit(ds, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    steady = timer.times[1:]
    per_epoch = steps * batch_size
    return {
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "jit_compile": str(jit_compile),
        "epoch_seconds": [round(t, 3) for t in timer.times],
        "examples_per_second": per_epoch * len(steady) / sum(steady),
    }


def pipeline_throughput(features_dir: Path, batch_size: int = 256, epochs: int = 3) -> dict:
    """The real input pipeline (Parquet -> generator -> tf.data) with the default model, steady state."""
    import pyarrow.parquet as pq

    from recsys.config import ModelSettings
    from recsys.features.transform import Transform
    from recsys.model import build_multi_task_model, compile_multi_task_model
    from recsys.train import parquet_dataset

    spec = Transform.load(features_dir / "transform.json").spec()
    ms = ModelSettings()
    model = build_multi_task_model(spec, ms, seed=0)
    compile_multi_task_model(model, ms, 3e-3)
    ds = parquet_dataset(features_dir / "train.parquet", spec, batch_size, seed=0)
    timer = _EpochTimer()
    model.fit(ds, epochs=epochs, callbacks=[timer], verbose=0)
    n = pq.ParquetFile(features_dir / "train.parquet").metadata.num_rows
    steady = timer.times[1:]
    return {
        "batch_size": batch_size,
        "rows": n,
        "epoch_seconds": [round(t, 3) for t in timer.times],
        "examples_per_second": n * len(steady) / sum(steady),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    ap.add_argument("--examples-per-epoch", type=int, default=65_536)
    ap.add_argument("--jit", action="store_true", help="also try XLA (jit_compile=True) at each batch size")
    ap.add_argument("--features-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    from recsys.config import ModelSettings
    from recsys.model import build_multi_task_model

    spec = default_spec()
    fwd, parts = flops_per_example(build_multi_task_model(spec, ModelSettings(), seed=0))
    train_flops = 3 * fwd
    peak = matmul_peak()
    print(
        f"forward FLOPs/example {fwd}, training {train_flops}; matmul peak {peak['peak_flops'] / 1e9:.1f} "
        "GFLOP/s",
        flush=True,
    )
    runs = []
    for bs in args.batch_sizes:
        for jit in [False, True] if args.jit else ["auto"]:
            r = throughput(spec, bs, examples_per_epoch=max(args.examples_per_epoch, 4 * bs), jit_compile=jit)
            r["fraction_of_peak"] = r["examples_per_second"] * train_flops / peak["peak_flops"]
            print(json.dumps(r), flush=True)
            runs.append(r)
    best = max(runs, key=lambda r: r["examples_per_second"])
    peak_after = matmul_peak()  # the machine is shared: a second reading shows how much the peak moved
    peak_flops = max(peak["peak_flops"], peak_after["peak_flops"])
    for r in runs:
        r["fraction_of_peak"] = r["examples_per_second"] * train_flops / peak_flops
    out = {
        "examples_per_second": best["examples_per_second"],
        "flops_per_example": train_flops,
        "peak_flops": peak_flops,
        "fraction_of_peak": best["examples_per_second"] * train_flops / peak_flops,
        "flops_basis": "training = 3 x forward; forward = 2 x multiply-adds of the dense kernels only",
        "forward_flops_per_example": fwd,
        "flops_by_kernel": parts,
        "best_batch_size": best["batch_size"],
        "best_jit_compile": best["jit_compile"],
        "by_batch_size": runs,
        "peak_before": peak,
        "peak_after": peak_after,
        "default_batch_size_examples_per_second": next(
            (r["examples_per_second"] for r in runs if r["batch_size"] == 256), None
        ),
        "model": ModelSettings().model_dump(mode="json"),
        "spec": spec.to_dict(),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "command": "bench/train.py " + " ".join(sys.argv[1:]),
        **git_commit(),
    }
    if args.features_dir:
        out["pipeline"] = pipeline_throughput(args.features_dir)
        out["pipeline_examples_per_second"] = out["pipeline"]["examples_per_second"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(
        json.dumps(
            {
                k: out[k]
                for k in (
                    "examples_per_second",
                    "flops_per_example",
                    "peak_flops",
                    "fraction_of_peak",
                    "best_batch_size",
                )
            }
        )
    )
    return 0


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

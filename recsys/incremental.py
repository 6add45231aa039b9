"""Incremental training (``RECSYS_TRAIN__MODE=incremental``): warm-start the ranker from the champion and
train on the new day(s) only.

:func:`plan_training` decides, before the MLflow run opens, what :func:`recsys.train.train_model` fits:

- ``full`` (the default mode): the features folder as the features stage wrote it, a fresh model.
- ``incremental``: the champion (registry alias ``champion``) is loaded; its transform is grown with the
  new rows (:func:`recsys.features.extend.extend_transform`: old ids keep their indices, new ids come
  after them, normalization merged by counts, the users' evidence refitted) and its model rebuilt with
  the larger tables (:func:`recsys.model.warmstart.warm_started_model`). The new rows are the training
  split's rows of its last ``incremental_days`` days (``ts`` within that many 24-hour periods of the
  split's latest row: what the split gained since yesterday's training); they and the validation split
  are re-encoded with the grown transform into ``work_dir/incremental`` (the features stage's ``x_*``
  columns hold that day's own indices, which differ from the champion's). Training, evaluation, the gate
  and the registry then run as for a full training.

Without a champion, or with one whose transform or model cannot be extended (another feature spec,
architecture or set of heads), it is a full training, with a logged warning and the MLflow tag
``train.mode = full (fallback: <why>)``; otherwise the tags are ``train.mode = incremental`` and
``warm_start_version = <champion version>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.config import Settings
from recsys.features.build import encode
from recsys.features.extend import IncompatibleTransform, check_compatible, extend_transform
from recsys.features.transform import Transform

log = logging.getLogger(__name__)
MODE_TAG = "train.mode"
WARM_START_TAG = "warm_start_version"


@dataclass
class TrainingPlan:
    """What to fit: ``data_dir`` holds ``train/valid.parquet`` (with ``x_*`` inputs) and ``transform.json``
    (what they were encoded with); ``model`` is the warm-started model, or None for a fresh one."""

    mode: str  # "full" or "incremental"
    data_dir: Path
    transform: Transform
    model: object | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)

    @property
    def spec(self):
        return self.model.feature_spec if self.model is not None else self.transform.spec()


def full_plan(features_dir: Path, why: str | None = None) -> TrainingPlan:
    """A full training on ``features_dir``; ``why``: the reason an incremental one fell back to it."""
    features_dir = Path(features_dir)
    mode = "full" if why is None else f"full (fallback: {why})"
    if why is not None:
        log.warning("incremental training falls back to a full training: %s", why)
    return TrainingPlan(
        "full", features_dir, Transform.load(features_dir / "transform.json"), tags={MODE_TAG: mode[:4900]}
    )


def plan_training(features_dir: Path, settings: Settings, work_dir: Path) -> TrainingPlan:
    """The plan for ``settings.train.mode`` (module docstring); the MLflow tracking must be configured."""
    if settings.train.mode == "full":
        return full_plan(features_dir)
    from recsys.model.warmstart import IncompatibleModel
    from recsys.registry import NoChampionError, load_ranker

    try:
        champion = load_ranker(settings)
    except NoChampionError:
        return full_plan(features_dir, "no champion")
    except Exception as exc:  # a champion that cannot be loaded is no starting point
        log.warning("the champion could not be loaded", exc_info=True)
        return full_plan(features_dir, f"the champion could not be loaded: {type(exc).__name__}: {exc}")
    gap = _days_since_champion(features_dir, settings, champion.version)
    if gap is not None and gap > settings.train.incremental_days:
        # the days between (a refused gate, a skipped training) would never be trained on
        return full_plan(
            features_dir,
            f"champion version {champion.version} was trained {gap} days before this one, more than"
            f" incremental_days ({settings.train.incremental_days})",
        )
    try:
        return incremental_plan(features_dir, settings, champion, Path(work_dir) / "incremental")
    except (IncompatibleTransform, IncompatibleModel) as exc:
        return full_plan(features_dir, f"champion version {champion.version} cannot be extended: {exc}")


def _days_since_champion(features_dir: Path, settings: Settings, version: str) -> int | None:
    """Days from the champion's registration day (its ``ds`` tag) to this partition's; None if unknown."""
    import mlflow

    try:
        tags = mlflow.MlflowClient().get_model_version(settings.model_name, str(version)).tags
    except Exception:  # an unknown day is no reason to refuse; the plan stays incremental
        return None
    return days_between(Path(features_dir).name, tags.get("ds"))


def days_between(partition: str, champion_ds: str | None) -> int | None:
    """Days from ``champion_ds`` to the day of the features partition named ``partition`` (``ds=...``);
    None when either is not a day."""
    try:
        ds = pd.Timestamp(partition.removeprefix("ds=")[:10]) if partition.startswith("ds=") else None
        then = pd.Timestamp(champion_ds) if champion_ds else None
    except ValueError:
        return None
    return None if ds is None or then is None else int((ds - then).days)


def read_examples(path: Path) -> pd.DataFrame:
    """The example columns of an encoded split (raw columns and labels, without its ``x_*`` inputs)."""
    names = [n for n in pq.ParquetFile(path).schema_arrow.names if not n.startswith("x_")]
    return pd.read_parquet(path, columns=names)


def new_rows(train: pd.DataFrame, days: int) -> np.ndarray:
    """Mask of the training rows within ``days`` 24-hour periods of the split's latest row."""
    ts = pd.to_datetime(train["ts"], utc=True)
    if ts.empty:
        return np.zeros(0, dtype=bool)
    return (ts > ts.max() - pd.Timedelta(days=days)).to_numpy()


def incremental_plan(features_dir: Path, settings: Settings, champion, folder: Path) -> TrainingPlan:
    """Grow the champion (``recsys.registry.Ranker``) with the new rows of ``features_dir`` and write the
    re-encoded new rows and validation split into ``folder``. Raises IncompatibleTransform /
    IncompatibleModel when the champion cannot be extended."""
    import keras

    from recsys.model.warmstart import check_compatible as check_model
    from recsys.model.warmstart import grown_spec, warm_started_model

    features_dir, folder = Path(features_dir), Path(folder)
    check_compatible(champion.transform, Transform.load(features_dir / "transform.json"))
    check_model(champion.model, settings.model)
    train = read_examples(features_dir / "train.parquet")
    valid = read_examples(features_dir / "valid.parquet")
    new = new_rows(train, settings.train.incremental_days)
    old_spec = champion.model.feature_spec
    sizes = {n: old_spec.vocab_sizes[n] for n in champion.transform.vocabs}
    fs = settings.features
    grown = extend_transform(
        champion.transform,
        train,
        new,
        sizes,
        old_spec.title_vocab_size,
        min_count=fs.min_count,
        title_vocab_size=fs.title_vocab_size,
    )
    added = {n: sum(1 for i in grown.vocabs[n].values() if i >= sizes[n]) for n in sizes}
    title_added = sum(1 for i in grown.title_vocab.values() if i >= old_spec.title_vocab_size)
    keras.utils.set_random_seed(settings.seed)
    model = warm_started_model(
        champion.model, grown_spec(old_spec, added, title_added), settings.model, settings.seed
    )
    folder.mkdir(parents=True, exist_ok=True)
    encode(train, grown, ordered=True)[new].reset_index(drop=True).to_parquet(
        folder / "train.parquet", index=False
    )
    encode(valid, grown).to_parquet(folder / "valid.parquet", index=False)
    grown.save(folder / "transform.json")
    log.info(
        "incremental training from champion version %s: %d new rows of %d, new ids %s, %d new title words",
        champion.version,
        int(new.sum()),
        len(train),
        added,
        title_added,
    )
    return TrainingPlan(
        "incremental",
        folder,
        grown,
        model,
        tags={MODE_TAG: "incremental", WARM_START_TAG: str(champion.version)},
        params={
            "incremental_days": settings.train.incremental_days,
            "window_train_rows": len(train),
            "new_users": added.get("user", 0),
            "new_videos": added.get("video", 0),
        },
    )

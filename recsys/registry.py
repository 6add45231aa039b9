"""The model registry: logging the ranker, the aliases ``champion`` and ``previous``, loading, rollback.

A logged ranker is an MLflow pyfunc model that carries the Keras model *and* the fitted transform, so
whoever loads it (batch scoring, real-time scoring, ``mlflow models serve``) applies the same transform.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys import tasks
from recsys.config import Settings
from recsys.shared_transform import load_transform, sharing

log = logging.getLogger(__name__)
CHAMPION, PREVIOUS = "champion", "previous"
CHALLENGER = "challenger"  # the latest version the gate evaluated and did not promote


class NoChampionError(LookupError):
    """The registry has no model under the ``champion`` alias yet."""


@dataclass
class Ranker:
    """A loaded model and its transform; :meth:`predict` scores example rows."""

    model: object
    transform: object
    score_weights: dict[str, float]
    version: str = "unregistered"

    def predict_tasks(self, rows: pd.DataFrame, batch_size: int = 8192) -> dict[str, np.ndarray]:
        x = self.transform.apply(rows)
        x["position"] = np.zeros(len(rows), dtype=np.int32)  # position is unknown at serving
        out = self.model.predict(x, batch_size=batch_size, verbose=0)
        names = tasks.names(tasks.of_model(self.model))
        return {k: np.asarray(v).reshape(-1) for k, v in out.items() if k in names}

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        from recsys.features.negatives import ranking_scores

        preds = self.predict_tasks(rows)
        df = pd.DataFrame(preds)
        df["score"] = ranking_scores(self, preds, rows["video_id"])
        return df


def _pyfunc_class():
    import mlflow.pyfunc

    class RankerPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow wrapper: rows of (user, video, context) -> per-task predictions and the ranking score."""

        def load_context(self, context):
            self.ranker = load_ranker_dir(Path(context.artifacts["model"]).parent)

        def __getstate__(self):
            # MLflow calls load_context on this very instance (signature inference) before pickling it:
            # without this, python_model.pkl holds a second copy of the model and the whole transform
            return {k: v for k, v in self.__dict__.items() if k != "ranker"}

        def predict(
            self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            """Per-task predictions (click, watch, like, share) and ``score`` for each input row."""
            return self.ranker.predict(model_input)

    return RankerPyfunc


def log_ranker(model, transform, settings: Settings, example_path: Path) -> str:
    """Log the model + transform as a pyfunc model in the active run; returns the model URI."""
    import mlflow

    from recsys.features.build import EXAMPLE_COLUMNS
    from recsys.tracking import pip_requirements

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model.save(tmp / "model.keras")
        transform.save(tmp / "transform.json")
        weights = tasks.score_weights(settings.model.score_weights, tasks.of_model(model))
        (tmp / "ranker.json").write_text(json.dumps({"score_weights": weights}))
        # three rows, read as three rows: reading the file to take its head held the whole validation
        # split (150k rows at 1M interactions a day, ~300 MB) at the train stage's peak
        cols = [c for c in EXAMPLE_COLUMNS if c != "event_id"]
        first = next(pq.ParquetFile(example_path).iter_batches(batch_size=3, columns=cols), None)
        example = (
            first.to_pandas() if first is not None else pd.read_parquet(example_path, columns=cols)
        ).head(3)
        # the serving contract: position is unknown at serving (not an input); times are ISO-8601 strings
        example = example.drop(columns=["rec_version", "position"])
        for col in ("ts", "upload_ts"):
            example[col] = pd.to_datetime(example[col], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        with sharing(transform, tmp / "transform.json"):
            info = mlflow.pyfunc.log_model(
                name="ranker",
                python_model=_pyfunc_class()(),
                artifacts={
                    k: str(tmp / f)
                    for k, f in (
                        ("model", "model.keras"),
                        ("transform", "transform.json"),
                        ("ranker", "ranker.json"),
                    )
                },
                input_example=example,
                pip_requirements=pip_requirements(),
            )
    return info.model_uri


def load_ranker_dir(path: Path, version: str = "local") -> Ranker:
    """Load a ranker from a folder holding model.keras, transform.json and ranker.json."""
    import keras

    from recsys.model import register_layers

    register_layers()  # the custom layers, before load_model
    meta = json.loads((path / "ranker.json").read_text())
    return Ranker(
        keras.saving.load_model(path / "model.keras", compile=False),
        load_transform(path / "transform.json"),
        meta["score_weights"],
        version,
    )


def load_ranker(settings: Settings, alias: str = CHAMPION, version: str | None = None) -> Ranker:
    """Download and load the model behind ``alias``, or the registered ``version`` if given."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.tracking import configure

    configure(settings)
    client = mlflow.MlflowClient()
    try:
        if version is not None:
            version = repaired_successor(settings.model_name, str(version))
            mv = client.get_model_version(settings.model_name, version)
        else:
            mv = client.get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as exc:
        what = f"version {version}" if version is not None else f"alias {alias!r}"
        raise NoChampionError(f"no model {settings.model_name!r} with {what}") from exc
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{settings.model_name}/{mv.version}")
    )
    return load_ranker_dir(local / "artifacts", version=str(mv.version))


def champion_version(settings: Settings, alias: str = CHAMPION) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.tracking import configure

    configure(settings)
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException:
        return None


def champion_trained_on(settings: Settings) -> date | None:
    """The day (registry tag ``ds``) the champion was trained on; None without a champion."""
    ds = champion_tags(settings).get("ds")
    return date.fromisoformat(ds) if ds else None


def champion_tags(settings: Settings, alias: str = CHAMPION) -> dict[str, str]:
    """The registry tags (ds, blessed, ...) of the version behind ``alias`` ({} if none)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.tracking import configure

    configure(settings)
    try:
        return dict(mlflow.MlflowClient().get_model_version_by_alias(settings.model_name, alias).tags)
    except MlflowException:
        return {}


def register(settings: Settings, model_uri: str, *, promote: bool, tags: dict[str, str]) -> dict:
    """Register ``model_uri``; if ``promote``, it becomes ``champion`` and the old one ``previous``;
    else it becomes ``challenger`` (gated, not promoted)."""
    import mlflow

    from recsys.tracking import configure

    configure(settings)
    client = mlflow.MlflowClient()
    mv = mlflow.register_model(model_uri, settings.model_name, tags=tags)
    old = champion_version(settings)
    if promote:
        if old is not None and old != str(mv.version):
            client.set_registered_model_alias(settings.model_name, PREVIOUS, old)
        client.set_registered_model_alias(settings.model_name, CHAMPION, mv.version)
    else:  # gated but not promoted: findable by alias for comparison, never served
        client.set_registered_model_alias(settings.model_name, CHALLENGER, mv.version)
    return {
        "version": str(mv.version),
        "promoted": promote,
        "champion": champion_version(settings),
        "previous": champion_version(settings, PREVIOUS),
        "challenger": champion_version(settings, CHALLENGER),
    }


def rollback(settings: Settings) -> dict:
    """Move ``champion`` back to ``previous`` (and ``previous`` to the version that was champion)."""
    import mlflow

    from recsys.tracking import configure

    configure(settings)
    client = mlflow.MlflowClient()
    cur, prev = champion_version(settings), champion_version(settings, PREVIOUS)
    if prev is None:
        raise NoChampionError("no 'previous' model to roll back to")
    client.set_registered_model_alias(settings.model_name, CHAMPION, prev)
    if cur is not None:
        client.set_registered_model_alias(settings.model_name, PREVIOUS, cur)
        # an audit trail on the versions themselves (the aliases only show the current state)
        client.set_model_version_tag(settings.model_name, cur, "rolled_back", f"demoted in favour of {prev}")
    client.set_model_version_tag(settings.model_name, prev, "restored", f"champion again, replacing {cur}")
    log.warning("rolled back champion %s -> %s (the next recommend/publish uses version %s)", cur, prev, prev)
    return {"champion": prev, "previous": cur}


# ------------------------------------------------------------------------------------ erasure support
def _ranker_pyfunc_args(folder: Path, example: pd.DataFrame | None, signature) -> dict:
    """What ``mlflow.pyfunc.log_model``/``save_model`` take for a ranker saved as files in ``folder``
    (a known ``signature`` spares MLflow loading the model to infer it from the example)."""
    from recsys.tracking import pip_requirements

    names = {"model": "model.keras", "transform": "transform.json", "ranker": "ranker.json"}
    return {
        "python_model": _pyfunc_class()(),
        "artifacts": {k: str(Path(folder) / f) for k, f in names.items()},
        "input_example": example,
        "signature": signature,
        "pip_requirements": pip_requirements(),
    }


def log_ranker_dir(folder: Path, example: pd.DataFrame | None, signature=None) -> str:
    """Log a ranker saved as files (model.keras, transform.json, ranker.json) in the active run."""
    import mlflow

    return mlflow.pyfunc.log_model(name="ranker", **_ranker_pyfunc_args(folder, example, signature)).model_uri


def save_ranker_dir(folder: Path, example: pd.DataFrame | None, path: Path, signature=None) -> Path:
    """The same model as :func:`log_ranker_dir`, written as a complete MLflow model folder at ``path``."""
    import mlflow

    mlflow.pyfunc.save_model(path=str(path), **_ranker_pyfunc_args(folder, example, signature))
    return Path(path)


def model_versions(settings: Settings) -> list:
    """Every version of every registered model (``ModelVersion`` entities, with their ``aliases``)."""
    import mlflow

    from recsys.tracking import configure

    configure(settings)
    client = mlflow.MlflowClient()
    out = []
    for rm in client.search_registered_models():
        # search results leave ``aliases`` empty: fetch each version, which carries them
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            out.append(client.get_model_version(rm.name, mv.version))
    return out


def logged_model_id(mv) -> str | None:
    """The logged model behind a model version (MLflow 3 leaves ``model_id`` empty on fetched versions;
    the source then reads ``models:/<model id>``)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = str(mv.source or "")
    rest = source.removeprefix("models:/")
    return rest if source.startswith("models:/m-") and "/" not in rest else None


def version_location(mv) -> str:
    """Where the artifacts of a model version are stored (an artifact URI)."""
    import mlflow

    return mlflow.MlflowClient().get_model_version_download_uri(mv.name, str(mv.version))


def repaired_successor(name: str, version: str) -> str:
    """``version``, or, if an erasure deleted it, the version repaired from it (followed through later
    erasures): lists published by a version can still be scored by what it became."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    for _ in range(100):
        try:
            client.get_model_version(name, version)
            return version
        except MlflowException:
            found = client.search_model_versions(f"name='{name}' and tag.repaired_from='{version}'")
            if not found:
                return version
            version = str(max(int(mv.version) for mv in found))
    return version


def register_version(name: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name`` without touching any alias."""
    import mlflow

    return str(mlflow.register_model(model_uri, name, tags=tags).version)


def move_aliases(moves: dict[tuple[str, str], str]) -> None:
    """Point each ``(model name, alias)`` at its new version, all or nothing.

    The registry has no multi-alias transaction: the moves are consecutive calls made only once every
    target exists, and if one fails the aliases already moved are put back.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    done: list[tuple[str, str, str | None]] = []
    try:
        for (name, alias), version in moves.items():
            try:
                old = str(client.get_model_version_by_alias(name, alias).version)
            except MlflowException:
                old = None
            client.set_registered_model_alias(name, alias, version)
            done.append((name, alias, old))
    except Exception:
        for name, alias, old in reversed(done):
            if old is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, old)
        raise


def delete_artifacts(uri: str) -> None:
    """Remove everything stored under the artifact ``uri`` (local folder, S3, a tracking server)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(uri).delete_artifacts()


def replace_artifacts(uri: str, folder: Path) -> None:
    """Replace what is stored under the artifact ``uri`` by the files of ``folder``."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(uri)
    repo.delete_artifacts()
    repo.log_artifacts(str(folder))


def delete_version(name: str, version: str, *, files: bool = True) -> str:
    """Delete a model version from the registry, its artifacts from the store (unless ``files`` is
    False: another version shares them), and its logged model. Returns the artifact location."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    mv = client.get_model_version(name, version)
    location = client.get_model_version_download_uri(name, version)
    client.delete_model_version(name, version)
    if files:
        delete_artifacts(location)
    model_id = logged_model_id(mv)
    if model_id and files:
        with contextlib.suppress(MlflowException):  # already deleted
            client.delete_logged_model(model_id)
    return location

"""The retrieval model in the MLflow registry, and its pairing with the ranker.

The two-tower model (with its transform, feature vocabularies and exported item index) is its own
registered model, ``<model_name>-retrieval``, with its own ``champion`` / ``previous`` aliases and gate.

Retrieval and ranking are versioned together: a ranker version is registered with the tag
``retrieval_version`` = the retrieval champion it was registered (and evaluated) alongside, and serving
resolves the retrieval model *from the ranker champion's tag*, never from the retrieval alias alone
(:func:`serving_pair`). So a rollback of either model (:func:`rollback_pair`) moves both aliases to a pair
that went out together, and a ranker registered before retrieval existed is served with the rule pools
only (tag ``none``), not with an index it never saw.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from recsys.config import Settings

log = logging.getLogger(__name__)
CHAMPION, PREVIOUS = "champion", "previous"
PAIR_TAG = "retrieval_version"
NONE = "none"


def retrieval_name_for(ranker_name: str) -> str:
    """The registered retrieval model that goes out with the ranker ``ranker_name``."""
    return f"{ranker_name}-retrieval"


def retrieval_model_name(settings: Settings) -> str:
    return retrieval_name_for(settings.model_name)


def _client(settings: Settings):
    import mlflow

    from recsys.tracking import configure

    configure(settings)
    return mlflow.MlflowClient()


def _pyfunc_class():
    import mlflow.pyfunc

    class RetrievalPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow wrapper: item rows (video_id, author_id, category, tags, title, upload_ts) -> the vectors
        the index holds, one list per row: for a model with an item bias ``[embedding / temperature, bias
        + prior x log(1 + clicks)]`` (the index's row for a video it has; the item tower's, with no
        prior, for one it has not), else the unit-norm embedding."""

        def load_context(self, context):
            from recsys.retrieval.settings import RetrievalSettings
            from recsys.retrieval.train import RetrievalBundle

            self.bundle = RetrievalBundle.load(Path(context.artifacts["bundle"]), RetrievalSettings())

        def predict(self, context, model_input, params=None):
            import numpy as np
            import pandas as pd

            b = self.bundle
            at = pd.Timestamp(b.index.built_at) if b.index.built_at else pd.Timestamp.now(tz="UTC")
            emb = np.array(b.model.candidate_vectors(b.features.items(model_input, at)), dtype=np.float32)
            # the index's own rows where it has the video (they carry the popularity prior too)
            pos = pd.Index(b.index.video_ids).get_indexer(model_input["video_id"].astype("int64"))
            emb[pos >= 0] = b.index.embeddings[pos[pos >= 0]]
            return pd.DataFrame({"embedding": list(emb)})

    return RetrievalPyfunc


def _retrieval_pyfunc_args(folder: Path) -> dict:
    from recsys.tracking import pip_requirements

    return {
        "python_model": _pyfunc_class()(),
        "artifacts": {"bundle": str(folder)},
        "pip_requirements": [*pip_requirements(), "keras-rs", "faiss-cpu"],
    }


def log_retrieval_dir(folder: Path) -> str:
    """Log a retrieval bundle saved as files (:meth:`RetrievalBundle.save`) as the pyfunc model
    ``retrieval`` in the active run; returns the model URI."""
    import mlflow

    return mlflow.pyfunc.log_model(name="retrieval", **_retrieval_pyfunc_args(folder)).model_uri


def save_retrieval_dir(folder: Path, path: Path) -> Path:
    """The same model as :func:`log_retrieval_dir`, written as a complete MLflow model folder at ``path``."""
    import mlflow

    mlflow.pyfunc.save_model(path=str(path), **_retrieval_pyfunc_args(folder))
    return Path(path)


def log_retrieval(bundle, settings: Settings) -> str:
    """Log the bundle as a pyfunc model named ``retrieval`` in the active run; returns the model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        return log_retrieval_dir(bundle.save(Path(tmp) / "bundle"))


def retrieval_version(settings: Settings, alias: str = CHAMPION) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(
            _client(settings).get_model_version_by_alias(retrieval_model_name(settings), alias).version
        )
    except MlflowException:
        return None


def register_retrieval(settings: Settings, model_uri: str, *, promote: bool, tags: dict[str, str]) -> dict:
    """Register ``model_uri``; if ``promote``, it becomes the retrieval ``champion`` (old: ``previous``)."""
    import mlflow

    client = _client(settings)
    name = retrieval_model_name(settings)
    mv = mlflow.register_model(model_uri, name, tags=tags)
    old = retrieval_version(settings)
    if promote:
        if old is not None and old != str(mv.version):
            client.set_registered_model_alias(name, PREVIOUS, old)
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    return {
        "version": str(mv.version),
        "promoted": promote,
        "champion": retrieval_version(settings),
        "previous": retrieval_version(settings, PREVIOUS),
    }


def load_retrieval(settings: Settings, version: str):
    """Download and load retrieval ``version`` (a :class:`recsys.retrieval.train.RetrievalBundle`)."""
    import mlflow

    from recsys.retrieval.train import RetrievalBundle

    _client(settings)
    uri = f"models:/{retrieval_model_name(settings)}/{version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    return RetrievalBundle.load(local / "artifacts" / "bundle", settings.retrieval, version=str(version))


# ------------------------------------------------------------------------------------------ pairing
def pairing_tags(settings: Settings) -> dict[str, str]:
    """Tags for a ranker version being registered now: the retrieval champion it goes out with."""
    return {PAIR_TAG: retrieval_version(settings) or NONE}


def paired_retrieval_version(settings: Settings, ranker_version: str | None) -> str | None:
    """The retrieval version registered with ``ranker_version`` (None: none, or an untagged ranker)."""
    from mlflow.exceptions import MlflowException

    if ranker_version is None:
        return None
    try:
        tags = _client(settings).get_model_version(settings.model_name, str(ranker_version)).tags
    except MlflowException:
        return None
    v = tags.get(PAIR_TAG, NONE)
    return None if v == NONE else v


def serving_pair(settings: Settings) -> tuple[str | None, str | None]:
    """(ranker version, retrieval version) to serve: the ranker champion and the retrieval paired with it."""
    from recsys.registry import champion_version

    ranker = champion_version(settings)
    return ranker, paired_retrieval_version(settings, ranker)


def _align_retrieval_aliases(settings: Settings) -> None:
    """Point the retrieval aliases at the versions paired with the ranker's champion and previous."""
    from recsys.registry import champion_version

    client, name = _client(settings), retrieval_model_name(settings)
    for alias in (CHAMPION, PREVIOUS):
        v = paired_retrieval_version(settings, champion_version(settings, alias))
        if v is not None:
            client.set_registered_model_alias(name, alias, v)
        elif retrieval_version(settings, alias) is not None:
            client.delete_registered_model_alias(name, alias)


def rollback_pair(settings: Settings) -> dict:
    """Roll the ranker back to ``previous`` and retrieval with it, to the version paired with that ranker.

    Used for a rollback of either model: rolling back only one would serve a ranker with an index it was
    not evaluated with.
    """
    from recsys.registry import rollback

    out = rollback(settings)
    _align_retrieval_aliases(settings)
    ranker, retrieval = serving_pair(settings)
    log.warning("rolled back the pair: ranker %s with retrieval %s", ranker, retrieval or "none (rule pools)")
    return {**out, "retrieval_champion": retrieval_version(settings), "serving": [ranker, retrieval]}

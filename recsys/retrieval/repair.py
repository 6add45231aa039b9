"""Erasure for the two-tower retrieval model: the flavour :mod:`recsys.privacy.model_repair` uses.

A logged retrieval model (``artifacts/bundle``, see :meth:`recsys.retrieval.train.RetrievalBundle.save`)
holds users in two places: the fitted transform (the user vocabulary, shared with the ranker's
features) and the user tower's id embedding. The repair removes the erased keys from the transform (their
requests then look up the out-of-vocabulary row 0, like a never-seen user: the query is built from the
history, category/author pools and context alone) and zeroes their rows of ``user_embedding``. The item
tower, the feature vocabularies of videos, tags and titles, and the exported item index hold no user:
they are copied byte for byte, so every candidate list of every other user is unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from recsys.privacy.model_repair import (
    ModelRepairError,
    RepairedModel,
    forget_users,
    register_flavour,
    zero_embedding_rows,
)

USER_EMBEDDING = "user_embedding"
ITEM_FILES = ("index.npz", "retrieval_features.json", "retrieval.json")  # hold no user: copied as they are


def detect(model_dir: Path) -> bool:
    b = Path(model_dir) / "artifacts" / "bundle"
    return all((b / f).is_file() for f in ("model.keras", "transform.json", "retrieval.json"))


def repair(model_dir: Path, keys: frozenset[str], work: Path) -> RepairedModel:
    import keras

    import recsys.retrieval.model  # noqa: F401  registers the two-tower layers for load_model
    from recsys.retrieval.registry import log_retrieval_dir, save_retrieval_dir

    src = Path(model_dir) / "artifacts" / "bundle"
    dst = Path(work) / "bundle"
    dst.mkdir(parents=True, exist_ok=True)
    transform, rows = forget_users(json.loads((src / "transform.json").read_bytes()), keys)
    (dst / "transform.json").write_text(json.dumps(transform, sort_keys=True))
    for name in ITEM_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    model = keras.saving.load_model(src / "model.keras", compile=False)
    zeroed = zero_embedding_rows(model, USER_EMBEDDING, rows)
    if zeroed < len(rows):
        raise ModelRepairError(
            f"the retrieval model has no '{USER_EMBEDDING}' table with the {len(rows)} erased user row(s)"
        )
    model.save(dst / "model.keras")
    return RepairedModel(
        {"vocabulary_entries_removed": len(rows), "embedding_rows_zeroed": zeroed, "item_index": "unchanged"},
        log=lambda: log_retrieval_dir(dst),
        save=lambda path: save_retrieval_dir(dst, path),
    )


register_flavour("retrieval", detect, repair)


def follow_pairing(settings, repaired: list[dict]) -> list[dict]:
    """Point ranker versions paired with a repaired retrieval version at its repair.

    A ranker version names the retrieval version it went out with (tag ``retrieval_version``, see
    :mod:`recsys.retrieval.registry`); the repaired ranker copies its old tags, so without this it would
    name the unrepaired retrieval version the erasure is about to delete. Returns one row per moved tag.
    """
    from recsys.registry import model_versions
    from recsys.retrieval.registry import PAIR_TAG, _client, retrieval_model_name

    moved = {r["version"]: r["new_version"] for r in repaired if r["model"] == retrieval_model_name(settings)}
    if not moved:
        return []
    client, out = _client(settings), []
    for mv in model_versions(settings):
        was = mv.tags.get(PAIR_TAG)
        if mv.name == settings.model_name and was in moved:
            client.set_model_version_tag(mv.name, mv.version, PAIR_TAG, moved[was])
            out.append({"ranker_version": str(mv.version), "retrieval_version": moved[was], "was": was})
    return out

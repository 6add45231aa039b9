"""Erasure for the two-tower retrieval model: the flavour :mod:`recsys.privacy.model_repair` uses.

A logged retrieval model (``artifacts/bundle``, see :meth:`recsys.retrieval.train.RetrievalBundle.save`)
holds users in two places: the fitted transform (the user vocabulary, shared with the ranker's features)
and, when the model has one (``user_id``; off by default since 2026-11), the user tower's id embedding. The
repair removes the erased keys from the transform (their requests then look up the out-of-vocabulary row 0,
like a never-seen user: the query is built from the history, category/author pools and context alone) and
zeroes their rows of ``user_embedding`` if there is one. The exported item index (``index.npz``) and the
item-side feature file are copied byte for byte; the item tower's weights and the item vocabularies are
re-saved with the same values (they hold no user), so every candidate list of every other user is unchanged. A
bundle holding a file this repair does not know is refused (it could hold a user).
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
    unknown = sorted({p.name for p in src.iterdir()} - {*ITEM_FILES, "model.keras", "transform.json"})
    if unknown:
        raise ModelRepairError(f"the retrieval bundle holds files no repair knows: {unknown}")
    for name in ITEM_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    model = keras.saving.load_model(src / "model.keras", compile=False)
    per_user = getattr(model, "user_id", True)  # False: no user-id embedding, no per-user parameter
    zeroed = zero_embedding_rows(model, USER_EMBEDDING, rows) if per_user else 0
    if per_user and zeroed < len(rows):
        raise ModelRepairError(
            f"the retrieval model has no '{USER_EMBEDDING}' table with the {len(rows)} erased user row(s)"
        )
    model.save(dst / "model.keras")
    return RepairedModel(
        {
            "vocabulary_entries_removed": len(rows),
            "embedding_rows_zeroed": zeroed,
            "user_embedding": USER_EMBEDDING if per_user else "none",
            "item_index": "unchanged",
        },
        log=lambda: log_retrieval_dir(dst),
        save=lambda path: save_retrieval_dir(dst, path),
    )


register_flavour("retrieval", detect, repair)


def served_versions(versions) -> set[tuple[str, str]]:
    """(retrieval model, version) named by an aliased ranker version: served with that ranker even when
    the retrieval version itself lost its aliases (retrieval is promoted on its own gate, so after a ranker
    gate failure the served pair can name an unaliased retrieval version). The erasure repairs these too."""
    from recsys.retrieval.registry import NONE, PAIR_TAG, retrieval_name_for

    return {
        (retrieval_name_for(mv.name), str(mv.tags[PAIR_TAG]))
        for mv in versions
        if mv.aliases and mv.tags.get(PAIR_TAG, NONE) != NONE
    }


def follow_pairing(settings) -> list[dict]:
    """Point every served ranker version (aliased, or itself a repair) that names a repaired retrieval
    version at that version's newest repair; one row per tag moved.

    A ranker version names the retrieval version it went out with (tag ``retrieval_version``, see
    :mod:`recsys.retrieval.registry`); a repaired ranker copies its old tags, so without this it would name
    the unrepaired retrieval version the erasure then deletes. The repairs are read from the registry (the
    ``repaired_from`` tags), not from this run alone: an erasure that stopped between registering repairs and
    this step is completed by the next one. Every ranker of the registry is handled (``<name>`` with
    ``<name>-retrieval``), not only the configured one.
    """
    from recsys.registry import model_versions
    from recsys.retrieval.registry import NONE, PAIR_TAG, _client, retrieval_name_for

    versions = model_versions(settings)
    newest: dict[tuple[str, str], str] = {}  # (model, version) -> the newest version repaired from it
    for mv in versions:
        src = mv.tags.get("repaired_from")
        if src is not None and int(mv.version) > int(newest.get((mv.name, src), 0)):
            newest[(mv.name, src)] = str(mv.version)

    def resolve(name: str, version: str) -> str:
        seen = set()
        while (name, version) in newest and version not in seen:  # a repair of a repair
            seen.add(version)
            version = newest[(name, version)]
        return version

    client, out = _client(settings), []
    for mv in versions:
        was = mv.tags.get(PAIR_TAG, NONE)
        if was == NONE or not (mv.aliases or "repaired_from" in mv.tags):
            continue
        now = resolve(retrieval_name_for(mv.name), str(was))
        if now != was:
            client.set_model_version_tag(mv.name, mv.version, PAIR_TAG, now)
            out.append(
                {"model": mv.name, "ranker_version": str(mv.version), "retrieval_version": now, "was": was}
            )
    return out

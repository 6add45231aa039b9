"""Erasure reaches the models: no registered model keeps an erased user's pseudonym or learned vector.

A model logged to MLflow holds its users in three places: the fitted transform (the user vocabulary, the
user's activity and per-category/author click counts, all keyed by pseudonym), the embedding table (the
user's learned row), and MLflow's own files (the input example; the pickled pyfunc wrapper of older
versions, which carried a copy of the transform). :func:`repair_models` handles every registered model:

1. every version an alias points to (``champion``, ``previous``, any ``challenger``), and every retrieval
   version an aliased ranker is served with, that holds one of the erased pseudonyms is *repaired*: the
   pseudonyms leave the transform (the key now maps to the out-of-vocabulary index 0, with no activity and
   no affinity evidence: exactly what a never-seen user gets), the freed embedding rows are zeroed
   (nothing can reach them any more; zeroing removes the learned vector from the file), and the input
   example names no erased user. The repaired model is logged in an MLflow run tagged
   ``erasure=<request id>`` and registered as a new version (the old version's tags, plus ``erasure`` and
   ``repaired_from``), and checked by a byte scan before anything moves;
2. the aliases then move to the repaired versions, all together (undone if one move fails), and the
   served ranker versions that name a repaired retrieval version name its repair (tag
   ``retrieval_version``, read back from the ``repaired_from`` tags, so a retry completes a stopped run);
3. every other version that still holds a pseudonym, and every logged model no version refers to (e.g. a
   candidate the gate refused), is deleted from the registry and the artifact store, or rewritten in place
   (``settings.privacy.erasure_old_versions``: ``delete`` by default, see docs/security.md);
4. with a local artifact store, a final byte scan of the whole store reports any file still holding one.

Every other user's inputs and weights are untouched, so their scores do not change. Aggregates the user
contributed to (video popularity, normalization statistics, shared layers) stay until the next retrain,
which no longer sees the user.

Model kinds plug in through :func:`register_flavour` (``detect`` a downloaded MLflow model folder,
``repair`` it into a :class:`RepairedModel`). The ranker is registered below; the two-tower retrieval
model registers its own repair in :mod:`recsys.retrieval.repair` (user vocabulary and user-tower id
embedding; its item index holds no user).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import Settings
from recsys.features.affinity_table import AffinityTable, is_saved_arrays
from recsys.privacy.keyscan import files_holding

log = logging.getLogger(__name__)
ERASED_PLACEHOLDER = "__erased__"  # what an input example shows where an erased user's key was


class ModelRepairError(RuntimeError):
    """A served model holds an erased user and cannot be repaired (unknown flavour, or the repair left
    the pseudonym in a file)."""


@dataclass(frozen=True)
class RepairedModel:
    """A repaired model, ready to be logged as a new version or written over an old one."""

    changes: dict[str, int]
    log: Callable[[], str]  # log in the active MLflow run; returns the model URI
    save: Callable[[Path], Path]  # write a complete MLflow model folder at the path


@dataclass(frozen=True)
class Flavour:
    name: str
    detect: Callable[[Path], bool]  # is this downloaded MLflow model folder of this flavour?
    repair: Callable[[Path, frozenset[str], Path], RepairedModel]  # (model folder, keys, work folder)


FLAVOURS: dict[str, Flavour] = {}


def register_flavour(
    name: str,
    detect: Callable[[Path], bool],
    repair: Callable[[Path, frozenset[str], Path], RepairedModel],
) -> Flavour:
    """Teach the erasure how to repair one kind of logged model (later registrations of a name win)."""
    FLAVOURS[name] = Flavour(name, detect, repair)
    return FLAVOURS[name]


def flavour_of(model_dir: Path) -> Flavour | None:
    import recsys.retrieval.repair  # noqa: F401  registers the two-tower model's flavour

    return next((f for f in FLAVOURS.values() if f.detect(Path(model_dir))), None)


# ------------------------------------------------------------------------------------ pure pieces
def forget_users(transform: dict, keys: Iterable[str]) -> tuple[dict, list[int]]:
    """A copy of a saved transform (its JSON dict) that knows none of ``keys``, and the vocabulary
    indices they held. Each key leaves the user vocabulary (it now maps to the out-of-vocabulary index
    0), the activity table, every affinity table and the co-engagement histories: the cold-start inputs
    of a never-seen user."""
    keys = set(keys)
    t = copy.deepcopy(transform)
    vocab = t.get("vocabs", {}).get("user", {})
    rows = sorted(int(vocab.pop(k)) for k in keys & set(vocab))
    for k in keys & set(t.get("user_impressions", {})):
        del t["user_impressions"][k]
    tables = t.get("affinity", {})
    for name, table in list(tables.items()):
        if is_saved_arrays(table):  # the array form (recsys.features.affinity_table)
            arrays = AffinityTable.from_json_value(table)
            gone = keys & set(arrays.users.tolist())
            if gone:
                tables[name] = arrays.without(gone).to_json_value()
            continue
        for k in keys & set(table):  # the nested form of transforms saved before it
            del table[k]
    history = t.get("coengagement", {}).get("history", {})  # the user's engaged videos
    for k in keys & set(history):
        del history[k]
    return t, rows


def zero_embedding_rows(model, layer: str, rows: Iterable[int]) -> int:
    """Zero ``rows`` of every embedding table of the Keras layer named ``layer``; rows zeroed in all."""
    rows = sorted(set(int(r) for r in rows))
    n = 0
    for var in model.weights:
        if not rows or not var.path.endswith(f"{layer}/embeddings"):
            continue
        table = np.array(var.numpy())
        ok = [r for r in rows if 0 < r < table.shape[0]]  # never row 0: the unknown bucket stays
        table[ok] = 0.0
        var.assign(table)
        n += len(ok)
    return n


def scrub_example(example: pd.DataFrame | None, keys: Iterable[str], column: str = "user_key"):
    """The input example with erased users' keys replaced by a placeholder (an unknown user)."""
    if example is None or column not in example.columns:
        return example
    out = example.copy()
    out[column] = out[column].map(lambda k: ERASED_PLACEHOLDER if str(k).lower() in set(keys) else k)
    return out


def _example_and_signature(model_dir: Path) -> tuple[pd.DataFrame | None, object]:
    """The input example and signature saved with a logged model (None where it has none)."""
    from mlflow.models import Model

    meta = Model.load(str(model_dir))
    try:
        example = meta.load_input_example(str(model_dir))
    except Exception:  # no example saved with this model
        example = None
    return example, meta.signature


# ------------------------------------------------------------------------------------ the ranker
def _ranker_detect(model_dir: Path) -> bool:
    a = Path(model_dir) / "artifacts"
    return all((a / f).is_file() for f in ("model.keras", "transform.json", "ranker.json"))


def _ranker_repair(model_dir: Path, keys: frozenset[str], work: Path) -> RepairedModel:
    import keras

    from recsys.model import register_layers
    from recsys.registry import log_ranker_dir, save_ranker_dir

    register_layers()  # recsys.model is lazy: load_model needs the custom layers registered

    src = Path(model_dir) / "artifacts"
    work.mkdir(parents=True, exist_ok=True)
    transform, rows = forget_users(json.loads((src / "transform.json").read_bytes()), keys)
    (work / "transform.json").write_text(json.dumps(transform, sort_keys=True))
    shutil.copyfile(src / "ranker.json", work / "ranker.json")
    model = keras.saving.load_model(src / "model.keras", compile=False)
    zeroed = zero_embedding_rows(model, "embedding_user", rows)
    model.save(work / "model.keras")
    example, signature = _example_and_signature(Path(model_dir))
    example = scrub_example(example, keys)
    return RepairedModel(
        {"vocabulary_entries_removed": len(rows), "embedding_rows_zeroed": zeroed},
        log=lambda: log_ranker_dir(work, example, signature),
        save=lambda path: save_ranker_dir(work, example, path, signature),
    )


register_flavour("ranker", _ranker_detect, _ranker_repair)


# ------------------------------------------------------------------------------------ the registry
@dataclass
class _Store:
    """Downloads of model folders into one temporary folder, each once."""

    root: Path
    seen: dict[str, Path] = field(default_factory=dict)

    def get(self, uri: str) -> Path | None:
        import mlflow

        if uri not in self.seen:
            dst = self.root / f"dl-{uuid.uuid4().hex[:12]}"
            dst.mkdir()
            try:
                self.seen[uri] = Path(
                    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
                )
            except Exception as exc:  # artifacts already gone (deleted by hand, or by us a moment ago)
                log.info("erasure: no artifacts at %s (%s)", uri, type(exc).__name__)
                return None
        return self.seen[uri]


def _holds(store: _Store, uri: str, keys: frozenset[str]) -> Path | None:
    local = store.get(uri)
    return local if local is not None and files_holding(local, keys) else None


def _repair(local: Path, keys: frozenset[str], work: Path, what: str) -> RepairedModel:
    flavour = flavour_of(local)
    if flavour is None:
        raise ModelRepairError(f"{what} holds an erased user and no repair knows its kind of model")
    return flavour.repair(local, keys, work)


def _check(folder: Path, keys: frozenset[str], what: str) -> None:
    left = files_holding(folder, keys)
    if left:
        raise ModelRepairError(f"repairing {what} left erased users in {sorted(p.name for p in left)}")


def _repair_aliased(settings, keys, store: _Store, request_id: str) -> tuple[list, dict]:
    """Repair every aliased version holding a key into a new, checked version; the report rows and the
    alias moves (not made yet)."""
    import mlflow

    from recsys import registry as reg
    from recsys.retrieval.repair import served_versions
    from recsys.tracking import configure

    client = mlflow.MlflowClient()
    todo = []
    versions = reg.model_versions(settings)
    served = served_versions(versions)  # retrieval versions an aliased ranker is served with
    for mv in versions:
        serving = mv.aliases or (mv.name, str(mv.version)) in served
        local = _holds(store, reg.version_location(mv), keys) if serving else None
        if local is not None:
            why = ", ".join(sorted(mv.aliases)) or "served with an aliased ranker"
            what = f"{mv.name} version {mv.version} ({why})"
            todo.append((mv, what, _repair(local, keys, store.root / f"fix-{len(todo)}", what)))
    if not todo:
        return [], {}
    rows, moves = [], {}
    run = {"run_name": f"erasure-{request_id[:8]}", "tags": {"erasure": request_id, "purpose": "erasure"}}
    with mlflow.start_run(experiment_id=configure(settings), **run):
        for mv, what, repaired in todo:
            tags = {**mv.tags, "erasure": request_id, "repaired_from": str(mv.version)}
            new = reg.register_version(mv.name, repaired.log(), tags)
            try:  # what was stored, not what we meant to store
                stored = store.get(reg.version_location(client.get_model_version(mv.name, new)))
                if stored is None:
                    raise ModelRepairError(f"the repaired {what} cannot be read back from the store")
                _check(stored, keys, what)
            except ModelRepairError:
                reg.delete_version(mv.name, new)
                raise
            moves.update({(mv.name, alias): new for alias in mv.aliases})
            row = {"model": mv.name, "version": str(mv.version), "new_version": new}
            rows.append({**row, "aliases": sorted(mv.aliases), **repaired.changes})
    return rows, moves


def _rewrite(store: _Store, uri: str, keys: frozenset[str], what: str) -> bool:
    """Rewrite the model stored at ``uri`` without the keys; False if no repair knows its kind."""
    from recsys import registry as reg

    local = store.get(uri)
    if local is None or flavour_of(local) is None:
        return False
    work = store.root / f"old-{uuid.uuid4().hex[:12]}"
    folder = _repair(local, keys, work, what).save(work.with_name(work.name + "-model"))
    _check(folder, keys, what)
    reg.replace_artifacts(uri, folder)
    return True


def _retire_versions(settings, keys, store: _Store, mode: str, request_id: str, report: dict) -> set:
    """Delete (or rewrite) every version no alias points to that holds a key; the logged model ids of
    all versions (those are handled here, not as unregistered models)."""
    import mlflow

    from recsys import registry as reg

    client = mlflow.MlflowClient()
    versions = reg.model_versions(settings)
    kept = {reg.version_location(mv) for mv in versions if mv.aliases}  # versions may share a logged model
    for mv in versions:
        uri = reg.version_location(mv)
        if mv.aliases or _holds(store, uri, keys) is None:
            continue
        row = {"model": mv.name, "version": str(mv.version)}
        if mode == "rewrite" and _rewrite(store, uri, keys, f"{mv.name} version {mv.version}"):
            client.set_model_version_tag(mv.name, mv.version, "erasure_rewritten", request_id)
            report["rewritten"].append(row)
        else:  # delete mode, or a kind of model nothing can rewrite
            reg.delete_version(mv.name, mv.version, files=uri not in kept)
            report["deleted"].append(row)
    return {reg.logged_model_id(mv) for mv in versions}


def _retire_logged_models(keys, store: _Store, mode: str, registered: set, report: dict) -> None:
    """Logged models no version refers to (a candidate the gate refused, a run never registered)."""
    import mlflow
    from mlflow.entities import ViewType

    from recsys import registry as reg

    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    for lm in client.search_logged_models(experiment_ids=experiments):
        uri = lm.artifact_location
        if lm.model_id in registered or _holds(store, uri, keys) is None:
            continue
        if mode == "rewrite" and _rewrite(store, uri, keys, f"logged model {lm.model_id}"):
            report["logged_models_rewritten"].append(lm.model_id)
        else:
            client.delete_logged_model(lm.model_id)
            reg.delete_artifacts(uri)
            report["logged_models_deleted"].append(lm.model_id)


def repair_models(settings: Settings, keys: Iterable[str], request_id: str) -> dict:
    """Repair or remove every model that holds one of the pseudonyms ``keys`` (see the module docstring).

    Returns the audit section: ``repaired`` (old version -> new version, aliases moved), ``pairing`` (ranker
    versions now naming the repaired retrieval version they go out with), ``deleted`` and ``rewritten``
    versions, ``logged_models_deleted``/``_rewritten`` (unregistered), ``files_left``.
    """
    from recsys import registry as reg
    from recsys.retrieval.repair import follow_pairing
    from recsys.tracking import configure

    keys = frozenset(k.lower() for k in keys)
    mode = settings.privacy.erasure_old_versions
    configure(settings)
    report: dict = {"mode": mode, "repaired": [], "deleted": [], "rewritten": []}
    report |= {"logged_models_deleted": [], "logged_models_rewritten": []}
    with tempfile.TemporaryDirectory(prefix="recsys-erasure-") as tmp:
        store = _Store(Path(tmp))
        report["repaired"], moves = _repair_aliased(settings, keys, store, request_id)
        reg.move_aliases(moves)
        report["pairing"] = follow_pairing(settings)
        registered = _retire_versions(settings, keys, store, mode, request_id, report)
        _retire_logged_models(keys, store, mode, registered, report)
    report["files_left"] = model_files_holding(settings, keys)
    if report["files_left"]:
        log.error("erasure %s: model files still hold an erased user: %s", request_id, report["files_left"])
    log.info(
        "erasure %s: models repaired %s, deleted %s, rewritten %s",
        request_id,
        [(r["version"], r["new_version"]) for r in report["repaired"]],
        [r["version"] for r in report["deleted"]],
        [r["version"] for r in report["rewritten"]],
    )
    return report


def model_files_holding(settings: Settings, keys: Iterable[str]) -> list[str]:
    """Files of the local MLflow artifact store and training checkpoints that hold one of ``keys``
    (relative to the data folder); a remote store is checked version by version by :func:`repair_models`."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    root = settings.resolved_artifact_root
    bases = [Path(settings.data_dir) / "checkpoints"]
    if root.startswith("file:"):
        bases.append(Path(url2pathname(urlparse(root).path)))
    elif "://" not in root:
        bases.append(Path(root))
    out = []
    for base in bases:
        if base.exists():
            for p in files_holding(base, keys):
                try:
                    out.append(str(p.relative_to(settings.data_dir)))
                except ValueError:
                    out.append(str(p))
    return sorted(out)

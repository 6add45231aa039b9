"""Erasure requests ("right to be forgotten"): remove one user from every zone and table.

:func:`erase_user` computes the user's pseudonym (``user_key``), then removes the user's rows from

* landing (``*.jsonl`` and encrypted ``*.jsonl.enc``: decrypted, filtered, re-encrypted; matched on the raw
  ``user_id``; a malformed line that contains the raw id is removed too),
* raw and quarantine (encrypted Parquet; matched on ``user_id``, or the raw id inside ``raw_line``),
* clean, features, recs and api (Parquet; matched on ``user_key``; every ``transform.json`` forgets the
  key in its user vocabulary, activity and affinity tables; ``api`` holds the features folders of the
  seed's ``train_model(frame)``),
* every version of the ``recommendations`` table (``recommendation_versions`` row/user counts updated;
  SQLite deletes securely and is vacuumed, so no free page keeps the rows),
* every registered model (:mod:`recsys.privacy.model_repair`: aliased versions repaired and re-registered,
  older versions and unregistered models deleted or rewritten),

(the per-place removals are in :mod:`recsys.privacy.zones`), adds the pseudonym to a suppression list
(``data_dir/privacy/erased_keys.txt``, pseudonyms only) that the anonymize stage consults so that later
days never bring the user back, and appends an audit record (request id, time, pseudonym, counts per zone,
model versions repaired and deleted; never the raw id) to ``data_dir/reports/privacy/erasure_audit.jsonl``.

Every file is replaced atomically. Erasing twice is harmless (the second run removes nothing). The raw id
is never logged or returned: logs, return values (Airflow XCom) and the audit carry the pseudonym only.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from recsys.config import Settings
from recsys.data.lake import atomic_write_bytes
from recsys.privacy.crypto import Cipher
from recsys.privacy.model_repair import model_files_holding
from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym, pseudonymize_many
from recsys.privacy.zones import (
    erase_db,
    erase_landing,
    erase_parquet,
    files,
    key_mask,
    raw_mask,
    scrub_transform,
)

log = logging.getLogger(__name__)

ZONES_BY_RAW_ID = ("landing", "raw", "quarantine")
# "api": features folders written by the seed's train_model(frame) (recsys.train, docs/api.md)
ZONES_BY_KEY = ("clean", "features", "recs", "api")
TRANSFORM_ZONES = ("features", "api")  # where fitted transforms (with a user vocabulary) are saved


# ------------------------------------------------------------------------------------ suppression list
def erased_keys_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "privacy" / "erased_keys.txt"


def erased_keys(settings: Settings) -> set[str]:
    """Pseudonyms of every erased user (the anonymize stage drops their rows)."""
    path = erased_keys_path(settings)
    if not path.exists():
        return set()
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def is_erased(user_key: str, settings: Settings) -> bool:
    return str(user_key) in erased_keys(settings)


def _suppress(user_key: str, settings: Settings) -> bool:
    keys = erased_keys(settings)
    if user_key in keys:
        return False
    keys.add(user_key)
    path = erased_keys_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = "# pseudonyms (user_key) of erased users: the anonymize stage drops their rows\n"
    atomic_write_bytes(path, (body + "\n".join(sorted(keys)) + "\n").encode())
    return True


@contextmanager
def _erasure_lock(settings: Settings):
    """Serialize erasures (two requests rewriting the same file must not lose each other's change)."""
    path = Path(settings.data_dir) / "privacy" / ".erasure.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ API
def _local_lake_only(settings: Settings) -> None:
    """Erasure walks the local lake's files: with the lake at a URL it would scrub nothing and say done."""
    if settings.lake_url:
        raise NotImplementedError(
            f"erasure does not yet reach a lake at a URL ({settings.lake_url}): nothing was erased"
        )


def _erase_data(user_id: str, uk: str, settings: Settings, cipher: Cipher) -> tuple[dict[str, int], bool]:
    """Every zone and the recommendations table; returns rows removed per place and whether the
    pseudonym is newly suppressed."""
    root = Path(settings.data_dir)
    removed: dict[str, int] = {}
    newly = _suppress(uk, settings)  # first: a stage running meanwhile already drops the user
    removed["landing"] = erase_landing(root, cipher, user_id)
    for zone in ("raw", "quarantine"):
        removed[zone] = sum(
            erase_parquet(p, lambda df: raw_mask(df, user_id), cipher, root)
            for p in files(root / zone, "*.parquet.enc")
        )
    for zone in ZONES_BY_KEY:
        removed[zone] = sum(
            erase_parquet(p, lambda df: key_mask(df, uk), None, root) for p in files(root / zone, "*.parquet")
        )
    removed["features_transforms"] = sum(
        scrub_transform(p, uk) for zone in TRANSFORM_ZONES for p in files(root / zone, "transform.json")
    )
    db = erase_db(settings, uk)
    removed["recommendations_table"] = db["rows"]
    removed["recommendation_versions_touched"] = db["versions"]
    return removed, newly


def _has_registry(settings: Settings) -> bool:
    """False when the embedded MLflow store was never created (nothing to repair, nothing to create)."""
    uri = settings.resolved_tracking_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def _erase_models(settings: Settings, erasure_id: str) -> dict:
    """Repair or remove every model holding an erased pseudonym (all of the suppression list: a model
    registered since an earlier erasure is caught too); the audit's ``models`` section."""
    if not _has_registry(settings):
        return {"erasure_id": erasure_id, "registry": "none"}
    from recsys.privacy.model_repair import repair_models

    return {"erasure_id": erasure_id, **repair_models(settings, erased_keys(settings), erasure_id)}


def _append_audit(settings: Settings, records: list[dict]) -> None:
    audit = Path(settings.data_dir) / "reports" / "privacy" / "erasure_audit.jsonl"
    audit.parent.mkdir(parents=True, exist_ok=True)
    with open(audit, "a") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _erase_batch(user_ids: list[str], settings: Settings, request_ids: list[str]) -> list[dict]:
    """Erase the data of each user, then repair the models once for all of them, then audit."""
    _local_lake_only(settings)
    key = load_pseudonym_key(settings)
    cipher = Cipher.from_settings(settings)
    erasure_id = request_ids[0] if len(request_ids) == 1 else uuid.uuid4().hex
    records = []
    with _erasure_lock(settings):
        for user_id, request_id in zip(user_ids, request_ids, strict=True):
            uk = pseudonym(user_id, key)
            removed, newly = _erase_data(user_id, uk, settings, cipher)
            records.append(
                {
                    "request_id": request_id,
                    "ts": datetime.now(UTC).isoformat(),
                    "user_key": uk,
                    "removed": removed,
                    "suppressed": True,
                    "already_suppressed": not newly,
                }
            )
            log.info("erasure %s: user_key=%s removed %s", request_id, uk, removed)
        error = None
        try:
            models = _erase_models(settings, erasure_id)
        except Exception as exc:  # the data is erased: say so in the audit, then fail loudly
            models, error = {"erasure_id": erasure_id, "error": f"{type(exc).__name__}: {exc}"}, exc
        for record in records:
            record["models"] = models
            record["retained"] = {"model_files_holding_key": len(models.get("files_left", []))}
        _append_audit(settings, records)
    if error is not None:
        raise error
    return records


def erase_user(user_id: str, settings: Settings, *, request_id: str | None = None) -> dict:
    """Remove ``user_id`` from every zone, every version of the recommendations table and every model.

    Returns (and appends to the audit log) ``{"request_id", "ts", "user_key", "removed": {zone: rows},
    "models": {repaired, deleted, rewritten versions ...}, "retained": {...}}``; the raw id appears in
    neither. The repaired model versions are tagged ``erasure=<request id>``.
    """
    user_id = str(user_id).strip()
    if not user_id:
        raise ValueError("an erasure request needs a non-empty user id")
    return _erase_batch([user_id], settings, [request_id or uuid.uuid4().hex])[0]


def erase_users(user_ids: Iterable[str], settings: Settings | None = None) -> list[dict]:
    """Erase each user (duplicates once), repairing the models once for all of them (their versions are
    tagged with the batch's ``models.erasure_id``); the records carry pseudonyms only (safe for XCom)."""
    from recsys.config import load_settings

    settings = settings or load_settings()
    if isinstance(user_ids, str | bytes) or user_ids is None:
        raise ValueError('erasure conf must be {"user_ids": ["...", ...]}: a list of user ids')
    ids = list(dict.fromkeys(str(u).strip() for u in user_ids))
    if not ids or any(not u for u in ids):
        raise ValueError("erasure needs at least one non-empty user id")
    return _erase_batch(ids, settings, [uuid.uuid4().hex for _ in ids])


def find_user(user_key: str, settings: Settings) -> dict[str, int]:
    """Rows of the user with pseudonym ``user_key`` left in each zone and in the recommendations table,
    and saved-model files (local MLflow artifact store, checkpoints) that still hold the pseudonym.

    Raw zones are checked by pseudonymizing their raw ids, so this needs only the pseudonym.
    """
    import sqlalchemy as sa

    _local_lake_only(settings)
    root = Path(settings.data_dir)
    key = load_pseudonym_key(settings)
    cipher = Cipher.from_settings(settings)
    found: dict[str, int] = {}

    def raw_hits(df: pd.DataFrame) -> int:
        if "user_id" not in df.columns:
            return 0
        return int((pd.Series(pseudonymize_many(df["user_id"], key)) == user_key).sum())

    n = 0
    for path in files(root / "landing", "*.jsonl*"):
        data = path.read_bytes()
        if path.name.endswith(".enc"):
            data = cipher.decrypt(data, what=str(path.relative_to(root)))
        ids = []
        for line in data.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("user_id") is not None:
                ids.append(str(obj["user_id"]))
        n += int(sum(1 for t in pseudonymize_many(ids, key) if t == user_key))
    found["landing"] = n
    for zone in ("raw", "quarantine"):
        found[zone] = sum(
            raw_hits(pd.read_parquet(io.BytesIO(cipher.decrypt(p.read_bytes(), what=str(p)))))
            for p in files(root / zone, "*.parquet.enc")
        )
    for zone in ZONES_BY_KEY:
        found[zone] = sum(
            int(key_mask(pd.read_parquet(p), user_key).sum()) for p in files(root / zone, "*.parquet")
        )
    found["features_transforms"] = sum(
        int(user_key in json.loads(p.read_bytes()).get("vocabs", {}).get("user", {}))
        for zone in TRANSFORM_ZONES
        for p in files(root / zone, "transform.json")
    )
    found["model_files"] = len(model_files_holding(settings, {user_key}))
    found["recommendations_table"] = 0
    url = settings.resolved_db_url
    db = sa.engine.make_url(url).database if url.startswith("sqlite") else None
    if not url.startswith("sqlite") or (db and Path(db).exists()):
        from recsys.serving import publish as pub

        eng = pub.engine_for(url)
        try:
            with eng.connect() as conn:
                if sa.inspect(conn).has_table("recommendations"):
                    found["recommendations_table"] = int(
                        conn.execute(
                            sa.select(sa.func.count())
                            .select_from(pub.recommendations)
                            .where(pub.recommendations.c.user_key == user_key)
                        ).scalar()
                    )
        finally:
            eng.dispose()
    return found


def verify_erased(user_keys: Iterable[str], settings: Settings | None = None) -> dict[str, dict[str, int]]:
    """Raise ``RuntimeError`` if any of the pseudonyms still has rows somewhere; else the (zero) counts."""
    from recsys.config import load_settings

    settings = settings or load_settings()
    out = {k: find_user(k, settings) for k in user_keys}
    left = {k: {z: n for z, n in c.items() if n} for k, c in out.items()}
    left = {k: c for k, c in left.items() if c}
    if left:
        raise RuntimeError(f"erased users still present: {left}")
    log.info("verified erasure of %d user_key(s): %s", len(out), sorted(out))
    return out

"""Removing one user from each place the erasure reaches (:mod:`recsys.privacy.erasure` drives them).

Each function takes one place (a landing file tree, an encrypted or plain Parquet file, a fitted
transform, the recommendations database), removes the user's rows atomically and returns how many went:
landing and the encrypted zones match the raw ``user_id`` (also inside a malformed line), the rest the
pseudonym ``user_key``.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd

from recsys.config import Settings
from recsys.data.lake import atomic_write_bytes, frame_to_parquet_bytes
from recsys.privacy.crypto import Cipher
from recsys.privacy.model_repair import forget_users


# ------------------------------------------------------------------------------------ matching
def id_pattern(user_id: str) -> re.Pattern:
    # the id as a whole token: "u1" must not match inside "u12" or inside a hex string
    return re.compile(r"(?<![A-Za-z0-9_])" + re.escape(user_id) + r"(?![A-Za-z0-9_])")


def files(base: Path, pattern: str) -> list[Path]:
    if not base.exists():
        return []
    return sorted(p for p in base.rglob(pattern) if p.is_file() and not p.name.startswith("."))


def filter_jsonl(data: bytes, user_id: str) -> tuple[bytes, int]:
    """Drop the lines of ``user_id`` (its ``user_id`` field, or a malformed line containing the id)."""
    pat = id_pattern(user_id)
    kept, removed = [], 0
    for line in data.splitlines(keepends=True):
        text = line.decode("utf-8", errors="replace")
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            hit = obj.get("user_id") is not None and str(obj.get("user_id")) == user_id
            hit = hit or any(isinstance(v, str) and pat.search(v) for v in obj.values())
        else:
            hit = bool(pat.search(text))
        if hit:
            removed += 1
        else:
            kept.append(line)
    return b"".join(kept), removed


def raw_mask(df: pd.DataFrame, user_id: str) -> pd.Series:
    mask = pd.Series(False, index=df.index)
    if "user_id" in df.columns:
        mask |= (df["user_id"].astype("string") == user_id).fillna(False).astype(bool)
    if "raw_line" in df.columns:
        pat = id_pattern(user_id)
        mask |= df["raw_line"].map(lambda s: isinstance(s, str) and bool(pat.search(s))).astype(bool)
    return mask


def key_mask(df: pd.DataFrame, user_key: str) -> pd.Series:
    if "user_key" not in df.columns:
        return pd.Series(False, index=df.index)
    return (df["user_key"].astype("string") == user_key).fillna(False).astype(bool)


# ------------------------------------------------------------------------------------ zones
def erase_landing(root: Path, cipher: Cipher, user_id: str) -> int:
    removed = 0
    for path in files(root / "landing", "*.jsonl"):
        data, n = filter_jsonl(path.read_bytes(), user_id)
        if n:
            atomic_write_bytes(path, data)
            removed += n
    for path in files(root / "landing", "*.jsonl.enc"):
        data, n = filter_jsonl(cipher.decrypt(path.read_bytes(), what=str(path.relative_to(root))), user_id)
        if n:
            atomic_write_bytes(path, cipher.encrypt(data))
            removed += n
    return removed


def erase_parquet(path: Path, mask_fn, cipher: Cipher | None, root: Path) -> int:
    data = path.read_bytes()
    if cipher is not None:
        data = cipher.decrypt(data, what=str(path.relative_to(root)))
    df = pd.read_parquet(io.BytesIO(data))
    mask = mask_fn(df)
    n = int(mask.sum())
    if n:
        out = frame_to_parquet_bytes(df[~mask].reset_index(drop=True))
        atomic_write_bytes(path, cipher.encrypt(out) if cipher is not None else out)
    return n


def scrub_transform(path: Path, user_key: str) -> int:
    """Forget ``user_key`` in a saved feature transform (vocabulary, activity, affinity tables and the
    co-engagement histories)."""
    t = json.loads(path.read_bytes())
    scrubbed, _ = forget_users(t, {user_key})
    if scrubbed == t:
        return 0
    atomic_write_bytes(path, json.dumps(scrubbed, sort_keys=True).encode())
    return 1


def compact_sqlite(eng) -> None:
    """Rebuild the SQLite file and empty its write-ahead log: no old page image keeps a deleted row."""
    with eng.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("VACUUM")
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def erase_db(settings: Settings, user_key: str) -> dict[str, int]:
    import sqlalchemy as sa

    from recsys.serving import publish as pub

    url = settings.resolved_db_url
    if url.startswith("sqlite"):
        db = sa.engine.make_url(url).database
        if not db or db == ":memory:" or not Path(db).exists():
            return {"rows": 0, "versions": 0}
    eng = pub.engine_for(url)
    sqlite = url.startswith("sqlite")
    try:
        with eng.begin() as conn:
            if not sa.inspect(conn).has_table("recommendations"):
                return {"rows": 0, "versions": 0}
            if sqlite:  # overwrite the deleted rows' bytes instead of leaving them in free pages
                conn.exec_driver_sql("PRAGMA secure_delete = ON")
            r, v = pub.recommendations, pub.versions
            per = conn.execute(
                sa.select(r.c.version, sa.func.count()).where(r.c.user_key == user_key).group_by(r.c.version)
            ).all()
            conn.execute(r.delete().where(r.c.user_key == user_key))
            for version, n in per:
                conn.execute(
                    v.update()
                    .where(v.c.version == version)
                    .values(row_count=v.c.row_count - int(n), user_count=v.c.user_count - 1)
                )
        if sqlite and per:
            compact_sqlite(eng)
        return {"rows": int(sum(n for _, n in per)), "versions": len(per)}
    finally:
        eng.dispose()

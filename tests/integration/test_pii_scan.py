"""No raw identifier leaves landing and the encrypted raw zones; an erasure request removes a user.

Uses the session's real multi-day Airflow run (``pipeline_run``). The identifiers are every simulated user
id and e-mail (rebuilt from the simulator's seed) and every IP address that landed (decrypted from the
landing files). The scan reads every file byte for byte and also decoded: Parquet values (compressed pages
would hide a string from a byte search), members of zip files (``model.keras``), gzip, and every table of
SQLite files (text can straddle pages).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sqlite3
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from recsys.privacy.crypto import MAGIC

pytestmark = pytest.mark.slow

# candidates, then exact membership in the known identifiers (so a hex hash or a float never matches)
USER_ID_RE = re.compile(rb"(?<![A-Za-z0-9])u\d{9}(?![0-9])")
# bounded repeats: an unbounded [..]+@ backtracks quadratically over long base64 runs (encrypted files)
EMAIL_RE = re.compile(rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}")
IP_RE = re.compile(rb"(?<![0-9.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\.?[0-9])")


class Identifiers:
    def __init__(self, user_ids: set[str], emails: set[str], ips: set[str]):
        self.user_ids = {u.encode() for u in user_ids}
        self.emails = {e.encode() for e in emails}
        self.ips = {i.encode() for i in ips}

    def find(self, data: bytes) -> set[str]:
        hits = {m for m in USER_ID_RE.findall(data) if m in self.user_ids}
        hits |= {m for m in EMAIL_RE.findall(data) if m in self.emails}
        hits |= {m for m in IP_RE.findall(data) if m in self.ips}
        return {h.decode() for h in hits}


@pytest.fixture(scope="module")
def identifiers(pipeline_run) -> Identifiers:
    from recsys.data.lake import Lake
    from recsys.data.sources import parse_jsonl, read_landing_bytes
    from recsys.privacy.crypto import Cipher
    from recsys.sim import build_world

    settings = pipeline_run.settings()
    world = build_world(settings.simulator, settings.seed)
    lake = Lake(settings.data_dir, Cipher.from_settings(settings))
    ips: set[str] = set()
    for ds in pipeline_run.days:
        events, _ = parse_jsonl(read_landing_bytes(lake, "events", ds))
        ips |= set(events["ip"].dropna().astype(str))
    ids = Identifiers(set(world.users["user_id"]), set(world.users["email"]), ips)
    assert len(ids.user_ids) == settings.simulator.n_users and len(ids.emails) == len(ids.user_ids)
    assert len(ids.ips) > 50
    # the matcher itself: finds each kind, and not a longer id, a hex hash or a longer address
    uid, email, ip = sorted(ids.user_ids)[1], sorted(ids.emails)[1], sorted(ids.ips)[1]
    assert ids.find(b'{"u":"' + uid + b'"}') == {uid.decode()}
    assert ids.find(b"to " + email + b".") >= {email.decode()}
    assert ids.find(b"from " + ip + b", ") == {ip.decode()}
    assert ids.find(uid + b"7 a" + uid[1:] + b" 1" + ip + b" " + ip + b".5 x" + ip[1:]) == set()
    return ids


def _sqlite_dump(path: Path) -> bytes:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = []
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"'):
                out.append(" ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row))
        return "\n".join(out).encode("utf-8", errors="replace")
    finally:
        con.close()


def _decoded(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """Views of a file's content beyond its raw bytes."""
    out = []
    if data[:4] == b"PAR1":
        df = pd.read_parquet(io.BytesIO(data))
        out.append(
            (
                name + "[parquet]",
                df.astype(str).to_csv(index=False).encode() + " ".join(map(str, df.columns)).encode(),
            )
        )
    elif data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for member in z.namelist():
                sub = z.read(member)
                out.append((f"{name}!{member}", sub))
                out.extend(_decoded(f"{name}!{member}", sub))
    elif data[:2] == b"\x1f\x8b":
        sub = gzip.decompress(data)
        out.append((name + "[gunzip]", sub))
        out.extend(_decoded(name + "[gunzip]", sub))
    return out


def scan_file(path: Path, ids: Identifiers) -> dict[str, set[str]]:
    data = path.read_bytes()
    findings = {}
    views = [(str(path), data), *_decoded(str(path), data)]
    if data.startswith(b"SQLite format 3\x00"):
        views.append((f"{path}[tables]", _sqlite_dump(path)))
    for where, blob in views:
        hits = ids.find(blob)
        if hits:
            findings[where] = hits
    return findings


def scan_tree(base: Path, ids: Identifiers) -> dict[str, set[str]]:
    assert base.exists(), base
    findings: dict[str, set[str]] = {}
    files = [p for p in base.rglob("*") if p.is_file()]
    for p in files:
        findings |= scan_file(p, ids)
    return findings


def _report(findings: dict[str, set[str]]) -> str:
    return "raw identifiers found:\n" + "\n".join(
        f"  {where}: {len(h)} e.g. {sorted(h)[:3]}" for where, h in sorted(findings.items())[:30]
    )


@pytest.mark.parametrize("zone", ["clean", "features", "recs", "reports"])
def test_no_raw_identifier_in_pseudonymous_zones(pipeline_run, identifiers, zone):
    base = pipeline_run.data_dir / zone
    assert any(p.is_file() for p in base.rglob("*")), f"{zone} is empty"
    findings = scan_tree(base, identifiers)
    assert not findings, _report(findings)


def test_no_raw_identifier_anywhere_else_in_the_data_folder(pipeline_run, identifiers):
    """Everything outside landing/raw/quarantine: MLflow (db + artifacts), the recommendations DB, etc."""
    data = pipeline_run.data_dir
    assert (data / "mlflow" / "mlflow.db").exists() and (data / "mlflow" / "artifacts").exists()
    assert any((data / "mlflow" / "artifacts").rglob("*.keras"))
    findings: dict[str, set[str]] = {}
    for top in data.iterdir():
        if top.name in ("landing", "raw", "quarantine"):
            continue
        findings |= scan_tree(top, identifiers) if top.is_dir() else scan_file(top, identifiers)
    assert not findings, _report(findings)


def test_no_raw_identifier_in_the_recommendations_db(pipeline_run, identifiers):
    import sqlalchemy as sa

    from recsys.serving.publish import engine_for

    eng = engine_for(pipeline_run.settings().resolved_db_url)
    try:
        with eng.connect() as conn:
            names = sa.inspect(conn).get_table_names() + sa.inspect(conn).get_view_names()
            assert {"recommendations", "recommendation_versions", "live_recommendations"} <= set(names)
            dump = b"".join(
                pd.read_sql(sa.text(f'SELECT * FROM "{n}"'), conn).astype(str).to_csv(index=False).encode()
                for n in names
            )
    finally:
        eng.dispose()
    assert len(dump) > 1000
    assert not identifiers.find(dump), sorted(identifiers.find(dump))[:5]


def test_no_raw_identifier_in_airflow_logs_and_output(pipeline_run, identifiers):
    # `airflow dags test` runs the tasks in-process and writes their logs to its output (kept in
    # pipeline_run.logs); log files appear when a scheduler/executor runs them. Scan both.
    logs = pipeline_run.root / "airflow" / "logs"
    assert pipeline_run.logs and all("stage land" in t for t in pipeline_run.logs.values()), "no task output"
    findings = scan_tree(logs, identifiers) if logs.exists() else {}
    for name, text in pipeline_run.logs.items():
        hits = identifiers.find(text.encode())
        if hits:
            findings[f"airflow dags test output {name}"] = hits
    assert not findings, _report(findings)


def test_no_raw_identifier_in_the_airflow_metadata_db(pipeline_run, identifiers):
    """XCom (stage results), rendered task fields, run confs of the daily runs."""
    findings = {}
    for p in (pipeline_run.root / "airflow").glob("airflow.db*"):
        findings |= scan_file(p, identifiers)
    assert not findings, _report(findings)


def test_raw_zones_are_encrypted_at_rest(pipeline_run, identifiers):
    for zone in ("landing", "raw", "quarantine"):
        files = [p for p in (pipeline_run.data_dir / zone).rglob("*") if p.is_file()]
        assert files, zone
        for p in files:
            data = p.read_bytes()
            assert data.startswith(MAGIC), f"{p} is not encrypted"
            assert not identifiers.find(data), f"{p} holds identifiers in clear"


# ------------------------------------------------------------------------------------ erasure
@pytest.fixture()
def lake_copy(pipeline_run, tmp_path, monkeypatch, data_dir_copier):
    """A private copy of the run's data folder (erasing must not change the shared run)."""
    data = data_dir_copier(pipeline_run.data_dir, tmp_path / "data")
    for k, v in pipeline_run.env.items():
        if k.startswith("RECSYS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("RECSYS_DATA_DIR", str(data))
    from recsys.config import load_settings

    settings = load_settings()
    assert settings.resolved_db_url.startswith("sqlite") and str(data) in settings.resolved_db_url
    return settings


def test_erasure_removes_a_recommended_user_everywhere(pipeline_run, lake_copy, caplog):
    import logging

    import sqlalchemy as sa

    from recsys.data.lake import Lake
    from recsys.privacy.crypto import Cipher
    from recsys.privacy.erasure import erase_user, erased_keys, find_user
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.serving import publish as pub
    from recsys.sim import build_world

    settings = lake_copy
    last = pipeline_run.days[-1]
    lake = Lake(settings.data_dir, Cipher.from_settings(settings))
    recs = lake.read_frame("recs", "lists", last)
    key = load_pseudonym_key(settings)
    by_key = {pseudonym(u, key): u for u in build_world(settings.simulator, settings.seed).users["user_id"]}
    uk = next(k for k in recs["user_key"] if k in by_key)
    uid = by_key[uk]
    before = find_user(uk, settings)
    for zone in ("landing", "raw", "clean", "features", "recs", "recommendations_table"):
        assert before[zone] > 0, (zone, before)

    with caplog.at_level(logging.DEBUG):
        rec = erase_user(uid, settings)
    assert uid not in caplog.text

    assert find_user(uk, settings) == {z: 0 for z in before}
    for zone, n in before.items():
        if zone != "model_files":  # models are repaired, not counted in rows (test_erasure_e2e.py)
            assert rec["removed"][zone] >= n, (zone, rec["removed"], before)
    # independently: no clear or decrypted file names the raw id, no Parquet row names the pseudonym
    pat = re.compile(re.escape(uid).encode() + rb"(?![0-9])")
    for zone in ("landing", "raw", "quarantine"):
        for p in (settings.data_dir / zone).rglob("*.enc"):
            plain = lake.cipher.decrypt(p.read_bytes())
            assert not pat.search(plain), p
            if plain[:4] == b"PAR1":
                assert uid not in pd.read_parquet(io.BytesIO(plain)).astype(str).to_csv().encode().decode()
    for zone in ("clean", "features", "recs"):
        for p in (settings.data_dir / zone).rglob("*"):
            if p.suffix == ".parquet":
                assert uk not in set(pd.read_parquet(p).get("user_key", pd.Series(dtype=str)).astype(str)), p
            elif p.name == "transform.json":
                t = json.loads(p.read_text())
                assert uk not in t["vocabs"]["user"] and uk not in t["user_impressions"], p
                assert all(uk not in table for table in t.get("affinity", {}).values()), p
    eng = pub.engine_for(settings.resolved_db_url)
    try:
        with eng.connect() as conn:
            n = conn.execute(
                sa.text("SELECT count(*) FROM recommendations WHERE user_key = :k"), {"k": uk}
            ).scalar()
            counts = conn.execute(
                sa.text(
                    "SELECT v.version, v.row_count, (SELECT count(*) FROM recommendations r "
                    "WHERE r.version = v.version) FROM recommendation_versions v"
                )
            ).all()
    finally:
        eng.dispose()
    assert n == 0
    assert counts and all(rc == actual for _, rc, actual in counts)
    # audit: pseudonym, request id, time, counts; never the raw id
    audit = settings.data_dir / "reports" / "privacy" / "erasure_audit.jsonl"
    text = audit.read_text()
    assert uid not in text
    line = json.loads(text.splitlines()[-1])
    assert line["user_key"] == uk and line["request_id"] and line["ts"]
    assert line["removed"]["recommendations_table"] == before["recommendations_table"]
    assert uk in erased_keys(settings)
    assert uid not in (settings.data_dir / "privacy" / "erased_keys.txt").read_text()
    # the shared run is untouched
    assert find_user(uk, pipeline_run.settings())["recs"] > 0

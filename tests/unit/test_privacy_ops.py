"""Privacy operations on a tiny hand-made lake: key rotation, wrong keys, erasure, policy refusal."""

from __future__ import annotations

import json
import re
from datetime import date

import pandas as pd
import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from recsys.config import load_settings
from recsys.data.lake import Lake, atomic_write_bytes
from recsys.privacy.crypto import Cipher, DecryptionError
from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym

D1, D2 = date(2026, 1, 1), date(2026, 1, 2)
ALICE, BOB, ALICE2 = "u042000001", "u042000002", "u0420000011"  # ALICE is a prefix of ALICE2


def _jsonl(rows: list[dict], extra: list[str] = ()) -> bytes:
    return ("\n".join([json.dumps(r) for r in rows] + list(extra)) + "\n").encode()


def _events(day: date, users: list[str]) -> list[dict]:
    return [
        {
            "event_id": f"e{day:%d}-{i}",
            "user_id": u,
            "email": f"{u}.7@example.org",
            "ip": f"10.0.0.{i}",
            "ts": f"{day}T10:00:0{i}Z",
            "video_id": str(1000 + i),
        }
        for i, u in enumerate(users)
    ]


def build_lake(settings) -> Lake:
    """Two days of every zone, with ALICE, BOB and ALICE2 (whose id starts with ALICE's)."""
    lake = Lake(settings.data_dir, Cipher.from_settings(settings))
    key = load_pseudonym_key(settings)
    users = [ALICE, BOB, ALICE2]
    for day in (D1, D2):
        ev = _events(day, users + [ALICE])
        # landing: D1 collected (encrypted), D2 not yet (plain); a malformed line naming ALICE
        body = _jsonl(ev, extra=[f'{{"user_id": "{ALICE}", broken'])
        path = lake.partition("landing", "events", day) / "part-0.jsonl"
        if day == D1:
            atomic_write_bytes(path.with_name("part-0.jsonl.enc"), lake.cipher.encrypt(body))
        else:
            atomic_write_bytes(path, body)
        raw = pd.DataFrame(ev).astype("string")
        lake.write_frame("raw", "events", day, raw)
        lake.write_frame("raw", "valid_events", day, raw.iloc[:-1])
        lake.write_frame(
            "raw",
            "events_malformed",
            day,
            pd.DataFrame({"line_no": [5], "raw_line": [f'{{"user_id": "{ALICE}", broken']}),
        )
        lake.write_frame(
            "quarantine",
            "events",
            day,
            pd.DataFrame({"user_id": [ALICE, BOB], "reason": ["late", "late"]}).astype("string"),
        )
        lake.write_frame("raw", "users", day, pd.DataFrame({"user_id": users, "email": ["a@x", "b@", "c@"]}))
        keys = [pseudonym(u, key) for u in users]
        lake.write_frame(
            "clean",
            "interactions",
            day,
            pd.DataFrame({"user_key": keys + keys[:1], "video_id": [1, 2, 3, 4]}),
        )
        lake.write_frame("clean", "users", day, pd.DataFrame({"user_key": keys, "age_band": ["18-24"] * 3}))
        lake.write_frame(
            "recs",
            "lists",
            day,
            pd.DataFrame(
                {
                    "user_key": [k for k in keys for _ in (1, 2)],
                    "rank": [1, 2] * 3,
                    "video_id": [1, 2] * 3,
                    "score": [0.9, 0.8] * 3,
                    "model_version": "1",
                }
            ),
        )

        def build(tmp, keys=keys):
            for name in ("train", "valid", "test"):
                pd.DataFrame({"user_key": keys, "click": [1, 0, 1]}).to_parquet(tmp / f"{name}.parquet")
            (tmp / "transform.json").write_text(
                json.dumps(
                    {
                        "vocabs": {"user": {k: i + 1 for i, k in enumerate(keys)}},
                        "user_impressions": {k: 1.0 for k in keys},
                    }
                )
            )

        lake.replace_partition("features", "examples", day, build)
    # a features folder of the seed's train_model(frame) (recsys.train: data_dir/api/features/ds=D-<hash>)
    api = settings.data_dir / "api" / "features" / f"ds={D2}-0123456789ab"
    api.mkdir(parents=True)
    build(api)
    return lake


def _publish_two_versions(settings):
    from recsys.serving import publish as pub

    key = load_pseudonym_key(settings)
    keys = [pseudonym(u, key) for u in (ALICE, BOB, ALICE2)]
    eng = pub.engine_for(settings.resolved_db_url)
    for day in (D1, D2):
        recs = pd.DataFrame(
            {
                "user_key": [k for k in keys for _ in (1, 2)],
                "rank": [1, 2] * 3,
                "video_id": [1, 2] * 3,
                "score": [0.9, 0.8] * 3,
            }
        )
        pub.publish(eng, recs, ds=str(day), model_version="1", active_users=set(keys), top_n=10)
    return eng


def _encrypted(settings):
    from recsys.privacy.keys import encrypted_files

    return [p for paths in encrypted_files(settings.data_dir).values() for p in paths]


# ------------------------------------------------------------------------------------ rotation
def test_rotation_leaves_every_file_readable_with_the_new_key_only(settings, keys, monkeypatch):
    from recsys.privacy.keys import rotate_keys

    build_lake(settings)
    files = _encrypted(settings)
    assert {p.relative_to(settings.data_dir).parts[0] for p in files} == {"landing", "raw", "quarantine"}
    plain = {p: Cipher([keys["fernet"]]).decrypt(p.read_bytes()) for p in files}
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", f"{new},{keys['fernet']}")
    out = rotate_keys(load_settings())
    assert out["files"] == len(files) and out["by_zone"]["landing"] == 1 and out["verified"]
    for p in files:
        assert Cipher([new]).decrypt(p.read_bytes()) == plain[p]
        with pytest.raises(DecryptionError, match="cannot be decrypted"):
            Cipher([keys["fernet"]]).decrypt(p.read_bytes())
    assert not list(settings.data_dir.rglob(".*tmp-*"))
    # the lake opened with the new key alone reads everything
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", new)
    from recsys.stages import open_lake

    assert len(open_lake(load_settings()).read_frame("raw", "events", D1)) == 4


def test_rotate_key_cli_and_new_key(settings, keys, monkeypatch):
    from recsys.privacy.cli import app

    build_lake(settings)
    runner = CliRunner()
    res = runner.invoke(app, ["new-key"])
    assert res.exit_code == 0
    new = res.output.strip()
    Fernet(new.encode())  # a valid key
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", f"{new},{keys['fernet']}")
    res = runner.invoke(app, ["rotate-key"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"] == len(_encrypted(settings))
    for p in _encrypted(settings):
        Cipher([new]).decrypt(p.read_bytes())


def test_wrong_key_fails_clearly_through_rotation_and_cli(settings, keys, monkeypatch):
    from recsys.privacy.cli import app
    from recsys.privacy.keys import rotate_keys

    build_lake(settings)
    before = {p: p.read_bytes() for p in _encrypted(settings)}
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
    with pytest.raises(DecryptionError, match=r"(landing|raw|quarantine)/.*cannot be decrypted"):
        rotate_keys(load_settings())
    res = CliRunner().invoke(app, ["rotate-key"])
    assert res.exit_code == 1
    assert "cannot be decrypted with the configured key(s)" in res.output
    assert {p: p.read_bytes() for p in before} == before  # nothing was damaged
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", "not-a-fernet-key")
    res = CliRunner().invoke(app, ["rotate-key"])
    assert res.exit_code == 1 and "malformed Fernet key" in res.output


# ------------------------------------------------------------------------------------ erasure
def test_erasure_removes_the_user_everywhere_and_keeps_the_others(settings, caplog):
    import logging

    import sqlalchemy as sa

    from recsys.privacy.erasure import erase_user, erased_keys, find_user, is_erased
    from recsys.serving import publish as pub

    lake = build_lake(settings)
    eng = _publish_two_versions(settings)
    key = load_pseudonym_key(settings)
    ka, kb, kc = (pseudonym(u, key) for u in (ALICE, BOB, ALICE2))
    before = find_user(ka, settings)
    assert before.pop("model_files") == 0  # no registry in this lake (the models: test_model_repair.py)
    assert all(n > 0 for n in before.values()), before
    with caplog.at_level(logging.DEBUG):
        rec = erase_user(ALICE, settings)
    assert ALICE not in caplog.text and ka in caplog.text
    assert find_user(ka, settings) == {z: 0 for z in [*before, "model_files"]}
    # the others (including the id that starts with ALICE's) are untouched
    for k in (kb, kc):
        assert find_user(k, settings)["clean"] == 4
        assert find_user(k, settings)["recommendations_table"] == 4
    assert rec["removed"]["landing"] == 2 * 3  # 2 events + 1 malformed line per day
    assert rec["removed"]["raw"] == 2 * (2 + 1 + 1 + 1)  # events(2) valid(1) malformed(1) users(1)
    assert rec["removed"]["quarantine"] == 2 and rec["removed"]["recommendations_table"] == 4
    assert rec["removed"]["recommendation_versions_touched"] == 2  # both kept versions
    # landing stayed in its form: D1 encrypted, D2 plain
    d1 = lake.partition("landing", "events", D1) / "part-0.jsonl.enc"
    d2 = lake.partition("landing", "events", D2) / "part-0.jsonl"
    alice = re.compile(re.escape(ALICE).encode() + rb"(?!\d)")  # not the prefix of ALICE2
    assert not alice.search(lake.cipher.decrypt(d1.read_bytes()))
    assert ALICE2.encode() in lake.cipher.decrypt(d1.read_bytes())
    assert not alice.search(d2.read_bytes()) and ALICE2.encode() in d2.read_bytes()
    for folder in (lake.partition("features", "examples", D2), settings.data_dir / "api" / "features"):
        t = json.loads(next(folder.rglob("transform.json")).read_text())
        assert ka not in t["vocabs"]["user"] and kb in t["vocabs"]["user"]
    assert rec["removed"]["api"] == 3 and rec["removed"]["features_transforms"] == 3  # 2 days + the api one
    # the table: every version, counts updated
    with eng.connect() as conn:
        rows = conn.execute(
            sa.select(pub.versions.c.version, pub.versions.c.row_count, pub.versions.c.user_count)
        ).all()
        n = conn.execute(sa.select(sa.func.count()).select_from(pub.recommendations)).scalar()
    assert sum(r.row_count for r in rows) == n and all(r.user_count == 2 for r in rows)
    # audit and suppression list: pseudonym only
    audit = settings.data_dir / "reports" / "privacy" / "erasure_audit.jsonl"
    line = json.loads(audit.read_text().splitlines()[-1])
    assert line["user_key"] == ka and line["request_id"] == rec["request_id"] and line["ts"]
    assert line["removed"]["clean"] == 2 * 2 + 2 and line["removed"]["features"] == 2 * 3
    assert ALICE not in audit.read_text()
    assert erased_keys(settings) == {ka} and is_erased(ka, settings) and not is_erased(kb, settings)
    assert ALICE not in (settings.data_dir / "privacy" / "erased_keys.txt").read_text()
    # idempotent
    again = erase_user(ALICE, settings)
    assert sum(again["removed"].values()) == 0 and again["already_suppressed"]


def test_erasure_touches_every_kept_version(settings):
    import sqlalchemy as sa

    from recsys.privacy.erasure import erase_user
    from recsys.serving import publish as pub

    build_lake(settings)
    eng = _publish_two_versions(settings)
    with eng.connect() as conn:
        versions = conn.execute(sa.select(pub.versions.c.version)).scalars().all()
    rec = erase_user(BOB, settings)
    assert rec["removed"]["recommendation_versions_touched"] == len(versions)
    assert rec["removed"]["recommendations_table"] == 2 * len(versions)


def test_erase_cli_prints_pseudonyms_only(settings):
    from recsys.privacy.cli import app

    build_lake(settings)
    res = CliRunner().invoke(app, ["erase", "--user", BOB, "--user", BOB])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out) == 1 and out[0]["user_key"] == pseudonym(BOB, load_pseudonym_key(settings))
    assert BOB not in res.output
    assert CliRunner().invoke(app, ["erase", "--user", " "]).exit_code == 1


def test_erase_users_rejects_a_bad_conf(settings):
    from recsys.privacy.erasure import erase_users

    for bad in (None, "u1", [], [""]):
        with pytest.raises(ValueError):
            erase_users(bad, settings)


# ------------------------------------------------------------------------------------ policy
def test_anonymize_stage_refuses_an_undeclared_column(settings):
    from recsys import stages
    from recsys.privacy.anonymize import PolicyError

    lake = Lake(settings.data_dir, Cipher.from_settings(settings))
    ev = pd.DataFrame(_events(D1, [ALICE, BOB])).astype("string").assign(phone=["+49 1", "+49 2"])
    lake.write_frame("raw", "valid_events", D1, ev)
    lake.write_frame("raw", "users", D1, pd.DataFrame({"user_id": [ALICE, BOB]}))
    lake.write_frame("raw", "videos", D1, pd.DataFrame({"video_id": [1000, 1001]}))
    with pytest.raises(PolicyError, match="phone"):
        stages.anonymize(D1, settings)
    assert not lake.has_frame("clean", "interactions", D1)

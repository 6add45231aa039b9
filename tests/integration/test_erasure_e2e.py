"""Done-when of issue 20: after ``recsys privacy erase --user ID`` on a pipeline run, no file under the data
folder (outside the encrypted zones, the audit log and the suppression list) holds the user's pseudonym,
and the repaired champion serves every other user with unchanged scores.

Uses a private copy of the session's real Airflow run (``pipeline_run``), with ``previous`` and
``challenger`` aliases added on its older versions so every alias kind is repaired. The user erased is the
one in the champion's input example: it sits in the transform, the embedding table, the input example,
the pickled wrapper and the lake. The scan here is independent of the code under test: every file, byte for
byte, and decoded (zip members such as ``model.keras``, gzip, Parquet values, SQLite tables), for the hex
pseudonym in either case and for its 16 raw bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
RECSYS = str(Path(sys.executable).with_name("recsys"))
ENCRYPTED_ZONES = ("landing", "raw", "quarantine")
UNSEEN = "f" * 32


def _views(name: str, data: bytes) -> list[tuple[str, bytes]]:
    out = [(name, data)]
    if data[:4] == b"PAR1":
        df = pd.read_parquet(io.BytesIO(data))
        out.append((name + "[parquet]", df.astype(str).to_csv(index=False).encode()))
    elif data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for member in z.namelist():
                out.extend(_views(f"{name}!{member}", z.read(member)))
    elif data[:2] == b"\x1f\x8b":
        out.extend(_views(name + "[gunzip]", gzip.decompress(data)))
    elif data.startswith(b"SQLite format 3\x00"):
        con = sqlite3.connect(f"file:{name}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows = [repr(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"')]
        finally:
            con.close()
        out.append((name + "[tables]", "\n".join(rows).encode()))
    return out


def scan(data_dir: Path, user_key: str, skip: set[Path]) -> list[str]:
    """Every file (and decoded view) under ``data_dir`` holding the pseudonym, outside ``skip``."""
    forms = (user_key.lower().encode(), user_key.upper().encode(), bytes.fromhex(user_key))
    hits = []
    for p in sorted(data_dir.rglob("*")):
        if not p.is_file() or p in skip or p.relative_to(data_dir).parts[0] in ENCRYPTED_ZONES:
            continue
        for where, blob in _views(str(p), p.read_bytes()):
            if any(f in blob for f in forms):
                hits.append(where.replace(str(data_dir), "<data>"))
    return hits


@pytest.fixture(scope="module")
def erased_run(pipeline_run, tmp_path_factory, data_dir_copier):
    """The copy, the user chosen, the other users' scores before, and the CLI's output."""
    import mlflow

    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.registry import load_ranker
    from recsys.sim.world import build_world
    from recsys.tracking import configure

    data = data_dir_copier(pipeline_run.data_dir, tmp_path_factory.mktemp("erase") / "data")
    env = {**pipeline_run.env, "RECSYS_DATA_DIR": str(data)}
    settings = replace(pipeline_run, env=env).settings()
    assert settings.data_dir == data
    configure(settings)
    client = mlflow.MlflowClient()
    name = settings.model_name
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    older = sorted({str(mv.version) for mv in client.search_model_versions(f"name='{name}'")} - {champion})
    assert len(older) >= 2, "the session run registers a version per day"
    client.set_registered_model_alias(name, "previous", older[-1])
    client.set_registered_model_alias(name, "challenger", older[0])

    ranker = load_ranker(settings)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    example = json.loads((local / "input_example.json").read_text())
    user_key = example["data"][0][example["columns"].index("user_key")]
    assert user_key in ranker.transform.vocabs["user"]
    raw = {
        pseudonym(u, load_pseudonym_key(settings)): u
        for u in build_world(settings.simulator, settings.seed).users["user_id"]
    }
    user_id = raw[user_key]
    assert scan(data, user_key, set()), "the user must be somewhere before the erasure"

    last = max(pipeline_run.days)
    test = pd.read_parquet(data / "features" / "examples" / f"ds={last}" / "test.parquet")
    test = test.drop(columns=["position"], errors="ignore")
    others = test[test["user_key"] != user_key].head(3000).reset_index(drop=True)
    mine = test.head(200).assign(user_key=user_key)  # the erased user on the same videos and times
    before = ranker.predict(others)["score"].to_numpy()
    before_mine = ranker.predict(mine)["score"].to_numpy()
    aliases = {
        a: str(client.get_model_version_by_alias(name, a).version)
        for a in ("champion", "previous", "challenger")
    }
    two_tower = retrieval_state(settings, last, champion, user_key)

    out = subprocess.run(
        [RECSYS, "privacy", "erase", "--user", user_id],
        env=env,
        capture_output=True,
        text=True,
        cwd=data.parent,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {
        "settings": settings,
        "data": data,
        "user_key": user_key,
        "user_id": user_id,
        "others": others,
        "mine": mine,
        "before": before,
        "before_mine": before_mine,
        "aliases": aliases,
        "two_tower": two_tower,
        "cli": out,
    }


def retrieval_state(settings, ds, ranker_version: str, user_key: str) -> dict:
    """The retrieval version served with the champion ranker, its index, and its user-tower queries for
    everyone else and for the erased user (whose history is also given to a never-seen key), on the
    serving inputs of ``ds`` as they were before the erasure."""
    from recsys.retrieval.registry import paired_retrieval_version
    from recsys.serving import _context
    from recsys.stages import open_lake

    version = paired_retrieval_version(settings, ranker_version)
    assert version is not None, "the session run serves its champion with a retrieval model"
    history, videos, users = _context(open_lake(settings), ds, settings)
    clicks = history[(history["clicked"] == 1) & history["video_id"].notna()]
    keys = sorted(set(clicks["user_key"].astype(str)))
    assert user_key in keys, "the erased user has a watch history for the user tower"
    others = [k for k in keys if k != user_key]
    # the never-seen key gets the erased user's history and device: only the id input differs
    clicks = pd.concat([clicks, clicks[clicks["user_key"] == user_key].assign(user_key=UNSEEN)])
    users = pd.concat([users, users[users["user_key"] == user_key].assign(user_key=UNSEEN)])
    state = {"version": version, "inputs": (clicks, videos, users, serving_at(ds)), "others": others}
    return state | queries(settings, version, state, user_key)


def serving_at(ds):
    from recsys.serving import serving_time

    return serving_time(ds)


def queries(settings, version: str, state: dict, user_key: str) -> dict:
    """Retrieval ``version``'s transform, index and query embeddings (others, the user, a never-seen key)."""
    from recsys.retrieval.registry import load_retrieval
    from recsys.retrieval.train import with_video_columns

    b = load_retrieval(settings, version)
    clicks, videos, users, at = state["inputs"]
    c = with_video_columns(clicks, videos)

    def q(keys):
        x, has = b.features.serving_queries(keys, c, users, at)
        assert has.all()
        return np.asarray(b.model.query(x))

    return {
        "vocab": dict(b.features.transform.vocabs["user"]),
        "index": b.index.to_bytes(),
        "q_others": q(state["others"]),
        "q_user": q([user_key]),
        "q_unseen": q([UNSEEN]),
    }


def test_no_file_outside_the_encrypted_zones_holds_the_pseudonym(erased_run):
    data, uk = erased_run["data"], erased_run["user_key"]
    skip = {data / "reports" / "privacy" / "erasure_audit.jsonl", data / "privacy" / "erased_keys.txt"}
    assert scan(data, uk, skip) == []
    # the scan can fail: the suppression list keeps the pseudonym by design
    assert scan(data, uk, set()) == [f"<data>/{p.relative_to(data)}" for p in sorted(skip)]
    assert erased_run["user_id"] not in erased_run["cli"].stdout + erased_run["cli"].stderr


def test_the_repaired_champion_serves_everyone_else_unchanged(erased_run):
    from recsys.registry import load_ranker

    settings = erased_run["settings"]
    ranker = load_ranker(settings)
    assert ranker.version != erased_run["aliases"]["champion"]
    np.testing.assert_allclose(
        ranker.predict(erased_run["others"])["score"].to_numpy(), erased_run["before"], rtol=0, atol=1e-6
    )
    # the erased user now gets exactly what a never-seen user gets, and not their old scores
    mine, unseen = erased_run["mine"], erased_run["mine"].assign(user_key=UNSEEN)
    after_mine = ranker.predict(mine)["score"].to_numpy()
    np.testing.assert_allclose(after_mine, ranker.predict(unseen)["score"].to_numpy(), rtol=0, atol=1e-7)
    assert np.abs(after_mine - erased_run["before_mine"]).max() > 1e-4


def test_audit_lists_the_versions_repaired_and_deleted(erased_run):
    import mlflow

    data, aliases = erased_run["data"], erased_run["aliases"]
    stdout = erased_run["cli"].stdout
    cli = json.loads(stdout[stdout.index("[") :])
    audit = [
        json.loads(x) for x in (data / "reports" / "privacy" / "erasure_audit.jsonl").read_text().splitlines()
    ]
    record = audit[-1]
    assert record == cli[0] and record["user_key"] == erased_run["user_key"]
    models = record["models"]
    assert models["mode"] == "delete" and models["erasure_id"] == record["request_id"]
    ranker = erased_run["settings"].model_name
    repaired = {r["version"]: r for r in models["repaired"] if r["model"] == ranker}
    assert set(repaired) == set(aliases.values())
    assert {d["version"] for d in models["deleted"] if d["model"] == ranker} >= set(aliases.values())
    assert models["files_left"] == [] and record["retained"]["model_files_holding_key"] == 0
    client = mlflow.MlflowClient()
    for alias, old in aliases.items():
        mv = client.get_model_version_by_alias(erased_run["settings"].model_name, alias)
        assert str(mv.version) == repaired[old]["new_version"]
        assert mv.tags["erasure"] == record["request_id"] and mv.tags["repaired_from"] == old
    assert repaired[aliases["champion"]]["embedding_rows_zeroed"] == 1


def test_verify_erased_passes(erased_run):
    from recsys.privacy.erasure import verify_erased

    counts = verify_erased([erased_run["user_key"]], erased_run["settings"])
    assert counts[erased_run["user_key"]]["model_files"] == 0


def test_the_retrieval_model_is_repaired_keeps_its_index_and_stays_paired(erased_run):
    """The two-tower model served with the champion loses the user (vocabulary entry, user-tower row), is
    re-registered and re-paired with the repaired ranker; its item index and everyone else's queries
    are unchanged, and the erased user's query is a never-seen user's."""
    from recsys.registry import champion_version
    from recsys.retrieval.registry import paired_retrieval_version, retrieval_model_name

    settings, uk, before = erased_run["settings"], erased_run["user_key"], erased_run["two_tower"]
    assert uk in before["vocab"]
    served = paired_retrieval_version(settings, champion_version(settings))
    assert served is not None and served != before["version"]
    record = json.loads(
        (erased_run["data"] / "reports" / "privacy" / "erasure_audit.jsonl").read_text().splitlines()[-1]
    )
    rows = [r for r in record["models"]["repaired"] if r["model"] == retrieval_model_name(settings)]
    fix = {r["version"]: r for r in rows}[before["version"]]
    # the default user tower has no user-id embedding (only the history, device and hour): the model
    # holds no row of the user to zero, and the vocabulary entry is what the repair removes
    assert fix["new_version"] == served and fix["embedding_rows_zeroed"] == 0
    assert fix["user_embedding"] == "none" and fix["vocabulary_entries_removed"] == 1
    assert {"ranker_version": champion_version(settings), "retrieval_version": served} in [
        {k: p[k] for k in ("ranker_version", "retrieval_version")} for p in record["models"]["pairing"]
    ]
    after = queries(settings, served, before, uk)
    assert uk not in after["vocab"] and len(after["vocab"]) == len(before["vocab"]) - 1
    assert after["index"] == before["index"]
    import mlflow
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):  # the unrepaired version is gone (delete mode)
        mlflow.MlflowClient().get_model_version(retrieval_model_name(settings), before["version"])
    np.testing.assert_allclose(after["q_others"], before["q_others"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(after["q_user"], after["q_unseen"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(before["q_user"], before["q_unseen"], rtol=0, atol=1e-7)  # no id input

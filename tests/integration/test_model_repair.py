"""Model repair on erasure, against a real MLflow registry (SQLite + local artifacts) in a temp folder.

The rankers are seeded, untrained models on a synthetic world whose user keys are pseudonym-shaped (32
hex characters): their user embedding rows are random, so every user's scores differ and a user's own
row visibly moves their scores. Slow-ish (real MLflow logging and Keras loads): in integration.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.privacy.keyscan import files_holding, find_keys

pytestmark = pytest.mark.slow

UNSEEN = "f" * 32  # a pseudonym no model has seen: the cold-start path


def _hex(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


@pytest.fixture(scope="module")
def world():
    from recsys.serving.synthetic import make_world

    w = make_world(n_users=60, n_videos=80, n_examples=1500, seed=3)
    mapping = {k: _hex(k) for k in w.users["user_key"]}
    w.users["user_key"] = w.users["user_key"].map(mapping)
    w.examples["user_key"] = w.examples["user_key"].map(mapping)
    return w


def _rows(world, keys: list[str], n_videos: int = 12) -> pd.DataFrame:
    """Scoring rows: every given user against the same videos at the same time."""
    videos = world.videos.head(n_videos).drop(columns="visible")
    users = world.users.set_index("user_key")
    frame = pd.concat([videos.assign(user_key=k, **users.loc[k].to_dict()) for k in keys], ignore_index=True)
    frame["ts"] = "2026-01-02T18:00:00Z"
    frame["upload_ts"] = pd.to_datetime(frame["upload_ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


def _log(world, settings, tmp: Path, seed: int, example_users: list[str]) -> str:
    """Log a seeded ranker (its input example names ``example_users``) in a run; the model URI."""
    import mlflow

    from recsys.registry import log_ranker_dir
    from recsys.serving.synthetic import make_ranker, save_ranker
    from recsys.tracking import configure

    folder = save_ranker(make_ranker(world, seed=seed), tmp / f"ranker-{seed}")
    example = _rows(world, example_users, n_videos=1)
    with mlflow.start_run(experiment_id=configure(settings), run_name=f"train-{seed}"):
        return log_ranker_dir(folder, example)


@pytest.fixture(scope="module")
def built_registry(world, tmp_path_factory):
    """champion, previous and challenger on three versions, an older unaliased version, and a logged model
    no version refers to (a refused candidate); every one of them knows the user to erase.

    Built once for the module (logging five rankers is most of the two erasure tests' set-up) from the
    seeded world and seeds alone; each test erases in its own copy (:func:`registry`)."""
    import mlflow
    from cryptography.fernet import Fernet

    from recsys.config import load_settings
    from recsys.registry import register_version

    root = tmp_path_factory.mktemp("model-repair")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RECSYS_DEMO", raising=False)
        mp.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-model-repair")
        mp.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
        settings = load_settings(data_dir=root / "data")
        users = list(world.users["user_key"])
        erased, others = users[5], [u for u in users if u != users[5]]
        name = settings.model_name
        versions = [
            register_version(name, _log(world, settings, root, seed, [erased, others[0]]), {"ds": f"d{seed}"})
            for seed in range(4)
        ]
        refused = _log(world, settings, root, 9, [others[1]])
        client = mlflow.MlflowClient()
        for alias, v in (("challenger", versions[1]), ("previous", versions[2]), ("champion", versions[3])):
            client.set_registered_model_alias(name, alias, v)
    return settings.data_dir, {"erased": erased, "others": others, "versions": versions, "refused": refused}


@pytest.fixture
def registry(built_registry, settings, data_dir_copier):
    """The module's registry in this test's own data folder (a copy whose MLflow store points at the copy:
    the erasure tests delete and rewrite versions), with MLflow pointed at it."""
    from recsys.tracking import configure

    src, info = built_registry
    if settings.data_dir.exists():
        settings.data_dir.rmdir()  # empty: the copy takes its place
    data_dir_copier(src, settings.data_dir)
    configure(settings)
    return info


def _scores(settings, alias: str, rows: pd.DataFrame) -> np.ndarray:
    from recsys.registry import load_ranker

    return load_ranker(settings, alias).predict(rows)["score"].to_numpy()


def _artifact_root(settings) -> Path:
    return settings.data_dir / "mlflow" / "artifacts"


def test_find_keys_sees_hex_either_case_raw_bytes_and_zip_members(tmp_path):
    import zipfile

    key = _hex("someone")
    assert find_keys(b'{"u": "' + key.upper().encode() + b'"}', {key}) == {key}
    assert find_keys(b"\x00\x01" + bytes.fromhex(key) + b"\x02", {key}) == {key}
    with zipfile.ZipFile(tmp_path / "m.keras", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", json.dumps({"vocab": {key: 1}}) * 50)
    data = (tmp_path / "m.keras").read_bytes()
    assert key.encode() not in data  # compressed: a plain byte search would miss it
    assert find_keys(data, {key}) == {key}
    assert find_keys(b"x" + key[:-1].encode() + b"y", {key}) == set()


def test_forget_users_gives_the_cold_start_inputs(world):
    from recsys.features.transform import Transform
    from recsys.privacy.model_repair import forget_users

    t = Transform.fit(world.examples)
    erased = world.users["user_key"].iloc[5]
    scrubbed, rows = forget_users(t.to_dict(), {erased, UNSEEN})
    assert rows == [t.vocabs["user"][erased]]
    assert erased in t.vocabs["user"]  # the input is not changed
    repaired = Transform(**scrubbed)
    as_erased = repaired.apply(_rows(world, [erased]))
    as_unseen = repaired.apply(_rows(world, [erased]).assign(user_key=UNSEEN))
    for k in as_erased:
        np.testing.assert_array_equal(as_erased[k], as_unseen[k], err_msg=k)
    assert (as_erased["user"] == 0).all()


def test_erasure_repairs_every_aliased_version_and_deletes_the_rest(world, settings, registry):
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.privacy.model_repair import repair_models
    from recsys.registry import load_ranker

    erased, others = registry["erased"], registry["others"]
    rows = _rows(world, others)
    aliases = ("champion", "previous", "challenger")
    before = {a: _scores(settings, a, rows) for a in aliases}
    assert files_holding(_artifact_root(settings), {erased})

    report = repair_models(settings, {erased}, "req-1")

    client = mlflow.MlflowClient()
    name = settings.model_name
    old = dict(zip(("challenger", "previous", "champion"), registry["versions"][1:], strict=True))
    assert {r["version"]: r["aliases"] for r in report["repaired"]} == {v: [a] for a, v in old.items()}
    for alias in aliases:
        mv = client.get_model_version_by_alias(name, alias)
        assert str(mv.version) not in registry["versions"], alias
        assert mv.tags["erasure"] == "req-1" and mv.tags["repaired_from"] == old[alias]
        assert mv.tags["ds"] == f"d{registry['versions'].index(old[alias])}"  # the original's tags
        # every other user: the same scores; the erased user: exactly a never-seen user's
        np.testing.assert_allclose(_scores(settings, alias, rows), before[alias], rtol=0, atol=1e-6)
        ranker = load_ranker(settings, alias)
        assert erased not in ranker.transform.vocabs["user"]
        erased_rows = _rows(world, [erased])
        unseen_rows = erased_rows.assign(user_key=UNSEEN)
        np.testing.assert_allclose(
            ranker.predict(erased_rows)["score"], ranker.predict(unseen_rows)["score"], rtol=0, atol=1e-7
        )
    row = {r["version"]: r for r in report["repaired"]}[old["champion"]]
    assert row["vocabulary_entries_removed"] == 1 and row["embedding_rows_zeroed"] == 1
    # the old versions (the three repaired and the unaliased one) and the refused model are gone
    assert {d["version"] for d in report["deleted"]} == set(registry["versions"])
    for v in registry["versions"]:
        with pytest.raises(MlflowException):
            client.get_model_version(name, v)
    assert report["logged_models_deleted"] == [registry["refused"].split("/")[-1]]
    assert report["files_left"] == []
    assert files_holding(_artifact_root(settings), {erased}) == {}
    # the other users are still in the repaired models' files
    assert files_holding(_artifact_root(settings), {others[0]})
    # lists published by a deleted version are scored by the version repaired from it
    new_champion = {r["version"]: r for r in report["repaired"]}[old["champion"]]["new_version"]
    assert load_ranker(settings, version=old["champion"]).version == new_champion
    # a second erasure (of the same user) finds nothing left to do
    again = repair_models(settings, {erased}, "req-3")
    assert again["repaired"] == again["deleted"] == again["logged_models_deleted"] == []
    assert str(client.get_model_version_by_alias(name, "champion").version) == new_champion


def test_rewrite_mode_keeps_the_old_versions_without_the_user(world, settings, registry, monkeypatch):
    import mlflow

    from recsys.config import load_settings
    from recsys.privacy.model_repair import repair_models
    from recsys.registry import load_ranker

    monkeypatch.setenv("RECSYS_PRIVACY__ERASURE_OLD_VERSIONS", "rewrite")
    settings = load_settings()
    erased, others = registry["erased"], registry["others"]
    rows = _rows(world, others)
    oldest = registry["versions"][0]  # no alias
    before = load_ranker(settings, version=oldest).predict(rows)["score"].to_numpy()

    report = repair_models(settings, {erased}, "req-2")

    assert report["deleted"] == [] and report["logged_models_deleted"] == []
    assert {r["version"] for r in report["rewritten"]} == set(registry["versions"])
    assert report["logged_models_rewritten"] == [registry["refused"].split("/")[-1]]
    client = mlflow.MlflowClient()
    assert client.get_model_version(settings.model_name, oldest).tags["erasure_rewritten"] == "req-2"
    ranker = load_ranker(settings, version=oldest)
    assert erased not in ranker.transform.vocabs["user"]
    np.testing.assert_allclose(ranker.predict(rows)["score"].to_numpy(), before, rtol=0, atol=1e-6)
    assert files_holding(_artifact_root(settings), {erased}) == {}


def test_an_unknown_kind_of_model_fails_loudly_until_a_flavour_repairs_it(settings, tmp_path, monkeypatch):
    import mlflow

    from recsys.privacy import model_repair as mr
    from recsys.registry import register_version
    from recsys.tracking import configure

    key = _hex("listener")

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    (tmp_path / "users.txt").write_text(f"{key}\n{_hex('other')}\n")
    with mlflow.start_run(experiment_id=configure(settings)):
        info = mlflow.pyfunc.log_model(
            name="echo", python_model=Echo(), artifacts={"users": str(tmp_path / "users.txt")}
        )
    version = register_version("echo-model", info.model_uri, {})
    mlflow.MlflowClient().set_registered_model_alias("echo-model", "champion", version)

    with pytest.raises(mr.ModelRepairError, match="echo-model version 1"):
        mr.repair_models(settings, {key}, "req-5")
    assert str(mlflow.MlflowClient().get_model_version_by_alias("echo-model", "champion").version) == "1"

    def detect(model_dir: Path) -> bool:
        return (model_dir / "artifacts" / "users.txt").is_file()

    def repair(model_dir: Path, keys, work: Path) -> mr.RepairedModel:
        work.mkdir(parents=True)
        kept = [u for u in (model_dir / "artifacts" / "users.txt").read_text().split() if u not in keys]
        (work / "users.txt").write_text("\n".join(kept) + "\n")
        args = {"python_model": Echo(), "artifacts": {"users": str(work / "users.txt")}}
        return mr.RepairedModel(
            {"users_removed": 1},
            log=lambda: mlflow.pyfunc.log_model(name="echo", **args).model_uri,
            save=lambda path: mlflow.pyfunc.save_model(path=str(path), **args) or Path(path),
        )

    monkeypatch.setitem(mr.FLAVOURS, "echo", mr.Flavour("echo", detect, repair))
    report = mr.repair_models(settings, {key}, "req-6")
    assert [(r["model"], r["version"], r["users_removed"]) for r in report["repaired"]] == [
        ("echo-model", "1", 1)
    ]
    assert files_holding(_artifact_root(settings), {key}) == {}

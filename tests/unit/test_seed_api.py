"""The seed's entry points that need no pipeline run: privacy, interaction logging, model blocks, imports.

docs/api.md's whole walk-through runs in tests/integration/test_api.py after a pipeline run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

SEED_MODULES = (
    "recsys.data.sources",
    "recsys.features",
    "recsys.model",
    "recsys.train",
    "recsys.serving",
    "recsys.monitoring",
    "recsys.privacy",
)


def _imported_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print(','.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.strip().split(","))


def test_seed_modules_import_without_heavy_frameworks():
    heavy = {"tensorflow", "keras", "mlflow", "great_expectations", "airflow", "dask", "distributed"}
    loaded = _imported_after("; ".join(f"import {m}" for m in SEED_MODULES))
    assert not loaded & heavy, f"importing the seed's modules pulled in {sorted(loaded & heavy)}"


@pytest.mark.parametrize("module", ["recsys.features", "recsys.model", "recsys.monitoring", "recsys.privacy"])
def test_seed_packages_import_without_pandas(module):
    assert "pandas" not in _imported_after(f"import {module}")


def test_every_seed_function_documents_defaults_and_return(monkeypatch):
    import importlib
    import inspect

    names = {
        "recsys.data.sources": [
            "collect_user_interactions",
            "collect_content_metadata",
            "collect_contextual_info",
        ],
        "recsys.features": [
            "feature_engineering",
            "create_text_embeddings",
            "create_categorical_embeddings",
            "scale_numerical_features",
        ],
        "recsys.model": [
            "build_shallow_tower",
            "build_multi_task_model",
            "compile_multi_task_model",
            "build_expert_models",
            "build_gating_network",
            "mixture_of_experts",
        ],
        "recsys.train": ["train_model"],
        "recsys.serving": ["recommend_videos", "parallel_recommendations"],
        "recsys.monitoring": ["log_user_interaction", "compute_metrics", "check_retraining_needed"],
        "recsys.privacy": ["anonymize_data", "secure_storage"],
    }
    for module, funcs in names.items():
        for name in funcs:
            fn = getattr(importlib.import_module(module), name)
            doc = fn.__doc__ or ""
            assert "Returns" in doc, f"{module}.{name} does not state what it returns"
            optional = [p for p in inspect.signature(fn).parameters.values() if p.default is not p.empty]
            if optional:
                assert "default" in doc.lower(), f"{module}.{name} does not state its defaults"


def test_cli_help_points_to_the_api_doc():
    from typer.testing import CliRunner

    from recsys.cli import app

    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0 and "docs/api.md" in out.output


# ------------------------------------------------------------------------------------------- privacy
def test_anonymize_data_pseudonymizes_named_columns_with_the_pipeline_key(settings):
    from recsys.privacy import anonymize_data
    from recsys.privacy.pseudonymize import load_pseudonym_key, user_key

    df = pd.DataFrame({"user_id": [1, 2, 2], "video_id": [7, 8, 9]})
    before = df.copy()
    out = anonymize_data(df, ["user_id"])
    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    assert list(out.columns) == ["user_key", "video_id"]
    assert list(out["user_key"]) == [
        user_key("1", settings),
        user_key("2", settings),
        user_key("2", settings),
    ]
    assert list(out["video_id"]) == [7, 8, 9]
    with pytest.raises(KeyError, match="email"):
        anonymize_data(df, ["email"])
    # the earlier positional form (raw events, key) still applies the full policy
    raw = pd.DataFrame({"user_id": ["u1"], "email": ["a@b.c"], "video_id": ["7"]})
    full = anonymize_data(raw, load_pseudonym_key(settings))
    assert list(full.columns) == ["user_key", "video_id"]


def test_secure_storage_round_trip_is_encrypted_at_rest(settings, monkeypatch):
    from cryptography.fernet import Fernet

    from recsys.config import load_settings
    from recsys.privacy import read_secure, secure_storage
    from recsys.privacy.crypto import MAGIC, DecryptionError

    df = pd.DataFrame({"user_key": ["a" * 32, "b" * 32], "watch_seconds": [1.5, 0.0]})
    sec = secure_storage(df, "sample")
    assert sec.path == settings.data_dir / "secure" / "sample.parquet.enc"
    assert sec.rows == 2 and sec.columns == ("user_key", "watch_seconds")
    blob = sec.path.read_bytes()
    assert blob.startswith(MAGIC) and b"a" * 32 not in blob and b"PAR1" not in blob
    pd.testing.assert_frame_equal(sec.read(), df)
    assert not list(sec.path.parent.glob(".*tmp*"))  # written atomically, no leftovers
    # after a key rotation (new key first, old kept) it still reads; with only a new key it cannot
    old = settings.privacy.encryption_keys.get_secret_value()
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", f"{new},{old}")
    pd.testing.assert_frame_equal(read_secure(sec.path, settings=load_settings()), df)
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", new)
    with pytest.raises(DecryptionError):
        read_secure(sec.path, settings=load_settings())
    # a swapped file is refused when read through its SecuredData
    other = secure_storage(df.head(1), "other", settings=settings)
    sec.path.write_bytes(other.path.read_bytes())
    with pytest.raises(ValueError, match="changed"):
        read_secure(sec, settings=settings)


# ------------------------------------------------------------------------------------------ monitoring
def test_log_user_interaction_pseudonymizes_before_storing(settings):
    from recsys.monitoring import compute_metrics, log_user_interaction, read_interaction_log
    from recsys.monitoring.interactions import interaction_log_path
    from recsys.privacy.pseudonymize import user_key

    ts = "2026-01-05T10:00:00+00:00"
    rec = log_user_interaction(user_id=1, video_id=101, action="like", ts=ts, event_id="e1")
    log_user_interaction(user_id="u9", video_id=102, ts=ts, event_id="e2", rec_version="v1", position=1)
    assert rec["user_key"] == user_key("1", settings) and "user_id" not in rec
    assert (rec["clicked"], rec["liked"], rec["shared"]) == (1, 1, 0)
    path = interaction_log_path(settings, "2026-01-05")
    text = path.read_text()
    assert '"user_id"' not in text and '"u9"' not in text
    assert [json.loads(line)["event_id"] for line in text.splitlines()] == ["e1", "e2"]
    logs = read_interaction_log(pd.Timestamp("2026-01-05").date())
    assert list(logs["user_key"]) == [user_key("1", settings), user_key("u9", settings)]
    m = compute_metrics(logs)
    assert m["ds"] == "2026-01-05" and m["ctr"] == 0.0 and m["ctr_exploration"] == 1.0
    assert compute_metrics(path)["impressions"] == 2  # the file itself is accepted too
    with pytest.raises(ValueError, match="exactly one"):
        log_user_interaction(user_id=1, user_key="k", video_id=1)
    with pytest.raises(ValueError, match="unknown action"):
        log_user_interaction(user_id=1, video_id=1, action="purchase")


def test_check_retraining_needed_defaults(settings):
    from recsys.monitoring import check_retraining_needed

    rows = [{"ds": f"2026-01-0{d}", "ctr": c} for d, c in ((1, 0.2), (2, 0.2), (3, 0.2), (4, 0.1))]
    decision = check_retraining_needed(rows)  # today = the latest row; thresholds from the settings
    assert decision.retrain and "ctr dropped" in decision.reasons[0]
    assert not check_retraining_needed(rows[:3])
    assert not check_retraining_needed([{"ctr": 0.1}])  # rows without a day are left out


# --------------------------------------------------------------------------------------------- model
def test_model_blocks_from_an_input_width(settings):
    import keras

    from recsys.model import (
        MultiTaskHead,
        build_expert_models,
        build_gating_network,
        build_multi_task_model,
        build_shallow_tower,
        compile_multi_task_model,
        mixture_of_experts,
    )

    ms = settings.model
    tower = build_shallow_tower(17)
    assert tower.output_shape == (None, ms.shallow_units[-1])
    width = tower.output_shape[1]
    head = compile_multi_task_model(build_multi_task_model(width))
    assert isinstance(head, MultiTaskHead) and head.optimizer is not None
    x = np.random.default_rng(0).normal(size=(5, 17)).astype(np.float32)
    inputs = tower(x)
    out = head(inputs)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        t: (5, 1) for t in ("click", "watch", "like", "share")
    }
    experts, gate = build_expert_models(width), build_gating_network(width)
    weights = keras.ops.convert_to_numpy(gate(inputs))
    assert weights.shape == (5, ms.n_experts)
    moe = keras.ops.convert_to_numpy(mixture_of_experts(inputs, experts, weights))
    assert moe.shape == (5, ms.expert_units)
    # deterministic: the default seed comes from the settings
    again = build_shallow_tower(17)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(inputs))
    # the head trains on dense inputs with NaN-masked labels, like the ranker
    y = {
        t: np.where(np.arange(5) % 2, 1.0, np.nan).astype(np.float32)
        for t in ("click", "watch", "like", "share")
    }
    hist = head.fit(keras.ops.convert_to_numpy(inputs), y, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


# ------------------------------------------------------------------------------------ app contract
USER_KEY_VECTORS = [  # (key as configured, user id, user_key): README's "Reading recommendations"
    ("recsys-example-key-0123456789abcdef", "u042000001", "7ca3cc5b17580f682430e4545b124d32"),
    ("recsys-example-key-0123456789abcdef", "1", "2772b315f79cf6da864de8d1cb4e1528"),
]


@pytest.mark.parametrize(("key", "user_id", "expected"), USER_KEY_VECTORS)
def test_user_key_test_vector(key, user_id, expected, monkeypatch, tmp_path):
    """The vector an app developer checks an implementation in another language against; the key is the
    UTF-8 bytes of the configured secret, as written (independently: openssl dgst -sha256 -hmac KEY)."""
    import hashlib
    import hmac
    from pathlib import Path

    from recsys.config import load_settings
    from recsys.privacy.pseudonymize import user_key

    monkeypatch.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", key)
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    assert user_key(user_id, load_settings()) == expected
    assert user_key(int(user_id) if user_id.isdigit() else user_id, load_settings()) == expected
    spelled_out = hmac.new(key.encode("utf-8"), f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:32]
    assert spelled_out == expected
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"`{key}` | `{user_id}` | `{expected}`" in readme
